package sse

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPlain(t *testing.T) {
	t.Parallel()
	frame := protocol.EncodeEvent(protocol.Event{Type: "x", Seq: 7, Epoch: "E1", TS: time.Now(), Data: []byte(`{"a":"b\nc"}`)})
	evs, end := Plain(nil, frame)
	if end || len(evs) != 1 || evs[0].ID != "E1:7" || !bytes.Equal(evs[0].Data, frame) {
		t.Fatalf("Plain(event) = %+v, %v", evs, end)
	}
	ce := protocol.EncodeConnectionEstablished(protocol.ConnectionEstablished{Epoch: "E1", HeadSeq: 3})
	if evs, _ = Plain(evs[:0], ce); len(evs) != 1 || evs[0].ID != "" {
		t.Fatalf("Plain(connection_established) = %+v", evs)
	}
}

// harness serves one SSE endpoint over a memory stream and a hub, as
// GET /api/v1/stream does (without its authentication).
type harness struct {
	st  *memory.Stream
	hub *hub.Hub
	srv *httptest.Server

	mu     sync.Mutex
	closes []protocol.CloseCode // Serve's results
	served chan struct{}        // one value per Serve returned
}

func newHarness(t *testing.T, o Options) *harness {
	t.Helper()
	h := &harness{st: memory.New(memory.Options{}), served: make(chan struct{}, 16)}
	h.hub = hub.New(hub.Config{Stream: h.st, MaxQueueBytes: 64 << 10})
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur, err := protocol.ParseEventID(r.Header.Get("Last-Event-ID"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c := NewConn(h.hub, w, "c1", "u1", o)
		if err := h.hub.Register(r.Context(), c.HC); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if _, err := c.HC.Join(r.Context(), cur, func(pos stream.Position) []byte {
			return protocol.EncodeConnectionEstablished(protocol.ConnectionEstablished{Epoch: pos.Epoch, HeadSeq: pos.Head})
		}, func(e *stream.ResyncError) []byte {
			return protocol.EncodeResync(e.Position.Epoch, e.Position.Head, e.Reason)
		}); err != nil {
			c.HC.Close(protocol.CloseInternalError, "stream unavailable")
		}
		code, _ := c.Serve(r.Context())
		h.mu.Lock()
		h.closes = append(h.closes, code)
		h.mu.Unlock()
		h.served <- struct{}{}
	}))
	t.Cleanup(func() {
		h.srv.Close()
		_ = h.st.Close()
	})
	return h
}

func (h *harness) get(t *testing.T, ctx context.Context, lastID string) (*http.Response, *sse.Reader) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"} {
		if got := resp.Header.Get(k); got != v {
			t.Fatalf("%s: %q, want %q", k, got, v)
		}
	}
	return resp, sse.NewReader(resp.Body, 0)
}

func (h *harness) append(t *testing.T, typ string) stream.Event {
	t.Helper()
	ev, err := h.st.Append(context.Background(), "u1", stream.Record{Type: typ})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func next(t *testing.T, r *sse.Reader) (sse.Event, protocol.ServerFrame) {
	t.Helper()
	ev, err := r.Next()
	if err != nil {
		t.Fatalf("next event: %v", err)
	}
	f, err := protocol.DecodeServerFrame(ev.Data)
	if err != nil {
		t.Fatalf("frame %q: %v", ev.Data, err)
	}
	return ev, f
}

func TestConnReplayLiveAndResume(t *testing.T) {
	h := newHarness(t, Options{})
	e1 := h.append(t, "a")
	h.append(t, "b")
	h.append(t, "c")

	ctx, cancel := context.WithCancel(context.Background())
	_, r := h.get(t, ctx, protocol.EventID(e1.Epoch, e1.Seq))
	ev, f := next(t, r)
	if f.Type != protocol.TypeConnectionEstablished || ev.ID != "" {
		t.Fatalf("first: %+v %q", f, ev.ID)
	}
	for _, want := range []uint64{2, 3} {
		ev, f = next(t, r)
		if f.Seq != want || ev.ID != protocol.EventID(e1.Epoch, want) {
			t.Fatalf("replay: seq %d id %q, want %d", f.Seq, ev.ID, want)
		}
	}
	h.append(t, "live")
	if ev, f = next(t, r); f.Type != "live" || ev.ID != protocol.EventID(e1.Epoch, 4) {
		t.Fatalf("live: %+v %q", f, ev.ID)
	}
	last := r.LastEventID()

	// The client goes away: the handler ends and the hub forgets it.
	cancel()
	<-h.served
	if n := h.hub.Count("u1"); n != 0 {
		t.Fatalf("hub still has %d connections", n)
	}
	h.append(t, "missed")

	_, r = h.get(t, context.Background(), last)
	next(t, r) // connection_established
	if _, f = next(t, r); f.Type != "missed" || f.Seq != 5 {
		t.Fatalf("resumed with %+v", f)
	}
	h.hub.CloseAll(protocol.CloseGoingAway, "server shutting down")
	var comments []string
	r.OnComment(func(s string) { comments = append(comments, s) })
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseAll: %v", err)
	}
	if len(comments) != 1 || comments[0] != "close 1001 server shutting down" {
		t.Fatalf("comments %q", comments)
	}
	<-h.served
}

