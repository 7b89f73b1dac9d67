// Package streamtest is the conformance suite every stream.Stream backend
// runs unchanged:
//
//	func TestConformance(t *testing.T) {
//		streamtest.Run(t, func(t *testing.T, r stream.Retention) stream.Stream {
//			s := memory.New(memory.Options{Retention: r})
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The factory must return a stream honouring r (zero fields mean the stream
// package defaults) and should close it in t.Cleanup. The suite calls Close
// itself once on a stream it got from the factory, so Close must be
// idempotent. Subtests run in parallel and use user ids no other run uses,
// so a backend may share one server (e.g. one Redis) between them.
//
// What the suite does not check because it is backend specific: eviction of
// idle users, the exact epoch values, and what happens across restarts.
package streamtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// waitTimeout bounds every wait for live delivery, so a broken backend fails
// in seconds instead of hanging the suite.
const waitTimeout = 5 * time.Second

// Run runs the conformance suite against the backend newStream makes.
func Run(t *testing.T, newStream func(t *testing.T, r stream.Retention) stream.Stream) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	s := &suite{prefix: "streamtest-" + hex.EncodeToString(b[:]), newStream: newStream}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"SeqStartsAtOneAndIncrements", s.testSeq},
		{"EpochStableAcrossAppends", s.testEpochStable},
		{"FrameFields", s.testFrameFields},
		{"SinceReturnsEventsAfter", s.testSince},
		{"SinceHeadIsEmpty", s.testSinceHead},
		{"SinceNoneIsHead", s.testSinceNone},
		{"SinceReturnsFreshSlice", s.testSinceFreshSlice},
		{"SinceWrongEpoch", s.testSinceWrongEpoch},
		{"SinceAhead", s.testSinceAhead},
		{"RetentionByCount", s.testRetentionCount},
		{"RetentionByAge", s.testRetentionAge},
		{"RetentionByBytes", s.testRetentionBytes},
		{"SincePages", s.testSincePages},
		{"UserIsolation", s.testIsolation},
		{"ConcurrentAppends", s.testConcurrentAppends},
		{"SubscribeThenSinceJoin", s.testJoin},
		{"CancelStopsDelivery", s.testCancel},
		{"IdempotencyKey", s.testIdempotency},
		{"HeadBeforeFirstAppend", s.testHeadBeforeFirstAppend},
		{"HeadBeforeFirstAppendSubscribed", s.testHeadBeforeFirstAppendSubscribed},
		{"PingAndClose", s.testPingAndClose},
		{"Batch", s.testBatch},
		{"BatchIdempotency", s.testBatchIdempotency},
		{"BatchAtomic", s.testBatchAtomic},
		{"BatchRetention", s.testBatchRetention},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct {
	prefix    string
	newStream func(t *testing.T, r stream.Retention) stream.Stream
}

// user returns an id unique to this run, subtest and name.
func (s *suite) user(t *testing.T, name string) string {
	return s.prefix + "/" + t.Name() + "/" + name
}

func (s *suite) testSeq(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	for i := 1; i <= 20; i++ {
		ev := mustAppend(t, st, u, rec(i))
		if ev.Seq != uint64(i) {
			t.Fatalf("append #%d: seq %d, want %d", i, ev.Seq, i)
		}
	}
	pos := mustHead(t, st, u)
	if pos.Head != 20 {
		t.Fatalf("head %d after 20 appends, want 20", pos.Head)
	}
}

func (s *suite) testEpochStable(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	first := mustAppend(t, st, u, rec(1))
	if first.Epoch == "" {
		t.Fatal("empty epoch")
	}
	for i := 2; i <= 10; i++ {
		if ev := mustAppend(t, st, u, rec(i)); ev.Epoch != first.Epoch {
			t.Fatalf("seq %d epoch %q, want %q", ev.Seq, ev.Epoch, first.Epoch)
		}
	}
	if pos := mustHead(t, st, u); pos.Epoch != first.Epoch {
		t.Fatalf("Head epoch %q, want %q", pos.Epoch, first.Epoch)
	}
	evs, pos := mustSince(t, st, u, 0, "")
	if pos.Epoch != first.Epoch {
		t.Fatalf("Since epoch %q, want %q", pos.Epoch, first.Epoch)
	}
	for _, ev := range evs {
		if ev.Epoch != first.Epoch {
			t.Fatalf("replayed seq %d epoch %q, want %q", ev.Seq, ev.Epoch, first.Epoch)
		}
	}
}

