// Command runlatency measures agent runs end to end through agentwire on
// loopback: U users, one WebSocket each, each in a closed loop sending
// `what is 12*(3+4)?` and waiting for its run's agent_completed before the
// next. Per run it records the time from sending the user_message to the ack,
// to agent_started and to agent_completed.
//
//	go run ./bench/runlatency -users 100 -duration 10s
//
// Same-run baseline: the demo agent's own pace. Its run for this message is
// 12 steps (2 thinking, 1 tool call, 8 answer chunks, complete) separated by
// 11 pauses of min(demo.DefaultPace, 400 ms / 11) = 30 ms: 330 ms of sleeping
// configured. The program also runs the demo agent in-process, with a
// recording emitter (agenttest.Recorder) and the same U closed-loop callers,
// and reports that run time's p50/p99 (timer slack under the same
// concurrency). Gateway overhead = measured time to agent_completed − the
// in-process agent time; ack and agent_started come before the agent's first
// pause, so they are all gateway.
//
// With -agui N, N more users run the same closed loop over AG-UI in the same
// run (POST /api/v1/agui, the answer read as SSE until RUN_FINISHED): send →
// first AG-UI event (RUN_STARTED) against the WebSocket's send →
// agent_started, and send → RUN_FINISHED against send → agent_completed.
//
// The server is a subprocess (`agentwire serve --agent demo`), built with go
// build unless -bin is given; everything is bounded by -timeout.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agentwire/agentwire/bench/internal/benchproc"
	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/agenttest"
	"github.com/agentwire/agentwire/internal/agent/demo"
	"github.com/agentwire/agentwire/internal/agui"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/loadgen"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/protocol"
)

const secret = "runlatency-benchmark-secret-0123456789abcdef"

// The demo agent's pacing for an arithmetic message (internal/agent/demo):
// thinking, thinking, calculator, calcChunks (8) deltas, complete = 12 steps,
// 11 pauses, each min(Pace, maxNormalDuration (400 ms) / 11).
const (
	demoSteps      = 2 + 1 + 8 + 1
	demoMaxPauses  = 400 * time.Millisecond
	demoPauseCount = demoSteps - 1
)

func configuredPace() (pause, total time.Duration) {
	pause = min(demo.DefaultPace, demoMaxPauses/demoPauseCount)
	return pause, pause * demoPauseCount
}

type options struct {
	users, aguiUsers int
	duration, warmup time.Duration
	baseline         time.Duration
	message          string
	sameThread       bool
}

