package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTransport records frames; block makes WriteBatch wait until released.
// The tests run in a synctest bubble: once synctest.Wait returns, every
// frame the hub could write is written, so a frame or close missing then
// is missing for good.
type fakeTransport struct {
	mu     sync.Mutex
	frames [][]byte
	closed protocol.CloseCode
	reason string
	block  chan struct{}
	shut   chan struct{} // closed by the first Close
}

func newFake() *fakeTransport {
	return &fakeTransport{shut: make(chan struct{})}
}

func (f *fakeTransport) WriteBatch(frames [][]byte) error {
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	for _, fr := range frames {
		f.frames = append(f.frames, append([]byte(nil), fr...))
	}
	f.mu.Unlock()
	return nil
}

func (f *fakeTransport) Close(code protocol.CloseCode, reason string) {
	f.mu.Lock()
	if f.closed == 0 {
		f.closed, f.reason = code, reason
		close(f.shut)
	}
	f.mu.Unlock()
	if f.block != nil {
		select {
		case <-f.block:
		default:
			close(f.block)
		}
	}
}

func (f *fakeTransport) closeCode() protocol.CloseCode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// waitClose waits until the bubble is idle and returns the connection's
// close code, failing when it was not closed.
func (f *fakeTransport) waitClose(t *testing.T) protocol.CloseCode {
	t.Helper()
	synctest.Wait()
	select {
	case <-f.shut:
	default:
		t.Fatal("the connection was never closed")
	}
	return f.closeCode()
}

// waitFrames waits until the bubble is idle and returns the frames written,
// failing when there are fewer than n.
func (f *fakeTransport) waitFrames(t *testing.T, n int) [][]byte {
	t.Helper()
	synctest.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.frames) < n {
		t.Fatalf("got %d frames, want %d", len(f.frames), n)
	}
	return append([][]byte(nil), f.frames...)
}

type seqFrame struct {
	Type string `json:"type"`
	Seq  uint64 `json:"seq"`
}

func seqs(t *testing.T, frames [][]byte) []uint64 {
	t.Helper()
	var out []uint64
	for _, b := range frames {
		var f seqFrame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame %q: %v", b, err)
		}
		if f.Seq != 0 {
			out = append(out, f.Seq)
		}
	}
	return out
}

func newHub(t *testing.T, cfg Config) (*Hub, stream.Stream) {
	t.Helper()
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	cfg.Stream = st
	return New(cfg), st
}

// join resumes c from cur (Resume: Join, counted in the resumes metric).
func join(t *testing.T, c *Conn, cur protocol.Cursor) {
	t.Helper()
	_, err := c.Resume(context.Background(), cur, func(p stream.Position) []byte {
		return []byte(fmt.Sprintf(`{"type":"hello","head":%d}`, p.Head))
	}, func(e *stream.ResyncError) []byte { return []byte(`{"type":"resync_required"}`) })
	if err != nil {
		t.Fatal(err)
	}
}

func TestJoinReplayThenLiveWithoutGapOrDuplicate(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h, st := newHub(t, Config{})
		ctx := context.Background()
		for i := 0; i < 50; i++ {
			if _, err := st.Append(ctx, "u", stream.Record{Type: "e"}); err != nil {
				t.Fatal(err)
			}
		}
		// Appends race with the join.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				_, _ = st.Append(ctx, "u", stream.Record{Type: "e"})
			}
		}()
		ft := newFake()
		c := h.NewConn("c1", "u", ft)
		if err := h.Register(ctx, c); err != nil {
			t.Fatal(err)
		}
		join(t, c, protocol.Cursor{Seq: 10})
		wg.Wait()
		frames := ft.waitFrames(t, 1+240)
		if string(frames[0][:16]) != `{"type":"hello",` {
			t.Fatalf("first frame %s", frames[0])
		}
		got := seqs(t, frames)
		for i, s := range got {
			if s != uint64(11+i) {
				t.Fatalf("frame %d has seq %d, want %d (all: %v)", i, s, 11+i, got)
			}
		}
		checkNoRare(t, c)
		h.Unregister(c)
	})
}