func (s *suite) testFrameFields(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	recs := []stream.Record{
		{Type: "agent_message_delta", ThreadID: "th-1", RunID: "run-1", Data: json.RawMessage(`{"message_id":"m1","delta":"h\u00e9llo \"<x>\"\n"}`)},
		{Type: "agent_started", ThreadID: "th-1", RunID: "run-2", Data: json.RawMessage(`{"agent":"demo"}`)},
		{Type: "custom.published_type", ThreadID: "th-2"},
		{Type: "note", Data: json.RawMessage(`{"nested":{"a":[1,2,{"b":null}]},"ok":true}`)},
	}
	appended := make([]stream.Event, len(recs))
	for i, r := range recs {
		appended[i] = mustAppend(t, st, u, r)
		checkEvent(t, appended[i], r)
	}
	replayed, _ := mustSince(t, st, u, 0, "")
	if len(replayed) != len(recs) {
		t.Fatalf("Since(0) returned %d events, want %d", len(replayed), len(recs))
	}
	for i, ev := range replayed {
		checkEvent(t, ev, recs[i])
		if !bytes.Equal(ev.Frame, appended[i].Frame) {
			t.Errorf("replayed frame differs from appended one:\n got %s\nwant %s", ev.Frame, appended[i].Frame)
		}
	}
}

// checkEvent checks ev's fields and its frame against the record appended.
func checkEvent(t *testing.T, ev stream.Event, r stream.Record) {
	t.Helper()
	if ev.Type != r.Type || ev.ThreadID != r.ThreadID || ev.RunID != r.RunID {
		t.Errorf("event record %+v, want %+v", ev.Record, r)
	}
	wantData := string(r.Data)
	if wantData == "" {
		wantData = "{}"
	}
	if len(ev.Data) > 0 && !jsonEqual(t, ev.Data, []byte(wantData)) {
		t.Errorf("event data %s, want %s", ev.Data, wantData)
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal(ev.Frame, &f); err != nil {
		t.Fatalf("frame %q is not a JSON object: %v", ev.Frame, err)
	}
	str := func(k string) (string, bool) {
		raw, ok := f[k]
		if !ok {
			return "", false
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Errorf("frame field %q = %s, want a string", k, raw)
		}
		return v, true
	}
	if v, _ := str("type"); v != r.Type {
		t.Errorf("frame type %q, want %q", v, r.Type)
	}
	var seq uint64
	if err := json.Unmarshal(f["seq"], &seq); err != nil || seq != ev.Seq {
		t.Errorf("frame seq %s, want %d", f["seq"], ev.Seq)
	}
	if v, _ := str("epoch"); v != ev.Epoch || v == "" {
		t.Errorf("frame epoch %q, want %q (non-empty)", v, ev.Epoch)
	}
	ts, _ := str("ts")
	parsed, err := time.Parse(time.RFC3339Nano, ts)
	switch {
	case err != nil:
		t.Errorf("frame ts %q is not RFC 3339: %v", ts, err)
	case !strings.HasSuffix(ts, "Z"):
		t.Errorf("frame ts %q is not UTC", ts)
	case !parsed.Equal(ev.TS):
		t.Errorf("frame ts %v, event TS %v", parsed, ev.TS)
	}
	for _, c := range []struct{ key, want string }{{"thread_id", r.ThreadID}, {"run_id", r.RunID}} {
		v, ok := str(c.key)
		if v != c.want || ok != (c.want != "") {
			t.Errorf("frame %s = %q (present %v), want %q", c.key, v, ok, c.want)
		}
	}
	if !jsonEqual(t, f["data"], []byte(wantData)) {
		t.Errorf("frame data %s, want %s", f["data"], wantData)
	}
}

func (s *suite) testSince(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	const n = 10
	appended := appendN(t, st, u, n)
	for since := uint64(0); since <= n; since++ {
		evs, pos := mustSince(t, st, u, since, appended[0].Epoch)
		if pos.Head != n || pos.Epoch != appended[0].Epoch {
			t.Fatalf("Since(%d) position %+v, want head %d epoch %q", since, pos, n, appended[0].Epoch)
		}
		if want := appended[since:]; !sameEvents(evs, want) {
			t.Fatalf("Since(%d) = seqs %v, want %v", since, seqs(evs), seqs(want))
		}
	}
}

func (s *suite) testSinceHead(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	appended := appendN(t, st, u, 3)
	evs, pos, err := st.Since(t.Context(), u, protocol.Cursor{Seq: 3, Epoch: appended[0].Epoch}, stream.Limit{})
	if err != nil || len(evs) != 0 || pos.Head != 3 {
		t.Fatalf("Since(head) = %d events, %+v, %v; want none, head 3, nil", len(evs), pos, err)
	}
}

// testSinceNone: a None cursor gets no events and Head's position, for a
// user with history and one without (whose epoch the first Append keeps).
func (s *suite) testSinceNone(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u, fresh := s.user(t, "u"), s.user(t, "fresh")
	appended := appendN(t, st, u, 3)
	evs, pos, err := st.Since(t.Context(), u, protocol.Cursor{Seq: 1, None: true}, stream.Limit{})
	if err != nil || len(evs) != 0 || pos != (stream.Position{Epoch: appended[0].Epoch, Head: 3}) {
		t.Fatalf("Since(None) = %d events, %+v, %v; want none, %s head 3, nil", len(evs), pos, err, appended[0].Epoch)
	}
	evs, pos, err = st.Since(t.Context(), fresh, protocol.Cursor{None: true}, stream.Limit{})
	if err != nil || len(evs) != 0 || pos.Head != 0 {
		t.Fatalf("Since(None) of a user without history = %d events, %+v, %v; want none, head 0, nil", len(evs), pos, err)
	}
	head, err := st.Head(t.Context(), fresh)
	if err != nil || head != pos {
		t.Fatalf("Head = %+v, %v; want Since(None)'s %+v", head, err, pos)
	}
}

func (s *suite) testSinceFreshSlice(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	appendN(t, st, u, 3)
	evs, _ := mustSince(t, st, u, 0, "")
	evs[0].Seq, evs[1] = 99, stream.Event{}
	again, _ := mustSince(t, st, u, 0, "")
	if got := seqs(again); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("after modifying a returned slice, Since(0) = seqs %v, want [1 2 3]", got)
	}
}

