package memory

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/streamtest"
	"github.com/agentwire/agentwire/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	streamtest.Run(t, func(t *testing.T, r stream.Retention) stream.Stream {
		s := New(Options{Retention: r})
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

// clock is a fake clock tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newFake(t testing.TB, r stream.Retention) (*Stream, *clock) {
	clk := newClock()
	s := New(Options{Retention: r, Now: clk.Now})
	t.Cleanup(func() { _ = s.Close() })
	return s, clk
}

func note(i int) stream.Record {
	return stream.Record{Type: "note", Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
}

func mustAppend(t testing.TB, s *Stream, u string, r stream.Record) stream.Event {
	t.Helper()
	ev, err := s.Append(t.Context(), u, r)
	if err != nil {
		t.Fatalf("Append(%q): %v", u, err)
	}
	return ev
}

func mustHead(t testing.TB, s *Stream, u string) stream.Position {
	t.Helper()
	pos, err := s.Head(t.Context(), u)
	if err != nil {
		t.Fatalf("Head(%q): %v", u, err)
	}
	return pos
}

// records counts the user records s holds.
func records(s *Stream) int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.users)
		sh.mu.Unlock()
	}
	return n
}

func hasRecord(s *Stream, u string) bool {
	sh, _ := s.locate(u)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.users[u]
	return ok
}

// hasHistory reports whether u's record holds a history (ring or keys).
func hasHistory(s *Stream, u string) bool {
	sh, _ := s.locate(u)
	sh.mu.Lock()
	r := sh.users[u]
	sh.mu.Unlock()
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.history != nil
}

// sweepAll makes every shard sweep the lazy way, by appending to one fresh
// user per shard, and returns those users.
func sweepAll(t *testing.T, s *Stream) []string {
	t.Helper()
	var users []string
	seen := map[*shard]bool{}
	for i := 0; len(seen) < numShards; i++ {
		u := fmt.Sprintf("sweeper-%d-%d", time.Now().UnixNano(), i)
		if sh, _ := s.locate(u); !seen[sh] {
			seen[sh] = true
			mustAppend(t, s, u, note(0))
			users = append(users, u)
		}
	}
	return users
}

// sweepShardOf makes u's shard sweep by appending to another user of it.
func sweepShardOf(t *testing.T, s *Stream, u string) {
	t.Helper()
	want, _ := s.locate(u)
	for i := 0; ; i++ {
		other := fmt.Sprintf("%s-neighbour-%d", u, i)
		if sh, _ := s.locate(other); sh == want {
			mustAppend(t, s, other, note(0))
			return
		}
	}
}

func TestEvictionFreesIdleUsers(t *testing.T) {
	t.Parallel()
	const maxAge = time.Minute
	s, clk := newFake(t, stream.Retention{MaxAge: maxAge})
	const n = 2000
	for i := range n {
		u := fmt.Sprintf("user-%d", i)
		mustAppend(t, s, u, note(1))
		mustAppend(t, s, u, note(2))
	}
	for i := range n {
		if pos := mustHead(t, s, fmt.Sprintf("stranger-%d", i)); pos.Head != 0 {
			t.Fatalf("Head of a stranger: %+v", pos)
		}
		_, _, _ = s.Since(t.Context(), fmt.Sprintf("stranger-%d", i), protocol.Cursor{}, stream.Limit{})
	}
	if got := records(s); got != n {
		t.Fatalf("%d records after %d users appended and %d strangers looked up, want %d", got, n, n, n)
	}

	clk.Advance(maxAge / 2)
	sweepers := sweepAll(t, s)
	if got := records(s); got != n+len(sweepers) {
		t.Fatalf("%d records before expiry, want %d", got, n+len(sweepers))
	}

	clk.Advance(maxAge + time.Second)
	sweepers = sweepAll(t, s)
	if got := records(s); got != len(sweepers) {
		t.Fatalf("%d records after every user expired, want only the %d sweepers", got, len(sweepers))
	}
}