// checkNoRare fails unless c, done joining and replaying, has dropped the
// state only those need (connRare): an idle connection carries none.
func checkNoRare(t *testing.T, c *Conn) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rare != nil {
		t.Fatalf("an idle connection holds %+v", *c.rare)
	}
}

func TestReplyPrecedesTheEventsItCauses(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h, st := newHub(t, Config{})
		ft := newFake()
		c := h.NewConn("c", "u", ft)
		if err := h.Register(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		join(t, c, protocol.Cursor{None: true})
		c.Reply(func() []byte {
			_, _ = st.Append(context.Background(), "u", stream.Record{Type: "echo"})
			return []byte(`{"type":"ack"}`)
		})
		frames := ft.waitFrames(t, 3)
		if string(frames[1]) != `{"type":"ack"}` {
			t.Fatalf("frames %q: ack is not before the echo", frames)
		}
		checkNoRare(t, c)
		h.Unregister(c)
	})
}

func TestUserEntryFreedWithLastConnection(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h, _ := newHub(t, Config{MaxConnsPerUser: 2})
		ctx := context.Background()
		a, b, c := h.NewConn("a", "u", newFake()), h.NewConn("b", "u", newFake()), h.NewConn("c", "u", newFake())
		if err := h.Register(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := h.Register(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := h.Register(ctx, c); !errors.Is(err, ErrTooManyConnections) {
			t.Fatalf("third connection: %v", err)
		}
		if h.Count("u") != 2 || h.Users() != 1 {
			t.Fatalf("count %d users %d", h.Count("u"), h.Users())
		}
		h.Unregister(a)
		h.Unregister(b)
		h.Unregister(b) // twice is harmless
		if h.Users() != 0 {
			t.Fatalf("users %d after the last connection left", h.Users())
		}
	})
}

func TestSlowConsumerClosedWithoutBlockingOthers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h, st := newHub(t, Config{MaxQueueBytes: 16 << 10})
		ctx := context.Background()
		slow := newFake()
		slow.block = make(chan struct{}) // never writes until closed
		fast := newFake()
		cs, cf := h.NewConn("s", "u", slow), h.NewConn("f", "u", fast)
		for _, c := range []*Conn{cs, cf} {
			if err := h.Register(ctx, c); err != nil {
				t.Fatal(err)
			}
			join(t, c, protocol.Cursor{None: true})
		}
		data := json.RawMessage(`{"pad":"0123456789012345678901234567890123456789012345678901234567890123456789"}`)
		const events = 400 // about 55 KiB: far over the slow connection's bound
		// The publisher is this goroutine: were it blocked by the consumer
		// that never writes, the bubble would deadlock and the test fail.
		for i := 1; i <= events; i++ {
			if _, err := st.Append(ctx, "u", stream.Record{Type: "e", Data: data}); err != nil {
				t.Fatal(err)
			}
			if i%20 == 0 {
				fast.waitFrames(t, 1+i) // a reader that keeps up
			}
		}
		if got := seqs(t, fast.waitFrames(t, 1+events)); len(got) != events || got[events-1] != events {
			t.Fatalf("the reading connection got %d events", len(got))
		}
		if code := slow.waitClose(t); code != protocol.CloseSlowConsumer {
			t.Fatalf("slow connection close code %d, want 4008", code)
		}
		h.Unregister(cs)
		h.Unregister(cf)
	})
}