func TestConnResync(t *testing.T) {
	h := newHarness(t, Options{})
	h.append(t, "a")
	_, r := h.get(t, context.Background(), "other-epoch:1")
	next(t, r)
	if _, f := next(t, r); f.Type != protocol.TypeResyncRequired {
		t.Fatalf("got %+v, want resync_required", f)
	}
	h.hub.CloseAll(protocol.CloseGoingAway, "")
	<-h.served
}

func TestConnHeartbeat(t *testing.T) {
	h := newHarness(t, Options{Heartbeat: 5 * time.Millisecond})
	_, r := h.get(t, context.Background(), "")
	beats := make(chan struct{}, 1)
	r.OnComment(func(s string) {
		if s == "" {
			select {
			case beats <- struct{}{}:
			default:
			}
		}
	})
	next(t, r)
	go func() { _, _ = r.Next() }() // reads comments until the end
	<-beats
	h.hub.CloseAll(protocol.CloseGoingAway, "")
	<-h.served
}

func TestConnMapperEnds(t *testing.T) {
	mapper := func(dst []sse.Event, frame []byte) ([]sse.Event, bool) {
		f, err := protocol.DecodeServerFrame(frame)
		if err != nil || f.Type == protocol.TypeConnectionEstablished || f.Type == "skip" {
			return dst, false
		}
		dst = append(dst, sse.Event{ID: "x", Data: []byte(f.Type)}, sse.Event{Data: []byte(f.Type + "-2")})
		return dst, f.Type == "end"
	}
	h := newHarness(t, Options{Mapper: mapper})
	_, r := h.get(t, context.Background(), "")
	h.append(t, "skip")
	h.append(t, "a")
	h.append(t, "end")
	h.append(t, "after")
	var got []string
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(ev.Data))
	}
	if strings.Join(got, ",") != "a,a-2,end,end-2" {
		t.Fatalf("events %q", got)
	}
	<-h.served
	if h.closes[0] != protocol.CloseNormal || h.hub.Count("u1") != 0 {
		t.Fatalf("close %v, %d conns left", h.closes, h.hub.Count("u1"))
	}
}

func TestConnSlowConsumer(t *testing.T) {
	h := newHarness(t, Options{WriteTimeout: time.Minute})
	resp, r := h.get(t, context.Background(), "")
	next(t, r)
	// The client reads no more: appends fill the socket buffers, then the
	// hub's queue, which overflows and ends the response at once.
	big := strings.Repeat("x", 8<<10)
	for i := 0; ; i++ {
		if _, err := h.st.Append(context.Background(), "u1", stream.Record{Type: "big", Data: []byte(`{"x":"` + big + `"}`)}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-h.served:
			if h.closes[0] != protocol.CloseSlowConsumer {
				t.Fatalf("closed with %v", h.closes)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			return
		default:
		}
		if i > 100000 {
			t.Fatal("never overflowed")
		}
	}
}

// A connection closed before Serve still answers an event stream: the
// queued frames, then the comment saying why it ends.
func TestConnClosedBeforeServe(t *testing.T) {
	st := memory.New(memory.Options{})
	t.Cleanup(func() { _ = st.Close() })
	h := hub.New(hub.Config{Stream: st})
	served := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(served)
		c := NewConn(h, w, "c1", "u1", Options{})
		if err := h.Register(r.Context(), c.HC); err != nil {
			t.Error(err)
			return
		}
		if _, err := c.HC.Join(r.Context(), protocol.Cursor{None: true}, func(pos stream.Position) []byte {
			return protocol.EncodeConnectionEstablished(protocol.ConnectionEstablished{Epoch: pos.Epoch})
		}, nil); err != nil {
			t.Error(err)
		}
		c.HC.Close(protocol.CloseGoingAway, "bye")
		<-c.Done() // the hub wrote the queue, then closed the transport
		c.Serve(r.Context())
	}))
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := sse.NewReader(resp.Body, 0)
	var comments []string
	r.OnComment(func(s string) { comments = append(comments, s) })
	if ev, err := r.Next(); err != nil || !bytes.Contains(ev.Data, []byte("connection_established")) {
		t.Fatalf("first: %q %v", ev.Data, err)
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) || len(comments) != 1 || comments[0] != "close 1001 bye" {
		t.Fatalf("end: %v, comments %q", err, comments)
	}
	<-served
	if h.Count("u1") != 0 {
		t.Fatal("still registered")
	}
}
