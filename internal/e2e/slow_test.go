package e2e

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestSlowConsumerClosed4008: with --max-queue-bytes 65536, a socket that
// never reads is closed with 4008 once its queue passes the bound, while the
// other socket of the same user and another user's socket keep receiving
// everything in order; the slow client then resumes from its last frame and
// gets every event it missed; /metrics counts the overflow.
func TestSlowConsumerClosed4008(t *testing.T) {
	t.Parallel()
	// No heartbeats: the stalled socket answers no ping, and on a loaded
	// machine filling the server's send buffer took longer than ping
	// interval + pong timeout (35 s), so it was closed with 4000 and its
	// queue never overflowed (seen: 5000 events, 120 s, no 4008).
	s := startServer(t, "--max-queue-bytes", "65536", "--retention-events", "100000", "--ping-interval", "1h")
	api := newAPIClient(t, s)
	tokSlow, tokFast := s.token("slow"), s.token("fast")

	// The socket that never reads. Its kernel receive buffer is not shrunk
	// to 4 KiB: on loopback (MSS 64 KiB) so small a window stalls TCP in
	// zero-window probing for seconds once the client reads again, and the
	// server's close frame (written within 1 s) never gets through. It would
	// not help anyway: the server's send buffer (autotuned, ~3.5 MB here) is
	// what fills before the queue does.
	stalled, est, err := dialWS(wsDialer(64<<10), s, tokSlow, "")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	epoch := est.Epoch

	// Readers: slow's other socket and fast's socket.
	type reader struct {
		name string
		c    *websocket.Conn
		got  atomic.Uint64 // last seq
		err  atomic.Pointer[string]
	}
	var rwg sync.WaitGroup
	var stopping atomic.Bool
	startReader := func(name, tok string) *reader {
		c, _, err := dialWS(nil, s, tok, "")
		if err != nil {
			t.Fatal(err)
		}
		r := &reader{name: name, c: c}
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				f, err := readFrame(c, 0)
				if err != nil {
					if !stopping.Load() {
						msg := fmt.Sprintf("%s: read: %v", name, err)
						r.err.CompareAndSwap(nil, &msg)
					}
					return
				}
				if f.Type != "bulk" || f.Seq != r.got.Load()+1 {
					msg := fmt.Sprintf("%s: frame %.120s after seq %d", name, f.raw, r.got.Load())
					r.err.CompareAndSwap(nil, &msg)
					return
				}
				r.got.Store(f.Seq)
			}
		}()
		return r
	}
	slowReader := startReader("slow (reading socket)", tokSlow)
	fastReader := startReader("fast", tokFast)
	defer func() {
		stopping.Store(true)
		slowReader.c.Close()
		fastReader.c.Close()
		rwg.Wait()
	}()

	pad := strings.Repeat("x", 1024)
	var published = map[string]uint64{}
	publish := func(user, pad string) {
		t.Helper()
		seq, _, err := api.publish(user, "bulk", map[string]any{"pad": pad})
		if err != nil {
			t.Fatal(err)
		}
		if seq != published[user]+1 {
			t.Fatalf("publish for %s answered seq %d after %d", user, seq, published[user])
		}
		published[user] = seq
	}
	overflows := func() float64 {
		body, err := api.get("/metrics")
		if err != nil {
			t.Fatal(err)
		}
		v, _ := metric(body, "agentwire_queue_overflows_total")
		return v
	}

	// keepUp waits while a reading socket is more than 8 events (32 KiB)
	// behind, half its queue: the flood below is meant to overflow only the
	// socket that never reads. Without it, on a loaded machine a reading
	// socket's writer could wait for the CPU through 16 publishes and be
	// closed as slow too, which it then was.
	keepUp := func(r *reader, user string) {
		t.Helper()
		if !waitProgress(30*time.Second, func() int64 { return int64(r.got.Load()) }, func() bool {
			return r.got.Load()+8 >= published[user] || r.err.Load() != nil
		}) {
			t.Fatalf("%s: at seq %d of %d, no progress for 30 s", r.name, r.got.Load(), published[user])
		}
		if p := r.err.Load(); p != nil {
			t.Fatal(*p)
		}
	}

	// Publish until the server gives up on the stalled socket: 4 KiB events
	// to slow (the server's autotuned send buffer takes ~3.5 MB before the
	// queue fills at all, and 1 KiB events take too long under -race), one
	// 1 KiB event to fast for every four. Poll /metrics often: the server
	// writes its close frame only if the client drains the stuck socket
	// within closeFrameWait (5 s) of the overflow.
	const maxEvents = 5000
	big := strings.Repeat("z", 4096)
	for i := 0; ; i++ {
		if i == maxEvents {
			t.Fatalf("%d events of 4 KiB published and the stalled socket was not closed", maxEvents)
		}
		keepUp(slowReader, "slow")
		publish("slow", big)
		if i%4 == 0 {
			keepUp(fastReader, "fast")
			publish("fast", pad)
		}
		if i%8 == 7 && overflows() >= 1 {
			break
		}
	}
	t.Logf("overflow after %d events to slow", published["slow"])

	// Drain the stalled socket: frames buffered before the overflow, in
	// order, then the close frame with 4008.
	var last uint64
	var closeErr error
	for {
		// Per frame, so it bounds a stall, not the drain: a loaded machine
		// may take seconds between two frames of a large backlog.
		f, err := readFrame(stalled, 30*time.Second)
		if err != nil {
			closeErr = err
			break
		}
		if f.Type != "bulk" || f.Seq != last+1 {
			t.Fatalf("stalled socket: frame %.120s after seq %d", f.raw, last)
		}
		last = f.Seq
	}
	if code := closeCode(closeErr); code != 4008 {
		t.Errorf("stalled socket ended with %v after seq %d, want close code 4008", closeErr, last)
	}
	if last >= published["slow"] {
		t.Fatalf("the stalled socket read all %d events: it was not slow", last)
	}

	// Life goes on for everyone else.
	for i := 0; i < 50; i++ {
		publish("slow", pad)
		publish("fast", pad)
	}
	received := func() int64 { return int64(slowReader.got.Load() + fastReader.got.Load()) }
	if !waitProgress(10*time.Second, received, func() bool {
		return slowReader.got.Load() == published["slow"] && fastReader.got.Load() == published["fast"] ||
			slowReader.err.Load() != nil || fastReader.err.Load() != nil
	}) {
		t.Fatalf("readers at %d/%d (slow) and %d/%d (fast)", slowReader.got.Load(), published["slow"], fastReader.got.Load(), published["fast"])
	}
	for _, r := range []*reader{slowReader, fastReader} {
		if p := r.err.Load(); p != nil {
			t.Fatal(*p)
		}
	}

	if v := overflows(); v != 1 {
		t.Errorf("agentwire_queue_overflows_total = %v, want 1 (one socket overflowed)", v)
	}
	if body, _ := api.get("/metrics"); !strings.Contains(body, `agentwire_closes_total{code="4008"} 1`) {
		t.Errorf("/metrics lacks agentwire_closes_total{code=\"4008\"} 1")
	}

	// Nothing the stalled socket missed is lost from the stream ...
	var ev struct {
		Events []frame `json:"events"`
	}
	if code := s.do("GET", fmt.Sprintf("/api/v1/events?since=%d&epoch=%s&limit=1000", last, epoch), tokSlow, nil, &ev); code != 200 {
		t.Fatalf("events: %d", code)
	}
	if len(ev.Events) != int(published["slow"]-last) || ev.Events[0].Seq != last+1 || ev.Events[len(ev.Events)-1].Seq != published["slow"] {
		t.Fatalf("GET /api/v1/events since %d: %d events, want %d..%d", last, len(ev.Events), last+1, published["slow"])
	}

	// ... and the slow client gets all of it by reconnecting with resume, as
	// section 6 tells it to.
	c, est2, err := dialWS(nil, s, tokSlow, fmt.Sprintf("since=%d&epoch=%s", last, epoch))
	if err != nil {
		t.Fatalf("resume after 4008 from seq %d (%d events to replay, queue bound 64 KiB): %v",
			last, published["slow"]-last, err)
	}
	defer c.Close()
	if est2.HeadSeq != published["slow"] {
		t.Fatalf("resumed at head %d, published %d", est2.HeadSeq, published["slow"])
	}
	for want := last + 1; want <= published["slow"]; want++ {
		f, err := readFrame(c, 5*time.Second)
		if err != nil {
			t.Fatalf("replay after seq %d: %v", want-1, err)
		}
		if f.Type != "bulk" || f.Seq != want {
			t.Fatalf("replay: %.120s, want seq %d", f.raw, want)
		}
	}
}

