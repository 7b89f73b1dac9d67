package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/protocol"
)

func (failingStream) AppendBatch(context.Context, string, []stream.Record) ([]stream.Event, error) {
	return nil, errors.New("down")
}

// history returns the types and data of user's events in st, in order.
func history(t *testing.T, st stream.Stream, user string) []string {
	t.Helper()
	evs, _, err := st.Since(context.Background(), user, protocol.Cursor{}, stream.Limit{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%d %s %s", ev.Seq, ev.Type, ev.Data)
	}
	return out
}

// TestPublishBatch: {"events":[…]} answers one result per event in order;
// each user's events are appended all or none with consecutive seqs; a
// refused event refuses its user's others (batch_aborted) and no one
// else's; bounds and backend failures answer clearly.
func TestPublishBatch(t *testing.T) {
	t.Parallel()
	published := prometheus.NewCounter(prometheus.CounterOpts{Name: "published"})
	rn := publishFunc(func(string, string, string, json.RawMessage) (stream.Event, error) {
		t.Error("a batch event went to a run")
		return stream.Event{}, errors.New("no")
	})
	post := func(st stream.Stream, body string) *httptest.ResponseRecorder {
		return serve(handlePublish(st, rn, published, discard), httptest.NewRequest(http.MethodPost, "/api/v1/publish", strings.NewReader(body)))
	}
	st := newStream(t, "alice", 1)

	var resp protocol.PublishBatchResponse
	wantJSON(t, post(st, `{"events":[
		{"user_id":"alice","type":"note","data":{"n":1}},
		{"user_id":"bob","type":"note","data":{"n":2}},
		{"user_id":"alice","type":"note","data":{ "n" : 3 },"idempotency_key":"k"},
		{"user_id":"alice","type":"note","data":{"n":4},"idempotency_key":"k"}]}`), http.StatusOK, &resp)
	if len(resp.Results) != 4 {
		t.Fatalf("results %+v", resp.Results)
	}
	for i, want := range []uint64{2, 1, 3, 3} {
		if r := resp.Results[i]; r.Error != nil || r.Seq != want || r.Epoch == "" {
			t.Fatalf("result %d: %+v, want seq %d", i, r, want)
		}
	}
	if h := history(t, st, "alice"); len(h) != 3 || h[1] != `2 note {"n":1}` || h[2] != `3 note {"n":3}` {
		t.Fatalf("alice's stream %q", h)
	}
	if h := history(t, st, "bob"); len(h) != 1 || h[0] != `1 note {"n":2}` {
		t.Fatalf("bob's stream %q", h)
	}
	if n := count(t, published); n != 4 {
		t.Fatalf("published %v, want 4", n)
	}

	// One bad event of bob's: none of bob's, all of alice's.
	resp = protocol.PublishBatchResponse{}
	wantJSON(t, post(st, `{"events":[
		{"user_id":"bob","type":"note"},
		{"user_id":"alice","type":"note","data":{"n":5}},
		{"user_id":"bob","type":"Bad"},
		{"user_id":"carol","type":"agent_completed","run_id":"r1"},
		{"user_id":"carol","type":"note"}]}`), http.StatusOK, &resp)
	codes := make([]protocol.ErrorCode, len(resp.Results))
	for i, r := range resp.Results {
		if r.Error != nil {
			codes[i] = r.Error.Code
		}
	}
	want := []protocol.ErrorCode{protocol.CodeBatchAborted, "", protocol.CodeInvalidRequest, protocol.CodeReservedType, protocol.CodeBatchAborted}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("result codes %q, want %q", codes, want)
		}
	}
	if resp.Results[1].Seq != 4 || resp.Results[0].Seq != 0 || resp.Results[0].Epoch != "" {
		t.Fatalf("results %+v", resp.Results)
	}
	if h := history(t, st, "bob"); len(h) != 1 {
		t.Fatalf("bob's stream after an aborted batch: %q", h)
	}
	if h := history(t, st, "carol"); len(h) != 0 {
		t.Fatalf("carol's stream after an aborted batch: %q", h)
	}

	resp = protocol.PublishBatchResponse{}
	wantJSON(t, post(failingStream{}, `{"events":[{"user_id":"alice","type":"note"},{"user_id":"alice","type":"note"}]}`), http.StatusOK, &resp)
	for i, r := range resp.Results {
		if r.Error == nil || r.Error.Code != protocol.CodeUnavailable {
			t.Fatalf("result %d with the backend down: %+v", i, r)
		}
	}

	many := func(n int) string {
		evs := make([]string, n)
		for i := range evs {
			evs[i] = `{"user_id":"u","type":"note"}`
		}
		return `{"events":[` + strings.Join(evs, ",") + `]}`
	}
	resp = protocol.PublishBatchResponse{}
	wantJSON(t, post(st, many(stream.MaxBatch)), http.StatusOK, &resp)
	if len(resp.Results) != stream.MaxBatch || resp.Results[stream.MaxBatch-1].Seq != stream.MaxBatch {
		t.Fatalf("batch of %d: %d results, last %+v", stream.MaxBatch, len(resp.Results), resp.Results[len(resp.Results)-1])
	}
	before := count(t, published)
	for _, tc := range []struct {
		name, body string
		status     int
		code       protocol.ErrorCode
	}{
		{"empty", `{"events":[]}`, 413, protocol.CodeTooLarge},
		{"null", `{"events":null}`, 413, protocol.CodeTooLarge},
		{"too many", many(stream.MaxBatch + 1), 413, protocol.CodeTooLarge},
		{"events and an event", `{"user_id":"alice","type":"note","events":[{"user_id":"alice","type":"note"}]}`, 400, protocol.CodeInvalidRequest},
		{"events not a list", `{"events":{}}`, 400, protocol.CodeBadJSON},
		{"over 1 MiB", `{"events":[{"user_id":"alice","type":"note","data":{"a":"` + strings.Repeat("d", 1<<20) + `"}}]}`, 413, protocol.CodeTooLarge},
		{"not UTF-8", "{\"events\":[{\"user_id\":\"alice\",\"type\":\"note\",\"data\":{\"a\":\"\xff\"}}]}", 400, protocol.CodeInvalidJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, post(st, tc.body), tc.status, tc.code)
		})
	}
	if n := count(t, published); n != before {
		t.Fatalf("published %v after refused batches, want %v", n, before)
	}
	if h := history(t, st, "alice"); len(h) != 4 {
		t.Fatalf("alice's stream after refused batches: %q", h)
	}
}

