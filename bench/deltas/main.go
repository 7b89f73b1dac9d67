// Command deltas measures what token deltas cost the server, with the delta
// window (--delta-window, runs/deltas.go) on and off in the same run.
//
//	go run ./bench/deltas -runs 100 -rate 1000 -duration 8s
//
// A fake fast model, served by this program as an HTTP agent (--agent http),
// answers every run with NDJSON agent_message_delta lines of one token each
// at -rate tokens/s (written every -tick, several lines a write), then
// agent_completed. -runs users, one WebSocket each, each keep one run going
// (a closed loop: the next user_message once agent_completed arrived) and
// read every event. Per round the server is started anew with one window
// (alternating on, off, on, off… for -rounds pairs, so drift on a shared box
// hits both) and, after a warm-up, measured for -duration: the server's CPU
// time (utime + stime of /proc/<pid>/stat), the tokens and the delta events
// the clients received; every completed run's deltas must join to the text
// the model sent and to its final_response.
//
// The server is pinned to CPU 0 and this program (model and clients) to the
// CPU 1 (benchproc.StartOn and PinSelf) when the machine has more
// than one; everything is on loopback and bounded by -timeout.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agentwire/agentwire/bench/internal/benchproc"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/protocol"
)

const secret = "deltas-benchmark-secret-0123456789abcdef01"

// token is every token the fake model sends: fixed, so received text
// counts tokens by its length.
const token = "tok "

type options struct {
	runs             int
	rate             int
	runTokens        int
	tick             time.Duration
	duration, warmup time.Duration
	window           time.Duration
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 100, "concurrent runs (users, one WebSocket and one run in flight each)")
	flag.IntVar(&o.rate, "rate", 1000, "tokens per second the fake model sends per run")
	flag.IntVar(&o.runTokens, "run-tokens", 2000, "tokens of one run's answer")
	flag.DurationVar(&o.tick, "tick", 5*time.Millisecond, "the fake model writes (and flushes) its due tokens this often")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "measured duration of each round")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured warm-up of each round")
	flag.DurationVar(&o.window, "window", 15*time.Millisecond, "--delta-window of the rounds with the window on")
	rounds := flag.Int("rounds", 1, "pairs of rounds (window on, then off)")
	prebuilt := flag.String("bin", "", "use this agentwire binary instead of building ./cmd/agentwire")
	timeout := flag.Duration("timeout", 3*time.Minute, "hard bound on the whole run")
	flag.Parse()
	if o.runs <= 0 || o.rate <= 0 || o.runTokens <= 0 || o.tick <= 0 || o.duration <= 0 || *rounds <= 0 {
		fmt.Fprintln(os.Stderr, "deltas: -runs, -rate, -run-tokens, -tick, -duration and -rounds must be positive")
		os.Exit(2)
	}

	run, _ := benchproc.NewRun("deltas", *timeout)
	defer run.Close()
	bin := run.Binary(*prebuilt)

	pinned := benchproc.CPUs() > 1
	if pinned {
		if err := benchproc.PinSelf(1); err != nil {
			run.Fail(fmt.Errorf("pin this program: %w", err))
		}
	}
	model, err := startModel(o)
	if err != nil {
		run.Fail(err)
	}
	defer model.Close()

	fmt.Printf("deltas: %d concurrent runs, fake model at %d tokens/s per run (%d tokens a run, a write every %v), %d × (window %v, off), %v measured each after %v\n",
		o.runs, o.rate, o.runTokens, o.tick, *rounds, o.window, o.duration, o.warmup)
	if pinned {
		fmt.Println("server pinned to CPU 0, model and clients to CPU 1")
	} else {
		fmt.Println("one CPU: nothing pinned")
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at start: %s", b)
	}

	var on, off result
	for r := range 2 * *rounds {
		window := o.window
		if r%2 == 1 {
			window = 0
		}
		dir, err := os.MkdirTemp(run.Tmp, "round")
		if err != nil {
			run.Fail(err)
		}
		cpu := -1
		if pinned {
			cpu = 0
		}
		s := run.StartOn(cpu, "agentwire", bin, []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir,
			"--jwt-secret", secret, "--log-level", "warn", "--agent", "http", "--agent-url", model.url,
			"--delta-window", window.String(), "--max-queue-bytes", strconv.Itoa(16 << 20)}, 30*time.Second)
		res, err := measure(s, o)
		s.Stop()
		if err != nil {
			run.Fail(fmt.Errorf("round %d (window %v): %w", r+1, window, err))
		}
		fmt.Printf("round %d window %-5v: %s\n", r+1, window, res)
		if window > 0 {
			on.add(res)
		} else {
			off.add(res)
		}
	}
	fmt.Println()
	fmt.Printf("RESULT %-12s | %12s | %12s | %14s | %12s | %10s | %6s\n", "window", "tokens/s", "deltas/s", "tokens/delta", "µs CPU/token", "CPU busy", "runs")
	for _, row := range []struct {
		name string
		r    result
	}{{o.window.String(), on}, {"off (0)", off}} {
		r := row.r
		fmt.Printf("RESULT %-12s | %12.0f | %12.0f | %14.1f | %12.2f | %9.0f%% | %6d\n", row.name,
			r.perSec(r.tokens), r.perSec(r.deltas), float64(r.tokens)/float64(max(r.deltas, 1)), r.cpuPerToken(), 100*r.cpu.Seconds()/r.wall.Seconds(), r.runs)
	}
	if on.tokens > 0 && off.tokens > 0 {
		fmt.Printf("RESULT window %v vs off: server CPU per token %.2f×, delta events per token %.3f×\n", o.window,
			on.cpuPerToken()/off.cpuPerToken(), (float64(on.deltas)/float64(on.tokens))/(float64(off.deltas)/float64(off.tokens)))
	}
}

