package e2e

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// samples reads a /metrics body into its series (name{labels} exactly as
// written) and values.
func samples(t testing.TB, body string) map[string]float64 {
	t.Helper()
	out := make(map[string]float64)
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("/metrics line %q: not a sample", line)
		}
		out[line[:i]] = v
	}
	return out
}

// moved is one expected change of a series between two reads of /metrics:
// it grew by exactly want, or (atLeast) by want or more.
type moved struct {
	series  string
	want    float64
	atLeast bool
}

// waitMoved reads /metrics until every series moved as expected since
// before, failing with the last differences when it has not after a
// generous deadline (a series is counted as its event happens, which may be
// just after the client saw the event).
func waitMoved(t *testing.T, s *server, before map[string]float64, want []moved) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		after := samples(t, s.get("/metrics"))
		var bad []string
		for _, m := range want {
			got := after[m.series] - before[m.series]
			if _, ok := after[m.series]; !ok {
				bad = append(bad, m.series+" is not exported")
				continue
			}
			if got != m.want && !(m.atLeast && got > m.want) {
				bad = append(bad, fmt.Sprintf("%s moved by %v, want %v (at least: %v)", m.series, got, m.want, m.atLeast))
			}
		}
		if len(bad) == 0 {
			return after
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics did not move as expected:\n%s", strings.Join(bad, "\n"))
		}
		time.Sleep(50 * time.Millisecond) // polling /metrics, not waiting for time to pass
	}
}

// TestRunMetrics runs a completed run with a tool call, a failed run and a
// cancelled one through a real server, resumes (replayed over WebSocket and
// SSE, resync over WebSocket), and checks each run metric moved by what
// happened, and nothing else.
func TestRunMetrics(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	const user = "metrics-runs"
	tok := s.token(user)
	before := samples(t, s.get("/metrics"))
	c, est := s.connect(user)

	// Completed, with a calculator call.
	ack := c.ack("m1", "what is 2+3?", nil)
	frames := c.untilTerminal(ack.RunID, 10*time.Second)
	if end := frames[len(frames)-1]; end.Type != "agent_completed" || !strings.Contains(typesOf(frames), "tool_completed") {
		t.Fatalf("calculator run: %s", dump(frames))
	}
	// Failed.
	ack = c.ack("m2", "please fail", nil)
	frames = c.untilTerminal(ack.RunID, 10*time.Second)
	if end := frames[len(frames)-1]; end.Type != "agent_error" || dataOf(t, end).Code != "agent_failed" {
		t.Fatalf("failing run: %s", dump(frames))
	}
	// Cancelled, while it waits for its user (so surely still running).
	ack = c.ack("m3", "please ask me", nil)
	c.readUntil("input_required")
	c.send(map[string]any{"type": "stop_agent", "id": "m3s", "run_id": ack.RunID})
	if reply, _ := c.untilReply("m3s", 10*time.Second); reply.Type != "ack" {
		t.Fatalf("stop_agent: %s", reply.raw)
	}
	s.waitRunStatus(tok, ack.RunID, "cancelled")

	// Resumes: replayed over WebSocket and SSE, resync over WebSocket.
	r, _ := s.connect(user, withQuery(fmt.Sprintf("since=%d&epoch=%s", est.HeadSeq, est.Epoch)))
	if f := r.read(); f.Type != "user_message" || f.Seq != est.HeadSeq+1 {
		t.Fatalf("first replayed frame: %s", f.raw)
	}
	sc, _ := streamSSE(t, s.URL, fmt.Sprintf("since=%d&epoch=%s", est.HeadSeq, est.Epoch), bearer(tok))
	if it := sc.next(10 * time.Second); it.f.Type != "user_message" || it.f.Seq != est.HeadSeq+1 {
		t.Fatalf("first replayed SSE event: %s", it.f.raw)
	}
	x, _ := s.connect(user, withQuery("since=1&epoch=not-the-epoch"))
	if f := x.read(); f.Type != "resync_required" {
		t.Fatalf("want resync_required, got %s", f.raw)
	}

	var head struct {
		HeadSeq uint64 `json:"head_seq"`
	}
	s.do("GET", "/api/v1/events?since=0&limit=1", tok, nil, &head)
	appended := float64(head.HeadSeq - est.HeadSeq)
	if appended < 12 { // three runs of at least echo, start and end, a tool call
		t.Fatalf("only %v events appended", appended)
	}
	waitMoved(t, s, before, []moved{
		{series: `agentwire_runs_total{agent="demo",outcome="completed"}`, want: 1},
		{series: `agentwire_runs_total{agent="demo",outcome="failed"}`, want: 1},
		{series: `agentwire_runs_total{agent="demo",outcome="cancelled"}`, want: 1},
		{series: `agentwire_runs_total{agent="demo",outcome="timeout"}`, want: 0},
		{series: `agentwire_runs_total{agent="demo",outcome="node_lost"}`, want: 0},
		{series: `agentwire_run_duration_seconds_count{agent="demo"}`, want: 3},
		{series: `agentwire_first_event_seconds_count`, want: 3},
		{series: `agentwire_first_delta_seconds_count`, want: 1, atLeast: true},
		{series: `agentwire_tool_calls_total{ok="true",tool="calculator"}`, want: 1},
		{series: `agentwire_tool_calls_total{ok="false",tool="calculator"}`, want: 0},
		{series: `agentwire_tool_duration_seconds_count{tool="calculator"}`, want: 1},
		{series: `agentwire_resumes_total{result="replayed"}`, want: 2},
		{series: `agentwire_resumes_total{result="resync"}`, want: 1},
		// Every event of the user is an append (publishes of other
		// users there are none: the server is this test's).
		{series: `agentwire_stream_append_seconds_count{backend="memory"}`, want: appended},
	})
	after := samples(t, s.get("/metrics"))
	if d := after[`agentwire_first_delta_seconds_count`] - before[`agentwire_first_delta_seconds_count`]; d > 3 {
		t.Errorf("first_delta counted %v times for 3 runs", d)
	}
	if sum := after[`agentwire_run_duration_seconds_sum{agent="demo"}`] - before[`agentwire_run_duration_seconds_sum{agent="demo"}`]; sum <= 0 {
		t.Errorf("run durations sum to %v", sum)
	}
}