func TestCloseWritesQueuedFramesFirst(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h, _ := newHub(t, Config{})
		ft := newFake()
		c := h.NewConn("c", "u", ft)
		if err := h.Register(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		join(t, c, protocol.Cursor{None: true})
		c.Send([]byte(`{"type":"error"}`))
		c.Close(4029, "too many errors")
		if c.Send([]byte(`{"type":"late"}`)) {
			t.Fatal("Send accepted a frame after Close")
		}
		ft.waitFrames(t, 2)
		if code := ft.waitClose(t); code != 4029 {
			t.Fatalf("close code %d", code)
		}
		ft.mu.Lock()
		reason := ft.reason
		ft.mu.Unlock()
		if reason != "too many errors" {
			t.Fatalf("close reason %q", reason)
		}
		h.Unregister(c)
	})
}

// gatedTransport writes a batch only when the test lets it, and records the
// largest batch it was handed.
type gatedTransport struct {
	*fakeTransport
	gate     chan struct{}
	mu       sync.Mutex
	maxBatch int
}

func (g *gatedTransport) WriteBatch(frames [][]byte) error {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	g.mu.Lock()
	g.maxBatch = max(g.maxBatch, n)
	g.mu.Unlock()
	<-g.gate
	return g.fakeTransport.WriteBatch(frames)
}

func appendPadded(t *testing.T, st stream.Stream, user string, n int) {
	t.Helper()
	data := json.RawMessage(fmt.Sprintf(`{"pad":"%0200d"}`, 0))
	for i := 0; i < n; i++ {
		if _, err := st.Append(context.Background(), user, stream.Record{Type: "e", Data: data}); err != nil {
			t.Fatal(err)
		}
	}
}

// A replay many times the queue bound reaches a reading client whole, page
// by page, never more than the bound queued at once, with live events that
// arrive meanwhile after it: no gap, no duplicate.
func TestPagedReplayBoundedAndJoinedWithLive(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const maxQueue = 4 << 10
		h, st := newHub(t, Config{MaxQueueBytes: maxQueue})
		appendPadded(t, st, "u", 300) // ~80 KiB: 20 queues' worth
		g := &gatedTransport{fakeTransport: newFake(), gate: make(chan struct{})}
		c := h.NewConn("c", "u", g)
		if err := h.Register(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		join(t, c, protocol.Cursor{})

		// While the client reads slowly, live events keep coming.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				g.gate <- struct{}{}
				_, _ = st.Append(context.Background(), "u", stream.Record{Type: "e"})
			}
		}()
		wg.Wait()
		close(g.gate)
		frames := g.waitFrames(t, 1+320)
		got := seqs(t, frames)
		if len(got) != 320 {
			t.Fatalf("got %d events, want 320", len(got))
		}
		for i, s := range got {
			if s != uint64(i+1) {
				t.Fatalf("event %d has seq %d (all: %v)", i, s, got)
			}
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.maxBatch > maxQueue+100 {
			t.Fatalf("a batch of %d bytes was queued at once, bound %d", g.maxBatch, maxQueue)
		}
		checkResumes(t, h, 1, 0) // one resume, however many pages
		checkNoRare(t, c)
		h.Unregister(c)
	})
}

// A client that does not read makes the hub hold at most a queue's worth of
// a large replay, and a second resume meanwhile is refused without changing
// anything.
func TestReplayOfNonReaderBoundedAndResumeRefused(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const maxQueue = 4 << 10
		h, st := newHub(t, Config{MaxQueueBytes: maxQueue})
		appendPadded(t, st, "u", 300)
		g := &gatedTransport{fakeTransport: newFake(), gate: make(chan struct{})}
		c := h.NewConn("c", "u", g)
		if err := h.Register(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		join(t, c, protocol.Cursor{})
		for range 3 {
			_, err := c.Join(context.Background(), protocol.Cursor{}, nil, func(*stream.ResyncError) []byte { return []byte(`{"type":"resync_required"}`) })
			if !errors.Is(err, ErrReplayBusy) {
				t.Fatalf("resume during a replay: %v, want ErrReplayBusy", err)
			}
		}
		c.mu.Lock()
		queued := 0
		for _, f := range c.queue {
			queued += len(f)
		}
		c.mu.Unlock()
		if queued > maxQueue+100 {
			t.Fatalf("%d bytes queued for a client that reads nothing, bound %d", queued, maxQueue)
		}
		close(g.gate)
		got := seqs(t, g.waitFrames(t, 1+300))
		if len(got) != 300 || got[0] != 1 || got[299] != 300 {
			t.Fatalf("after the refused resumes: %d events, want the one replay of 300", len(got))
		}
		// Written out (waitFrames left the bubble idle): a resume is
		// accepted again.
		if _, err := c.Join(context.Background(), protocol.Cursor{Seq: 299}, nil, nil); err != nil {
			t.Fatalf("resume after the replay was written: %v", err)
		}
		checkResumes(t, h, 1, 0) // neither the refused ones nor a Join count
		h.Unregister(c)
	})
}

