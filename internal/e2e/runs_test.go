package e2e

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Agent runs end to end (sections 3, 4, 7 and 9 of PROTOCOL.md) with the
// built-in demo agent.

const calcQuestion = "what is 12*(3+4)?"

// demoOrder is the demo agent's run for an arithmetic question.
var demoOrder = regexp.MustCompile(`^user_message agent_started (agent_thinking )+tool_executing tool_completed (agent_message_delta )+agent_completed$`)

func TestGoldenPath(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tok := devLogin(t, s, "alice")
	c, est := s.connectToken(tok)
	if est.UserID != "alice" {
		t.Fatalf("connection_established for %q", est.UserID)
	}

	ack := c.ack("q1", calcQuestion, nil)
	frames := c.untilTerminal(ack.RunID, 10*time.Second)
	if !demoOrder.MatchString(typesOf(frames)) {
		t.Fatalf("run frames: %s", dump(frames))
	}
	for _, f := range frames {
		checkStreamEvent(t, f, ack.RunID, ack.ThreadID, est.Epoch)
	}
	checkContiguous(t, frames, est.HeadSeq+1)
	checkRunOrder(t, frames)

	var callID, msgID string
	var answer strings.Builder
	for _, f := range frames {
		d := dataOf(t, f)
		switch f.Type {
		case "user_message":
			if d.MessageID != ack.MsgID || d.Content != calcQuestion {
				t.Fatalf("echo: %s (ack %s)", f.raw, ack.raw)
			}
		case "agent_started":
			if d.Agent != "demo" {
				t.Fatalf("agent_started: %s", f.raw)
			}
		case "agent_thinking":
			if d.Text == "" {
				t.Fatalf("agent_thinking without text: %s", f.raw)
			}
		case "tool_executing":
			expr, _ := d.Args["expression"].(string)
			if d.Tool != "calculator" || d.ToolCallID == "" || !strings.Contains(expr, "12*(3+4)") {
				t.Fatalf("tool_executing: %s", f.raw)
			}
			callID = d.ToolCallID
		case "tool_completed":
			if d.ToolCallID != callID || d.Tool != "calculator" || d.OK == nil || !*d.OK ||
				string(d.Result) != "84" || d.DurationMS == nil || *d.DurationMS < 0 {
				t.Fatalf("tool_completed (call %s): %s", callID, f.raw)
			}
		case "agent_message_delta":
			if d.MessageID == "" || (msgID != "" && d.MessageID != msgID) {
				t.Fatalf("delta message_id: %s", f.raw)
			}
			msgID = d.MessageID
			answer.WriteString(d.Delta)
		case "agent_completed":
			if !strings.Contains(d.FinalResponse, "84") || d.FinalResponse != answer.String() ||
				d.MessageID != msgID || d.DurationMS == nil || *d.DurationMS < 0 {
				t.Fatalf("agent_completed %s; deltas %q, message_id %s", f.raw, answer.String(), msgID)
			}
		}
	}
	final := answer.String()

	// REST: the thread, its messages, the run.
	var threads struct {
		Threads []struct {
			ID        string    `json:"id"`
			Title     string    `json:"title"`
			CreatedAt time.Time `json:"created_at"`
			UpdatedAt time.Time `json:"updated_at"`
		} `json:"threads"`
	}
	if code := s.do("GET", "/api/v1/threads", tok, nil, &threads); code != 200 {
		t.Fatalf("GET threads: %d", code)
	}
	if len(threads.Threads) != 1 || threads.Threads[0].ID != ack.ThreadID || threads.Threads[0].Title != calcQuestion ||
		threads.Threads[0].CreatedAt.IsZero() || threads.Threads[0].UpdatedAt.IsZero() {
		t.Fatalf("threads: %+v, want the thread %s titled %q", threads, ack.ThreadID, calcQuestion)
	}
	var msgs struct {
		Messages []struct {
			ID        string    `json:"id"`
			Role      string    `json:"role"`
			Content   string    `json:"content"`
			RunID     string    `json:"run_id"`
			CreatedAt time.Time `json:"created_at"`
		} `json:"messages"`
	}
	if code := s.do("GET", "/api/v1/threads/"+ack.ThreadID+"/messages", tok, nil, &msgs); code != 200 {
		t.Fatalf("GET messages: %d", code)
	}
	if len(msgs.Messages) != 2 {
		t.Fatalf("messages: %+v", msgs)
	}
	if m := msgs.Messages[0]; m.ID != ack.MsgID || m.Role != "user" || m.Content != calcQuestion || m.RunID != ack.RunID || m.CreatedAt.IsZero() {
		t.Fatalf("user message: %+v", m)
	}
	if m := msgs.Messages[1]; m.ID != msgID || m.Role != "assistant" || m.Content != final || m.RunID != ack.RunID || m.CreatedAt.IsZero() {
		t.Fatalf("assistant message: %+v, want id %s content %q", m, msgID, final)
	}
	r := s.run(tok, ack.RunID)
	if r.ID != ack.RunID || r.ThreadID != ack.ThreadID || r.Status != "completed" || r.StartedAt.IsZero() ||
		r.EndedAt == nil || r.EndedAt.Before(r.StartedAt) {
		t.Fatalf("run: %+v", r)
	}

	// Another user: 404 everywhere, never 403, and no trace in their lists.
	bob := devLogin(t, s, "bob")
	for _, p := range []string{"/api/v1/threads/" + ack.ThreadID + "/messages", "/api/v1/runs/" + ack.RunID} {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if code := s.do("GET", p, bob, nil, &e); code != 404 || e.Error.Code != "not_found" {
			t.Fatalf("bob GET %s: %d %+v, want 404 not_found", p, code, e)
		}
		if code := s.do("GET", p+"-nope", tok, nil, nil); code != 404 {
			t.Fatalf("alice GET of a missing %s: %d", p, code)
		}
	}
	threads.Threads = nil
	if code := s.do("GET", "/api/v1/threads", bob, nil, &threads); code != 200 || len(threads.Threads) != 0 {
		t.Fatalf("bob's threads: %d %+v", code, threads)
	}
	if evs := s.eventsOf(bob); len(evs) != 0 {
		t.Fatalf("bob's events: %s", dump(evs))
	}
}