func TestEvictedUserWithHistoryGetsNewEpoch(t *testing.T) {
	t.Parallel()
	const maxAge = time.Minute
	s, clk := newFake(t, stream.Retention{MaxAge: maxAge})
	u := "alice"
	var old stream.Event
	for i := 1; i <= 3; i++ {
		old = mustAppend(t, s, u, note(i))
	}

	clk.Advance(maxAge + time.Second)
	sweepShardOf(t, s, u)
	if hasRecord(s, u) {
		t.Fatal("idle user with expired history was not evicted")
	}
	pos := mustHead(t, s, u)
	if pos.Head != 0 || pos.Epoch == old.Epoch {
		t.Fatalf("Head after eviction = %+v, want head 0 and an epoch other than %q", pos, old.Epoch)
	}
	_, _, err := s.Since(t.Context(), u, protocol.Cursor{Seq: 3, Epoch: old.Epoch}, stream.Limit{})
	var re *stream.ResyncError
	if !errors.As(err, &re) || re.Reason != protocol.ReasonEpochChanged || re.Position != pos {
		t.Fatalf("resume with the old epoch: %v, want epoch_changed at %+v", err, pos)
	}
	ev := mustAppend(t, s, u, note(4))
	if ev.Seq != 1 || ev.Epoch != pos.Epoch {
		t.Fatalf("first append after eviction: seq %d epoch %q, want 1 and %q", ev.Seq, ev.Epoch, pos.Epoch)
	}

	// A second loss gives yet another epoch.
	clk.Advance(maxAge + time.Second)
	sweepShardOf(t, s, u)
	if p := mustHead(t, s, u); p.Epoch == old.Epoch || p.Epoch == pos.Epoch {
		t.Fatalf("epoch after a second eviction %q repeats an earlier one", p.Epoch)
	}
}