// result is what one or more rounds measured.
type result struct {
	wall, cpu      time.Duration
	tokens, deltas int64 // received by the clients in the measured window
	runs           int64 // completed and checked in it
}

func (r *result) add(o result) {
	r.wall += o.wall
	r.cpu += o.cpu
	r.tokens += o.tokens
	r.deltas += o.deltas
	r.runs += o.runs
}

func (r result) perSec(n int64) float64 { return float64(n) / r.wall.Seconds() }

func (r result) cpuPerToken() float64 {
	return float64(r.cpu.Microseconds()) / float64(max(r.tokens, 1))
}

func (r result) String() string {
	return fmt.Sprintf("tokens/s %.0f, delta events/s %.0f (%.1f tokens each), server CPU %v of %v (%.2f µs/token), runs completed %d",
		r.perSec(r.tokens), r.perSec(r.deltas), float64(r.tokens)/float64(max(r.deltas, 1)), r.cpu.Round(time.Millisecond), r.wall.Round(time.Millisecond), r.cpuPerToken(), r.runs)
}

// model is the fake fast model: an HTTP agent service on loopback.
type model struct {
	url string
	srv *http.Server
}

func (m *model) Close() { _ = m.srv.Close() }

// startModel serves POST /run: o.runTokens agent_message_delta lines, one
// token each, at o.rate tokens/s, then agent_completed (no final_response:
// the answer is the deltas).
func startModel(o options) (*model, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	line, _ := json.Marshal(map[string]any{"type": protocol.TypeAgentMessageDelta, "data": map[string]string{"delta": token}})
	line = append(line, '\n')
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		fl := w.(http.Flusher)
		start := time.Now()
		t := time.NewTicker(o.tick)
		defer t.Stop()
		var buf bytes.Buffer
		for sent := 0; sent < o.runTokens; {
			due := min(int(time.Since(start).Seconds()*float64(o.rate))+1, o.runTokens)
			buf.Reset()
			for ; sent < due; sent++ {
				buf.Write(line)
			}
			if _, err := w.Write(buf.Bytes()); err != nil {
				return
			}
			fl.Flush()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, `{"type":%q,"data":{}}`+"\n", protocol.TypeAgentCompleted)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &model{url: "http://" + ln.Addr().String() + "/run", srv: srv}, nil
}

