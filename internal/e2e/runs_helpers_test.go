package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/testproc"
)

// Helpers for the agent-run suites (runs_test.go, agents_test.go).

// evData is the data of any run event, decoded loosely (section 4).
type evData struct {
	MessageID       string          `json:"message_id"`
	Content         string          `json:"content"`
	ClientMessageID string          `json:"client_message_id"`
	Agent           string          `json:"agent"`
	Text            string          `json:"text"`
	ToolCallID      string          `json:"tool_call_id"`
	Tool            string          `json:"tool"`
	Args            map[string]any  `json:"args"`
	OK              *bool           `json:"ok"`
	Result          json.RawMessage `json:"result"`
	DurationMS      *float64        `json:"duration_ms"`
	Error           string          `json:"error"`
	Delta           string          `json:"delta"`
	FinalResponse   string          `json:"final_response"`
	Code            string          `json:"code"`
	Message         string          `json:"message"`
}

func dataOf(t testing.TB, f frame) evData {
	t.Helper()
	var d evData
	if len(f.Data) == 0 {
		t.Fatalf("%s event without data: %s", f.Type, f.raw)
	}
	if err := json.Unmarshal(f.Data, &d); err != nil {
		t.Fatalf("%s data does not decode: %v: %s", f.Type, err, f.raw)
	}
	return d
}

func isTerminal(f frame) bool { return f.Type == "agent_completed" || f.Type == "agent_error" }

// devLogin gets a token through POST /auth/dev-login.
func devLogin(t testing.TB, s *server, user string) string {
	t.Helper()
	var out struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if code := s.do("POST", "/auth/dev-login", "", map[string]string{"user_id": user}, &out); code != 200 || out.Token == "" {
		t.Fatalf("dev-login %s: status %d, %+v", user, code, out)
	}
	if time.Until(out.ExpiresAt) <= 0 {
		t.Fatalf("dev-login token already expired: %v", out.ExpiresAt)
	}
	return out.Token
}

// connectToken dials with the bearer tok and reads connection_established.
func (s *server) connectToken(tok string, opts ...dialOpt) (*client, frame) {
	s.t.Helper()
	c, resp, err := s.dial(append([]dialOpt{withBearer(tok)}, opts...)...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		s.t.Fatalf("dial: %v (status %d)", err, status)
	}
	s.t.Cleanup(func() { c.c.Close() })
	f := c.read()
	if f.Type != "connection_established" {
		s.t.Fatalf("first frame is %s, want connection_established", f.raw)
	}
	return c, f
}

// userMessage sends a user_message with id and content (extra fields
// merged in).
func (c *client) userMessage(id, content string, extra map[string]any) {
	c.t.Helper()
	m := map[string]any{"type": "user_message", "id": id, "content": content}
	for k, v := range extra {
		m[k] = v
	}
	c.send(m)
}

// readBy reads the next frame, failing the test at deadline.
func (c *client) readBy(deadline time.Time, what string) frame {
	c.t.Helper()
	d := time.Until(deadline)
	if d <= 0 {
		c.t.Fatalf("timed out waiting for %s", what)
	}
	f, err := c.readWithin(d)
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", what, err)
	}
	return f
}

// untilTerminal reads frames until the terminal event of runID and returns
// every frame read (of any type, the terminal one last). It fails when no
// frame comes for idle: a run on a slow machine may take as long as its
// events keep coming.
func (c *client) untilTerminal(runID string, idle time.Duration) []frame {
	c.t.Helper()
	p := newProgressDeadline(idle)
	var out []frame
	for {
		f := c.readBy(p.next(), "the end of run "+runID)
		p.progress()
		out = append(out, f)
		if isTerminal(f) && f.RunID == runID {
			return out
		}
	}
}

// untilReply reads frames until the ack or error with ref, returning it and
// the frames read before it. It fails when no frame comes for idle.
func (c *client) untilReply(ref string, idle time.Duration) (frame, []frame) {
	c.t.Helper()
	p := newProgressDeadline(idle)
	var before []frame
	for {
		f := c.readBy(p.next(), "the reply to "+ref)
		p.progress()
		if (f.Type == "ack" || f.Type == "error") && f.Ref == ref {
			return f, before
		}
		before = append(before, f)
	}
}