func TestEvictedUserWithoutHistoryKeepsEpoch(t *testing.T) {
	t.Parallel()
	s, clk := newFake(t, stream.Retention{MaxAge: time.Minute})
	u := "bob"
	cancel, err := s.Subscribe(t.Context(), u, func(stream.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	shown := mustHead(t, s, u)
	cancel()
	clk.Advance(time.Hour)
	sweepShardOf(t, s, u)
	if hasRecord(s, u) {
		t.Fatal("user without subscribers or events was not evicted")
	}
	if ev := mustAppend(t, s, u, note(1)); ev.Epoch != shown.Epoch || ev.Seq != 1 {
		t.Fatalf("first event seq %d epoch %q, want 1 and the epoch shown before, %q", ev.Seq, ev.Epoch, shown.Epoch)
	}
}

func TestSubscribedUserIsNotEvicted(t *testing.T) {
	t.Parallel()
	const maxAge = time.Minute
	s, clk := newFake(t, stream.Retention{MaxAge: maxAge})
	u := "carol"
	cancel, err := s.Subscribe(t.Context(), u, func(stream.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	if hasHistory(s, u) {
		t.Fatal("a subscribed user without events holds a history")
	}
	first := mustAppend(t, s, u, note(1))
	mustAppend(t, s, u, note(2))
	if !hasHistory(s, u) {
		t.Fatal("no history after appends")
	}

	clk.Advance(2 * maxAge)
	sweepShardOf(t, s, u)
	if !hasRecord(s, u) {
		t.Fatal("user with a live subscriber was evicted")
	}
	if hasHistory(s, u) {
		t.Fatal("a sweep left the history of a subscribed user with nothing retained")
	}
	evs, pos, err := s.Since(t.Context(), u, protocol.Cursor{Seq: 2, Epoch: first.Epoch}, stream.Limit{})
	if err != nil || len(evs) != 0 || pos.Head != 2 || pos.Epoch != first.Epoch {
		t.Fatalf("Since(head) = %v %+v %v, want nothing at head 2 of the same epoch", evs, pos, err)
	}
	if _, _, err := s.Since(t.Context(), u, protocol.Cursor{Epoch: first.Epoch}, stream.Limit{}); !errors.Is(err, stream.ErrResync) {
		t.Fatalf("Since(0) after expiry: %v, want resync", err)
	}
	if ev := mustAppend(t, s, u, note(3)); ev.Seq != 3 || ev.Epoch != first.Epoch {
		t.Fatalf("append after expiry with subscriber: seq %d epoch %q", ev.Seq, ev.Epoch)
	}

	cancel()
	clk.Advance(2 * maxAge)
	sweepShardOf(t, s, u)
	if hasRecord(s, u) {
		t.Fatal("user still held after its subscriber left and history expired")
	}
}

func TestIdempotencyKeys(t *testing.T) {
	t.Parallel()
	const maxAge = time.Minute // shorter than the idempotency window
	s, clk := newFake(t, stream.Retention{MaxAge: maxAge})
	u := "dave"
	keyed := func(key string, i int) stream.Record {
		r := note(i)
		r.IdempotencyKey = key
		return r
	}
	first := mustAppend(t, s, u, keyed("k", 1))

	// The key outlives the history: the user is kept for it.
	clk.Advance(2 * maxAge)
	sweepShardOf(t, s, u)
	if !hasRecord(s, u) {
		t.Fatal("user evicted while it holds an unexpired idempotency key")
	}
	if ev := mustAppend(t, s, u, keyed("k", 2)); ev.Seq != first.Seq || string(ev.Frame) != string(first.Frame) {
		t.Fatalf("same key after history expired: seq %d, want the first event", ev.Seq)
	}

	// Past the window the key is forgotten and the user can go.
	clk.Advance(stream.IdempotencyWindow)
	sweepShardOf(t, s, u)
	if hasRecord(s, u) {
		t.Fatal("user kept after its keys and history expired")
	}

	// The key map does not grow without bound.
	const n = 1000
	for i := range n {
		mustAppend(t, s, u, keyed(fmt.Sprint("bulk-", i), i))
	}
	clk.Advance(stream.IdempotencyWindow + time.Second)
	ev := mustAppend(t, s, u, keyed("bulk-0", 0))
	if ev.Seq != n+1 {
		t.Fatalf("expired key: seq %d, want a new event %d", ev.Seq, n+1)
	}
	sh, _ := s.locate(u)
	sh.mu.Lock()
	rec := sh.users[u]
	sh.mu.Unlock()
	rec.mu.Lock()
	keys, queued := len(rec.keys), len(rec.keyQ)-rec.keyQ0
	rec.mu.Unlock()
	if keys != 1 || queued != 1 {
		t.Fatalf("after expiry %d keys and %d queued, want 1 and 1", keys, queued)
	}
}

func TestIdempotencyKeysCapped(t *testing.T) {
	t.Parallel()
	s, _ := newFake(t, stream.Retention{MaxEvents: 10})
	u := "ivan"
	keyed := func(i int) stream.Record {
		r := note(i)
		r.IdempotencyKey = fmt.Sprint("k", i)
		return r
	}
	const n = 100
	for i := 1; i <= n; i++ {
		mustAppend(t, s, u, keyed(i))
	}
	sh, _ := s.locate(u)
	sh.mu.Lock()
	rec := sh.users[u]
	sh.mu.Unlock()
	rec.mu.Lock()
	keys := len(rec.keys)
	rec.mu.Unlock()
	if keys != s.maxKeys() {
		t.Fatalf("%d keys held, want the cap %d", keys, s.maxKeys())
	}
	if ev := mustAppend(t, s, u, keyed(n)); ev.Seq != n {
		t.Fatalf("recent key: seq %d, want the first event %d", ev.Seq, n)
	}
	if ev := mustAppend(t, s, u, keyed(1)); ev.Seq != n+1 {
		t.Fatalf("key dropped by the cap: seq %d, want a new event %d", ev.Seq, n+1)
	}
}

// TestModel checks retention by count and age together against a model,
// through every since of every step.
func TestModel(t *testing.T) {
	t.Parallel()
	const maxEvents, maxAge = 7, 10 * time.Second
	s, clk := newFake(t, stream.Retention{MaxEvents: maxEvents, MaxAge: maxAge})
	rng := rand.New(rand.NewPCG(1, 2))
	u := "model"
	type entry struct {
		seq uint64
		ts  time.Time
	}
	var all []entry
	epoch := mustHead(t, s, u).Epoch
	for step := range 400 {
		if rng.IntN(3) == 0 {
			clk.Advance(time.Duration(rng.IntN(4000)) * time.Millisecond)
		} else {
			ev := mustAppend(t, s, u, note(step))
			all = append(all, entry{ev.Seq, clk.Now()})
		}
		head := uint64(len(all))
		cutoff := clk.Now().Add(-maxAge)
		oldest := head + 1
		for _, e := range all[max(0, len(all)-maxEvents):] {
			if !e.ts.Before(cutoff) {
				oldest = e.seq
				break
			}
		}
		for since := uint64(0); since <= head+1; since++ {
			evs, pos, err := s.Since(t.Context(), u, protocol.Cursor{Seq: since, Epoch: epoch}, stream.Limit{})
			var want protocol.ResyncReason
			switch {
			case since > head:
				want = protocol.ReasonAhead
			case since+1 < oldest:
				want = protocol.ReasonTooOld
			}
			var re *stream.ResyncError
			switch {
			case want != "" && (!errors.As(err, &re) || re.Reason != want):
				t.Fatalf("step %d Since(%d): %v, want %s", step, since, err, want)
			case want == "" && err != nil:
				t.Fatalf("step %d Since(%d): %v (head %d oldest %d)", step, since, err, head, oldest)
			case want == "" && uint64(len(evs)) != head-since:
				t.Fatalf("step %d Since(%d): %d events, want %d", step, since, len(evs), head-since)
			case pos.Head != head || pos.Epoch != epoch:
				t.Fatalf("step %d position %+v", step, pos)
			}
			for i, ev := range evs {
				if ev.Seq != since+uint64(i)+1 {
					t.Fatalf("step %d Since(%d)[%d] has seq %d", step, since, i, ev.Seq)
				}
			}
		}
	}
}

func TestSubscribersInSubscriptionOrder(t *testing.T) {
	t.Parallel()
	s, _ := newFake(t, stream.Retention{})
	u := "erin"
	var got []string
	var cancels []func()
	for i := range 4 {
		cancel, err := s.Subscribe(t.Context(), u, func(ev stream.Event) {
			got = append(got, fmt.Sprintf("%d:%d", ev.Seq, i))
		})
		if err != nil {
			t.Fatal(err)
		}
		cancels = append(cancels, cancel)
	}
	mustAppend(t, s, u, note(1))
	cancels[1]()
	mustAppend(t, s, u, note(2))
	want := "[1:0 1:1 1:2 1:3 2:0 2:2 2:3]"
	if fmt.Sprint(got) != want {
		t.Fatalf("deliveries %v, want %s", got, want)
	}
}

func TestCancelFromInsideHandler(t *testing.T) {
	t.Parallel()
	s, _ := newFake(t, stream.Retention{})
	u := "frank"
	var calls atomic.Int32
	var cancel func()
	cancel, err := s.Subscribe(t.Context(), u, func(stream.Event) {
		calls.Add(1)
		cancel()
	})
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, u, note(1))
	mustAppend(t, s, u, note(2))
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler called %d times, want 1", n)
	}
}

func TestEventDataIsOwnedByTheStream(t *testing.T) {
	t.Parallel()
	s, _ := newFake(t, stream.Retention{})
	data := []byte(`{"a":1}`)
	ev := mustAppend(t, s, "gina", stream.Record{Type: "note", Data: data})
	copy(data, `{"b":2}`)
	evs, _, err := s.Since(t.Context(), "gina", protocol.Cursor{}, stream.Limit{})
	if err != nil {
		t.Fatal(err)
	}
	if string(ev.Data) != `{"a":1}` || string(evs[0].Data) != `{"a":1}` {
		t.Fatalf("event data changed with the caller's buffer: %s / %s", ev.Data, evs[0].Data)
	}
	if cap(evs[0].Data) != len(evs[0].Data) {
		t.Fatalf("event data may be appended to over the frame")
	}
}

// TestChurn races appends, subscriptions and evictions: within an epoch a
// user's seqs go up by one; a new epoch starts at 1.
func TestChurn(t *testing.T) {
	t.Parallel()
	const maxAge = time.Second
	s, clk := newFake(t, stream.Retention{MaxEvents: 16, MaxAge: maxAge})
	const users, appends = 256, 100
	var newEpochs atomic.Int32
	var wg sync.WaitGroup
	var writers sync.WaitGroup
	for i := range users {
		u := fmt.Sprint("churn-", i)
		writers.Go(func() {
			var prev stream.Event
			for j := range appends {
				ev := mustAppend(t, s, u, note(j))
				if ev.Epoch == prev.Epoch && ev.Seq != prev.Seq+1 || ev.Epoch != prev.Epoch && ev.Seq != 1 {
					t.Errorf("%s: seq %d epoch %q after seq %d epoch %q", u, ev.Seq, ev.Epoch, prev.Seq, prev.Epoch)
					return
				}
				if prev.Epoch != "" && ev.Epoch != prev.Epoch {
					newEpochs.Add(1)
				}
				prev = ev
				clk.Advance(maxAge / 8)
			}
		})
		wg.Go(func() {
			for range appends / 5 {
				cancel, err := s.Subscribe(t.Context(), u, func(stream.Event) {})
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = s.Head(t.Context(), u)
				_, _, _ = s.Since(t.Context(), u, protocol.Cursor{}, stream.Limit{})
				cancel()
			}
		})
	}
	writers.Wait()
	wg.Wait()
	if newEpochs.Load() == 0 {
		t.Error("no user was evicted: the test did not exercise eviction")
	}
	t.Logf("%d evictions of users with history", newEpochs.Load())
}

// TestAppendAllocs: Append allocates nothing but what protocol.EncodeEvent does for
// the frame, with a subscriber and a full ring.
func TestAppendAllocs(t *testing.T) {
	s, _ := newFake(t, stream.Retention{})
	cancel, err := s.Subscribe(t.Context(), "hal", func(stream.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	ctx := t.Context()
	for range 2 * stream.DefaultMaxEvents { // fill the ring
		_, _ = s.Append(ctx, "hal", benchRec)
	}
	ev := mustAppend(t, s, "hal", benchRec)
	encode := testing.AllocsPerRun(1000, func() { _ = protocol.EncodeEvent(ev.Wire()) })
	appendAllocs := testing.AllocsPerRun(1000, func() { _, _ = s.Append(ctx, "hal", benchRec) })
	if appendAllocs > encode {
		t.Fatalf("Append allocates %.1f times, Encode %.1f: want nothing beyond the frame", appendAllocs, encode)
	}
	t.Logf("Append: %.1f allocs, of which Encode: %.1f", appendAllocs, encode)
}

var benchRec = stream.Record{
	Type: "agent_message_delta", ThreadID: "01JD3QZ5V3XK5J6Q6M2N8R4T7W", RunID: "01JD3QZ6C0G2N4P6R8T0V2X4Z6",
	Data: json.RawMessage(`{"message_id":"01JD3QZ6C0G2N4P6R8T0V2X4Z7","delta":"Hello, world. "}`),
}

func BenchmarkAppend(b *testing.B) {
	b.Run("one_user", func(b *testing.B) {
		s := New(Options{})
		defer s.Close()
		b.ReportAllocs()
		for b.Loop() {
			_, _ = s.Append(b.Context(), "u", benchRec)
		}
	})
	b.Run("one_user_parallel", func(b *testing.B) {
		s := New(Options{})
		defer s.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, _ = s.Append(b.Context(), "u", benchRec)
			}
		})
	})
	b.Run("many_users_parallel", func(b *testing.B) {
		const users = 1024
		s := New(Options{Retention: stream.Retention{MaxEvents: 100}})
		defer s.Close()
		ids := make([]string, users)
		for i := range ids {
			ids[i] = fmt.Sprint("user-", i)
		}
		var next atomic.Uint32
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(97))
			for pb.Next() {
				_, _ = s.Append(b.Context(), ids[i%users], benchRec)
				i++
			}
		})
	})
}

func BenchmarkAppendFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprint("subs=", n), func(b *testing.B) {
			s := New(Options{})
			defer s.Close()
			for range n {
				cancel, err := s.Subscribe(b.Context(), "u", func(stream.Event) {})
				if err != nil {
					b.Fatal(err)
				}
				defer cancel()
			}
			b.ReportAllocs()
			for b.Loop() {
				_, _ = s.Append(b.Context(), "u", benchRec)
			}
		})
	}
}