func main() {
	var o options
	flag.IntVar(&o.users, "users", 100, "users, one WebSocket each, one run in flight each")
	flag.IntVar(&o.aguiUsers, "agui", 0, "more users, each running the same loop over AG-UI (POST /api/v1/agui, SSE) in the same run")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured duration")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured warm-up before it")
	flag.DurationVar(&o.baseline, "baseline", 3*time.Second, "duration of the in-process demo agent baseline")
	flag.StringVar(&o.message, "message", "what is 12*(3+4)?", "the user message of every run")
	flag.BoolVar(&o.sameThread, "same-thread", false, "keep each user's runs in one thread (history grows) instead of a new thread per run")
	compare := flag.Bool("compare-transcripts", false, "also measure the same build with --transcripts=false, alternating on, off, on, off, and report both")
	prebuilt := flag.String("bin", "", "use this agentwire binary instead of building ./cmd/agentwire")
	timeout := flag.Duration("timeout", 2*time.Minute, "hard bound on the whole run")
	flag.Parse()

	run, _ := benchproc.NewRun("runlatency", *timeout)
	defer run.Close()
	fail := run.Fail
	bin := run.Binary(*prebuilt)

	pause, pace := configuredPace()
	fmt.Printf("runlatency: %d users, one socket and one run in flight each, message %q\n", o.users, o.message)
	fmt.Printf("demo agent configured pace: %d pauses × %v = %v\n", demoPauseCount, pause, pace)

	// Baseline before and after, on an otherwise idle box: the demo agent
	// alone, in-process.
	printBase := func(when string, base []time.Duration) {
		fmt.Printf("[baseline %s] demo agent in-process, %d closed-loop callers, %v: runs %d, runs/s %.1f, run time p50 %v p99 %v max %v\n",
			when, o.users, o.baseline, len(base), float64(len(base))/o.baseline.Seconds(), q(base, 0.5), q(base, 0.99), q(base, 1))
	}
	base := agentBaseline(o)
	printBase("before", base)

	serve := func(transcripts bool, dir string) *results {
		s := run.Start("agentwire", bin, []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir,
			"--jwt-secret", secret, "--log-level", "warn", "--agent", "demo", "--transcripts=" + strconv.FormatBool(transcripts)}, 30*time.Second)
		res, err := measure(s.Addr, o)
		if err != nil {
			fail(err)
		}
		s.Stop()
		return res
	}
	if *compare {
		compareTranscripts(o, run.Tmp, serve)
		return
	}
	res := serve(true, run.Tmp)
	after := agentBaseline(o)
	printBase("after", after)
	base = append(base, after...)
	slices.Sort(base)

	window := o.duration.Seconds()
	n := len(res.done)
	fmt.Println()
	fmt.Printf("RESULT runs %d in %v: runs/s %.1f (closed loop, %d users), errors %d\n", n, o.duration, float64(n)/window, o.users, res.errors)
	fmt.Printf("RESULT send → ack             p50 %v p99 %v max %v\n", q(res.ack, 0.5), q(res.ack, 0.99), q(res.ack, 1))
	fmt.Printf("RESULT send → agent_started   p50 %v p99 %v max %v\n", q(res.started, 0.5), q(res.started, 0.99), q(res.started, 1))
	fmt.Printf("RESULT send → agent_completed p50 %v p99 %v max %v\n", q(res.done, 0.5), q(res.done, 0.99), q(res.done, 1))
	fmt.Printf("RESULT baseline demo agent: configured %v; in-process (before+after) p50 %v p99 %v\n", pace, q(base, 0.5), q(base, 0.99))
	fmt.Printf("RESULT gateway overhead on agent_completed (measured − in-process agent): p50 %v, p99 %v; vs configured pace: p50 %v, p99 %v\n",
		q(res.done, 0.5)-q(base, 0.5), q(res.done, 0.99)-q(base, 0.99), q(res.done, 0.5)-pace, q(res.done, 0.99)-pace)
	if o.aguiUsers > 0 {
		fmt.Printf("RESULT AG-UI runs %d (%d users), errors %d\n", len(res.aguiDone), o.aguiUsers, res.aguiErrors)
		fmt.Printf("RESULT AG-UI send → first event (RUN_STARTED) p50 %v p99 %v max %v   [WebSocket send → agent_started p50 %v p99 %v]\n",
			q(res.aguiFirst, 0.5), q(res.aguiFirst, 0.99), q(res.aguiFirst, 1), q(res.started, 0.5), q(res.started, 0.99))
		fmt.Printf("RESULT AG-UI send → RUN_FINISHED           p50 %v p99 %v max %v   [WebSocket send → agent_completed p50 %v p99 %v]\n",
			q(res.aguiDone, 0.5), q(res.aguiDone, 0.99), q(res.aguiDone, 1), q(res.done, 0.5), q(res.done, 0.99))
	}
	if ideal := float64(o.users) / pace.Seconds(); ideal > 0 {
		fmt.Printf("RESULT runs/s vs ideal %d users ÷ %v = %.1f/s: %.2f\n", o.users, pace, ideal, float64(n)/window/ideal)
	}
}

// compareTranscripts measures the same build with run transcripts on and
// off, alternating (on, off, on, off: drift on a shared box hits both), each
// round on a fresh data dir, and reports runs/s and send → agent_completed
// of each setting over its two rounds.
func compareTranscripts(o options, tmp string, serve func(transcripts bool, dir string) *results) {
	type agg struct {
		runs int
		done []time.Duration
		errs int64
	}
	var on, off agg
	for i, transcripts := range []bool{true, false, true, false} {
		dir, err := os.MkdirTemp(tmp, "round")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		res := serve(transcripts, dir)
		a := &off
		if transcripts {
			a = &on
		}
		a.runs += len(res.done)
		a.done = append(a.done, res.done...)
		a.errs += res.errors
		fmt.Printf("round %d transcripts=%v: runs/s %.1f, send → agent_completed p50 %v p99 %v, errors %d\n",
			i+1, transcripts, float64(len(res.done))/o.duration.Seconds(), q(res.done, 0.5), q(res.done, 0.99), res.errors)
	}
	slices.Sort(on.done)
	slices.Sort(off.done)
	window := 2 * o.duration.Seconds()
	rOn, rOff := float64(on.runs)/window, float64(off.runs)/window
	fmt.Println()
	fmt.Printf("RESULT transcripts on:  runs/s %.1f, send → agent_completed p50 %v p99 %v, errors %d\n", rOn, q(on.done, 0.5), q(on.done, 0.99), on.errs)
	fmt.Printf("RESULT transcripts off: runs/s %.1f, send → agent_completed p50 %v p99 %v, errors %d\n", rOff, q(off.done, 0.5), q(off.done, 0.99), off.errs)
	if rOff > 0 {
		fmt.Printf("RESULT transcripts on vs off: runs/s %+.1f%%, p50 %+v\n", 100*(rOn-rOff)/rOff, q(on.done, 0.5)-q(off.done, 0.5))
	}
}