func TestTwoTabsAndAStranger(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tab1, est := s.connect("alice")
	tab2, _ := s.connect("alice")
	bob, _ := s.connect("bob")

	ack := tab1.ack("m1", calcQuestion, map[string]any{"client_message_id": "tab1-1"})
	got1 := tab1.untilTerminal(ack.RunID, 10*time.Second)
	got2 := tab2.untilTerminal(ack.RunID, 10*time.Second)
	if !demoOrder.MatchString(typesOf(got1)) {
		t.Fatalf("tab 1: %s", dump(got1))
	}
	checkContiguous(t, got1, est.HeadSeq+1)
	if len(got1) != len(got2) {
		t.Fatalf("tab 1 got %d frames, tab 2 %d:%s\nvs%s", len(got1), len(got2), dump(got1), dump(got2))
	}
	for i := range got1 {
		if string(got1[i].raw) != string(got2[i].raw) {
			t.Fatalf("frame %d differs:\n tab 1 %s\n tab 2 %s", i, got1[i].raw, got2[i].raw)
		}
	}
	// Neither tab gets anything else of it; bob gets nothing at all.
	if rest := s.probe("alice", tab1, tab2); len(rest) != 0 {
		t.Fatalf("after the run: %s", dump(rest))
	}
	if leaked := s.probe("bob", bob); len(leaked) != 0 {
		t.Fatalf("bob received alice's frames: %s", dump(leaked))
	}
}