// ack sends a user_message and returns its ack, which must be the very next
// frame (section 4: the reply comes before any event it causes).
func (c *client) ack(id, content string, extra map[string]any) frame {
	c.t.Helper()
	c.userMessage(id, content, extra)
	f := c.read()
	if f.Type != "ack" || f.Ref != id || f.ThreadID == "" || f.RunID == "" || f.MsgID == "" {
		c.t.Fatalf("first frame after user_message %s: %s, want its ack with thread_id, run_id, message_id", id, f.raw)
	}
	return f
}

var probeN atomic.Int64

// probe publishes a marker event for user and reads each of cs (the
// user's connections) until it arrives, returning the frames that came
// before it on any of them. Whatever the server was going to send them
// before the marker has then been seen.
func (s *server) probe(user string, cs ...*client) []frame {
	s.t.Helper()
	nonce := fmt.Sprintf("probe-%d", probeN.Add(1))
	s.publish(user, "test.probe", map[string]string{"nonce": nonce})
	p := newProgressDeadline(5 * time.Second)
	var before []frame
	for _, c := range cs {
		for {
			f := c.readBy(p.next(), "probe "+nonce)
			p.progress()
			if f.Type == "test.probe" && strings.Contains(string(f.Data), nonce) {
				break
			}
			before = append(before, f)
		}
	}
	return before
}

// stopAndDrain stops the server as SIGTERM does and reads each of cs until
// the server closes it with 1001, returning the frames that came first on
// any of them. A graceful stop waits for every agent to return and queues
// the stream's last events before it closes the sockets, so these are all
// the frames the server would ever have sent: what a pause could only
// suggest ("nothing more came"), this proves. The server is gone after it.
func (s *server) stopAndDrain(cs ...*client) []frame {
	s.t.Helper()
	stopped := make(chan error, 1)
	go func() { stopped <- s.stop() }()
	var before []frame
	for _, c := range cs {
		for {
			f, err := c.readWithin(30 * time.Second) // bounded by the drain and shutdown timeouts
			if err == nil {
				before = append(before, f)
				continue
			}
			if code := closeCode(err); code != 1001 {
				s.t.Fatalf("waiting for the close at shutdown: %v", err)
			}
			break
		}
	}
	if err := <-stopped; err != nil {
		s.t.Fatalf("server stop: %v", err)
	}
	return before
}

// ofRun keeps the frames whose run_id is runID.
func ofRun(fs []frame, runID string) []frame {
	var out []frame
	for _, f := range fs {
		if f.RunID == runID {
			out = append(out, f)
		}
	}
	return out
}

func typesOf(fs []frame) string {
	var b strings.Builder
	for i, f := range fs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.Type)
	}
	return b.String()
}

func dump(fs []frame) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("\n  ")
		b.Write(f.raw)
	}
	return b.String()
}

// checkStreamEvent checks the envelope every stream event of a run carries.
func checkStreamEvent(t testing.TB, f frame, runID, threadID, epoch string) {
	t.Helper()
	if f.Seq == 0 || f.RunID != runID || f.ThreadID != threadID || f.Epoch != epoch || f.Epoch == "" {
		t.Fatalf("event envelope (want run %s thread %s epoch %s, a seq): %s", runID, threadID, epoch, f.raw)
	}
	ts, err := time.Parse(time.RFC3339Nano, f.TS)
	if err != nil || !strings.HasSuffix(f.TS, "Z") {
		t.Fatalf("ts %q is not RFC 3339 UTC: %v: %s", f.TS, err, f.raw)
	}
	if d := time.Since(ts); d < -time.Minute || d > time.Minute {
		t.Fatalf("ts %q is %v away from now", f.TS, d)
	}
}