// streamEnv is a server whose POST /api/v1/publish/stream a test talks to
// over a real connection, writing lines through a pipe.
type streamEnv struct {
	t     *testing.T
	st    *memory.Stream
	w     *io.PipeWriter
	acks  *bufio.Scanner
	resp  *http.Response
	drain *atomic.Bool
}

func newStreamEnv(t *testing.T, idle time.Duration) *streamEnv {
	t.Helper()
	e := &streamEnv{t: t, st: memory.New(memory.Options{}), drain: new(atomic.Bool)}
	ts := httptest.NewServer(NewServer(Deps{Metrics: metrics.New(), Stream: e.st, APIKeys: auth.NewAPIKeys([]string{"key"}),
		WS: http.NotFoundHandler(), Draining: e.drain.Load, BodyTimeout: idle}))
	t.Cleanup(ts.Close)
	pr, pw := io.Pipe()
	e.w = pw
	t.Cleanup(func() { _ = pw.Close() })
	req, err := http.NewRequest(http.MethodPost, ts.URL+"/api/v1/publish/stream", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer key")
	req.Header.Set("Content-Type", "application/x-ndjson")
	// The request's headers go out with its first body bytes: a blank line,
	// which asks for nothing.
	go func() { _, _ = pw.Write([]byte("\n")) }()
	e.resp, err = ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.resp.Body.Close() })
	if e.resp.StatusCode != http.StatusOK || e.resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("stream answered %s %v", e.resp.Status, e.resp.Header)
	}
	e.acks = bufio.NewScanner(e.resp.Body)
	return e
}

func (e *streamEnv) send(lines ...string) {
	e.t.Helper()
	if _, err := e.w.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		e.t.Fatal(err)
	}
}

// ack reads the next ack line.
func (e *streamEnv) ack() protocol.PublishAck {
	e.t.Helper()
	if !e.acks.Scan() {
		e.t.Fatalf("no ack: the stream ended (%v)", e.acks.Err())
	}
	var a protocol.PublishAck
	if err := json.Unmarshal(e.acks.Bytes(), &a); err != nil {
		e.t.Fatalf("ack %q: %v", e.acks.Bytes(), err)
	}
	return a
}