func TestStopAgent(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tok := s.token("alice")
	c, est := s.connect("alice")
	bob, _ := s.connect("bob")

	ack := c.ack("s1", "please be slow", nil)
	var seen []frame
	for len(seen) < 3 { // user_message, agent_started, agent_thinking
		seen = append(seen, c.read())
	}
	if typesOf(seen) != "user_message agent_started agent_thinking" {
		t.Fatalf("slow run starts with %s", dump(seen))
	}

	// Bob cannot stop it, and cannot learn that it exists.
	bob.send(map[string]any{"type": "stop_agent", "id": "b1", "run_id": ack.RunID})
	if f := bob.read(); f.Type != "error" || f.Code != "not_found" || f.Ref != "b1" {
		t.Fatalf("bob's stop_agent: %s", f.raw)
	}
	bob.send(map[string]any{"type": "stop_agent", "id": "b2", "run_id": "01NOSUCHRUN0000000000000000"})
	if f := bob.read(); f.Type != "error" || f.Code != "not_found" || f.Ref != "b2" {
		t.Fatalf("stop_agent of no run: %s", f.raw)
	}
	if r := s.run(tok, ack.RunID); r.Status != "running" {
		t.Fatalf("after bob's stop the run is %q", r.Status)
	}

	c.send(map[string]any{"type": "stop_agent", "id": "st1", "run_id": ack.RunID})
	reply, before := c.untilReply("st1", 5*time.Second)
	if reply.Type != "ack" || reply.RunID != ack.RunID {
		t.Fatalf("stop_agent reply: %s", reply.raw)
	}
	seen = append(seen, before...)
	if !isTerminal(seen[len(seen)-1]) {
		seen = append(seen, c.untilTerminal(ack.RunID, 5*time.Second)...)
	}
	end := seen[len(seen)-1]
	if d := dataOf(t, end); end.Type != "agent_error" || d.Code != "cancelled" || d.Message == "" || d.DurationMS == nil {
		t.Fatalf("terminal event: %s", end.raw)
	}
	if d := dataOf(t, end).DurationMS; *d > 1900 {
		t.Fatalf("cancelled run took %v ms: stop did not end it at once", *d)
	}
	checkRunOrder(t, seen)
	checkContiguous(t, seen, est.HeadSeq+1)
	r := s.waitRunStatus(tok, ack.RunID, "cancelled")
	if r.EndedAt == nil {
		t.Fatalf("cancelled run without ended_at: %+v", r)
	}

	// Stopping again is acknowledged.
	c.send(map[string]any{"type": "stop_agent", "id": "st2", "run_id": ack.RunID})
	f, after := c.untilReply("st2", 5*time.Second)
	if f.Type != "ack" {
		t.Fatalf("second stop_agent: %s", f.raw)
	}

	// Nothing of the run after its end, on the socket or in the stream, even
	// once the agent has returned: stopAndDrain waits for that (a graceful
	// stop waits for every agent) and then for the last queued frame.
	evs := ofRun(s.eventsOf(tok), ack.RunID)
	checkRunOrder(t, evs)
	if evs[len(evs)-1].Seq != end.Seq {
		t.Fatalf("stream after the stop: %s", dump(evs))
	}
	// Bob's socket too: he must have received nothing at all.
	if after = append(after, s.stopAndDrain(c, bob)...); len(after) != 0 {
		t.Fatalf("frames after agent_error and the second stop, alice's or bob's: %s", dump(after))
	}
}

func TestRunTimeout(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--run-timeout", "500ms")
	tok := s.token("alice")
	c, est := s.connect("alice")
	start := time.Now()
	ack := c.ack("t1", "slow please", nil)
	frames := c.untilTerminal(ack.RunID, 5*time.Second)
	elapsed := time.Since(start)
	end := frames[len(frames)-1]
	d := dataOf(t, end)
	if end.Type != "agent_error" || d.Code != "timeout" || d.Message == "" {
		t.Fatalf("terminal event: %s", end.raw)
	}
	if elapsed < 450*time.Millisecond || elapsed > 1800*time.Millisecond {
		t.Fatalf("timed out after %v with --run-timeout 500ms", elapsed)
	}
	checkRunOrder(t, frames)
	checkContiguous(t, frames, est.HeadSeq+1)
	s.waitRunStatus(tok, ack.RunID, "timeout")
	// Deterministic "nothing after": the stop waits for the agent to return.
	if after := ofRun(s.stopAndDrain(c), ack.RunID); len(after) != 0 {
		t.Fatalf("events after the timeout: %s", dump(after))
	}
}