// History expired under a paged replay: the client is told resync_required
// and continues live from the head, as a join would have told it.
func TestPagedReplayOverExpiredHistory(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var skew atomic.Int64
		st := memory.New(memory.Options{
			Retention: stream.Retention{MaxAge: time.Hour},
			Now:       func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
		})
		t.Cleanup(func() { st.Close() })
		h := New(Config{Stream: st, MaxQueueBytes: 4 << 10})
		appendPadded(t, st, "u", 300)
		g := &gatedTransport{fakeTransport: newFake(), gate: make(chan struct{})}
		c := h.NewConn("c", "u", g)
		if err := h.Register(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		join(t, c, protocol.Cursor{})
		skew.Store(int64(2 * time.Hour)) // everything after the first page is gone
		close(g.gate)
		frames := g.waitFrames(t, 1)
		n := len(frames)
		if string(frames[n-1]) != `{"type":"resync_required"}` {
			t.Fatalf("last frame %q, want resync_required", frames[n-1])
		}
		for _, seq := range seqs(t, frames[:n-1]) {
			if seq > 300 {
				t.Fatalf("seq %d before resync_required", seq)
			}
		}
		appendPadded(t, st, "u", 1) // seq 301, live
		frames = g.waitFrames(t, n+1)
		if got := seqs(t, frames[n:]); len(frames) != n+1 || len(got) != 1 || got[0] != 301 {
			t.Fatalf("after resync_required: %q, want seq 301", frames[n:])
		}
		if code := g.closeCode(); code != 0 {
			t.Fatalf("closed with %d", code)
		}
		checkResumes(t, h, 0, 1) // a resync, not also a replay
		h.Unregister(c)
	})
}

// checkResumes checks agentwire_resumes_total by result.
func checkResumes(t *testing.T, h *Hub, replayed, resync float64) {
	t.Helper()
	if got := counterValue(h.metrics.ResumeReplayed); got != replayed {
		t.Errorf("resumes replayed: %v, want %v", got, replayed)
	}
	if got := counterValue(h.metrics.ResumeResync); got != resync {
		t.Errorf("resumes resync: %v, want %v", got, resync)
	}
}

// failingTransport fails every write, as a socket the peer reset does.
type failingTransport struct{ *fakeTransport }

func (f *failingTransport) WriteBatch([][]byte) error { return errors.New("connection reset by peer") }

// TestWriteFailureCounts1011: a write that fails closes with 1011, and
// agentwire_closes_total counts it.
func TestWriteFailureCounts1011(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := metrics.New()
		h, _ := newHub(t, Config{Metrics: m})
		ft := &failingTransport{fakeTransport: newFake()}
		c := h.NewConn("c1", "u", ft)
		if err := h.Register(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		defer h.Unregister(c)
		c.Send([]byte(`{"type":"x"}`))
		if code := ft.waitClose(t); code != protocol.CloseInternalError {
			t.Fatalf("close code %d, want 1011", code)
		}
		if got := counterValue(m.Closes.WithLabelValues("1011")); got != 1 {
			t.Fatalf("agentwire_closes_total{code=\"1011\"} = %v, want 1", got)
		}
	})
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