// TestRunMetricsTimeout: a run that times out is counted as timeout.
func TestRunMetricsTimeout(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--run-timeout", "500ms")
	const user = "metrics-timeout"
	before := samples(t, s.get("/metrics"))
	c, _ := s.connect(user)
	ack := c.ack("t1", "slow please", nil)
	frames := c.untilTerminal(ack.RunID, 10*time.Second)
	if end := frames[len(frames)-1]; end.Type != "agent_error" || dataOf(t, end).Code != "timeout" {
		t.Fatalf("terminal event: %s", end.raw)
	}
	waitMoved(t, s, before, []moved{
		{series: `agentwire_runs_total{agent="demo",outcome="timeout"}`, want: 1},
		{series: `agentwire_runs_total{agent="demo",outcome="cancelled"}`, want: 0},
		{series: `agentwire_run_duration_seconds_count{agent="demo"}`, want: 1},
	})
}

// TestRunMetricsPublishedToolCall: the tool calls an external agent
// publishes into its run are counted as the built-in agents' are, and the
// tool label of a name past the cap, or not a fit label, is other.
func TestRunMetricsPublishedToolCall(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	const user = "metrics-publish"
	before := samples(t, s.get("/metrics"))
	c, _ := s.connect(user)
	ack := c.ack("p1", "please ask me", nil) // waits for its user: still running while we publish
	c.readUntil("input_required")
	pub := func(typ string, data map[string]any) {
		t.Helper()
		code := s.do("POST", "/api/v1/publish", testAPIKey, map[string]any{"user_id": user, "type": typ, "run_id": ack.RunID, "data": data}, nil)
		if code != 200 {
			t.Fatalf("publish %s: %d", typ, code)
		}
	}
	pub("tool_executing", map[string]any{"tool_call_id": "x1", "tool": "search", "args": map[string]any{}})
	pub("tool_completed", map[string]any{"tool_call_id": "x1", "tool": "search", "ok": false, "duration_ms": 1500})
	long := strings.Repeat("t", 200)
	pub("tool_executing", map[string]any{"tool_call_id": "x2", "tool": long, "args": map[string]any{}})
	pub("tool_completed", map[string]any{"tool_call_id": "x2", "tool": long, "ok": true})
	c.send(map[string]any{"type": "stop_agent", "id": "p1s", "run_id": ack.RunID})
	if reply, _ := c.untilReply("p1s", 10*time.Second); reply.Type != "ack" {
		t.Fatalf("stop_agent: %s", reply.raw)
	}
	after := waitMoved(t, s, before, []moved{
		{series: `agentwire_tool_calls_total{ok="false",tool="search"}`, want: 1},
		{series: `agentwire_tool_duration_seconds_count{tool="search"}`, want: 1},
		{series: `agentwire_tool_calls_total{ok="true",tool="other"}`, want: 1},
		// No duration_ms: nothing observed.
		{series: `agentwire_tool_duration_seconds_count{tool="other"}`, want: 0},
	})
	if got := after[`agentwire_tool_duration_seconds_sum{tool="search"}`]; got != 1.5 {
		t.Errorf("search's duration sum is %v, want 1.5", got)
	}
}

// TestRunMetricsRedisAppend: with --redis-url, appends are timed under
// backend="redis".
func TestRunMetricsRedisAppend(t *testing.T) {
	t.Parallel()
	e := newClusterEnv(t)
	n := e.startNode("metrics", "")
	user := e.user("metrics-redis")
	before := samples(t, n.get("/metrics"))
	for i := range 3 {
		n.publish(user, "note", map[string]int{"n": i})
	}
	waitMoved(t, n.server, before, []moved{
		{series: `agentwire_stream_append_seconds_count{backend="redis"}`, want: 3},
	})
}