func TestTooManyRuns(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--max-runs-per-user", "2")
	tok := s.token("alice")
	c, _ := s.connect("alice")
	for i := 1; i <= 3; i++ {
		c.userMessage(fmt.Sprintf("m%d", i), fmt.Sprintf("slow number %d", i), nil)
	}
	var (
		acks   = map[string]frame{}
		frames []frame
		tooMny frame
	)
	p := newProgressDeadline(10 * time.Second)
	for done := 0; done < 2; {
		f := c.readBy(p.next(), "two completed runs")
		p.progress()
		switch {
		case f.Type == "ack":
			acks[f.Ref] = f
		case f.Type == "error":
			if tooMny.Type != "" {
				t.Fatalf("second error: %s", f.raw)
			}
			tooMny = f
		default:
			frames = append(frames, f)
			if isTerminal(f) {
				done++
			}
		}
	}
	if tooMny.Code != "too_many_runs" || tooMny.Ref != "m3" || tooMny.Message == "" {
		t.Fatalf("third message answer: %s", tooMny.raw)
	}
	if len(acks) != 2 || acks["m1"].RunID == "" || acks["m2"].RunID == "" {
		t.Fatalf("acks: %v", acks)
	}
	for _, ref := range []string{"m1", "m2"} {
		run := ofRun(frames, acks[ref].RunID)
		checkRunOrder(t, run)
		if end := run[len(run)-1]; end.Type != "agent_completed" {
			t.Fatalf("run %s ended with %s", ref, end.raw)
		}
		s.waitRunStatus(tok, acks[ref].RunID, "completed")
	}
	// The refused message started nothing and stored nothing.
	starts := 0
	for _, e := range s.eventsOf(tok) {
		if e.Type == "agent_started" {
			starts++
		}
		if strings.Contains(string(e.Data), "slow number 3") {
			t.Fatalf("refused message reached the stream: %s", e.raw)
		}
	}
	if starts != 2 {
		t.Fatalf("%d runs started, want 2", starts)
	}
	// A slot is free again.
	ack := c.ack("m4", "what is 2+3?", nil)
	if end := c.untilTerminal(ack.RunID, 5*time.Second); end[len(end)-1].Type != "agent_completed" {
		t.Fatalf("run after the limit: %s", dump(end))
	}
}

func TestIdempotentResend(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tok := s.token("alice")
	c, _ := s.connect("alice")
	extra := map[string]any{"client_message_id": "idem-1"}
	first := c.ack("a1", calcQuestion, extra)
	// Again while the run is going, then again after it ended.
	c.userMessage("a2", calcQuestion, extra)
	second, _ := c.untilReply("a2", 5*time.Second)
	c.untilTerminal(first.RunID, 10*time.Second)
	c.userMessage("a3", calcQuestion, extra)
	third, _ := c.untilReply("a3", 5*time.Second)
	for _, a := range []frame{second, third} {
		if a.Type != "ack" || a.ThreadID != first.ThreadID || a.RunID != first.RunID || a.MsgID != first.MsgID {
			t.Fatalf("resent ack %s, first %s", a.raw, first.raw)
		}
	}
	if rest := s.probe("alice", c); len(rest) != 0 {
		t.Fatalf("a resend produced events: %s", dump(rest))
	}
	count := map[string]int{}
	for _, e := range s.eventsOf(tok) {
		count[e.Type]++
	}
	if count["agent_started"] != 1 || count["user_message"] != 1 || count["agent_completed"] != 1 {
		t.Fatalf("events by type after 3 sends with one client_message_id: %v", count)
	}
	var msgs struct {
		Messages []json.RawMessage `json:"messages"`
	}
	s.do("GET", "/api/v1/threads/"+first.ThreadID+"/messages", tok, nil, &msgs)
	if len(msgs.Messages) != 2 {
		t.Fatalf("%d messages stored, want the question and one answer", len(msgs.Messages))
	}
}