// TestResumeReplayBeyondQueueBound: a resume whose replay is larger than
// --max-queue-bytes must still deliver connection_established and every
// retained event after since, in order. (After a 4008 the replay is always
// at least the bound, so this is what "reconnect with resume" needs.)
func TestResumeReplayBeyondQueueBound(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--max-queue-bytes", "65536")
	api := newAPIClient(t, s)
	pad := strings.Repeat("y", 1024)
	const n = 120 // ~130 KiB of frames, twice the bound
	var epoch string
	for i := 1; i <= n; i++ {
		var err error
		if _, epoch, err = api.publish("replayer", "bulk", map[string]any{"pad": pad}); err != nil {
			t.Fatal(err)
		}
	}
	c, resp, err := s.dial(withBearer(s.token("replayer")), withQuery("since=0&epoch="+epoch))
	if err != nil {
		t.Fatalf("dial: %v %v", err, resp)
	}
	defer c.c.Close()
	f, err := c.readWithin(5 * time.Second)
	if err != nil || f.Type != "connection_established" {
		t.Fatalf("first frame: %.120s, err %v; want connection_established", f.raw, err)
	}
	for want := uint64(1); want <= n; want++ {
		f, err := c.readWithin(5 * time.Second)
		if err != nil {
			t.Fatalf("replay stopped after seq %d of %d: %v", want-1, n, err)
		}
		if f.Seq != want {
			t.Fatalf("replay: %.120s, want seq %d", f.raw, want)
		}
	}
}