// checkRunOrder checks the per-run rules of section 4 on the events of one
// run, in stream order: optional user_message echo, exactly one
// agent_started first, exactly one terminal event last, every
// tool_completed after its tool_executing.
func checkRunOrder(t testing.TB, evs []frame) {
	t.Helper()
	i := 0
	if len(evs) > 0 && evs[0].Type == "user_message" {
		i = 1
	}
	if len(evs) <= i || evs[i].Type != "agent_started" {
		t.Fatalf("run does not start with agent_started: %s", typesOf(evs))
	}
	open := map[string]bool{}
	for j := i + 1; j < len(evs); j++ {
		f := evs[j]
		switch f.Type {
		case "agent_started", "user_message":
			t.Fatalf("%s in the middle of the run: %s", f.Type, typesOf(evs))
		case "tool_executing":
			open[dataOf(t, f).ToolCallID] = true
		case "tool_completed":
			id := dataOf(t, f).ToolCallID
			if !open[id] {
				t.Fatalf("tool_completed %s without its tool_executing: %s", id, dump(evs))
			}
			delete(open, id)
		}
		if isTerminal(f) != (j == len(evs)-1) {
			t.Fatalf("terminal events not exactly one and last: %s", typesOf(evs))
		}
	}
	if !isTerminal(evs[len(evs)-1]) {
		t.Fatalf("run has no terminal event: %s", typesOf(evs))
	}
}

// checkContiguous checks that seqs go strictly +1 from first.
func checkContiguous(t testing.TB, evs []frame, first uint64) {
	t.Helper()
	want := first
	for _, f := range evs {
		if f.Seq != want {
			t.Fatalf("seq %d where %d was due: %s", f.Seq, want, dump(evs))
		}
		want++
	}
}

// eventsOf returns the user's retained stream through GET /api/v1/events,
// following next from page to page.
func (s *server) eventsOf(tok string) []frame {
	s.t.Helper()
	var fs []frame
	for since := uint64(0); ; {
		var out struct {
			Epoch   string            `json:"epoch"`
			HeadSeq uint64            `json:"head_seq"`
			Events  []json.RawMessage `json:"events"`
			Next    *uint64           `json:"next"`
		}
		if code := s.do("GET", fmt.Sprintf("/api/v1/events?since=%d&limit=1000", since), tok, nil, &out); code != 200 {
			s.t.Fatalf("GET /api/v1/events: %d", code)
		}
		for _, raw := range out.Events {
			var f frame
			if err := json.Unmarshal(raw, &f); err != nil {
				s.t.Fatalf("event %s: %v", raw, err)
			}
			f.raw = raw
			fs = append(fs, f)
		}
		if out.Next == nil {
			break
		}
		since = *out.Next
	}
	return fs
}

// runInfo is the answer of GET /api/v1/runs/{id}.
type runInfo struct {
	ID        string     `json:"id"`
	ThreadID  string     `json:"thread_id"`
	Status    string     `json:"status"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
}

func (s *server) run(tok, id string) runInfo {
	s.t.Helper()
	var r runInfo
	if code := s.do("GET", "/api/v1/runs/"+id, tok, nil, &r); code != 200 {
		s.t.Fatalf("GET /api/v1/runs/%s: %d", id, code)
	}
	return r
}

// waitRunStatus polls the run until its status is want (the store is
// written before the terminal event, so this is normally immediate).
func (s *server) waitRunStatus(tok, id, want string) runInfo {
	s.t.Helper()
	var r runInfo
	if !testproc.WaitFor(3*time.Second, func() bool { r = s.run(tok, id); return r.Status == want }) {
		s.t.Fatalf("run %s status %q, want %q", id, r.Status, want)
	}
	return r
}

// publishRaw POSTs body to /api/v1/publish and returns the status and the
// answer's seq.
func (a *apiClient) publishRaw(body map[string]any) (int, uint64, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, 0, err
	}
	req, err := http.NewRequest("POST", a.base+"/api/v1/publish", bytes.NewReader(b))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	ans, _ := io.ReadAll(resp.Body)
	var out struct {
		Seq uint64 `json:"seq"`
	}
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(ans, &out); err != nil {
			return resp.StatusCode, 0, fmt.Errorf("answer %q: %w", ans, err)
		}
	}
	return resp.StatusCode, out.Seq, nil
}