// measure connects o.runs users to s, keeps a run going for each, and
// measures the window after the warm-up.
func measure(s *benchproc.Server, o options) (result, error) {
	signer := auth.NewSigner([]byte(secret))
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	conns := make([]*websocket.Conn, o.runs)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	for u := range o.runs {
		tok, _, err := signer.Sign("user-"+strconv.Itoa(u), time.Hour, "", "")
		if err != nil {
			return result{}, err
		}
		c, _, err := d.Dial("ws://"+s.Addr+"/ws", http.Header{"Authorization": {"Bearer " + tok}})
		if err != nil {
			return result{}, fmt.Errorf("dial user %d: %w", u, err)
		}
		conns[u] = c
	}

	var (
		measuring      atomic.Bool
		tokens, deltas atomic.Int64
		runs           atomic.Int64
		failed         atomic.Pointer[error]
		stop           = make(chan struct{})
		wg             sync.WaitGroup
		fail           = func(err error) { failed.CompareAndSwap(nil, &err) }
		wantText       = strings.Repeat(token, o.runTokens)
	)
	for u, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := loop(c, wantText, stop, measuring.Load, &tokens, &deltas, &runs); err != nil {
				fail(fmt.Errorf("user %d: %w", u, err))
			}
		}()
	}
	time.Sleep(o.warmup)
	cpu0, err := benchproc.CPUTime(s.Pid())
	if err != nil {
		return result{}, err
	}
	t0 := time.Now()
	measuring.Store(true)
	time.Sleep(o.duration)
	measuring.Store(false)
	wall := time.Since(t0)
	cpu1, err := benchproc.CPUTime(s.Pid())
	if err != nil {
		return result{}, err
	}
	close(stop)
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now()) // unblock the readers
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		return result{}, *p
	}
	return result{wall: wall, cpu: cpu1 - cpu0, tokens: tokens.Load(), deltas: deltas.Load(), runs: runs.Load()}, nil
}

// loop is one user's closed loop: send a message, read its run to
// agent_completed, check the text, again, until stop. While measuring it
// counts the tokens and delta events received and the runs completed.
func loop(c *websocket.Conn, want string, stop <-chan struct{}, measuring func() bool, tokens, deltas, runs *atomic.Int64) error {
	var ev struct {
		Type  string `json:"type"`
		RunID string `json:"run_id"`
		Data  struct {
			Delta         string `json:"delta"`
			FinalResponse string `json:"final_response"`
			Code          string `json:"code"`
		} `json:"data"`
	}
	var text strings.Builder
	for n := 0; ; n++ {
		select {
		case <-stop:
			return nil
		default:
		}
		m := protocol.Frame{Type: protocol.TypeUserMessage, ID: "m" + strconv.Itoa(n), Content: "stream"}
		if err := c.WriteMessage(websocket.TextMessage, protocol.EncodeFrame(&m)); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		text.Reset()
		for done := false; !done; {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, msg, err := c.ReadMessage()
			if err != nil {
				select {
				case <-stop:
					return nil // the deadline set to end the round
				default:
				}
				return fmt.Errorf("read: %w", err)
			}
			ev.Type, ev.Data.Delta, ev.Data.FinalResponse = "", "", ""
			if err := json.Unmarshal(msg, &ev); err != nil {
				return fmt.Errorf("frame %.100q: %w", msg, err)
			}
			switch ev.Type {
			case protocol.TypeAgentMessageDelta:
				text.WriteString(ev.Data.Delta)
				if measuring() {
					deltas.Add(1)
					tokens.Add(int64(len(ev.Data.Delta) / len(token)))
				}
			case protocol.TypeAgentError:
				return fmt.Errorf("run %s: agent_error %s", ev.RunID, ev.Data.Code)
			case protocol.TypeError:
				return fmt.Errorf("error frame %.200s", msg)
			case protocol.TypeAgentCompleted:
				if text.String() != want || ev.Data.FinalResponse != want {
					return fmt.Errorf("run %s: deltas joined %d bytes, final_response %d bytes, want %d", ev.RunID, text.Len(), len(ev.Data.FinalResponse), len(want))
				}
				if measuring() {
					runs.Add(1)
				}
				done = true
			}
		}
	}
}