func TestAgentFails(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tok := s.token("alice")
	c, _ := s.connect("alice")
	ack := c.ack("f1", "please fail now", nil)
	frames := c.untilTerminal(ack.RunID, 5*time.Second)
	checkRunOrder(t, frames)
	end := frames[len(frames)-1]
	if d := dataOf(t, end); end.Type != "agent_error" || d.Code != "agent_failed" || d.Message == "" {
		t.Fatalf("terminal: %s", end.raw)
	}
	s.waitRunStatus(tok, ack.RunID, "failed")

	// The server still serves, in the same thread too.
	next := c.ack("f2", "what is 2+3?", map[string]any{"thread_id": ack.ThreadID})
	if next.ThreadID != ack.ThreadID {
		t.Fatalf("thread not kept: %s", next.raw)
	}
	frames = c.untilTerminal(next.RunID, 5*time.Second)
	end = frames[len(frames)-1]
	if d := dataOf(t, end); end.Type != "agent_completed" || !strings.Contains(d.FinalResponse, "5") {
		t.Fatalf("next run: %s", dump(frames))
	}
}

func TestDisconnectDuringSlowRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		ended bool          // away until the run's end is in the stream: all of it replayed
		away  time.Duration // else away for this long (pacing: about a third of the run), then replay and live
	}{
		{"back after the run ended", true, 0},
		{"back mid-run", false, 700 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t)
			c, est := s.connect("alice")
			ack := c.ack("d1", "slow answer please", nil)
			seen := []frame{c.read(), c.read(), c.read()}
			if typesOf(seen) != "user_message agent_started agent_thinking" {
				t.Fatalf("run starts with %s", dump(seen))
			}
			last := seen[len(seen)-1].Seq
			_ = c.c.UnderlyingConn().Close() // abrupt: no close frame

			if tc.ended {
				tok := s.token("alice")
				ended := func() bool {
					evs := ofRun(s.eventsOf(tok), ack.RunID)
					return len(evs) > 0 && isTerminal(evs[len(evs)-1])
				}
				appended := func() int64 { return int64(len(s.eventsOf(tok))) }
				if !waitProgress(5*time.Second, appended, ended) {
					t.Fatal("the run does not end while its client is away")
				}
			} else {
				time.Sleep(tc.away)
			}
			q := fmt.Sprintf("since=%d&epoch=%s", last, url.QueryEscape(est.Epoch))
			c2, est2 := s.connect("alice", withQuery(q))
			if est2.Epoch != est.Epoch {
				t.Fatalf("epoch changed: %s", est2.raw)
			}
			rest := c2.untilTerminal(ack.RunID, 5*time.Second)
			if rest[len(rest)-1].Type != "agent_completed" {
				t.Fatalf("run ended with %s", rest[len(rest)-1].raw)
			}
			for _, f := range rest {
				if f.Type == "resync_required" {
					t.Fatalf("resync_required instead of the replay: %s", f.raw)
				}
				checkStreamEvent(t, f, ack.RunID, ack.ThreadID, est.Epoch)
			}
			checkContiguous(t, rest, last+1)
			all := append(append([]frame(nil), seen...), rest...)
			checkRunOrder(t, all)
			// Exactly once: nothing replayed twice after the live switch.
			if dup := s.probe("alice", c2); len(dup) != 0 {
				t.Fatalf("after the terminal event: %s", dump(dup))
			}
		})
	}
}