// TestPublishStream: acks come back while the request is still open, one
// per non-blank line, in order; a bad line refuses only itself; closing
// the request ends the answer.
func TestPublishStream(t *testing.T) {
	t.Parallel()
	e := newStreamEnv(t, 30*time.Second)
	e.send(`{"user_id":"alice","type":"note","data":{"n":1}}`)
	if a := e.ack(); a.I != 0 || a.Seq != 1 || a.Error != nil {
		t.Fatalf("first ack %+v", a)
	}
	e.send(``, `not json`, `{"user_id":"alice","type":"note","data":{"n":2},"idempotency_key":"k"}`,
		`{"user_id":"alice","type":"agent_completed","run_id":"r"}`, `{"user_id":"bob","type":"note"} {}`,
		`{"user_id":"alice","type":"note","data":{"n":3},"idempotency_key":"k"}`,
		`{"user_id":"alice","type":"note","data":{"a":"`+strings.Repeat("x", 130<<10)+`"}}`,
		`{"user_id":"bob","type":"note","data":{"n":4}}`)
	type want struct {
		seq  uint64
		code protocol.ErrorCode
	}
	for i, w := range []want{{0, protocol.CodeBadJSON}, {2, ""}, {0, protocol.CodeReservedType}, {0, protocol.CodeBadJSON},
		{2, ""}, {0, protocol.CodeTooLarge}, {1, ""}} {
		a := e.ack()
		var code protocol.ErrorCode
		if a.Error != nil {
			code = a.Error.Code
		}
		if a.I != i+1 || a.Seq != w.seq || code != w.code {
			t.Fatalf("ack %d: %+v (error %v), want i %d seq %d code %q", i+1, a, a.Error, i+1, w.seq, w.code)
		}
	}
	if h := history(t, e.st, "alice"); len(h) != 2 || h[1] != `2 note {"n":2}` {
		t.Fatalf("alice's stream %q", h)
	}
	if h := history(t, e.st, "bob"); len(h) != 1 || h[0] != `1 note {"n":4}` {
		t.Fatalf("bob's stream %q", h)
	}

	// Many lines at once are appended together, acked in order.
	lines := make([]string, 2500)
	for i := range lines {
		lines[i] = fmt.Sprintf(`{"user_id":"u%d","type":"note","data":{"i":%d}}`, i%7, i)
	}
	payload := []byte(strings.Join(lines, "\n") + "\n")
	go func() {
		if _, err := e.w.Write(payload); err != nil {
			t.Errorf("write: %v", err)
		}
	}()
	seqs := map[int]uint64{}
	for i := range lines {
		a := e.ack()
		if a.I != 8+i || a.Error != nil || a.Seq != seqs[i%7]+1 {
			t.Fatalf("ack of line %d: %+v", i, a)
		}
		seqs[i%7] = a.Seq
	}
	_ = e.w.Close()
	if e.acks.Scan() {
		t.Fatalf("after the request ended: %q", e.acks.Bytes())
	}
	if err := e.acks.Err(); err != nil {
		t.Fatalf("answer after the request ended: %v", err)
	}
}

// TestPublishStreamDrain: a draining node acks what it read, writes a
// last shutting_down line and ends the answer.
func TestPublishStreamDrain(t *testing.T) {
	t.Parallel()
	e := newStreamEnv(t, 30*time.Second)
	e.send(`{"user_id":"alice","type":"note"}`)
	if a := e.ack(); a.Seq != 1 {
		t.Fatalf("ack %+v", a)
	}
	e.drain.Store(true)
	if !e.acks.Scan() {
		t.Fatalf("no last line after the drain: %v", e.acks.Err())
	}
	var last protocol.ErrorBody
	if err := json.Unmarshal(e.acks.Bytes(), &last); err != nil || last.Error.Code != protocol.CodeShuttingDown || strings.Contains(e.acks.Text(), `"i"`) {
		t.Fatalf("last line %q (%v)", e.acks.Bytes(), err)
	}
	if e.acks.Scan() {
		t.Fatalf("after the last line: %q", e.acks.Bytes())
	}
}

// TestPublishStreamIdle: a stream that sends nothing for the body timeout
// ends.
func TestPublishStreamIdle(t *testing.T) {
	t.Parallel()
	e := newStreamEnv(t, 300*time.Millisecond)
	e.send(`{"user_id":"alice","type":"note"}`)
	if a := e.ack(); a.Seq != 1 {
		t.Fatalf("ack %+v", a)
	}
	ended := make(chan struct{})
	go func() {
		for e.acks.Scan() {
			t.Errorf("unexpected line %q", e.acks.Bytes())
		}
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("an idle stream did not end")
	}
}

func TestIsPublishTypeAndIsCompact(t *testing.T) {
	t.Parallel()
	for typ, want := range map[string]bool{"a": true, "build.finished": true, "x_1.y": true, strings.Repeat("a", 64): true,
		"": false, "A": false, "1a": false, "a-b": false, "a b": false, "é": false, strings.Repeat("a", 65): false, "_a": false} {
		if got := isPublishType(typ); got != want {
			t.Errorf("isPublishType(%q) = %v", typ, got)
		}
	}
	for data, want := range map[string]bool{`{}`: true, `{"a":"b c"}`: true, `{"a":"\" "}`: true, `{"a":"\\"}`: true,
		`{ }`: false, `{"a": 1}`: false, `{"a":"\\" ,"b":1}`: false, "{\"a\":\n1}": false, `{"a":[1,2]}`: true} {
		if got := isCompact([]byte(data)); got != want {
			t.Errorf("isCompact(%s) = %v", data, got)
		}
	}
}