// agentBaseline runs the demo agent in-process with a recording emitter:
// o.users closed-loop callers for o.baseline. It returns the sorted run
// times.
func agentBaseline(o options) []time.Duration {
	a := demo.New(demo.Options{})
	_, pace := configuredPace()
	run := agent.Run{ID: "bench", ThreadID: "bench", UserID: "bench",
		Messages: []agent.Message{{Role: "user", Content: o.message}}}
	end := time.Now().Add(o.baseline)
	var (
		mu  sync.Mutex
		out []time.Duration
		wg  sync.WaitGroup
	)
	for i := range o.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Staggered over one run, as the gateway's users are in
			// steady state, so that timers do not all fire at once.
			time.Sleep(pace * time.Duration(i) / time.Duration(o.users))
			for time.Now().Before(end) {
				rec := &agenttest.Recorder{}
				t0 := time.Now()
				if err := a.Run(context.Background(), run, rec); err != nil {
					fmt.Fprintln(os.Stderr, "baseline run:", err)
					return
				}
				d := time.Since(t0)
				if e, ok := rec.Terminal(); !ok || e.Type != protocol.TypeAgentCompleted {
					fmt.Fprintln(os.Stderr, "baseline run did not complete:", rec)
					return
				}
				mu.Lock()
				out = append(out, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(out)
	return out
}

type results struct {
	ack, started, done  []time.Duration // sorted
	errors              int64
	aguiFirst, aguiDone []time.Duration // sorted
	aguiErrors          int64
}

// measure connects the users and runs the closed loops.
func measure(addr string, o options) (*results, error) {
	signer := auth.NewSigner([]byte(secret))
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conns := make([]*websocket.Conn, o.users)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	for u := range o.users {
		tok, _, err := signer.Sign("user-"+strconv.Itoa(u), time.Hour, "", "")
		if err != nil {
			return nil, err
		}
		c, _, err := d.Dial("ws://"+addr+"/ws", http.Header{"Authorization": {"Bearer " + tok}})
		if err != nil {
			return nil, fmt.Errorf("dial user %d: %w", u, err)
		}
		conns[u] = c
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := c.ReadMessage()
		if err == nil {
			var f protocol.ServerFrame
			if f, err = protocol.DecodeServerFrame(msg); err == nil && f.Type != protocol.TypeConnectionEstablished {
				err = fmt.Errorf("first frame %s", f.Type)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("user %d: no connection_established (%v)", u, err)
		}
	}

	start := time.Now()
	from := start.Add(o.warmup)
	to := from.Add(o.duration)
	var (
		mu   sync.Mutex
		res  results
		errs errCount
		wg   sync.WaitGroup
	)
	report := errs.report
	if o.aguiUsers > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			measureAGUI(addr, o, from, to, &res, &mu)
		}()
	}
	for u, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			threadID := ""
			for n := 0; ; n++ {
				t0 := time.Now()
				if !t0.Before(to) {
					return
				}
				id := "r" + strconv.Itoa(n)
				m := protocol.Frame{Type: protocol.TypeUserMessage, ID: id, Content: o.message}
				if o.sameThread {
					m.ThreadID = threadID
				}
				if err := c.WriteMessage(websocket.TextMessage, protocol.EncodeFrame(&m)); err != nil {
					report(fmt.Errorf("user %d: send: %w", u, err))
					return
				}
				var tAck, tStarted, tDone time.Duration
				runID := ""
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				for tDone == 0 {
					_, msg, err := c.ReadMessage()
					now := time.Since(t0)
					if err != nil {
						report(fmt.Errorf("user %d: read: %w", u, err))
						return
					}
					f, err := protocol.DecodeServerFrame(msg)
					if err != nil {
						report(fmt.Errorf("user %d: frame %q: %w", u, msg, err))
						return
					}
					switch {
					case f.Type == protocol.TypeAck && f.Ref == id:
						tAck, runID, threadID = now, f.RunID, f.ThreadID
					case f.Type == protocol.TypeError && f.Ref == id:
						report(fmt.Errorf("user %d: %w", u, f.Err()))
						tDone = -1 // next message
					case runID == "" || f.RunID != runID:
					case f.Type == protocol.TypeAgentStarted:
						tStarted = now
					case f.Type == protocol.TypeAgentCompleted:
						tDone = now
					case f.Type == protocol.TypeAgentError:
						d, _ := f.Event().AgentError()
						report(fmt.Errorf("user %d: agent_error %s", u, d.Code))
						tDone = -1
					}
				}
				if tDone < 0 || t0.Before(from) {
					continue
				}
				mu.Lock()
				res.ack = append(res.ack, tAck)
				res.started = append(res.started, tStarted)
				res.done = append(res.done, tDone)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.errors = errs.done("first error:")
	slices.Sort(res.ack)
	slices.Sort(res.started)
	slices.Sort(res.done)
	slices.Sort(res.aguiFirst)
	slices.Sort(res.aguiDone)
	return &res, nil
}

// measureAGUI runs o.aguiUsers closed loops over POST /api/v1/agui until
// to, recording into res (under mu) the runs sent from from on.
func measureAGUI(addr string, o options, from, to time.Time, res *results, mu *sync.Mutex) {
	signer := auth.NewSigner([]byte(secret))
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.aguiUsers}}
	var (
		wg   sync.WaitGroup
		errs errCount
	)
	report := errs.report
	for u := range o.aguiUsers {
		tok, _, err := signer.Sign("agui-user-"+strconv.Itoa(u), time.Hour, "", "")
		if err != nil {
			report(err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				t0 := time.Now()
				if !t0.Before(to) {
					return
				}
				first, done, err := aguiRun(hc, addr, tok, fmt.Sprintf("u%d-r%d", u, n), o.message)
				if err != nil {
					report(fmt.Errorf("AG-UI user %d: %w", u, err))
					time.Sleep(100 * time.Millisecond)
					continue
				}
				if t0.Before(from) {
					continue
				}
				mu.Lock()
				res.aguiFirst = append(res.aguiFirst, first)
				res.aguiDone = append(res.aguiDone, done)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.aguiErrors = errs.done("first AG-UI error:")
}

// aguiRun sends one run request (a new thread) and reads its answer to
// RUN_FINISHED: the times from the send to the first event and to the end.
func aguiRun(hc *http.Client, addr, tok, msgID, content string) (first, done time.Duration, err error) {
	body, _ := json.Marshal(agui.RunAgentInput{Messages: []agui.Message{{ID: msgID, Role: agui.RoleUser, Content: agui.String(content)}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/v1/agui", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok)
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	r := sse.NewReader(resp.Body, 0)
	for {
		ev, err := r.Next()
		if err != nil {
			return 0, 0, fmt.Errorf("read: %w", err)
		}
		now := time.Since(t0)
		if first == 0 {
			first = now
		}
		var e agui.Event
		if err := json.Unmarshal(ev.Data, &e); err != nil {
			return 0, 0, err
		}
		switch e.Type {
		case agui.RunFinished:
			return first, now, nil
		case agui.RunError:
			return 0, 0, fmt.Errorf("RUN_ERROR %s", e.Code)
		}
	}
}

// errCount counts the errors of concurrent loops and keeps the first.
type errCount struct {
	n     atomic.Int64
	first atomic.Value
}

func (c *errCount) report(err error) {
	if c.n.Add(1) == 1 {
		c.first.Store(err)
	}
}

// done prints the first error, if any, after label and returns the count.
func (c *errCount) done(label string) int64 {
	if e := c.first.Load(); e != nil {
		fmt.Fprintln(os.Stderr, label, e)
	}
	return c.n.Load()
}

// q is the p-quantile of sorted ds.
func q(ds []time.Duration, p float64) time.Duration {
	return loadgen.Quantile(ds, p).Round(10 * time.Microsecond)
}
