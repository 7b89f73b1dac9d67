package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/protocol"
)

// The SSE transport (GET /api/v1/stream) and plain-HTTP sending (POST
// /api/v1/messages, POST /api/v1/runs/{id}/stop), PROTOCOL.md section 14.

// sseClient reads one GET /api/v1/stream response on its own goroutine.
type sseClient struct {
	t      testing.TB
	resp   *http.Response
	cancel context.CancelFunc
	items  chan sseItem

	mu       sync.Mutex
	comments []string
}

// sseItem is one event of the stream (its id and frame), or the stream's
// end (err: io.EOF when the server ended it).
type sseItem struct {
	id  string
	f   frame
	err error
}

// openSSE does GET base+/api/v1/stream?query with header; it returns the
// response whatever its status (the caller closes its body).
func openSSE(ctx context.Context, base, query string, header http.Header) (*http.Response, error) {
	u := base + "/api/v1/stream"
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	return http.DefaultClient.Do(req)
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// streamSSE opens the stream at base as header says, checks the answer's
// status and headers and reads connection_established.
func streamSSE(t testing.TB, base, query string, header http.Header) (*sseClient, frame) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := openSSE(ctx, base, query, header)
	if err != nil {
		cancel()
		t.Fatalf("GET /api/v1/stream: %v", err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET /api/v1/stream: %d %s", resp.StatusCode, b)
	}
	for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != v {
			t.Fatalf("GET /api/v1/stream: %s is %q, want %q", k, got, v)
		}
	}
	c := &sseClient{t: t, resp: resp, cancel: cancel, items: make(chan sseItem, 4096)}
	t.Cleanup(c.close)
	r := sse.NewReader(resp.Body, 1<<20)
	r.OnComment(func(s string) {
		c.mu.Lock()
		c.comments = append(c.comments, s)
		c.mu.Unlock()
	})
	go func() {
		defer close(c.items)
		for {
			ev, err := r.Next()
			if err != nil {
				c.items <- sseItem{err: err}
				return
			}
			var f frame
			if err := json.Unmarshal(ev.Data, &f); err != nil {
				c.items <- sseItem{err: fmt.Errorf("data %q is not a frame: %w", ev.Data, err)}
				return
			}
			f.raw = ev.Data
			// The id in force: EventSource keeps the last one; an event
			// without its own id line is one that is not a stream event.
			id := ""
			if f.Seq > 0 {
				id = ev.ID
			}
			c.items <- sseItem{id: id, f: f}
		}
	}()
	first := c.next(5 * time.Second)
	if first.f.Type != "connection_established" {
		t.Fatalf("first event: %s", first.f.raw)
	}
	return c, first.f
}

func (c *sseClient) close() {
	c.cancel()
	_ = c.resp.Body.Close()
}

// next returns the next event, failing the test after d without one or at
// the stream's end.
func (c *sseClient) next(d time.Duration) sseItem {
	c.t.Helper()
	it, err := c.nextOrEnd(d)
	if err != nil {
		c.t.Fatalf("SSE stream: %v", err)
	}
	return it
}

// nextOrEnd returns the next event, or the stream's end (io.EOF).
func (c *sseClient) nextOrEnd(d time.Duration) (sseItem, error) {
	select {
	case it, ok := <-c.items:
		if !ok {
			return sseItem{}, io.EOF
		}
		return it, it.err
	case <-time.After(d):
		return sseItem{}, fmt.Errorf("no event within %v", d)
	}
}

// until reads events until ok holds for one, returning all read.
func (c *sseClient) until(what string, ok func(frame) bool) []sseItem {
	c.t.Helper()
	var got []sseItem
	for {
		it, err := c.nextOrEnd(10 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for %s: %v (after %d events)", what, err, len(got))
		}
		got = append(got, it)
		if ok(it.f) {
			return got
		}
	}
}

// checkIDs checks that every stream event carries id <epoch>:<seq> and every
// other frame none.
func checkIDs(t testing.TB, items []sseItem) {
	t.Helper()
	for _, it := range items {
		want := ""
		if it.f.Seq > 0 {
			want = protocol.EventID(it.f.Epoch, it.f.Seq)
		}
		if it.id != want {
			t.Fatalf("id %q on %s, want %q", it.id, it.f.raw, want)
		}
	}
}

// post sends body (JSON, or a string as is) to path as bearer and returns
// the status and the answer.
func (s *server) post(path, tok string, body any) (int, []byte) {
	s.t.Helper()
	var raw json.RawMessage
	code := s.do("POST", path, tok, body, &raw)
	return code, raw
}