func (s *suite) testSinceWrongEpoch(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	appended := appendN(t, st, u, 5)
	for _, since := range []uint64{0, 2, 5} {
		_, _, err := st.Since(t.Context(), u, protocol.Cursor{Seq: since, Epoch: appended[0].Epoch + "-stale"}, stream.Limit{})
		wantResync(t, err, protocol.ReasonEpochChanged, stream.Position{Epoch: appended[0].Epoch, Head: 5})
	}
}

func (s *suite) testSinceAhead(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	appended := appendN(t, st, u, 5)
	_, _, err := st.Since(t.Context(), u, protocol.Cursor{Seq: 6, Epoch: appended[0].Epoch}, stream.Limit{})
	wantResync(t, err, protocol.ReasonAhead, stream.Position{Epoch: appended[0].Epoch, Head: 5})

	unknown := s.user(t, "unknown")
	pos := mustHead(t, st, unknown)
	_, _, err = st.Since(t.Context(), unknown, protocol.Cursor{Seq: 1}, stream.Limit{})
	wantResync(t, err, protocol.ReasonAhead, stream.Position{Epoch: pos.Epoch, Head: 0})
}

func (s *suite) testRetentionCount(t *testing.T) {
	st := s.newStream(t, stream.Retention{MaxEvents: 10})
	u := s.user(t, "u")
	appended := appendN(t, st, u, 25)
	epoch := appended[0].Epoch
	want := stream.Position{Epoch: epoch, Head: 25}
	for _, since := range []uint64{0, 1, 14} {
		_, _, err := st.Since(t.Context(), u, protocol.Cursor{Seq: since, Epoch: epoch}, stream.Limit{})
		wantResync(t, err, protocol.ReasonTooOld, want)
	}
	evs, _ := mustSince(t, st, u, 15, epoch)
	if !sameEvents(evs, appended[15:]) {
		t.Fatalf("Since(15) = seqs %v, want 16..25", seqs(evs))
	}
	if evs, _ := mustSince(t, st, u, 25, epoch); len(evs) != 0 {
		t.Fatalf("Since(25) = seqs %v, want none", seqs(evs))
	}
}

func (s *suite) testRetentionAge(t *testing.T) {
	const maxAge = 200 * time.Millisecond
	st := s.newStream(t, stream.Retention{MaxEvents: 100, MaxAge: maxAge})
	u := s.user(t, "u")
	old := appendN(t, st, u, 3)
	time.Sleep(maxAge + maxAge/2)
	fresh := []stream.Event{mustAppend(t, st, u, rec(4)), mustAppend(t, st, u, rec(5))}
	if fresh[0].Seq != 4 || fresh[0].Epoch != old[0].Epoch {
		t.Fatalf("append after expiry: seq %d epoch %q, want 4 and %q", fresh[0].Seq, fresh[0].Epoch, old[0].Epoch)
	}
	want := stream.Position{Epoch: old[0].Epoch, Head: 5}
	for _, since := range []uint64{0, 2} {
		_, _, err := st.Since(t.Context(), u, protocol.Cursor{Seq: since, Epoch: old[0].Epoch}, stream.Limit{})
		wantResync(t, err, protocol.ReasonTooOld, want)
	}
	evs, _ := mustSince(t, st, u, 3, old[0].Epoch)
	if !sameEvents(evs, fresh) {
		t.Fatalf("Since(3) = seqs %v, want [4 5]", seqs(evs))
	}

	// Expiry applies to reads too, without further appends. What a resync
	// reports once everything expired is up to the backend (a backend may
	// drop the whole stream and start a new epoch).
	time.Sleep(maxAge + maxAge/2)
	if evs, _, err := st.Since(t.Context(), u, protocol.Cursor{Seq: 3}, stream.Limit{}); !errors.Is(err, stream.ErrResync) {
		t.Fatalf("Since(3) after every event expired = seqs %v, %v; want ErrResync", seqs(evs), err)
	}
}

