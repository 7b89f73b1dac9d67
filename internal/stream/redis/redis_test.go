package redis

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rueidis "github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/redisx"
	"github.com/agentwire/agentwire/internal/redisx/redisxtest"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/streamtest"
	"github.com/agentwire/agentwire/internal/testproc"
	"github.com/agentwire/agentwire/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, redisxtest.IgnoreClusterRefresh)
}

// runPrefix is unique to this test binary run, so parallel runs and other
// data on the same Redis never collide; cleanup deletes its keys.
var runPrefix = func() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "awtest-" + hex.EncodeToString(b[:])
}()

// admin returns a plain client of the test Redis for test manipulation
// and deletes every key of prefix when the test ends.
func admin(t testing.TB, prefix string) rueidis.Client {
	t.Helper()
	return adminOf(t, redisxtest.URL(t), prefix)
}

// adminOf is admin on the Redis at url (any topology).
func adminOf(t testing.TB, url, prefix string) rueidis.Client {
	t.Helper()
	c, err := redisx.Dial(url, 0, nil)
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	t.Cleanup(func() {
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := redisxtest.DeletePrefix(ctx, c, prefix); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return c
}

var nodeN atomic.Int64

// dial returns a client of its own (a node's), closed when t ends, after
// the stream on it (cleanups run last registered first).
func dial(t testing.TB, url string, timeout time.Duration) rueidis.Client {
	t.Helper()
	c, err := redisx.Dial(url, timeout, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// newNode returns a Stream ("node") on the test Redis with prefix.
func newNode(t testing.TB, prefix string, r stream.Retention) *Stream {
	t.Helper()
	return newNodeOn(t, redisxtest.URL(t), prefix, r)
}

// newNodeOn is newNode on the Redis at url (any topology).
func newNodeOn(t testing.TB, url, prefix string, r stream.Retention) *Stream {
	t.Helper()
	return newNodeWith(t, Options{Client: dial(t, url, 0), Retention: r, Prefix: prefix})
}

// newNodeWith is a started Stream on opts, closed when t ends.
func newNodeWith(t testing.TB, opts Options) *Stream {
	t.Helper()
	s, err := New(t.Context(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s
}

// subscribeAll subscribes a collector per user on s, until t ends.
func subscribeAll(t testing.TB, s *Stream, users []string) []*collector {
	t.Helper()
	cols := make([]*collector, len(users))
	for i, u := range users {
		cols[i] = &collector{}
		cancel, err := s.Subscribe(t.Context(), u, cols[i].handle)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cancel)
	}
	return cols
}

func testPrefix(t testing.TB) string {
	return runPrefix + "-" + strconv.FormatInt(nodeN.Add(1), 10)
}

func TestConformance(t *testing.T) {
	redisxtest.EachTopology(t, func(t *testing.T, url string) {
		prefix := testPrefix(t)
		adminOf(t, url, prefix)
		streamtest.Run(t, func(t *testing.T, r stream.Retention) stream.Stream {
			return newNodeOn(t, url, prefix, r)
		})
	})
}

func rec(i int) stream.Record {
	return stream.Record{Type: "note", ThreadID: "th", Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
}

type collector struct {
	mu  sync.Mutex
	evs []stream.Event
}

func (c *collector) handle(ev stream.Event) {
	c.mu.Lock()
	c.evs = append(c.evs, ev)
	c.mu.Unlock()
}

func (c *collector) events() []stream.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs)
}

func (c *collector) waitLen(t *testing.T, n int, d time.Duration) []stream.Event {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		evs := c.events()
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d events; got %d", n, len(evs))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkInOrder: exactly seqs 1..n, each once, in order, one epoch.
func checkInOrder(t *testing.T, evs []stream.Event, n int, epoch string) {
	t.Helper()
	if len(evs) != n {
		t.Fatalf("%d events, want %d", len(evs), n)
	}
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) || ev.Epoch != epoch {
			t.Fatalf("event #%d: seq %d epoch %q, want seq %d epoch %q", i, ev.Seq, ev.Epoch, i+1, epoch)
		}
	}
}

func TestTwoNodesLiveDelivery(t *testing.T) {
	redisxtest.EachTopology(t, testTwoNodesLiveDelivery)
}

func testTwoNodesLiveDelivery(t *testing.T, url string) {
	prefix := testPrefix(t)
	adminOf(t, url, prefix)
	a := newNodeOn(t, url, prefix, stream.Retention{})
	b := newNodeOn(t, url, prefix, stream.Retention{})
	const n = 300
	u := "user-two-nodes"
	var col collector
	cancel, err := b.Subscribe(t.Context(), u, col.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	var appended []stream.Event
	for i := 1; i <= n; i++ {
		ev, err := a.Append(t.Context(), u, rec(i))
		if err != nil {
			t.Fatal(err)
		}
		appended = append(appended, ev)
	}
	live := col.waitLen(t, n, 5*time.Second)
	checkInOrder(t, live, n, appended[0].Epoch)
	for i := range live {
		if string(live[i].Frame) != string(appended[i].Frame) || live[i].Type != "note" || live[i].ThreadID != "th" {
			t.Fatalf("seq %d: live %s, appended %s", i+1, live[i].Frame, appended[i].Frame)
		}
	}
	// B replays what A appended, same bytes.
	hist, pos, err := b.Since(t.Context(), u, protocol.Cursor{Epoch: appended[0].Epoch}, stream.Limit{})
	if err != nil || pos.Head != n || len(hist) != n || string(hist[n-1].Frame) != string(appended[n-1].Frame) {
		t.Fatalf("Since on B: %d events, %+v, %v", len(hist), pos, err)
	}
}

// killPubSub kills the subscribed connections of the clients named name:
// the subscriptions of this test's node and, as they share it, its other
// commands; other tests' clients on the shared Redis are left alone.
func killPubSub(t *testing.T, c rueidis.Client, name string) int {
	t.Helper()
	ctx := t.Context()
	list, err := c.Do(ctx, c.B().ClientList().Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		var id, cname string
		subs := false
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "id":
				id = v
			case "name":
				cname = v
			case "sub", "psub", "ssub":
				if v != "0" {
					subs = true
				}
			}
		}
		if subs && id != "" && cname == name {
			if err := c.Do(ctx, c.B().Arbitrary("CLIENT", "KILL", "ID", id).Build()).Error(); err == nil {
				n++
			}
		}
	}
	return n
}

func TestPubSubKilledGapFill(t *testing.T) {
	prefix := testPrefix(t)
	adm := admin(t, prefix)
	a := newNode(t, prefix, stream.Retention{})
	name := strings.ReplaceAll(prefix, "-", "_")
	url := redisxtest.URL(t)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	b := newNodeWith(t, Options{Client: dial(t, url+sep+"client_name="+name, 0), Prefix: prefix})
	users := []string{"gap-1", "gap-2", "gap-3"}
	cols := subscribeAll(t, b, users)
	const n = 400
	var wg sync.WaitGroup
	epochs := make([]string, len(users))
	for i, u := range users {
		wg.Go(func() {
			for j := 1; j <= n; j++ {
				ev, err := a.Append(t.Context(), u, rec(j))
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				epochs[i] = ev.Epoch
				if j%20 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	killed := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-time.After(15 * time.Millisecond):
			killed += killPubSub(t, adm, name)
		}
	}
	if t.Failed() {
		return
	}
	if killed == 0 {
		t.Fatal("no pub/sub connection was killed: the test tests nothing")
	}
	t.Logf("killed %d pub/sub connections during the appends; node B filled from the log %d times", killed, b.fills.Load())
	for i := range users {
		cols[i].waitLen(t, n, 10*time.Second)
	}
	// After the storm, live delivery still works; and each user's event
	// n+1, delivered in order after the first n, is the barrier by which
	// any duplicate of those would have come (not a pause).
	for i, u := range users {
		ev, err := a.Append(t.Context(), u, rec(n+1))
		if err != nil {
			t.Fatal(err)
		}
		cols[i].waitLen(t, n+1, 10*time.Second)
		got := cols[i].events()
		checkInOrder(t, got, n+1, epochs[i])
		if got[n].Seq != ev.Seq || got[n].Epoch != ev.Epoch {
			t.Fatalf("user %s after kills: seq %d of %s, want %d of %s", u, got[n].Seq, got[n].Epoch, ev.Seq, ev.Epoch)
		}
	}
}

func TestHistoryFlushedNewEpoch(t *testing.T) {
	redisxtest.EachTopology(t, testHistoryFlushedNewEpoch)
}

func testHistoryFlushedNewEpoch(t *testing.T, url string) {
	prefix := testPrefix(t)
	adm := adminOf(t, url, prefix)
	a := newNodeOn(t, url, prefix, stream.Retention{})
	b := newNodeOn(t, url, prefix, stream.Retention{})
	u := "flushed"
	var col collector
	cancel, err := b.Subscribe(t.Context(), u, col.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	var old stream.Event
	for i := 1; i <= 3; i++ {
		if old, err = a.Append(t.Context(), u, rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	col.waitLen(t, 3, 5*time.Second)
	tag := a.userTag(u)
	if err := adm.Do(t.Context(), adm.B().Del().Key(tag+"meta", tag+"log").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	ev, err := a.Append(t.Context(), u, rec(4))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Seq != 1 || ev.Epoch == old.Epoch || ev.Epoch == "" {
		t.Fatalf("after flush: seq %d epoch %q, want seq 1 in a new epoch (old %q)", ev.Seq, ev.Epoch, old.Epoch)
	}
	_, _, err = b.Since(t.Context(), u, protocol.Cursor{Seq: 3, Epoch: old.Epoch}, stream.Limit{})
	var re *stream.ResyncError
	if !errors.As(err, &re) || re.Reason != protocol.ReasonEpochChanged || re.Position != (stream.Position{Epoch: ev.Epoch, Head: 1}) {
		t.Fatalf("Since(3, old epoch) = %v, want epoch_changed at head 1 epoch %q", err, ev.Epoch)
	}
	// The live subscriber on B follows the new epoch from its seq 1.
	live := col.waitLen(t, 4, 5*time.Second)
	if live[3].Seq != 1 || live[3].Epoch != ev.Epoch {
		t.Fatalf("live after flush: seq %d epoch %q", live[3].Seq, live[3].Epoch)
	}
}

func TestUserIDsDoNotCollide(t *testing.T) {
	prefix := testPrefix(t)
	admin(t, prefix)
	s := newNode(t, prefix, stream.Retention{})
	users := []string{"a", "a}", "a}:meta", "a:b", "a}:b", "{u:a}", "u:a", "", "a\x00b", "ü}{"}
	tags := map[string]string{}
	for i, u := range users {
		tag := s.userTag(u)
		if other, dup := tags[tag]; dup {
			t.Fatalf("users %q and %q share tag %q", u, other, tag)
		}
		tags[tag] = u
		if strings.Count(tag, "{") != 1 || strings.Count(tag, "}") != 1 {
			t.Fatalf("user %q: tag %q has more than one brace pair", u, tag)
		}
		for j := 0; j <= i; j++ {
			if _, err := s.Append(t.Context(), u, rec(j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, u := range users {
		pos, err := s.Head(t.Context(), u)
		if err != nil || pos.Head != uint64(i+1) {
			t.Fatalf("user %q: head %+v %v, want %d", u, pos, err, i+1)
		}
	}
}

func TestKeysExpireWhenIdle(t *testing.T) {
	prefix := testPrefix(t)
	adm := admin(t, prefix)
	r := stream.Retention{MaxAge: time.Second}
	s := newNode(t, prefix, r)
	u := "ttl"
	if _, err := s.Append(t.Context(), u, stream.Record{Type: "note", IdempotencyKey: "k"}); err != nil {
		t.Fatal(err)
	}
	tag := s.userTag(u)
	for _, k := range []string{"meta", "log", "idem:k"} {
		ms, err := adm.Do(t.Context(), adm.B().Pttl().Key(tag+k).Build()).AsInt64()
		if err != nil || ms <= 0 {
			t.Fatalf("PTTL %s = %d %v, want a TTL", k, ms, err)
		}
		max := (r.MaxAge + keyMargin).Milliseconds()
		if k == "idem:k" {
			max = stream.IdempotencyWindow.Milliseconds()
		}
		if ms > max {
			t.Fatalf("PTTL %s = %d ms, want <= %d", k, ms, max)
		}
	}
}

func TestUnavailable(t *testing.T) {
	redisxtest.URL(t) // same skip rule as the rest
	start := time.Now()
	s, err := New(t.Context(), Options{Client: redisxtest.Down(t, 500*time.Millisecond)})
	if err != nil {
		t.Fatalf("New with Redis down: %v (want a Stream that reports unavailability)", err)
	}
	s.Start()
	defer s.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := s.Append(ctx, "u", rec(1)); !errors.Is(err, stream.ErrUnavailable) {
		t.Fatalf("Append: %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, stream.ErrUnavailable) {
		t.Fatalf("Ping: %v, want ErrUnavailable", err)
	}
	if _, _, err := s.Since(ctx, "u", protocol.Cursor{}, stream.Limit{}); !errors.Is(err, stream.ErrUnavailable) {
		t.Fatalf("Since: %v, want ErrUnavailable", err)
	}
	if _, err := s.Subscribe(ctx, "u", func(stream.Event) {}); !errors.Is(err, stream.ErrUnavailable) {
		t.Fatalf("Subscribe: %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v to report unavailability", d)
	}
}

func TestBadOptions(t *testing.T) {
	if _, err := New(t.Context(), Options{Client: dial(t, "redis://127.0.0.1:1/0", 0), Prefix: "a{b"}); err == nil {
		t.Fatal("prefix with a brace accepted")
	}
	if _, err := New(t.Context(), Options{}); err == nil {
		t.Fatal("no client accepted")
	}
	if _, err := redisx.Dial("http://x", 0, nil); err == nil {
		t.Fatal("bad URL accepted")
	}
}

func TestDecodeFrameRoundTrip(t *testing.T) {
	for _, r := range []stream.Record{
		{Type: "note"},
		{Type: "x", ThreadID: `t"\<>`, RunID: "r\u2028é", Data: json.RawMessage(`{"a":"}"}`)},
		{Type: "y", RunID: "r"},
	} {
		ev := stream.Event{Seq: 42, Epoch: "E1", TS: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC), Record: r}
		tpl, pre, post, err := template(&stream.Event{TS: ev.TS, Record: r})
		if err != nil {
			t.Fatal(err)
		}
		f := fill(tpl, pre, post, ev.Seq, ev.Epoch)
		if want := protocol.EncodeEvent(ev.Wire()); string(f) != string(want) {
			t.Fatalf("fill = %s, want %s", f, want)
		}
		got, err := decodeFrame(f)
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != 42 || got.Epoch != "E1" || !got.TS.Equal(ev.TS) || got.Type != r.Type || got.ThreadID != r.ThreadID || got.RunID != r.RunID {
			t.Fatalf("decoded %+v from %s", got, f)
		}
	}
	for _, bad := range []string{"", "{}", `{"type":"a","seq":x}`, `{"type":"a","seq":1,"epoch":"e","ts":"bad","data":{}}`} {
		if _, err := decodeFrame([]byte(bad)); err == nil {
			t.Fatalf("decodeFrame(%q) accepted", bad)
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	prefix := testPrefix(b)
	admin(b, prefix)
	s := newNode(b, prefix, stream.Retention{})
	var n atomic.Int64
	r := stream.Record{Type: "agent_message_delta", ThreadID: "01JTHREAD", RunID: "01JRUN", Data: json.RawMessage(`{"message_id":"m1","delta":"hello world"}`)}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		u := "bench-" + strconv.FormatInt(n.Add(1), 10)
		for pb.Next() {
			if _, err := s.Append(context.Background(), u, r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendDeliver: append on node A, delivered live on node B; an op
// ends when B's handler has the event.
func BenchmarkAppendDeliver(b *testing.B) {
	prefix := testPrefix(b)
	admin(b, prefix)
	a := newNode(b, prefix, stream.Retention{})
	nb := newNode(b, prefix, stream.Retention{})
	u := "bench-deliver"
	var got atomic.Int64
	cancel, err := nb.Subscribe(context.Background(), u, func(stream.Event) { got.Add(1) })
	if err != nil {
		b.Fatal(err)
	}
	defer cancel()
	r := stream.Record{Type: "agent_message_delta", ThreadID: "01JTHREAD", RunID: "01JRUN", Data: json.RawMessage(`{"message_id":"m1","delta":"hello world"}`)}
	b.ReportAllocs()
	b.ResetTimer()
	base := got.Load()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Append(context.Background(), u, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	want := base + int64(b.N)
	for got.Load() < want {
		time.Sleep(50 * time.Microsecond)
	}
}

// TestWatchdogRestartsDeadSubscription appends events the subscription
// never hears of (the script publishes them on a channel nobody listens
// to, as a connection that silently stopped delivering would): the
// watchdog sees the node fall behind without live messages, restarts the
// subscription and catches up from the log, so delivery does not stall.
func TestWatchdogRestartsDeadSubscription(t *testing.T) {
	redisxtest.EachTopology(t, func(t *testing.T, url string) {
		prefix := testPrefix(t)
		adminOf(t, url, prefix)
		a := newNodeOn(t, url, prefix, stream.Retention{})
		b := newNodeWith(t, Options{Client: dial(t, url, 0), Prefix: prefix, CheckEvery: 100 * time.Millisecond})
		u := "watchdog"
		col := subscribeAll(t, b, []string{u})[0]
		first, err := a.Append(t.Context(), u, rec(1))
		if err != nil {
			t.Fatal(err)
		}
		col.waitLen(t, 1, 10*time.Second)
		// Silent appends until the watchdog restarted the subscription.
		tag := a.userTag(u)
		n := 1
		deadline := time.Now().Add(30 * time.Second)
		for b.stalls.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the watchdog never restarted the silent subscription")
			}
			n++
			ev := stream.Event{TS: time.Now().UTC(), Record: rec(n)}
			tpl, pre, post, err := template(&ev)
			if err != nil {
				t.Fatal(err)
			}
			err = appendScript.Exec(t.Context(), a.client, []string{tag + "meta", tag + "log", tag + "void"}, []string{
				a.maxEvStr, a.maxAgeUS, a.keyTTL, "600000", a.maxBStr, "1",
				newEpoch(), rueidis.BinaryString(tpl), strconv.Itoa(pre), strconv.Itoa(post),
				strconv.FormatInt(ev.TS.UnixMicro(), 10), "3",
			}).Error()
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // pacing the silent appends, not a wait for an outcome
		}
		checkInOrder(t, col.waitLen(t, n, 10*time.Second), n, first.Epoch)
		// The restarted subscription delivers live again.
		if _, err := a.Append(t.Context(), u, rec(n+1)); err != nil {
			t.Fatal(err)
		}
		checkInOrder(t, col.waitLen(t, n+1, 10*time.Second), n+1, first.Epoch)
	})
}

// TestRestartOnDiskKeepsEpoch: a master restarted in place on its
// append-only file (fsync always) takes a new replication id but was not
// promoted from another master: the history is whole, so the epoch and the
// seqs go on, and a client resumes without resync (a failover, which does
// change the epoch, is TestFailover).
func TestRestartOnDiskKeepsEpoch(t *testing.T) {
	redisxtest.URL(t) // same skip rule as the rest
	r := testproc.StartRedis(t, true, "!!! no redis-server binary: TestRestartOnDiskKeepsEpoch NOT RUN !!!")
	prefix := testPrefix(t)
	s := newNodeOn(t, r.URL(), prefix, stream.Retention{})
	u := "restart"
	var last stream.Event
	for i := 1; i <= 3; i++ {
		var err error
		if last, err = s.Append(t.Context(), u, rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	r.Kill()
	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	var ev stream.Event
	eventually(t, "append after the restart", func() error {
		var err error
		ev, err = s.Append(t.Context(), u, rec(4))
		return err
	})
	if ev.Epoch != last.Epoch || ev.Seq != 4 {
		t.Fatalf("after a restart on disk: seq %d epoch %s, want seq 4 epoch %s", ev.Seq, ev.Epoch, last.Epoch)
	}
	// The client's other connections learn of the restart at their first
	// use: a read may still meet the dead one's EOF (ErrUnavailable, which
	// clients retry) after the append went through a fresh one.
	var evs []stream.Event
	var err error
	eventually(t, "resume from 3", func() error {
		evs, _, err = s.Since(t.Context(), u, protocol.Cursor{Seq: 3, Epoch: last.Epoch}, stream.Limit{})
		if errors.Is(err, stream.ErrUnavailable) {
			return err
		}
		return nil
	})
	if err != nil || len(evs) != 1 || evs[0].Seq != 4 {
		t.Fatalf("resume from 3: %d events, %v", len(evs), err)
	}
}

// TestResubscribeRightAfterUnsubscribe: the last handler of a user going
// sends SUNSUBSCRIBE, and Redis's answer ends every local subscription of
// that channel on the connection, including one made right after for the
// same user. Subscribe must still succeed, and deliver.
func TestResubscribeRightAfterUnsubscribe(t *testing.T) {
	redisxtest.EachTopology(t, func(t *testing.T, url string) {
		prefix := testPrefix(t)
		adminOf(t, url, prefix)
		s := newNodeOn(t, url, prefix, stream.Retention{})
		u := "resubscribe"
		for i := range 200 {
			cancel, err := s.Subscribe(t.Context(), u, func(stream.Event) {})
			if err != nil {
				t.Fatalf("Subscribe #%d: %v", i, err)
			}
			cancel()
		}
		col := subscribeAll(t, s, []string{u})[0]
		ev, err := s.Append(t.Context(), u, rec(1))
		if err != nil {
			t.Fatal(err)
		}
		if got := col.waitLen(t, 1, 10*time.Second); got[0].Seq != ev.Seq {
			t.Fatalf("delivered seq %d, want %d", got[0].Seq, ev.Seq)
		}
	})
}

// TestAppendsSentTogether: appends from many goroutines at once go out in
// fewer batches than appends, and every user still gets every event once,
// in a gapless sequence, each caller the seq its event holds.
func TestAppendsSentTogether(t *testing.T) {
	redisxtest.EachTopology(t, testAppendsSentTogether)
}

func testAppendsSentTogether(t *testing.T, url string) {
	prefix := testPrefix(t)
	adminOf(t, url, prefix)
	s := newNodeOn(t, url, prefix, stream.Retention{})
	const users, per = 20, 20
	start := make(chan struct{})
	got := make([]stream.Event, users*per)
	errs := make(chan error, users*per)
	var wg sync.WaitGroup
	for i := range users * per {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := rec(i)
			if i%2 == 0 {
				r.IdempotencyKey = "k" + strconv.Itoa(i)
			}
			ev, err := s.Append(t.Context(), "u"+strconv.Itoa(i%users), r)
			if err != nil {
				errs <- err
				return
			}
			got[i] = ev
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := s.sends.Load(); n >= users*per {
		t.Fatalf("%d appends in %d batches: none went out together", users*per, n)
	}
	for u := range users {
		user := "u" + strconv.Itoa(u)
		evs, _, err := s.Since(t.Context(), user, protocol.Cursor{}, stream.Limit{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != per {
			t.Fatalf("%s: %d events, want %d", user, len(evs), per)
		}
		for k, ev := range evs {
			if ev.Seq != uint64(k+1) {
				t.Fatalf("%s: event %d has seq %d", user, k, ev.Seq)
			}
		}
		for i := u; i < users*per; i += users {
			if g := got[i]; !bytes.Equal(evs[g.Seq-1].Data, rec(i).Data) || g.Epoch != evs[0].Epoch {
				t.Fatalf("%s: append %d got seq %d, which holds %s", user, i, g.Seq, evs[g.Seq-1].Data)
			}
		}
	}
	t.Logf("%d appends in %d batches", users*per, s.sends.Load())
}

// TestAppendAfterScriptFlush: an append whose script Redis no longer holds
// (restarted, failed over, SCRIPT FLUSH) loads it and runs once.
func TestAppendAfterScriptFlush(t *testing.T) {
	prefix := testPrefix(t)
	a := admin(t, prefix)
	s := newNode(t, prefix, stream.Retention{})
	for i := range 3 {
		if err := a.Do(t.Context(), a.B().ScriptFlush().Build()).Error(); err != nil {
			t.Fatal(err)
		}
		ev, err := s.Append(t.Context(), "u", rec(i))
		if err != nil {
			t.Fatalf("append %d after SCRIPT FLUSH: %v", i, err)
		}
		if ev.Seq != uint64(i+1) {
			t.Fatalf("append %d: seq %d", i, ev.Seq)
		}
	}
	evs, _, err := s.Since(t.Context(), "u", protocol.Cursor{}, stream.Limit{})
	if err != nil || len(evs) != 3 {
		t.Fatalf("Since: %d events, %v; want 3", len(evs), err)
	}
}

// TestAppendLeftBeforeSent: a caller whose context ends while its append
// waits in the queue takes it out: it is reported as not appended, and is
// not.
func TestAppendLeftBeforeSent(t *testing.T) {
	prefix := testPrefix(t)
	admin(t, prefix)
	s := newNode(t, prefix, stream.Retention{})
	p := &s.appends
	// A queued append whose sender has not run: exec starts none.
	now := time.Now()
	ev := stream.Event{TS: now, Record: rec(1)}
	tpl, pre, post, err := template(&ev)
	if err != nil {
		t.Fatal(err)
	}
	ahead := &appendCall{done: make(chan struct{})}
	ahead.keys, ahead.args = s.appendArgs("other", "", tpl, pre, post, now)
	p.q = append(p.q, ahead)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	keys, args := s.appendArgs("u", "", tpl, pre, post, now)
	if _, sent, err := p.exec(ctx, keys, args); sent || !errors.Is(err, context.Canceled) {
		t.Fatalf("exec with its context ended: sent %v, %v; want not sent, context.Canceled", sent, err)
	}
	p.send()
	<-ahead.done
	if err := ahead.res.Error(); err != nil {
		t.Fatalf("the append ahead: %v", err)
	}
	for user, want := range map[string]uint64{"u": 0, "other": 1} {
		pos, err := s.Head(t.Context(), user)
		if err != nil || pos.Head != want {
			t.Fatalf("head of %s: %d, %v; want %d", user, pos.Head, err, want)
		}
	}
}

// TestAppendErrorStaysItsOwn: appends sent in one script call each get their
// own reply: one that fails (its meta key holds a string) fails alone, the
// others before and after it are appended.
func TestAppendErrorStaysItsOwn(t *testing.T) {
	prefix := testPrefix(t)
	a := admin(t, prefix)
	s := newNode(t, prefix, stream.Retention{})
	if err := a.Do(t.Context(), a.B().Set().Key(s.userTag("bad")+"meta").Value("x").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ev := stream.Event{TS: now, Record: rec(1)}
	tpl, pre, post, err := template(&ev)
	if err != nil {
		t.Fatal(err)
	}
	p := &s.appends
	users := []string{"a", "bad", "c", "a"}
	calls := make([]*appendCall, len(users))
	for i, u := range users {
		calls[i] = &appendCall{done: make(chan struct{})}
		calls[i].keys, calls[i].args = s.appendArgs(u, "", tpl, pre, post, now)
	}
	p.q = append(p.q, calls...) // one batch, one script call (standalone)
	p.send()
	for i, want := range []string{"1", "WRONGTYPE", "1", "2"} {
		c := calls[i]
		<-c.done
		if c.err != nil {
			t.Fatalf("append %d (%s): the call failed: %v", i, users[i], c.err)
		}
		got, err := c.res.ToArray()
		if want == "WRONGTYPE" {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("append %d (%s): %v, %v; want a WRONGTYPE error", i, users[i], got, err)
			}
			continue
		}
		if err != nil || len(got) != 2 {
			t.Fatalf("append %d (%s): %v, %v", i, users[i], got, err)
		}
		if seq, _ := got[0].ToString(); seq != want {
			t.Fatalf("append %d (%s): seq %s, want %s", i, users[i], seq, want)
		}
	}
}

// TestTrimKeepsByteCount: appends past MaxEvents (each one trimming the
// oldest entry, reading only what it drops and the first entry kept) keep
// meta's byte count equal to the frames the log holds.
func TestTrimKeepsByteCount(t *testing.T) {
	prefix := testPrefix(t)
	adm := admin(t, prefix)
	s := newNode(t, prefix, stream.Retention{MaxEvents: 10})
	u := "bytes"
	for i := range 40 {
		r := rec(i)
		r.Data = json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", i*7%50)))
		if _, err := s.Append(t.Context(), u, r); err != nil {
			t.Fatal(err)
		}
	}
	tag := s.userTag(u)
	entries, err := adm.Do(t.Context(), adm.B().Xrange().Key(tag+"log").Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, e := range entries {
		sum += len(e.FieldValues["f"])
	}
	b, err := adm.Do(t.Context(), adm.B().Hget().Key(tag+"meta").Field("b").Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 10 || int(b) != sum {
		t.Fatalf("log holds %d entries of %d bytes, meta b = %d; want 10 entries and b equal to their bytes", len(entries), sum, b)
	}
	if entries[0].ID != "31-0" {
		t.Fatalf("oldest entry %s, want 31-0", entries[0].ID)
	}
}