func sendAck(t testing.TB, s *server, tok string, body any) protocol.AckFrame {
	t.Helper()
	code, raw := s.post("/api/v1/messages", tok, body)
	var a struct {
		Type      string `json:"type"`
		Ref       string `json:"ref"`
		ThreadID  string `json:"thread_id"`
		RunID     string `json:"run_id"`
		MessageID string `json:"message_id"`
	}
	if code != 200 || json.Unmarshal(raw, &a) != nil || a.Type != "ack" || a.RunID == "" || a.ThreadID == "" || a.MessageID == "" {
		t.Fatalf("POST /api/v1/messages: %d %s, want the ack", code, raw)
	}
	return protocol.AckFrame{Ref: a.Ref, ThreadID: a.ThreadID, RunID: a.RunID, MessageID: a.MessageID}
}

func TestSSEStreamAndSending(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice, bob := s.token("sse-alice"), s.token("sse-bob")

	t.Run("refusals", func(t *testing.T) {
		cases := []struct {
			name, query string
			header      http.Header
			status      int
			code        string
		}{
			{"no credentials", "", nil, 401, "unauthorized"},
			{"JWT in the query", "token=" + alice, nil, 401, "unauthorized"},
			{"bad token", "", bearer("nope"), 401, "unauthorized"},
			{"unknown ticket", "ticket=nope", nil, 401, "unauthorized"},
			{"origin", "", http.Header{"Authorization": {"Bearer " + alice}, "Origin": {"https://evil.example"}}, 403, "forbidden_origin"},
			{"bad Last-Event-ID", "", http.Header{"Authorization": {"Bearer " + alice}, "Last-Event-Id": {"no-seq"}}, 400, "invalid_request"},
			{"bad since", "since=x", bearer(alice), 400, "invalid_request"},
		}
		for _, tc := range cases {
			resp, err := openSSE(context.Background(), s.URL, tc.query, tc.header)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || errorCode(b) != tc.code {
				t.Errorf("%s: %d %s, want %d %s", tc.name, resp.StatusCode, b, tc.status, tc.code)
			}
		}
		for _, c := range []struct{ method, path string }{{"POST", "/api/v1/stream"}, {"GET", "/api/v1/messages"}, {"GET", "/api/v1/runs/x/stop"}} {
			var raw json.RawMessage
			if code := s.do(c.method, c.path, alice, nil, &raw); code != 405 || errorCode(raw) != "method_not_allowed" {
				t.Errorf("%s %s: %d %s, want 405", c.method, c.path, code, raw)
			}
		}
		for _, c := range []struct {
			body   any
			status int
			code   string
		}{
			{"{", 400, "bad_json"},
			{`[1]`, 400, "bad_json"},
			{map[string]any{}, 400, "invalid_message"},
			{map[string]any{"content": ""}, 400, "invalid_message"},
			{map[string]any{"content": 5}, 400, "invalid_message"},
			{map[string]any{"content": "hi", "thread_id": "no-such-thread"}, 404, "not_found"},
			{`{"content":"` + strings.Repeat("x", 200<<10) + `"}`, 413, "too_large"},
		} {
			if code, raw := s.post("/api/v1/messages", alice, c.body); code != c.status || errorCode(raw) != c.code {
				t.Errorf("POST /api/v1/messages %.40v: %d %s, want %d %s", c.body, code, raw, c.status, c.code)
			}
		}
		if code, raw := s.post("/api/v1/messages", "", map[string]any{"content": "hi"}); code != 401 || errorCode(raw) != "unauthorized" {
			t.Errorf("POST /api/v1/messages without a token: %d %s", code, raw)
		}
		if code, raw := s.post("/api/v1/runs/no-such-run/stop", alice, nil); code != 404 || errorCode(raw) != "not_found" {
			t.Errorf("stop of an unknown run: %d %s", code, raw)
		}
	})

	// Alice streams over SSE and sends over HTTP: the golden path.
	tab, est := streamSSE(t, s.URL, "", bearer(alice))
	if est.UserID != "sse-alice" || est.HBms != 15000 || est.Protocol != protocol.Version {
		t.Fatalf("connection_established: %s", est.raw)
	}
	ack := sendAck(t, s, alice, map[string]any{"id": "m1", "content": "what is 12*(3+4)?", "client_message_id": "c1"})
	if ack.Ref != "m1" {
		t.Fatalf("ack ref %q, want m1", ack.Ref)
	}
	items := tab.until("the run's end", func(f frame) bool { return f.RunID == ack.RunID && isTerminal(f) })
	checkIDs(t, items)
	var run []frame
	for _, it := range items {
		run = append(run, it.f)
	}
	checkContiguous(t, run, est.HeadSeq+1)
	checkRunOrder(t, ofRun(run, ack.RunID))
	if last := run[len(run)-1]; last.Type != "agent_completed" || !strings.Contains(dataOf(t, last).FinalResponse, "84") {
		t.Fatalf("run ended with %s", last.raw)
	}
	// A retry with the same client_message_id gets the first ack.
	if again := sendAck(t, s, alice, map[string]any{"id": "m2", "content": "what is 12*(3+4)?", "client_message_id": "c1"}); again.RunID != ack.RunID || again.MessageID != ack.MessageID {
		t.Fatalf("retried message: %+v, want %+v", again, ack)
	}

	t.Run("isolation", func(t *testing.T) {
		bobTab, _ := streamSSE(t, s.URL, "", bearer(bob))
		if code, raw := s.post("/api/v1/runs/"+ack.RunID+"/stop", bob, nil); code != 404 || errorCode(raw) != "not_found" {
			t.Fatalf("bob stops alice's run: %d %s", code, raw)
		}
		if code, raw := s.post("/api/v1/messages", bob, map[string]any{"content": "hi", "thread_id": ack.ThreadID}); code != 404 || errorCode(raw) != "not_found" {
			t.Fatalf("bob writes in alice's thread: %d %s", code, raw)
		}
		// Everything bob's stream carries up to a marker published to him
		// is his own: nothing of alice's runs or threads.
		s.publish("sse-bob", "marker", map[string]any{})
		for _, it := range bobTab.until("bob's marker", func(f frame) bool { return f.Type == "marker" }) {
			if it.f.Type != "marker" {
				t.Fatalf("bob's stream carries %s", it.f.raw)
			}
		}
	})

	// Stop over HTTP ends a run with agent_error cancelled; another user's
	// stop of the running run is 404 and changes nothing.
	slow := sendAck(t, s, alice, map[string]any{"content": "please be slow", "thread_id": ack.ThreadID})
	tab.until("the slow run thinking", func(f frame) bool { return f.RunID == slow.RunID && f.Type == "agent_thinking" })
	if code, raw := s.post("/api/v1/runs/"+slow.RunID+"/stop", bob, nil); code != 404 || errorCode(raw) != "not_found" {
		t.Fatalf("bob stops alice's running run: %d %s", code, raw)
	}
	code, raw := s.post("/api/v1/runs/"+slow.RunID+"/stop", alice, nil)
	var stopAck frame
	if code != 200 || json.Unmarshal(raw, &stopAck) != nil || stopAck.Type != "ack" || stopAck.RunID != slow.RunID || stopAck.ThreadID != ack.ThreadID {
		t.Fatalf("stop: %d %s", code, raw)
	}
	end := tab.until("the stopped run's end", func(f frame) bool { return f.RunID == slow.RunID && isTerminal(f) })
	if last := end[len(end)-1].f; last.Type != "agent_error" || dataOf(t, last).Code != "cancelled" {
		t.Fatalf("stopped run ended with %s", last.raw)
	}
	// Stopping it again is acknowledged and changes nothing.
	if code, raw := s.post("/api/v1/runs/"+slow.RunID+"/stop", alice, nil); code != 200 {
		t.Fatalf("second stop: %d %s", code, raw)
	}

	t.Run("ticket", func(t *testing.T) {
		var tk struct {
			Ticket string `json:"ticket"`
		}
		if code := s.do("POST", "/api/v1/tickets", alice, nil, &tk); code != 200 {
			t.Fatalf("ticket: %d", code)
		}
		c, est := streamSSE(t, s.URL, "ticket="+url.QueryEscape(tk.Ticket), nil)
		if est.UserID != "sse-alice" {
			t.Fatalf("ticket stream of %q", est.UserID)
		}
		c.close()
		resp, err := openSSE(context.Background(), s.URL, "ticket="+url.QueryEscape(tk.Ticket), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("second use of the ticket: %d, want 401", resp.StatusCode)
		}
	})

	// Shutdown ends the response, saying why in a comment.
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := tab.nextOrEnd(10 * time.Second)
		if err == nil {
			continue
		}
		if !errors.Is(err, io.EOF) {
			t.Fatalf("at shutdown: %v, want the response's end", err)
		}
		break
	}
	tab.mu.Lock()
	defer tab.mu.Unlock()
	if n := len(tab.comments); n == 0 || tab.comments[n-1] != "close 1001 server shutting down" {
		t.Fatalf("comments at shutdown: %q", tab.comments)
	}
}