// bigRec is a record whose frame is a little over size bytes.
func bigRec(i, size int) stream.Record {
	return stream.Record{Type: "note", Data: json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", size)))}
}

func (s *suite) testRetentionBytes(t *testing.T) {
	const maxBytes = 10_000
	st := s.newStream(t, stream.Retention{MaxBytes: maxBytes})
	u := s.user(t, "u")
	var appended []stream.Event
	for i := 1; i <= 30; i++ {
		appended = append(appended, mustAppend(t, st, u, bigRec(i, 1000)))
	}
	epoch := appended[0].Epoch
	// Each frame takes 1000 to 1250 bytes, so 8 or 9 fit in 10,000: the
	// newest ones, oldest dropped first.
	var first uint64
	for since := uint64(0); since <= 22; since++ {
		evs, _, err := st.Since(t.Context(), u, protocol.Cursor{Seq: since, Epoch: epoch}, stream.Limit{})
		if err == nil {
			first = since
			total := 0
			for _, ev := range evs {
				total += len(ev.Frame)
			}
			if total > maxBytes {
				t.Fatalf("Since(%d) holds %d frame bytes, retention is %d", since, total, maxBytes)
			}
			if !sameEvents(evs, appended[since:]) {
				t.Fatalf("Since(%d) = seqs %v, want %d..30", since, seqs(evs), since+1)
			}
			break
		}
		wantResync(t, err, protocol.ReasonTooOld, stream.Position{Epoch: epoch, Head: 30})
	}
	if first < 21 || first > 22 {
		t.Fatalf("Since(%d) is the oldest position served, want 21 or 22 (8 or 9 events of 1 KiB in 10,000 bytes)", first)
	}

	// One event over the bound is kept alone: the newest always stays.
	huge := mustAppend(t, st, u, bigRec(31, 2*maxBytes))
	if evs, _ := mustSince(t, st, u, 30, epoch); !sameEvents(evs, []stream.Event{huge}) {
		t.Fatalf("Since(30) after a huge event = seqs %v, want [31]", seqs(evs))
	}
	_, _, err := st.Since(t.Context(), u, protocol.Cursor{Seq: 29, Epoch: epoch}, stream.Limit{})
	wantResync(t, err, protocol.ReasonTooOld, stream.Position{Epoch: epoch, Head: 31})
	// And it goes as soon as newer events need the room.
	next := mustAppend(t, st, u, bigRec(32, 100))
	if evs, _ := mustSince(t, st, u, 31, epoch); !sameEvents(evs, []stream.Event{next}) {
		t.Fatalf("Since(31) = seqs %v, want [32]", seqs(evs))
	}
}

func (s *suite) testSincePages(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	var appended []stream.Event
	for i := 1; i <= 40; i++ {
		appended = append(appended, mustAppend(t, st, u, bigRec(i, 100)))
	}
	epoch := appended[0].Epoch
	size := len(appended[0].Frame)
	for _, lim := range []stream.Limit{
		{MaxEvents: 7},
		{MaxBytes: 3*size + size/2},
		{MaxEvents: 5, MaxBytes: 1}, // the first event always comes
		{},
	} {
		var got []stream.Event
		since, calls := uint64(0), 0
		for {
			evs, pos, err := st.Since(t.Context(), u, protocol.Cursor{Seq: since, Epoch: epoch}, lim)
			if err != nil {
				t.Fatalf("%+v: Since(%d): %v", lim, since, err)
			}
			calls++
			n, b := lim.Norm().MaxEvents, lim.Norm().MaxBytes
			total := 0
			for _, ev := range evs {
				total += len(ev.Frame)
			}
			if len(evs) > n || (len(evs) > 1 && total > b) || len(evs) == 0 && since < 40 {
				t.Fatalf("%+v: Since(%d) = %d events, %d bytes", lim, since, len(evs), total)
			}
			got = append(got, evs...)
			if !stream.More(evs, pos) {
				break
			}
			since = evs[len(evs)-1].Seq
		}
		if !sameEvents(got, appended) {
			t.Fatalf("%+v: pages = seqs %v, want 1..40", lim, seqs(got))
		}
		if lim != (stream.Limit{}) && calls < 4 {
			t.Fatalf("%+v: %d calls, want pages", lim, calls)
		}
	}
}

func (s *suite) testIsolation(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	users := []string{s.user(t, "a"), s.user(t, "b")}
	cols := make([]*collector, len(users))
	for i, u := range users {
		cols[i] = subscribe(t, st, u)
	}
	const n = 10
	for i := 1; i <= n; i++ {
		for j, u := range users {
			r := stream.Record{Type: "note", Data: json.RawMessage(fmt.Sprintf(`{"who":%q,"i":%d}`, u, i))}
			if ev := mustAppend(t, st, u, r); ev.Seq != uint64(i) {
				t.Fatalf("user %d append %d: seq %d, want %d", j, i, ev.Seq, i)
			}
		}
	}
	for j, u := range users {
		hist, _ := mustSince(t, st, u, 0, "")
		live := cols[j].wait(t, n)
		for _, evs := range [][]stream.Event{hist, live} {
			if len(evs) != n {
				t.Fatalf("user %d: %d events, want %d", j, len(evs), n)
			}
			for i, ev := range evs {
				var d struct{ Who string }
				_ = json.Unmarshal(dataOf(t, ev), &d)
				if d.Who != u || ev.Seq != uint64(i+1) {
					t.Fatalf("user %q got seq %d of %q", u, ev.Seq, d.Who)
				}
			}
		}
	}
}

func (s *suite) testConcurrentAppends(t *testing.T) {
	const writers, per = 8, 100
	const n = writers * per
	st := s.newStream(t, stream.Retention{MaxEvents: 2 * n})
	u := s.user(t, "u")
	col := subscribe(t, st, u)
	var (
		mu  sync.Mutex
		got []uint64
		wg  sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				ev, err := st.Append(t.Context(), u, rec(w*per+i))
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				got = append(got, ev.Seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.Sort(got)
	for i, seq := range got {
		if seq != uint64(i+1) {
			t.Fatalf("appended seqs, sorted, have %d at index %d: want 1..%d exactly once", seq, i, n)
		}
	}
	live := col.wait(t, n)
	for i, ev := range live {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("live event #%d has seq %d: live delivery out of order or with a gap", i, ev.Seq)
		}
	}
	hist, _ := mustSince(t, st, u, 0, "")
	if !sameEvents(hist, live) {
		t.Fatalf("Since(0) differs from live delivery")
	}
}

func (s *suite) testJoin(t *testing.T) {
	const n, before = 300, 50
	st := s.newStream(t, stream.Retention{MaxEvents: 2 * n})
	u := s.user(t, "u")
	started := make(chan struct{})
	signal := sync.OnceFunc(func() { close(started) })
	var wg sync.WaitGroup
	wg.Go(func() {
		defer signal()
		for i := 1; i <= n; i++ {
			if _, err := st.Append(t.Context(), u, rec(i)); err != nil {
				t.Errorf("Append: %v", err)
				return
			}
			if i == before {
				signal()
			}
			runtime.Gosched()
		}
	})
	<-started
	// The join a connection does: subscribe first, then read history.
	col := subscribe(t, st, u)
	hist, _ := mustSince(t, st, u, 0, "")
	wg.Wait()
	if t.Failed() {
		return
	}
	if len(hist) < before {
		t.Fatalf("Since(0) after %d appends returned %d events", before, len(hist))
	}
	for i, ev := range hist {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("history #%d has seq %d", i, ev.Seq)
		}
	}
	var live []stream.Event
	if len(hist) < n {
		live = col.waitSeq(t, n)
	}
	if len(hist) < n && (len(live) == 0 || live[0].Seq > uint64(len(hist))+1) {
		t.Fatalf("gap between history (1..%d) and live delivery (from %v)", len(hist), seqs(live[:min(1, len(live))]))
	}
	merged := map[uint64][]byte{}
	for _, ev := range hist {
		merged[ev.Seq] = ev.Frame
	}
	for i, ev := range live {
		if i > 0 && ev.Seq != live[i-1].Seq+1 {
			t.Fatalf("live delivery jumps from seq %d to %d", live[i-1].Seq, ev.Seq)
		}
		if f, ok := merged[ev.Seq]; ok && !bytes.Equal(f, ev.Frame) {
			t.Fatalf("seq %d: live frame differs from replayed frame", ev.Seq)
		}
		merged[ev.Seq] = ev.Frame
	}
	for seq := uint64(1); seq <= n; seq++ {
		if _, ok := merged[seq]; !ok {
			t.Fatalf("seq %d neither replayed nor delivered live", seq)
		}
	}
	if len(merged) != n {
		t.Fatalf("%d distinct seqs after the join, want %d", len(merged), n)
	}
}

func (s *suite) testCancel(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	var cancelled, barrier collector
	cancel, err := st.Subscribe(t.Context(), u, cancelled.handle)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer cancel()
	stop, err := st.Subscribe(t.Context(), u, barrier.handle)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer stop()

	mustAppend(t, st, u, rec(1))
	cancelled.wait(t, 1)
	barrier.wait(t, 1)
	cancel()
	cancel() // idempotent
	mustAppend(t, st, u, rec(2))
	barrier.wait(t, 2)
	time.Sleep(20 * time.Millisecond) // let an asynchronous backend misdeliver
	if got := cancelled.events(); len(got) != 1 {
		t.Fatalf("cancelled subscriber got seqs %v, want [1]", seqs(got))
	}
}

func (s *suite) testIdempotency(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	col := subscribe(t, st, u)
	keyed := func(key string, i int) stream.Record {
		r := rec(i)
		r.IdempotencyKey = key
		return r
	}
	first := mustAppend(t, st, u, keyed("k1", 1))
	again := mustAppend(t, st, u, keyed("k1", 2))
	if again.Seq != first.Seq || again.Epoch != first.Epoch || !bytes.Equal(again.Frame, first.Frame) {
		t.Fatalf("same key: got seq %d frame %s, want the first event (seq %d frame %s)", again.Seq, again.Frame, first.Seq, first.Frame)
	}
	if ev := mustAppend(t, st, u, keyed("k2", 3)); ev.Seq != 2 {
		t.Fatalf("different key: seq %d, want 2", ev.Seq)
	}
	if ev := mustAppend(t, st, u, rec(4)); ev.Seq != 3 {
		t.Fatalf("no key: seq %d, want 3", ev.Seq)
	}
	if ev := mustAppend(t, st, u, keyed("k1", 5)); ev.Seq != 1 {
		t.Fatalf("first key again: seq %d, want 1", ev.Seq)
	}
	hist, pos := mustSince(t, st, u, 0, "")
	if pos.Head != 3 || !slices.Equal(seqs(hist), []uint64{1, 2, 3}) {
		t.Fatalf("history seqs %v head %d, want [1 2 3] head 3", seqs(hist), pos.Head)
	}
	live := col.wait(t, 3)
	time.Sleep(20 * time.Millisecond)
	if got := col.events(); len(got) != 3 {
		t.Fatalf("live delivery seqs %v, want [1 2 3]: a duplicate was delivered", seqs(got))
	}
	if !sameEvents(live, hist) {
		t.Fatalf("live %v differs from history %v", seqs(live), seqs(hist))
	}

	// Keys are per user.
	other := s.user(t, "other")
	if ev := mustAppend(t, st, other, keyed("k1", 1)); ev.Seq != 1 || mustHead(t, st, other).Head != 1 {
		t.Fatalf("same key, other user: seq %d, want a new event with seq 1", ev.Seq)
	}
}

// testHeadBeforeFirstAppend: a client that learns head 0 and epoch E before
// the user's first event must be able to resume with E afterwards.
func (s *suite) testHeadBeforeFirstAppend(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	pos := mustHead(t, st, u)
	if pos.Head != 0 || pos.Epoch == "" {
		t.Fatalf("Head of an unknown user = %+v, want head 0 and an epoch", pos)
	}
	evs, p2, err := st.Since(t.Context(), u, protocol.Cursor{Epoch: pos.Epoch}, stream.Limit{})
	if err != nil || len(evs) != 0 || p2 != pos {
		t.Fatalf("Since(0, E) before any event = %d events, %+v, %v; want none, %+v, nil", len(evs), p2, err, pos)
	}
	if _, p3 := mustSince(t, st, u, 0, ""); p3 != pos {
		t.Fatalf("Since(0, \"\") position %+v, want %+v", p3, pos)
	}
	ev := mustAppend(t, st, u, rec(1))
	if ev.Epoch != pos.Epoch {
		t.Fatalf("first event epoch %q, want the epoch %q Head reported before it", ev.Epoch, pos.Epoch)
	}
	if evs, _ := mustSince(t, st, u, 0, pos.Epoch); !sameEvents(evs, []stream.Event{ev}) {
		t.Fatalf("resume with (0, E) = seqs %v, want [1]", seqs(evs))
	}
}

func (s *suite) testHeadBeforeFirstAppendSubscribed(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	col := subscribe(t, st, u)
	pos := mustHead(t, st, u)
	if pos.Head != 0 || pos.Epoch == "" {
		t.Fatalf("Head of a user without events = %+v, want head 0 and an epoch", pos)
	}
	ev := mustAppend(t, st, u, rec(1))
	if ev.Epoch != pos.Epoch {
		t.Fatalf("first event epoch %q, want the epoch %q Head reported before it", ev.Epoch, pos.Epoch)
	}
	if live := col.wait(t, 1); live[0].Epoch != pos.Epoch {
		t.Fatalf("live event epoch %q, want %q", live[0].Epoch, pos.Epoch)
	}
	if evs, _ := mustSince(t, st, u, 0, pos.Epoch); !sameEvents(evs, []stream.Event{ev}) {
		t.Fatalf("resume with (0, E) = seqs %v, want [1]", seqs(evs))
	}
}

func (s *suite) testPingAndClose(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	ctx := t.Context()
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	mustAppend(t, st, u, rec(1))
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checks := map[string]error{
		"Ping": st.Ping(ctx),
	}
	_, checks["Append"] = st.Append(ctx, u, rec(2))
	_, _, checks["Since"] = st.Since(ctx, u, protocol.Cursor{}, stream.Limit{})
	_, checks["Head"] = st.Head(ctx, u)
	_, checks["Subscribe"] = st.Subscribe(ctx, u, func(stream.Event) {})
	for name, err := range checks {
		if !errors.Is(err, stream.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// rec returns a small record numbered i.
func rec(i int) stream.Record {
	return stream.Record{Type: "note", ThreadID: "th", Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
}

func mustAppend(t *testing.T, st stream.Stream, u string, r stream.Record) stream.Event {
	t.Helper()
	ev, err := st.Append(t.Context(), u, r)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return ev
}

func appendN(t *testing.T, st stream.Stream, u string, n int) []stream.Event {
	t.Helper()
	evs := make([]stream.Event, n)
	for i := range evs {
		evs[i] = mustAppend(t, st, u, rec(i+1))
	}
	return evs
}

func mustHead(t *testing.T, st stream.Stream, u string) stream.Position {
	t.Helper()
	pos, err := st.Head(t.Context(), u)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return pos
}

func mustSince(t *testing.T, st stream.Stream, u string, since uint64, epoch string) ([]stream.Event, stream.Position) {
	t.Helper()
	evs, pos, err := st.Since(t.Context(), u, protocol.Cursor{Seq: since, Epoch: epoch}, stream.Limit{})
	if err != nil {
		t.Fatalf("Since(%d, %q): %v", since, epoch, err)
	}
	return evs, pos
}

func wantResync(t *testing.T, err error, reason protocol.ResyncReason, pos stream.Position) {
	t.Helper()
	var re *stream.ResyncError
	switch {
	case !errors.Is(err, stream.ErrResync):
		t.Fatalf("got %v, want ErrResync", err)
	case !errors.As(err, &re):
		t.Fatalf("got %T, want a *stream.ResyncError", err)
	case re.Reason != reason || re.Position != pos:
		t.Fatalf("resync %s at %+v, want %s at %+v", re.Reason, re.Position, reason, pos)
	}
}

func seqs(evs []stream.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

// sameEvents reports whether a and b hold the same events (seq, epoch and
// frame bytes) in the same order.
func sameEvents(a, b []stream.Event) bool {
	return slices.EqualFunc(a, b, func(x, y stream.Event) bool {
		return x.Seq == y.Seq && x.Epoch == y.Epoch && bytes.Equal(x.Frame, y.Frame)
	})
}

// dataOf returns the data object of ev's frame.
func dataOf(t *testing.T, ev stream.Event) json.RawMessage {
	t.Helper()
	var f struct{ Data json.RawMessage }
	if err := json.Unmarshal(ev.Frame, &f); err != nil {
		t.Fatalf("frame %q: %v", ev.Frame, err)
	}
	return f.Data
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var ca, cb bytes.Buffer
	if err := json.Compact(&ca, a); err != nil {
		t.Errorf("invalid JSON %q: %v", a, err)
		return false
	}
	if err := json.Compact(&cb, b); err != nil {
		t.Errorf("invalid JSON %q: %v", b, err)
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// collector is a Handler that records what it is given.
type collector struct {
	mu  sync.Mutex
	evs []stream.Event
}

func subscribe(t *testing.T, st stream.Stream, u string) *collector {
	t.Helper()
	c := &collector{}
	cancel, err := st.Subscribe(t.Context(), u, c.handle)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(cancel)
	return c
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

// wait returns the events once at least n arrived.
func (c *collector) wait(t *testing.T, n int) []stream.Event {
	t.Helper()
	return c.until(t, fmt.Sprintf("%d live events", n), func(evs []stream.Event) bool { return len(evs) >= n })
}

// waitSeq returns the events once one with seq arrived.
func (c *collector) waitSeq(t *testing.T, seq uint64) []stream.Event {
	t.Helper()
	return c.until(t, fmt.Sprintf("live event seq %d", seq), func(evs []stream.Event) bool {
		return slices.ContainsFunc(evs, func(ev stream.Event) bool { return ev.Seq == seq })
	})
}

func (c *collector) until(t *testing.T, what string, done func([]stream.Event) bool) []stream.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if evs := c.events(); done(evs) {
			return evs
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; got seqs %v", what, seqs(c.events()))
		case <-tick.C:
		}
	}
}

// testBatch: AppendBatch gives consecutive seqs after what was there, the
// same frames as Append would, in history and live, in order.
func (s *suite) testBatch(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	col := subscribe(t, st, u)
	appendN(t, st, u, 2)
	recs := make([]stream.Record, 5)
	for i := range recs {
		recs[i] = rec(10 + i)
		recs[i].RunID = fmt.Sprintf("r%d", i)
	}
	evs, err := st.AppendBatch(t.Context(), u, recs)
	if err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	if len(evs) != len(recs) {
		t.Fatalf("AppendBatch returned %d events for %d records", len(evs), len(recs))
	}
	epoch := mustHead(t, st, u).Epoch
	for i, ev := range evs {
		if ev.Seq != uint64(3+i) || ev.Epoch != epoch {
			t.Fatalf("batch event #%d: seq %d epoch %q, want seq %d epoch %q", i, ev.Seq, ev.Epoch, 3+i, epoch)
		}
		checkEvent(t, ev, recs[i])
	}
	hist, pos := mustSince(t, st, u, 2, "")
	if pos.Head != 7 || !sameEvents(hist, evs) {
		t.Fatalf("Since(2): seqs %v head %d, want the batch %v head 7", seqs(hist), pos.Head, seqs(evs))
	}
	live := col.wait(t, 7)
	if !sameEvents(live[2:], evs) {
		t.Fatalf("live after the batch: seqs %v, want %v", seqs(live[2:]), seqs(evs))
	}
	if ev := mustAppend(t, st, u, rec(20)); ev.Seq != 8 {
		t.Fatalf("Append after the batch: seq %d, want 8", ev.Seq)
	}

	// Bounds: nothing for nothing, and no more than MaxBatch.
	if evs, err := st.AppendBatch(t.Context(), u, nil); err != nil || len(evs) != 0 {
		t.Fatalf("empty batch: %d events, %v", len(evs), err)
	}
	if _, err := st.AppendBatch(t.Context(), u, make([]stream.Record, stream.MaxBatch+1)); !errors.Is(err, stream.ErrBatchTooLarge) {
		t.Fatalf("batch of %d: %v, want ErrBatchTooLarge", stream.MaxBatch+1, err)
	}
	if h := mustHead(t, st, u).Head; h != 8 {
		t.Fatalf("head %d after refused batches, want 8", h)
	}
	// A new user's first batch starts at 1 in the epoch Head showed.
	fresh := s.user(t, "fresh")
	shown := mustHead(t, st, fresh)
	evs, err = st.AppendBatch(t.Context(), fresh, []stream.Record{rec(1), rec(2)})
	if err != nil || len(evs) != 2 || evs[0].Seq != 1 || evs[1].Seq != 2 || evs[0].Epoch != shown.Epoch {
		t.Fatalf("first batch of a new user: %v %v, want seqs 1, 2 in epoch %q", seqs(evs), err, shown.Epoch)
	}
}

// testBatchIdempotency: each record of a batch has its own key; a repeat
// (of an earlier append or of a record earlier in the same batch) gets the
// first event and takes no seq.
func (s *suite) testBatchIdempotency(t *testing.T) {
	st := s.newStream(t, stream.Retention{})
	u := s.user(t, "u")
	keyed := func(key string, i int) stream.Record {
		r := rec(i)
		r.IdempotencyKey = key
		return r
	}
	first := mustAppend(t, st, u, keyed("a", 1))
	evs, err := st.AppendBatch(t.Context(), u, []stream.Record{keyed("a", 2), keyed("b", 3), rec(4), keyed("b", 5)})
	if err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	if !bytes.Equal(evs[0].Frame, first.Frame) || evs[0].Seq != 1 {
		t.Fatalf("repeat of an earlier key: seq %d frame %s, want the first event %s", evs[0].Seq, evs[0].Frame, first.Frame)
	}
	if evs[1].Seq != 2 || evs[2].Seq != 3 {
		t.Fatalf("new records: seqs %d, %d, want 2, 3", evs[1].Seq, evs[2].Seq)
	}
	if evs[3].Seq != 2 || !bytes.Equal(evs[3].Frame, evs[1].Frame) {
		t.Fatalf("repeat within the batch: seq %d frame %s, want the event of seq 2 %s", evs[3].Seq, evs[3].Frame, evs[1].Frame)
	}
	// The whole batch again appends nothing.
	again, err := st.AppendBatch(t.Context(), u, []stream.Record{keyed("a", 6), keyed("b", 7)})
	if err != nil || again[0].Seq != 1 || again[1].Seq != 2 {
		t.Fatalf("batch of seen keys: %v %v, want seqs 1, 2", seqs(again), err)
	}
	if h := mustHead(t, st, u).Head; h != 3 {
		t.Fatalf("head %d, want 3", h)
	}
}

// testBatchAtomic: batches and single appends of one user race; every
// batch's events are consecutive, and live order is seq order.
func (s *suite) testBatchAtomic(t *testing.T) {
	const writers, batches, size = 4, 20, 10
	const n = writers * batches * (size + 1)
	st := s.newStream(t, stream.Retention{MaxEvents: 2 * n})
	u := s.user(t, "u")
	col := subscribe(t, st, u)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				recs := make([]stream.Record, size)
				for i := range recs {
					recs[i] = rec(w*10000 + b*100 + i)
				}
				evs, err := st.AppendBatch(t.Context(), u, recs)
				if err != nil {
					t.Errorf("AppendBatch: %v", err)
					return
				}
				for i := 1; i < len(evs); i++ {
					if evs[i].Seq != evs[0].Seq+uint64(i) {
						t.Errorf("batch seqs %v are not consecutive", seqs(evs))
						return
					}
				}
				if _, err := st.Append(t.Context(), u, rec(w)); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	live := col.wait(t, n)
	for i, ev := range live {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("live event #%d has seq %d: out of order or with a gap", i, ev.Seq)
		}
	}
}

// testBatchRetention: a batch larger than the retention keeps only the
// newest events, as the same appends one by one would.
func (s *suite) testBatchRetention(t *testing.T) {
	st := s.newStream(t, stream.Retention{MaxEvents: 5})
	u := s.user(t, "u")
	recs := make([]stream.Record, 12)
	for i := range recs {
		recs[i] = rec(i)
	}
	if _, err := st.AppendBatch(t.Context(), u, recs); err != nil {
		t.Fatalf("AppendBatch: %v", err)
	}
	hist, pos := mustSince(t, st, u, 7, "")
	if pos.Head != 12 || !slices.Equal(seqs(hist), []uint64{8, 9, 10, 11, 12}) {
		t.Fatalf("after a batch of 12 with MaxEvents 5: seqs %v head %d, want 8..12", seqs(hist), pos.Head)
	}
	_, _, err := st.Since(t.Context(), u, protocol.Cursor{Seq: 2, Epoch: pos.Epoch}, stream.Limit{})
	wantResync(t, err, protocol.ReasonTooOld, pos)
}