func TestManyUsersConcurrentRuns(t *testing.T) {
	// Not parallel: 100 concurrent runs would skew the timing-bounded load
	// suites on a 2-core box; sequential tests run alone.
	const users = 100
	s := startServer(t)
	type result struct {
		ack    frame
		frames []frame
		err    error
	}
	conns := make([]*websocket.Conn, users)
	for i := range conns {
		c, _, err := dialWS(nil, s, s.token(fmt.Sprintf("user-%d", i)), "")
		if err != nil {
			t.Fatalf("user %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	results := make([]result, users)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			c := conns[i]
			<-start
			msg := fmt.Sprintf(`{"type":"user_message","id":"q","content":"what is 2+3?","client_message_id":"u%d"}`, i)
			if r.err = c.WriteMessage(websocket.TextMessage, []byte(msg)); r.err != nil {
				return
			}
			for {
				// Per frame: 100 runs on a loaded box take as long as they
				// keep moving.
				f, err := readFrame(c, 10*time.Second)
				if err != nil {
					r.err = fmt.Errorf("after %d frames: %w", len(r.frames), err)
					return
				}
				if f.Type == "ack" && r.ack.Type == "" {
					r.ack = f
					continue
				}
				r.frames = append(r.frames, f)
				if isTerminal(f) && r.ack.Type != "" && f.RunID == r.ack.RunID {
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()

	owner := map[string]int{} // run id and thread id → user
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("user %d: %v%s", i, r.err, dump(r.frames))
		}
		if r.ack.Ref != "q" || r.ack.RunID == "" || r.ack.ThreadID == "" {
			t.Fatalf("user %d ack: %s", i, r.ack.raw)
		}
		for _, id := range []string{r.ack.RunID, r.ack.ThreadID} {
			if u, dup := owner[id]; dup {
				t.Fatalf("users %d and %d share id %s", u, i, id)
			}
			owner[id] = i
		}
	}
	for i := range results {
		r := &results[i]
		// Anything still on its way to this user arrives before the probe.
		before, err := probeConn(s, conns[i], fmt.Sprintf("user-%d", i))
		if err != nil {
			t.Fatalf("user %d probe: %v", i, err)
		}
		r.frames = append(r.frames, before...)
		for _, f := range r.frames {
			if f.RunID != r.ack.RunID || f.ThreadID != r.ack.ThreadID {
				t.Fatalf("user %d (run %s) received a frame of user %d: %s", i, r.ack.RunID, owner[f.RunID], f.raw)
			}
		}
		if !demoOrder.MatchString(typesOf(r.frames)) {
			t.Fatalf("user %d: %s", i, dump(r.frames))
		}
		checkContiguous(t, r.frames, 1)
		if d := dataOf(t, r.frames[len(r.frames)-1]); !strings.Contains(d.FinalResponse, "5") {
			t.Fatalf("user %d answer %q", i, d.FinalResponse)
		}
	}
}

// probeConn is probe for a raw connection.
func probeConn(s *server, c *websocket.Conn, user string) ([]frame, error) {
	nonce := fmt.Sprintf("probe-%d", probeN.Add(1))
	s.publish(user, "test.probe", map[string]string{"nonce": nonce})
	var before []frame
	for {
		f, err := readFrame(c, 5*time.Second) // per frame: a long flood before the marker is fine
		if err != nil {
			return before, err
		}
		if f.Type == "test.probe" && strings.Contains(string(f.Data), nonce) {
			return before, nil
		}
		before = append(before, f)
	}
}

func TestPublishIntoRunningRun(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tok := s.token("alice")
	c, _ := s.connect("alice")
	ack := c.ack("p1", "slow one please", nil)
	c.readUntil("agent_started")

	type answer struct {
		Seq   uint64                         `json:"seq"`
		Epoch string                         `json:"epoch"`
		Error struct{ Code, Message string } `json:"error"`
	}
	pub := func(user string) (int, answer) {
		var a answer
		code := s.do("POST", "/api/v1/publish", testAPIKey, map[string]any{
			"user_id": user, "type": "agent_thinking", "run_id": ack.RunID,
			"data": map[string]string{"text": "a thought from outside"},
		}, &a)
		return code, a
	}
	// Another user's name with this run id is refused, as for a run that
	// does not exist.
	if code, a := pub("bob"); code != 409 {
		t.Fatalf("publish into alice's run as bob: %d %+v", code, a)
	}
	code, a := pub("alice")
	if code != 200 || a.Seq == 0 || a.Epoch == "" {
		t.Fatalf("publish into the running run: %d %+v", code, a)
	}
	frames := c.untilTerminal(ack.RunID, 5*time.Second)
	var got *frame
	for i, f := range frames {
		if f.Type == "agent_thinking" && dataOf(t, f).Text == "a thought from outside" {
			got = &frames[i]
		}
	}
	if got == nil || got.Seq != a.Seq || got.Epoch != a.Epoch || got.RunID != ack.RunID || got.ThreadID != ack.ThreadID {
		t.Fatalf("published event (answer seq %d): %s", a.Seq, dump(frames))
	}
	if frames[len(frames)-1].Type != "agent_completed" {
		t.Fatalf("run ended with %s", frames[len(frames)-1].raw)
	}
	checkRunOrder(t, ofRun(s.eventsOf(tok), ack.RunID))

	if code, a := pub("alice"); code != 409 || a.Error.Code == "" {
		t.Fatalf("publish after the run's end: %d %+v", code, a)
	}
	if rest := s.probe("alice", c); len(rest) != 0 {
		t.Fatalf("refused publish reached the stream: %s", dump(rest))
	}
}

// TestPublishIntoRunAnswersItsOwnSeq: the seq in the 200 answer of a
// publish into a running run must be the seq of the event that publish
// appended (section 7: → {"seq","epoch"}), also when several publishes (or
// the agent) append to the same run at once.
//
// Fails at aee29d9: runs/emitter.go (*emitter).publish appends under e.mu
// (publishEvent), unlocks, locks again and returns e.last, which by then
// may be another publisher's (or the agent's) later event.
func TestPublishIntoRunAnswersItsOwnSeq(t *testing.T) {
	// Not parallel: it floods one run with publishes for 1.2 s.
	s := startServer(t, "--retention-events", "100000")
	tok := s.token("alice")
	c, _ := s.connect("alice")
	started := time.Now()
	ack := c.ack("p1", "slow one please", nil)
	c.c.Close() // the run goes on; nobody reads the flood
	api := newAPIClient(t, s)

	// Rounds of simultaneous publishes for most of the 2 s run.
	const perRound = 64
	answered := map[string]uint64{} // text → seq in the answer
	var mu sync.Mutex
	for r := 0; ; r++ {
		if time.Since(started) > 1200*time.Millisecond {
			break
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range perRound {
			text := fmt.Sprintf("thought %d.%d", r, i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				code, seq, err := api.publishRaw(map[string]any{"user_id": "alice", "type": "agent_thinking",
					"run_id": ack.RunID, "data": map[string]string{"text": text}})
				if err != nil || code != 200 {
					t.Errorf("publish %q: %d %v", text, code, err)
					return
				}
				mu.Lock()
				answered[text] = seq
				mu.Unlock()
			}()
		}
		close(start)
		wg.Wait()
	}
	if t.Failed() {
		t.FailNow()
	}
	s.waitRunStatus(tok, ack.RunID, "completed")

	actual := map[string]uint64{}
	for _, e := range ofRun(s.eventsOf(tok), ack.RunID) {
		if e.Type == "agent_thinking" {
			actual[dataOf(t, e).Text] = e.Seq
		}
	}
	wrong, example := 0, ""
	for text, seq := range answered {
		if actual[text] != seq {
			wrong++
			example = fmt.Sprintf("%q was answered seq %d but appended as seq %d", text, seq, actual[text])
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of %d concurrent publishes into one run answered another event's seq, e.g. %s",
			wrong, len(answered), example)
	}
}