// TestSSEResumeAfterServerDrop: the server ends the response (the token
// expires: 4001), the client reconnects with Last-Event-ID and a fresh
// token, and gets every event exactly once while a publisher keeps going.
func TestSSEResumeAfterServerDrop(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	const user, total = "sse-dropped", 300
	short, _, err := s.signer.Sign(user, 2*time.Second, "", "")
	if err != nil {
		t.Fatal(err)
	}
	tab, est := streamSSE(t, s.URL, "", bearer(short))

	published := make(chan error, 1)
	go func() {
		for i := 1; i <= total; i++ {
			code, _, err := (&node{server: s}).status("POST", "/api/v1/publish", testAPIKey,
				map[string]any{"user_id": user, "type": "tick", "data": map[string]any{"i": i}})
			if err != nil || code != 200 {
				published <- fmt.Errorf("publish %d: %d %v", i, code, err)
				return
			}
			time.Sleep(10 * time.Millisecond) // pace: the drop lands mid-flow
		}
		published <- nil
	}()

	var seqs []uint64
	var epoch string
	read := func(c *sseClient) error {
		for {
			it, err := c.nextOrEnd(10 * time.Second)
			if err != nil {
				return err
			}
			if it.f.Seq == 0 {
				continue
			}
			if it.id != protocol.EventID(it.f.Epoch, it.f.Seq) {
				t.Fatalf("id %q on %s", it.id, it.f.raw)
			}
			seqs, epoch = append(seqs, it.f.Seq), it.f.Epoch
			if it.f.Seq == total {
				return nil
			}
		}
	}
	if err := read(tab); !errors.Is(err, io.EOF) {
		t.Fatalf("first response: %v, want the server to end it", err)
	}
	tab.mu.Lock()
	comments := append([]string(nil), tab.comments...)
	tab.mu.Unlock()
	if len(comments) == 0 || comments[len(comments)-1] != "close 4001 token expired" {
		t.Fatalf("comments: %q, want the close 4001", comments)
	}
	dropped := len(seqs)
	if dropped == 0 || dropped == total {
		t.Fatalf("the drop came after %d of %d events: it should cut the flow", len(seqs), total)
	}
	last := protocol.EventID(epoch, seqs[len(seqs)-1])
	// The header wins over a query the URL still carries (EventSource keeps
	// its URL).
	h := bearer(s.token(user))
	h.Set("Last-Event-ID", last)
	tab2, est2 := streamSSE(t, s.URL, "since=0&epoch="+url.QueryEscape(est.Epoch), h)
	if est2.Epoch != epoch {
		t.Fatalf("epoch changed: %s", est2.raw)
	}
	if err := read(tab2); err != nil {
		t.Fatal(err)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	for i, seq := range seqs {
		if seq != est.HeadSeq+uint64(i)+1 {
			t.Fatalf("seq %d at %d: not every event exactly once: %v", seq, i, seqs)
		}
	}
	t.Logf("dropped after %d events, resumed for %d", dropped, len(seqs)-dropped)
}

// TestSSEConnectionLimit: SSE and WebSocket connections share the per-user
// limit; a freed place can be taken again.
func TestSSEConnectionLimit(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--max-connections-per-user", "2")
	tok := s.token("sse-limited")
	s.connect("sse-limited")
	tab, _ := streamSSE(t, s.URL, "", bearer(tok))
	resp, err := openSSE(context.Background(), s.URL, "", bearer(tok))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || errorCode(b) != "too_many_connections" {
		t.Fatalf("third connection: %d %s, want 429 too_many_connections", resp.StatusCode, b)
	}
	tab.close()
	// The server notices the client left (its read of the idle request
	// ends) and frees the place.
	ok := waitProgress(10*time.Second, func() int64 { return 0 }, func() bool {
		resp, err := openSSE(context.Background(), s.URL, "", bearer(tok))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == 200
	})
	if !ok {
		t.Fatal("the SSE connection's place was not freed")
	}
}

// TestSSEThroughBufferingProxy: behind a reverse proxy set to buffer
// (httputil.ReverseProxy flushing once an hour), each event still arrives
// on its own: the server flushes every batch and marks the response
// unbufferable, and the proxy streams it.
func TestSSEThroughBufferingProxy(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	target, _ := url.Parse(s.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = time.Hour
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.URL.Path == "/api/v1/stream" && r.Header.Get("X-Accel-Buffering") != "no" {
			return errors.New("SSE answer without X-Accel-Buffering: no")
		}
		return nil
	}
	proxy := httptest.NewServer(rp)
	t.Cleanup(proxy.Close)

	const user = "sse-proxied"
	tab, _ := streamSSE(t, proxy.URL, "", bearer(s.token(user)))
	var worst time.Duration
	for i := range 20 {
		sent := time.Now()
		seq, _ := s.publish(user, "tick", map[string]any{"i": i})
		it := tab.next(5 * time.Second) // lockstep: the next publish waits for this event
		if it.f.Seq != seq {
			t.Fatalf("got %s, want seq %d", it.f.raw, seq)
		}
		worst = max(worst, time.Since(sent))
	}
	t.Logf("slowest publish → event through the proxy: %v", worst)
}
