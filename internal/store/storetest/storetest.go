// Package storetest is the conformance suite every store.Store backend runs
// unchanged, through the test-only methods of Store as well:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Store {
//			s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "agentwire.db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The factory should close the store in t.Cleanup; the suite calls Close
// itself on one store it got, so Close must be idempotent. Subtests run in
// parallel and use user ids and row ids (ULIDs) no other run uses, so a
// backend may hand every subtest the same database (e.g. one PostgreSQL
// schema), as long as it is migrated. ReapExpired acts on every user's
// runs, so the subtests calling it run one at a time and reap at times
// before 1970 (see reapBase): they never end another subtest's runs.
//
// What the suite does not check because it is backend specific: migrations,
// file permissions, and behaviour across restarts.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/agentwire/agentwire/internal/store"
)

// Store is a store.Store with the methods only tests call: they create and
// read rows one at a time, where production code goes through StartRun and
// the listing methods. Every backend implements them so the suite can set up
// and inspect rows in any state.
type Store interface {
	store.Store
	// CreateThread inserts t. Title is the caller's; see store.TitleFrom. A
	// zero UpdatedAt becomes CreatedAt. ErrConflict if the id is taken.
	CreateThread(ctx context.Context, t store.Thread) error
	// GetThread returns the user's thread, or ErrNotFound.
	GetThread(ctx context.Context, userID, threadID string) (store.Thread, error)
	// CreateRun inserts r as running in thread r.ThreadID, which must exist
	// and be owned by r.UserID (else ErrNotFound). r.Status, EndedAt and the
	// error fields are ignored; r.Node and r.LeaseUntil are stored.
	// ErrConflict if the id is taken.
	CreateRun(ctx context.Context, r store.Run) error
	// ListRunning returns the user's runs that are still running, oldest
	// first.
	ListRunning(ctx context.Context, userID string) ([]store.Run, error)
}

// testTimeout bounds every subtest, so a deadlocked backend fails instead
// of hanging the suite. It guards against hangs only: ConcurrentWrites under
// -race on a loaded 2-core machine took over 10 s, so it is far above any
// healthy run.
const testTimeout = 2 * time.Minute

// Run runs the conformance suite against the backend newStore makes.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	s := &suite{prefix: "storetest-" + hex.EncodeToString(b[:]), newStore: newStore}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"ThreadRoundTrip", s.testThreadRoundTrip},
		{"ThreadZeroTimesMeanNow", s.testThreadNow},
		{"ThreadOwnership", s.testThreadOwnership},
		{"MissingThread", s.testMissingThread},
		{"DuplicateIDs", s.testDuplicateIDs},
		{"ListThreadsOrderAndLimit", s.testListThreadsOrder},
		{"ListThreadsDefaultLimit", s.testListThreadsDefaultLimit},
		{"MessagesOldestFirst", s.testMessages},
		{"MessagePages", s.testMessagePages},
		{"MessagePageBytes", s.testMessagePageBytes},
		{"ThreadPages", s.testThreadPages},
		{"UnicodeAndLargeContent", s.testContent},
		{"RunLifecycle", s.testRunLifecycle},
		{"RunTerminalStatuses", s.testRunStatuses},
		{"RunOwnership", s.testRunOwnership},
		{"ListRunning", s.testListRunning},
		{"ConcurrentFinishRun", s.testConcurrentFinish},
		{"LeaseRoundTrip", s.testLeaseRoundTrip},
		{"RenewLeases", s.testRenewLeases},
		{"Ends", s.testEnds},
		{"ReapExpired", s.testReapExpired},
		{"ConcurrentReapers", s.testConcurrentReapers},
		{"IdempotencyKeys", s.testIdempotency},
		{"IdempotencyKeyExpiry", s.testIdempotencyExpiry},
		{"IdempotencyKeyRelease", s.testIdempotencyRelease},
		{"IdempotencyKeyConfirm", s.testIdempotencyConfirm},
		{"ConcurrentClaims", s.testConcurrentClaims},
		{"ConcurrentWrites", s.testConcurrentWrites},
		{"StartRunNewThread", s.testStartRunNewThread},
		{"StartRunExistingThread", s.testStartRunExistingThread},
		{"StartRunHistoryLimit", s.testStartRunHistoryLimit},
		{"StartRunOwnership", s.testStartRunOwnership},
		{"StartRunAtomicity", s.testStartRunAtomicity},
		{"StartRunInvalid", s.testStartRunInvalid},
		{"DiscardRun", s.testDiscardRun},
		{"RunEvents", s.testRunEvents},
		{"InvalidArguments", s.testInvalid},
		{"PingAndClose", s.testPingAndClose},
		{"RunWaiting", s.testRunWaiting},
		{"ReapWaiting", s.testReapWaiting},
		{"TokenUsage", s.testTokenUsage},     // issue 11 D
		{"RenameThread", s.testRenameThread}, // issue 12
		{"DeleteThread", s.testDeleteThread}, // issue 12
		{"ActiveRuns", s.testActiveRuns},     // issue 14
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct {
	prefix   string
	newStore func(t *testing.T) Store

	// reapMu serializes the subtests that call ReapExpired, which ends the
	// expired runs of every user: on a database shared by the subtests,
	// one would take the runs another expects to reap. See reapBase.
	reapMu sync.Mutex
}

// user returns an id unique to this run, subtest and name.
func (s *suite) user(t *testing.T, name string) string {
	return s.prefix + "/" + t.Name() + "/" + name
}

// ctx returns a context that ends with the subtest or after testTimeout.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return c
}

func id() string { return ulid.Make().String() }

// base is a time in a non-UTC zone with sub-millisecond digits, so every
// round trip checks truncation and conversion to UTC.
func base() time.Time {
	return time.Now().Add(-time.Hour).Round(time.Second).Add(123456789 * time.Nanosecond).In(time.FixedZone("UTC+3", 3*3600))
}

// stored is what a store returns for a time it was given.
func stored(tm time.Time) time.Time { return tm.Truncate(store.TimePrecision).UTC() }

func (s *suite) testThreadRoundTrip(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, t0 := s.user(t, "u"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "Hello, world", CreatedAt: t0}
	mustCreateThread(t, st, th)
	got := mustGetThread(t, st, u, th.ID)
	th.CreatedAt, th.UpdatedAt = stored(t0), stored(t0)
	checkThread(t, got, th)

	th2 := store.Thread{ID: id(), UserID: u, Title: "Second", CreatedAt: t0, UpdatedAt: t0.Add(time.Minute)}
	mustCreateThread(t, st, th2)
	th2.CreatedAt, th2.UpdatedAt = stored(t0), stored(t0.Add(time.Minute))
	checkThread(t, mustGetThread(t, st, u, th2.ID), th2)

	list, err := listThreads(c, st, u, 0)
	if err != nil {
		t.Fatalf("ListThreads: %v", err)
	}
	if len(list) != 2 {
		t.Fatalf("ListThreads: %d threads, want 2", len(list))
	}
	checkThread(t, list[0], th2)
	checkThread(t, list[1], th)
}

func (s *suite) testThreadNow(t *testing.T) {
	st := s.newStore(t)
	u := s.user(t, "u")
	before := time.Now().Truncate(store.TimePrecision)
	th := store.Thread{ID: id(), UserID: u, Title: "now"}
	mustCreateThread(t, st, th)
	after := time.Now()
	got := mustGetThread(t, st, u, th.ID)
	if got.CreatedAt.Before(before) || got.CreatedAt.After(after) || got.CreatedAt.Location() != time.UTC {
		t.Fatalf("CreatedAt %v, want a UTC time between %v and %v", got.CreatedAt, before, after)
	}
	if !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Fatalf("UpdatedAt %v, want CreatedAt %v", got.UpdatedAt, got.CreatedAt)
	}
}

func (s *suite) testThreadOwnership(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	alice, mallory := s.user(t, "alice"), s.user(t, "mallory")
	t0 := base()
	th := store.Thread{ID: id(), UserID: alice, Title: "secret", CreatedAt: t0}
	mustCreateThread(t, st, th)
	msg := store.Message{ID: id(), ThreadID: th.ID, UserID: alice, Role: store.RoleUser, Content: "mine", CreatedAt: t0}
	mustAddMessage(t, st, msg)

	if _, err := st.GetThread(c, mallory, th.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetThread by another user: %v, want ErrNotFound", err)
	}
	if msgs, _, err := st.ListMessages(c, mallory, th.ID, store.MessageQuery{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ListMessages by another user: %d messages, %v; want ErrNotFound", len(msgs), err)
	}
	intruder := store.Message{ID: id(), ThreadID: th.ID, UserID: mallory, Role: store.RoleUser, Content: "hi", CreatedAt: t0.Add(time.Hour)}
	if err := st.AddMessage(c, intruder); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AddMessage into another user's thread: %v, want ErrNotFound", err)
	}
	run := store.Run{ID: id(), ThreadID: th.ID, UserID: mallory, Agent: "demo", StartedAt: t0}
	if err := st.CreateRun(c, run); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateRun in another user's thread: %v, want ErrNotFound", err)
	}
	if list, err := listThreads(c, st, mallory, 0); err != nil || len(list) != 0 {
		t.Errorf("ListThreads of another user: %d threads, %v; want none", len(list), err)
	}
	if runs, err := st.ListRunning(c, mallory); err != nil || len(runs) != 0 {
		t.Errorf("ListRunning of another user: %d runs, %v; want none", len(runs), err)
	}

	// Nothing of the intrusion landed.
	got := mustGetThread(t, st, alice, th.ID)
	if !got.UpdatedAt.Equal(stored(t0)) {
		t.Errorf("thread UpdatedAt %v after a refused AddMessage, want %v", got.UpdatedAt, stored(t0))
	}
	msgs := mustListMessages(t, st, alice, th.ID)
	if len(msgs) != 1 || msgs[0].ID != msg.ID {
		t.Errorf("owner's messages %v, want only %s", messageIDs(msgs), msg.ID)
	}
	if _, err := st.GetRun(c, mallory, run.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRun of a refused run: %v, want ErrNotFound", err)
	}
}

func (s *suite) testMissingThread(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, missing := s.user(t, "u"), id()
	if _, err := st.GetThread(c, u, missing); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetThread: %v, want ErrNotFound", err)
	}
	if _, _, err := st.ListMessages(c, u, missing, store.MessageQuery{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ListMessages: %v, want ErrNotFound", err)
	}
	m := store.Message{ID: id(), ThreadID: missing, UserID: u, Role: store.RoleUser, Content: "x"}
	if err := st.AddMessage(c, m); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AddMessage: %v, want ErrNotFound", err)
	}
	r := store.Run{ID: id(), ThreadID: missing, UserID: u, Agent: "demo"}
	if err := st.CreateRun(c, r); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateRun: %v, want ErrNotFound", err)
	}
	if _, err := st.GetRun(c, u, id()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRun: %v, want ErrNotFound", err)
	}
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: id(), Status: store.RunCompleted}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("FinishRun: %v, want ErrNotFound", err)
	}
	if list, err := listThreads(c, st, u, 10); err != nil || len(list) != 0 {
		t.Errorf("ListThreads of a new user: %d threads, %v; want none", len(list), err)
	}
}

func (s *suite) testDuplicateIDs(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other := s.user(t, "u"), s.user(t, "other")
	th := store.Thread{ID: id(), UserID: u, Title: "first"}
	mustCreateThread(t, st, th)
	for _, dup := range []store.Thread{
		{ID: th.ID, UserID: u, Title: "again"},
		{ID: th.ID, UserID: other, Title: "someone else's"},
	} {
		if err := st.CreateThread(c, dup); !errors.Is(err, store.ErrConflict) {
			t.Errorf("CreateThread with a taken id (user %q): %v, want ErrConflict", dup.UserID, err)
		}
	}
	if got := mustGetThread(t, st, u, th.ID); got.Title != "first" {
		t.Errorf("title %q after a refused duplicate, want %q", got.Title, "first")
	}

	m := store.Message{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleUser, Content: "one"}
	mustAddMessage(t, st, m)
	m.Content = "two"
	if err := st.AddMessage(c, m); !errors.Is(err, store.ErrConflict) {
		t.Errorf("AddMessage with a taken id: %v, want ErrConflict", err)
	}
	if msgs := mustListMessages(t, st, u, th.ID); len(msgs) != 1 || msgs[0].Content != "one" {
		t.Errorf("messages after a refused duplicate: %+v, want the first only", msgs)
	}

	r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo"}
	mustCreateRun(t, st, r)
	if err := st.CreateRun(c, r); !errors.Is(err, store.ErrConflict) {
		t.Errorf("CreateRun with a taken id: %v, want ErrConflict", err)
	}
}

func (s *suite) testListThreadsOrder(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, t0 := s.user(t, "u"), base()
	th := make([]store.Thread, 3)
	for i := range th {
		th[i] = store.Thread{ID: id(), UserID: u, Title: fmt.Sprintf("thread %d", i), CreatedAt: t0.Add(time.Duration(i) * time.Second)}
		mustCreateThread(t, st, th[i])
	}
	list := func(limit int) []string {
		t.Helper()
		got, err := listThreads(c, st, u, limit)
		if err != nil {
			t.Fatalf("ListThreads(%d): %v", limit, err)
		}
		return threadIDs(got)
	}
	want := func(limit int, ths ...store.Thread) {
		t.Helper()
		if got, w := list(limit), threadIDs(ths); !slices.Equal(got, w) {
			t.Fatalf("ListThreads(%d) = %v, want %v", limit, got, w)
		}
	}
	want(0, th[2], th[1], th[0])

	// A message bumps its thread to the top.
	bump := t0.Add(10 * time.Second)
	mustAddMessage(t, st, store.Message{ID: id(), ThreadID: th[0].ID, UserID: u, Role: store.RoleUser, Content: "bump", CreatedAt: bump})
	want(0, th[0], th[2], th[1])
	if got := mustGetThread(t, st, u, th[0].ID); !got.UpdatedAt.Equal(stored(bump)) || !got.CreatedAt.Equal(stored(t0)) {
		t.Fatalf("after AddMessage: created %v updated %v, want %v and %v", got.CreatedAt, got.UpdatedAt, stored(t0), stored(bump))
	}

	// An older message does not move UpdatedAt backwards.
	mustAddMessage(t, st, store.Message{ID: id(), ThreadID: th[2].ID, UserID: u, Role: store.RoleAssistant, Content: "late", CreatedAt: t0})
	if got := mustGetThread(t, st, u, th[2].ID); !got.UpdatedAt.Equal(stored(th[2].CreatedAt)) {
		t.Fatalf("UpdatedAt %v after an older message, want it to stay %v", got.UpdatedAt, stored(th[2].CreatedAt))
	}
	want(0, th[0], th[2], th[1])

	want(2, th[0], th[2])
	want(1, th[0])
	want(-1, th[0], th[2], th[1])
	want(100, th[0], th[2], th[1])
}

func (s *suite) testListThreadsDefaultLimit(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, t0 := s.user(t, "u"), base()
	n := store.DefaultListLimit + 5
	for i := range n {
		mustCreateThread(t, st, store.Thread{ID: id(), UserID: u, Title: "t", CreatedAt: t0.Add(time.Duration(i) * time.Millisecond)})
	}
	for _, limit := range []int{0, -5} {
		got, err := listThreads(c, st, u, limit)
		if err != nil {
			t.Fatalf("ListThreads(%d): %v", limit, err)
		}
		if len(got) != store.DefaultListLimit {
			t.Fatalf("ListThreads(%d): %d threads, want %d", limit, len(got), store.DefaultListLimit)
		}
		if !got[0].UpdatedAt.Equal(stored(t0.Add(time.Duration(n-1) * time.Millisecond))) {
			t.Fatalf("ListThreads(%d) starts with UpdatedAt %v, want the newest", limit, got[0].UpdatedAt)
		}
	}
	if got, err := listThreads(c, st, u, n+10); err != nil || len(got) != n {
		t.Fatalf("ListThreads(%d): %d threads, %v; want %d", n+10, len(got), err, n)
	}
}

func (s *suite) testMessages(t *testing.T) {
	st := s.newStore(t)
	u, t0 := s.user(t, "u"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "chat", CreatedAt: t0}
	mustCreateThread(t, st, th)
	if msgs := mustListMessages(t, st, u, th.ID); len(msgs) != 0 {
		t.Fatalf("new thread has %d messages, want none", len(msgs))
	}
	run1, run2 := id(), id()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	msgs := []store.Message{
		{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleUser, Content: "what is 2+2?", RunID: run1, CreatedAt: at(1)},
		{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleAssistant, Content: "4", RunID: run1, CreatedAt: at(2500)},
		{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleUser, Content: "no run", CreatedAt: at(3000)},
		// Equal CreatedAt: insertion order decides.
		{ID: "zzz-" + id(), ThreadID: th.ID, UserID: u, Role: store.RoleUser, Content: "same ms 1", RunID: run2, CreatedAt: at(4000)},
		{ID: "aaa-" + id(), ThreadID: th.ID, UserID: u, Role: store.RoleAssistant, Content: "same ms 2", RunID: run2, CreatedAt: at(4000)},
	}
	// Inserted out of time order: the list is by CreatedAt, not insertion.
	for _, i := range []int{1, 0, 2, 3, 4} {
		mustAddMessage(t, st, msgs[i])
	}
	got := mustListMessages(t, st, u, th.ID)
	if len(got) != len(msgs) {
		t.Fatalf("ListMessages: %d messages, want %d", len(got), len(msgs))
	}
	for i := range msgs {
		want := msgs[i]
		want.CreatedAt = stored(want.CreatedAt)
		checkMessage(t, got[i], want)
	}
	if th := mustGetThread(t, st, u, th.ID); !th.UpdatedAt.Equal(stored(at(4000))) {
		t.Errorf("thread UpdatedAt %v, want the newest message's %v", th.UpdatedAt, stored(at(4000)))
	}
}

func (s *suite) testContent(t *testing.T) {
	st := s.newStore(t)
	u := s.user(t, "u")
	title := store.TitleFrom("Ünïcödé 👋🏽 日本語 עברית")
	th := store.Thread{ID: id(), UserID: u, Title: title}
	mustCreateThread(t, st, th)
	if got := mustGetThread(t, st, u, th.ID); got.Title != title {
		t.Fatalf("title %q, want %q", got.Title, title)
	}

	unit := "héllo wörld 👋🏽 日本語 \"quoted\" 'single' \\ \t\r\n; DROP TABLE threads; -- "
	large := strings.Repeat(unit, 32*1024/len(unit)+1)
	for len(large) > 32*1024 {
		_, size := utf8.DecodeLastRuneInString(large)
		large = large[:len(large)-size]
	}
	contents := []string{
		"Ünïcödé 👋🏽 日本語 עברית \u200d\u2028\ufeff",
		"%_*?[]{}$1 \x01\x7f",
		large,
	}
	for i, content := range contents {
		mustAddMessage(t, st, store.Message{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleUser, Content: content, CreatedAt: base().Add(time.Duration(i) * time.Second)})
	}
	got := mustListMessages(t, st, u, th.ID)
	if len(got) != len(contents) {
		t.Fatalf("%d messages, want %d", len(got), len(contents))
	}
	for i, m := range got {
		if m.Content != contents[i] {
			t.Errorf("message %d: content of %d bytes differs from the %d bytes written", i, len(m.Content), len(contents[i]))
		}
	}
}

func (s *suite) testRunLifecycle(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, t0 := s.user(t, "u"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "runs", CreatedAt: t0}
	mustCreateThread(t, st, th)
	um := store.Message{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleUser, Content: "go", CreatedAt: t0}
	run := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", UserMessageID: um.ID, StartedAt: t0,
		// Ignored by CreateRun.
		Status: store.RunCompleted, EndedAt: t0.Add(time.Hour), ErrorCode: "x", ErrorMessage: "y"}
	um.RunID = run.ID
	mustAddMessage(t, st, um)
	mustCreateRun(t, st, run)

	want := store.Run{ID: run.ID, ThreadID: th.ID, UserID: u, Agent: "demo", Status: store.RunRunning, UserMessageID: um.ID, StartedAt: stored(t0)}
	checkRun(t, mustGetRun(t, st, u, run.ID), want)
	if running := mustListRunning(t, st, u); len(running) != 1 {
		t.Fatalf("ListRunning: %d runs, want 1", len(running))
	} else {
		checkRun(t, running[0], want)
	}

	end := t0.Add(2*time.Second + 345678*time.Nanosecond)
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: run.ID, Status: store.RunCompleted, EndedAt: end}); err != nil {
		t.Fatalf("FinishRun: %v", err)
	}
	want.Status, want.EndedAt = store.RunCompleted, stored(end)
	checkRun(t, mustGetRun(t, st, u, run.ID), want)
	if running := mustListRunning(t, st, u); len(running) != 0 {
		t.Fatalf("ListRunning after FinishRun: %d runs, want none", len(running))
	}

	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: run.ID, Status: store.RunFailed, EndedAt: end.Add(time.Second), ErrorCode: "agent_failed", ErrorMessage: "boom"}); !errors.Is(err, store.ErrNotRunning) {
		t.Fatalf("second FinishRun: %v, want ErrNotRunning", err)
	}
	checkRun(t, mustGetRun(t, st, u, run.ID), want)

	// A zero endedAt means now.
	run2 := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo"}
	before := time.Now().Truncate(store.TimePrecision)
	mustCreateRun(t, st, run2)
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: run2.ID, Status: store.RunCancelled, ErrorCode: "cancelled", ErrorMessage: "stopped by user"}); err != nil {
		t.Fatalf("FinishRun: %v", err)
	}
	after := time.Now()
	got := mustGetRun(t, st, u, run2.ID)
	for name, tm := range map[string]time.Time{"StartedAt": got.StartedAt, "EndedAt": got.EndedAt} {
		if tm.Before(before) || tm.After(after) || tm.Location() != time.UTC {
			t.Errorf("%s %v, want a UTC time between %v and %v", name, tm, before, after)
		}
	}
}

func (s *suite) testRunStatuses(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, t0 := s.user(t, "u"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "statuses", CreatedAt: t0}
	mustCreateThread(t, st, th)
	tests := []struct {
		status        store.RunStatus
		code, message string
	}{
		{store.RunCompleted, "", ""},
		{store.RunFailed, "agent_failed", "the agent failed: división por cero 💥"},
		{store.RunCancelled, "cancelled", "stopped by user"},
		{store.RunTimeout, "timeout", "run exceeded 5m0s"},
	}
	for i, tc := range tests {
		r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "agent-" + string(tc.status), StartedAt: t0}
		mustCreateRun(t, st, r)
		end := t0.Add(time.Duration(i+1) * time.Second)
		if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: r.ID, Status: tc.status, EndedAt: end, ErrorCode: tc.code, ErrorMessage: tc.message}); err != nil {
			t.Fatalf("FinishRun(%s): %v", tc.status, err)
		}
		checkRun(t, mustGetRun(t, st, u, r.ID), store.Run{
			ID: r.ID, ThreadID: th.ID, UserID: u, Agent: r.Agent, Status: tc.status,
			StartedAt: stored(t0), EndedAt: stored(end), ErrorCode: tc.code, ErrorMessage: tc.message,
		})
	}

	r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: t0}
	mustCreateRun(t, st, r)
	for _, bad := range []store.RunStatus{store.RunRunning, "", "done"} {
		if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: r.ID, Status: bad, EndedAt: t0}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("FinishRun(%q): %v, want ErrInvalid", bad, err)
		}
	}
	if got := mustGetRun(t, st, u, r.ID); got.Status != store.RunRunning || !got.EndedAt.IsZero() {
		t.Errorf("after refused FinishRun calls: status %q, EndedAt %v; want running, zero", got.Status, got.EndedAt)
	}
}

func (s *suite) testRunOwnership(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	alice, mallory := s.user(t, "alice"), s.user(t, "mallory")
	th := store.Thread{ID: id(), UserID: alice, Title: "mine"}
	mustCreateThread(t, st, th)
	r := store.Run{ID: id(), ThreadID: th.ID, UserID: alice, Agent: "demo"}
	mustCreateRun(t, st, r)
	if _, err := st.GetRun(c, mallory, r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRun by another user: %v, want ErrNotFound", err)
	}
	if err := st.FinishRun(c, store.Outcome{UserID: mallory, RunID: r.ID, Status: store.RunCancelled, ErrorCode: "cancelled"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("FinishRun by another user: %v, want ErrNotFound", err)
	}
	if got := mustGetRun(t, st, alice, r.ID); got.Status != store.RunRunning {
		t.Errorf("status %q after another user's FinishRun, want running", got.Status)
	}
	if runs := mustListRunning(t, st, mallory); len(runs) != 0 {
		t.Errorf("ListRunning of another user: %d runs, want none", len(runs))
	}
	if err := st.FinishRun(c, store.Outcome{UserID: alice, RunID: r.ID, Status: store.RunCompleted}); err != nil {
		t.Fatalf("FinishRun by the owner: %v", err)
	}
	// A finished run of someone else is still not found, not "not running".
	if err := st.FinishRun(c, store.Outcome{UserID: mallory, RunID: r.ID, Status: store.RunCancelled}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("FinishRun of another user's finished run: %v, want ErrNotFound", err)
	}
}

func (s *suite) testListRunning(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other, t0 := s.user(t, "u"), s.user(t, "other"), base()
	var runs []store.Run
	for i := range 2 {
		th := store.Thread{ID: id(), UserID: u, Title: "t", CreatedAt: t0}
		mustCreateThread(t, st, th)
		for j := range 3 {
			r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: t0.Add(time.Duration(3*i+j) * time.Second)}
			mustCreateRun(t, st, r)
			runs = append(runs, r)
		}
	}
	oth := store.Thread{ID: id(), UserID: other, Title: "t", CreatedAt: t0}
	mustCreateThread(t, st, oth)
	mustCreateRun(t, st, store.Run{ID: id(), ThreadID: oth.ID, UserID: other, Agent: "demo", StartedAt: t0})

	for _, i := range []int{0, 2, 4} {
		if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: runs[i].ID, Status: store.RunCompleted}); err != nil {
			t.Fatalf("FinishRun: %v", err)
		}
	}
	got := mustListRunning(t, st, u)
	want := []string{runs[1].ID, runs[3].ID, runs[5].ID}
	if ids := runIDs(got); !slices.Equal(ids, want) {
		t.Fatalf("ListRunning = %v, want %v (oldest first)", ids, want)
	}
	for _, r := range got {
		if r.Status != store.RunRunning || !r.EndedAt.IsZero() {
			t.Errorf("ListRunning returned run %s with status %q EndedAt %v", r.ID, r.Status, r.EndedAt)
		}
	}
	if got := mustListRunning(t, st, other); len(got) != 1 {
		t.Fatalf("ListRunning of the other user: %d runs, want 1", len(got))
	}
}

func (s *suite) testConcurrentFinish(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u := s.user(t, "u")
	th := store.Thread{ID: id(), UserID: u, Title: "race"}
	mustCreateThread(t, st, th)
	r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo"}
	mustCreateRun(t, st, r)
	statuses := []store.RunStatus{store.RunCompleted, store.RunFailed, store.RunCancelled, store.RunTimeout}
	const n = 12
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = st.FinishRun(c, store.Outcome{UserID: u, RunID: r.ID, Status: statuses[i%len(statuses)], ErrorCode: fmt.Sprint(i)})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("FinishRun #%d and #%d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrNotRunning):
			t.Fatalf("FinishRun #%d: %v, want nil or ErrNotRunning", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no FinishRun succeeded")
	}
	got := mustGetRun(t, st, u, r.ID)
	if got.Status != statuses[winner%len(statuses)] || got.ErrorCode != fmt.Sprint(winner) {
		t.Fatalf("run status %q code %q, want the winner's %q %q", got.Status, got.ErrorCode, statuses[winner%len(statuses)], fmt.Sprint(winner))
	}
}

const ttl = 10 * time.Minute

func (s *suite) testIdempotency(t *testing.T) {
	st := s.newStore(t)
	u, other, now := s.user(t, "u"), s.user(t, "other"), base()
	first := []byte(`{"type":"ack","thread_id":"t1","run_id":"r1","message_id":"m1"}`)

	wantClaim(t, st, u, "k1", first, now, nil, true)
	wantClaim(t, st, u, "k1", []byte(`{"second":true}`), now.Add(time.Second), first, false)
	wantClaim(t, st, u, "k1", []byte(`{"third":true}`), now.Add(ttl-time.Millisecond), first, false)
	// Keys are per user, and different keys are independent.
	wantClaim(t, st, other, "k1", []byte(`"other"`), now, nil, true)
	wantClaim(t, st, u, "k2", []byte(`"k2"`), now, nil, true)
	wantClaim(t, st, u, "k1", []byte(`{"fourth":true}`), now.Add(2*time.Second), first, false)
	wantClaim(t, st, other, "k1", []byte(`"again"`), now.Add(time.Second), []byte(`"other"`), false)
	// Binary values survive.
	bin := []byte{0, 1, 2, 0xff, 0xfe, '"', '\\'}
	wantClaim(t, st, u, "bin", bin, now, nil, true)
	wantClaim(t, st, u, "bin", []byte("x"), now, bin, false)
}

func (s *suite) testIdempotencyExpiry(t *testing.T) {
	st := s.newStore(t)
	u, now := s.user(t, "u"), base()
	wantClaim(t, st, u, "k", []byte(`"first"`), now, nil, true)
	wantClaim(t, st, u, "k", []byte(`"early"`), now.Add(ttl-time.Millisecond), []byte(`"first"`), false)
	// An entry ttl old is expired: the new claim wins and starts a new window.
	later := now.Add(ttl)
	wantClaim(t, st, u, "k", []byte(`"second"`), later, nil, true)
	wantClaim(t, st, u, "k", []byte(`"third"`), later.Add(ttl-time.Millisecond), []byte(`"second"`), false)
	wantClaim(t, st, u, "k", []byte(`"fourth"`), later.Add(3*ttl), nil, true)

	// The ttl is the claim's own: a short one expires before a long one.
	wantClaimTTL(t, st, u, "short", []byte(`"s"`), time.Second, now, nil, true)
	wantClaimTTL(t, st, u, "long", []byte(`"l"`), time.Hour, now, nil, true)
	wantClaimTTL(t, st, u, "short", []byte(`"s2"`), time.Hour, now.Add(2*time.Second), nil, true)
	wantClaimTTL(t, st, u, "long", []byte(`"l2"`), time.Second, now.Add(2*time.Second), []byte(`"l"`), false)

	// Another user's clock far ahead expires nothing of this user's.
	wantClaim(t, st, u, "mine", []byte(`"mine"`), now, nil, true)
	wantClaim(t, st, s.user(t, "other"), "k", []byte(`"x"`), now.Add(100*ttl), nil, true)
	wantClaim(t, st, u, "mine", []byte(`"dup"`), now.Add(time.Second), []byte(`"mine"`), false)
}

func (s *suite) testIdempotencyRelease(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other, now := s.user(t, "u"), s.user(t, "other"), base()
	wantClaim(t, st, u, "k", []byte(`"first"`), now, nil, true)
	wantClaim(t, st, other, "k", []byte(`"other"`), now, nil, true)
	if err := st.ReleaseIdempotencyKey(c, u, "k"); err != nil {
		t.Fatalf("ReleaseIdempotencyKey: %v", err)
	}
	wantClaim(t, st, u, "k", []byte(`"retry"`), now.Add(time.Second), nil, true)
	wantClaim(t, st, u, "k", []byte(`"dup"`), now.Add(2*time.Second), []byte(`"retry"`), false)
	// Releasing one user's key leaves another's alone.
	wantClaim(t, st, other, "k", []byte(`"dup"`), now.Add(time.Second), []byte(`"other"`), false)
	for _, key := range []string{"never-claimed", "k"} {
		if err := st.ReleaseIdempotencyKey(c, s.user(t, "nobody"), key); err != nil {
			t.Fatalf("releasing a free key: %v, want nil", err)
		}
	}
	if err := st.ReleaseIdempotencyKey(c, u, "k"); err != nil {
		t.Fatalf("ReleaseIdempotencyKey: %v", err)
	}
	if err := st.ReleaseIdempotencyKey(c, u, "k"); err != nil {
		t.Fatalf("second ReleaseIdempotencyKey: %v", err)
	}
}

// A confirmed claim answers repeats with the confirmed value until the
// claim's own expiry; confirming a free key claims nothing.
func (s *suite) testIdempotencyConfirm(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other, now := s.user(t, "u"), s.user(t, "other"), base()
	wantClaim(t, st, u, "k", []byte(`"pending"`), now, nil, true)
	wantClaim(t, st, other, "k", []byte(`"other"`), now, nil, true)
	if err := st.ConfirmIdempotencyKey(c, u, "k", []byte(`"done"`)); err != nil {
		t.Fatalf("ConfirmIdempotencyKey: %v", err)
	}
	wantClaim(t, st, u, "k", []byte(`"dup"`), now.Add(time.Second), []byte(`"done"`), false)
	wantClaim(t, st, other, "k", []byte(`"dup"`), now.Add(time.Second), []byte(`"other"`), false)
	// The expiry is the claim's: confirming does not extend it.
	wantClaim(t, st, u, "k", []byte(`"new"`), now.Add(ttl), nil, true)
	if err := st.ConfirmIdempotencyKey(c, u, "free", []byte(`"x"`)); err != nil {
		t.Fatalf("confirming a free key: %v, want nil", err)
	}
	wantClaim(t, st, u, "free", []byte(`"mine"`), now.Add(ttl), nil, true)
}

func (s *suite) testConcurrentClaims(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, now := s.user(t, "u"), base()
	const n = 20
	type result struct {
		existing []byte
		claimed  bool
		err      error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			ex, ok, err := st.ClaimIdempotencyKey(c, store.Claim{UserID: u, Key: "same", Value: fmt.Appendf(nil, `{"claimer":%d}`, i), TTL: ttl, At: now})
			results[i] = result{ex, ok, err}
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Fatalf("claim #%d: %v", i, r.err)
		case r.claimed && winner >= 0:
			t.Fatalf("claims #%d and #%d both won", winner, i)
		case r.claimed:
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("no claim won")
	}
	want := fmt.Sprintf(`{"claimer":%d}`, winner)
	for i, r := range results {
		if !r.claimed && string(r.existing) != want {
			t.Errorf("claim #%d returned %q, want the winner's %q", i, r.existing, want)
		}
	}
}

// testConcurrentWrites: concurrent writers of every kind must all succeed
// (no "database is locked" under load).
func (s *suite) testConcurrentWrites(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u := s.user(t, "u")
	shared := store.Thread{ID: id(), UserID: u, Title: "shared"}
	mustCreateThread(t, st, shared)
	const writers, per = 8, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			own := store.Thread{ID: id(), UserID: u, Title: fmt.Sprint("writer ", w)}
			if err := st.CreateThread(c, own); err != nil {
				t.Errorf("CreateThread: %v", err)
				return
			}
			for i := range per {
				for _, th := range []string{own.ID, shared.ID} {
					m := store.Message{ID: id(), ThreadID: th, UserID: u, Role: store.RoleUser, Content: fmt.Sprint(w, "/", i)}
					if err := st.AddMessage(c, m); err != nil {
						t.Errorf("AddMessage: %v", err)
						return
					}
				}
				r := store.Run{ID: id(), ThreadID: own.ID, UserID: u, Agent: "demo"}
				if err := st.CreateRun(c, r); err != nil {
					t.Errorf("CreateRun: %v", err)
					return
				}
				if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: r.ID, Status: store.RunCompleted}); err != nil {
					t.Errorf("FinishRun: %v", err)
					return
				}
				if _, _, err := st.ClaimIdempotencyKey(c, store.Claim{UserID: u, Key: fmt.Sprint(w, "/", i), Value: []byte("{}"), TTL: ttl, At: time.Now()}); err != nil {
					t.Errorf("ClaimIdempotencyKey: %v", err)
					return
				}
				if _, err := listThreads(c, st, u, 0); err != nil {
					t.Errorf("ListThreads: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if got := mustListMessages(t, st, u, shared.ID); len(got) != writers*per {
		t.Fatalf("shared thread has %d messages, want %d", len(got), writers*per)
	}
	if list, err := listThreads(c, st, u, 0); err != nil || len(list) != writers+1 {
		t.Fatalf("ListThreads: %d threads, %v; want %d", len(list), err, writers+1)
	}
	if runs := mustListRunning(t, st, u); len(runs) != 0 {
		t.Fatalf("%d runs still running, want none", len(runs))
	}
}

func (s *suite) testInvalid(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u := s.user(t, "u")
	th := store.Thread{ID: id(), UserID: u, Title: "t"}
	mustCreateThread(t, st, th)
	checks := map[string]error{
		"CreateThread without id":    st.CreateThread(c, store.Thread{UserID: u, Title: "t"}),
		"CreateThread without user":  st.CreateThread(c, store.Thread{ID: id(), Title: "t"}),
		"AddMessage with a bad role": st.AddMessage(c, store.Message{ID: id(), ThreadID: th.ID, UserID: u, Role: "system", Content: "x"}),
		"AddMessage without id":      st.AddMessage(c, store.Message{ThreadID: th.ID, UserID: u, Role: store.RoleUser, Content: "x"}),
		"CreateRun without agent":    st.CreateRun(c, store.Run{ID: id(), ThreadID: th.ID, UserID: u}),
	}
	_, _, checks["Claim with zero ttl"] = st.ClaimIdempotencyKey(c, store.Claim{UserID: u, Key: "k", Value: []byte("{}"), At: time.Now()})
	_, _, checks["Claim with empty key"] = st.ClaimIdempotencyKey(c, store.Claim{UserID: u, Value: []byte("{}"), TTL: ttl, At: time.Now()})
	_, _, checks["Claim without user"] = st.ClaimIdempotencyKey(c, store.Claim{Key: "k", Value: []byte("{}"), TTL: ttl, At: time.Now()})
	for name, err := range checks {
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if msgs := mustListMessages(t, st, u, th.ID); len(msgs) != 0 {
		t.Errorf("%d messages after invalid AddMessage calls, want none", len(msgs))
	}
}

func (s *suite) testPingAndClose(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	if err := st.Ping(c); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	mustCreateThread(t, st, store.Thread{ID: id(), UserID: s.user(t, "u"), Title: "t"})
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := st.Ping(c); err == nil {
		t.Fatal("Ping after Close: nil, want an error")
	}
	if _, err := st.GetThread(c, s.user(t, "u"), id()); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetThread after Close: %v, want an error other than ErrNotFound", err)
	}
}

// wantClaim claims key with the suite's ttl and checks the outcome.
func wantClaim(t *testing.T, st Store, u, key string, value []byte, now time.Time, wantExisting []byte, wantClaimed bool) {
	t.Helper()
	wantClaimTTL(t, st, u, key, value, ttl, now, wantExisting, wantClaimed)
}

func wantClaimTTL(t *testing.T, st Store, u, key string, value []byte, ttl time.Duration, now time.Time, wantExisting []byte, wantClaimed bool) {
	t.Helper()
	existing, claimed, err := st.ClaimIdempotencyKey(ctx(t), store.Claim{UserID: u, Key: key, Value: value, TTL: ttl, At: now})
	if err != nil {
		t.Fatalf("ClaimIdempotencyKey(%q): %v", key, err)
	}
	if claimed != wantClaimed || (!wantClaimed && string(existing) != string(wantExisting)) {
		t.Fatalf("ClaimIdempotencyKey(%q, %q) = %q, %v; want %q, %v", key, value, existing, claimed, wantExisting, wantClaimed)
	}
}

func mustCreateThread(t *testing.T, st Store, th store.Thread) {
	t.Helper()
	if err := st.CreateThread(ctx(t), th); err != nil {
		t.Fatalf("CreateThread: %v", err)
	}
}

func mustGetThread(t *testing.T, st Store, u, threadID string) store.Thread {
	t.Helper()
	th, err := st.GetThread(ctx(t), u, threadID)
	if err != nil {
		t.Fatalf("GetThread: %v", err)
	}
	return th
}

func mustAddMessage(t *testing.T, st Store, m store.Message) {
	t.Helper()
	if err := st.AddMessage(ctx(t), m); err != nil {
		t.Fatalf("AddMessage: %v", err)
	}
}

// mustListMessages returns every message of the thread, page after page.
func mustListMessages(t *testing.T, st Store, u, threadID string) []store.Message {
	t.Helper()
	all := []store.Message{}
	q := store.MessageQuery{Limit: 7}
	for {
		msgs, more, err := st.ListMessages(ctx(t), u, threadID, q)
		if err != nil {
			t.Fatalf("ListMessages: %v", err)
		}
		all = append(all, msgs...)
		if !more {
			return all
		}
		if len(msgs) == 0 {
			t.Fatalf("ListMessages: an empty page with more")
		}
		q.After = msgs[len(msgs)-1].ID
	}
}

// listThreads is the first page of ListThreads with limit.
func listThreads(c context.Context, st Store, u string, limit int) ([]store.Thread, error) {
	ts, _, err := st.ListThreads(c, u, store.ThreadQuery{Limit: limit})
	return ts, err
}

func mustCreateRun(t *testing.T, st Store, r store.Run) {
	t.Helper()
	if err := st.CreateRun(ctx(t), r); err != nil {
		t.Fatalf("CreateRun: %v", err)
	}
}

func mustGetRun(t *testing.T, st Store, u, runID string) store.Run {
	t.Helper()
	r, err := st.GetRun(ctx(t), u, runID)
	if err != nil {
		t.Fatalf("GetRun: %v", err)
	}
	return r
}

func mustListRunning(t *testing.T, st Store, u string) []store.Run {
	t.Helper()
	runs, err := st.ListRunning(ctx(t), u)
	if err != nil {
		t.Fatalf("ListRunning: %v", err)
	}
	return runs
}

// sameTime reports whether got is want and in UTC. A zero want matches only
// a zero got.
func sameTime(got, want time.Time) bool {
	if want.IsZero() {
		return got.IsZero()
	}
	return got.Equal(want) && got.Location() == time.UTC
}

func checkThread(t *testing.T, got, want store.Thread) {
	t.Helper()
	if got.ID != want.ID || got.UserID != want.UserID || got.Title != want.Title ||
		!sameTime(got.CreatedAt, want.CreatedAt) || !sameTime(got.UpdatedAt, want.UpdatedAt) {
		t.Errorf("thread\n got %+v\nwant %+v", got, want)
	}
}

func checkMessage(t *testing.T, got, want store.Message) {
	t.Helper()
	if got.ID != want.ID || got.ThreadID != want.ThreadID || got.UserID != want.UserID || got.Role != want.Role ||
		got.Content != want.Content || got.RunID != want.RunID || !sameTime(got.CreatedAt, want.CreatedAt) {
		t.Errorf("message\n got %+v\nwant %+v", got, want)
	}
}

func checkRun(t *testing.T, got, want store.Run) {
	t.Helper()
	if got.ID != want.ID || got.ThreadID != want.ThreadID || got.UserID != want.UserID || got.Agent != want.Agent ||
		got.Status != want.Status || got.UserMessageID != want.UserMessageID ||
		!sameTime(got.StartedAt, want.StartedAt) || !sameTime(got.EndedAt, want.EndedAt) ||
		got.ErrorCode != want.ErrorCode || got.ErrorMessage != want.ErrorMessage ||
		got.Node != want.Node || !sameTime(got.LeaseUntil, want.LeaseUntil) {
		t.Errorf("run\n got %+v\nwant %+v", got, want)
	}
}

func threadIDs(ths []store.Thread) []string {
	out := make([]string, len(ths))
	for i, th := range ths {
		out[i] = th.ID
	}
	return out
}

func messageIDs(msgs []store.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func runIDs(runs []store.Run) []string {
	out := make([]string, len(runs))
	for i, r := range runs {
		out[i] = r.ID
	}
	return out
}

// reapBase is the "now" of the subtests that reap, with sub-millisecond
// digits in a non-UTC zone. It is before 1970 so that their reaps cannot
// end the runs of the other subtests, which may share the database: those
// hold no lease (LeaseUntil zero, stored as the epoch or below) or a lease
// near time.Now.
//
// That relies on a run without a lease sorting no earlier than 1970, true of
// both backends (SQLite stores 0, PostgreSQL the epoch); a backend storing
// it lower would see the reaping subtests end other subtests' runs.
func reapBase() time.Time {
	return time.Date(1960, 3, 1, 12, 0, 0, 123456789, time.UTC).In(time.FixedZone("UTC-5", -5*3600))
}

func (s *suite) testLeaseRoundTrip(t *testing.T) {
	st := s.newStore(t)
	u, node, t0 := s.user(t, "u"), s.user(t, "node"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "leases", CreatedAt: t0}
	mustCreateThread(t, st, th)
	lease := t0.Add(30*time.Second + 987654*time.Nanosecond)
	leased := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: t0, Node: node, LeaseUntil: lease}
	mustCreateRun(t, st, leased)
	bare := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: t0.Add(time.Second)}
	mustCreateRun(t, st, bare)

	wantLeased := store.Run{ID: leased.ID, ThreadID: th.ID, UserID: u, Agent: "demo", Status: store.RunRunning,
		StartedAt: stored(t0), Node: node, LeaseUntil: stored(lease)}
	wantBare := store.Run{ID: bare.ID, ThreadID: th.ID, UserID: u, Agent: "demo", Status: store.RunRunning,
		StartedAt: stored(bare.StartedAt)} // no node, and a zero LeaseUntil read back zero
	checkRun(t, mustGetRun(t, st, u, leased.ID), wantLeased)
	checkRun(t, mustGetRun(t, st, u, bare.ID), wantBare)
	running := mustListRunning(t, st, u)
	if len(running) != 2 {
		t.Fatalf("ListRunning: %d runs, want 2", len(running))
	}
	checkRun(t, running[0], wantLeased)
	checkRun(t, running[1], wantBare)

	// Finishing a run keeps its node and lease.
	end := t0.Add(time.Minute)
	if err := st.FinishRun(ctx(t), store.Outcome{UserID: u, RunID: leased.ID, Status: store.RunCompleted, EndedAt: end}); err != nil {
		t.Fatalf("FinishRun: %v", err)
	}
	wantLeased.Status, wantLeased.EndedAt = store.RunCompleted, stored(end)
	checkRun(t, mustGetRun(t, st, u, leased.ID), wantLeased)
}

// testEnds: a run finished unannounced awaits its confirmation; while its
// lease holds no one may claim it, once it passes ClaimEnds hands it to one
// claimer (leased to it), and after ConfirmEnds it is never handed out again.
// A run finished announced, or reaped and confirmed, is never handed out; a
// reaped run is leased to its reaper.
func (s *suite) testEnds(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	s.reapMu.Lock() // ClaimEnds and ReapExpired act on every user's runs
	defer s.reapMu.Unlock()
	u := s.user(t, "u")
	t0 := reapBase() // see reapBase: no other subtest's run is claimable then
	th := store.Thread{ID: id(), UserID: u, Title: "ends", CreatedAt: t0}
	mustCreateThread(t, st, th)
	lease := t0.Add(time.Minute)
	mk := func() store.Run {
		r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: t0, Node: "a", LeaseUntil: lease}
		mustCreateRun(t, st, r)
		return r
	}
	pending, announced, running, reaped := mk(), mk(), mk(), mk()
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: pending.ID, Status: store.RunCompleted, EndedAt: t0.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: announced.ID, Status: store.RunFailed, ErrorCode: "agent_failed", Announced: true}); err != nil {
		t.Fatal(err)
	}
	if got := mustGetRun(t, st, u, pending.ID); got.EndAnnounced || got.Status != store.RunCompleted {
		t.Fatalf("finished unannounced: %+v", got)
	}
	if got := mustGetRun(t, st, u, announced.ID); !got.EndAnnounced {
		t.Fatalf("finished announced: %+v", got)
	}
	if got := mustGetRun(t, st, u, running.ID); got.EndAnnounced {
		t.Fatalf("running run says its end is announced: %+v", got)
	}
	ids := func(rs []store.Run) []string {
		out := runIDs(rs)
		slices.Sort(out)
		return out
	}
	mine := func(rs []store.Run) []store.Run { // other subtests' runs may be claimable too
		var out []store.Run
		for _, r := range rs {
			if r.UserID == u {
				out = append(out, r)
			}
		}
		return out
	}
	// Within the lease: nothing to claim.
	if got, err := st.ClaimEnds(c, store.EndClaim{Before: t0.Add(30 * time.Second), Node: "b", LeaseUntil: t0.Add(time.Hour)}); err != nil || len(mine(got)) != 0 {
		t.Fatalf("ClaimEnds within the lease: %v, %v", ids(mine(got)), err)
	}
	// Reaped by "r": failed, unannounced, leased to r.
	later := t0.Add(2 * time.Minute)
	rr, err := st.ReapExpired(c, store.Reap{Before: later, ErrorCode: "node_lost", ErrorMessage: "lost", Node: "r", LeaseUntil: later.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(mine(rr)); !slices.Equal(got, []string{running.ID, reaped.ID}) && !slices.Equal(got, ids([]store.Run{running, reaped})) {
		t.Fatalf("ReapExpired reaped %v, want the two running runs", got)
	}
	for _, r := range mine(rr) {
		if r.Node != "r" || !sameTime(r.LeaseUntil, stored(later.Add(time.Minute))) || r.EndAnnounced {
			t.Fatalf("reaped run %+v: want leased to r until %v, unannounced", r, stored(later.Add(time.Minute)))
		}
	}
	if err := st.ConfirmEnds(c, []string{reaped.ID, id()}); err != nil {
		t.Fatalf("ConfirmEnds: %v", err)
	}
	// Past the finished run's lease but within the reaper's: only pending.
	claimed, err := st.ClaimEnds(c, store.EndClaim{Before: later, Node: "b", LeaseUntil: later.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(mine(claimed)); !slices.Equal(got, []string{pending.ID}) {
		t.Fatalf("ClaimEnds = %v, want [%s] (the finished run not announced)", got, pending.ID)
	}
	if r := mine(claimed)[0]; r.Node != "b" || !sameTime(r.LeaseUntil, stored(later.Add(time.Minute))) || r.Status != store.RunCompleted {
		t.Fatalf("claimed run %+v: want completed, leased to b", r)
	}
	// Claimed: not again within the claimer's lease.
	if got, err := st.ClaimEnds(c, store.EndClaim{Before: later.Add(30 * time.Second), Node: "c", LeaseUntil: later.Add(time.Hour)}); err != nil || len(mine(got)) != 0 {
		t.Fatalf("ClaimEnds within the claimer's lease: %v, %v", ids(mine(got)), err)
	}
	// Past every lease: the two not confirmed (pending, running reaped).
	far := later.Add(time.Hour + time.Minute)
	again, err := st.ClaimEnds(c, store.EndClaim{Before: far, Node: "c", LeaseUntil: far.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(mine(again)); !slices.Equal(got, ids([]store.Run{pending, running})) {
		t.Fatalf("ClaimEnds past every lease = %v, want %v", got, ids([]store.Run{pending, running}))
	}
	if err := st.ConfirmEnds(c, []string{pending.ID, running.ID}); err != nil {
		t.Fatal(err)
	}
	if got, err := st.ClaimEnds(c, store.EndClaim{Before: far.Add(time.Hour), Node: "d", LeaseUntil: far.Add(2 * time.Hour)}); err != nil || len(mine(got)) != 0 {
		t.Fatalf("ClaimEnds after ConfirmEnds: %v, %v", ids(mine(got)), err)
	}
	if got := mustGetRun(t, st, u, pending.ID); !got.EndAnnounced {
		t.Fatalf("confirmed run %+v", got)
	}
	if _, err := st.ClaimEnds(c, store.EndClaim{Before: far}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("ClaimEnds for no node: %v, want ErrInvalid", err)
	}
	if err := st.ConfirmEnds(c, nil); err != nil {
		t.Fatalf("ConfirmEnds(nil): %v", err)
	}
}

func (s *suite) testRenewLeases(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other := s.user(t, "u"), s.user(t, "other")
	node, foreign := s.user(t, "node"), s.user(t, "foreign")
	t0 := base()
	th := store.Thread{ID: id(), UserID: u, Title: "renew", CreatedAt: t0}
	mustCreateThread(t, st, th)
	oth := store.Thread{ID: id(), UserID: other, Title: "renew", CreatedAt: t0}
	mustCreateThread(t, st, oth)
	lease := t0.Add(time.Minute)
	mk := func(th store.Thread, node string) store.Run {
		r := store.Run{ID: id(), ThreadID: th.ID, UserID: th.UserID, Agent: "demo", StartedAt: t0, Node: node, LeaseUntil: lease}
		mustCreateRun(t, st, r)
		return r
	}
	a1, a2, ended := mk(th, node), mk(th, node), mk(th, node)
	a3 := mk(oth, node) // the node's runs may belong to any user
	f1 := mk(th, foreign)
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: ended.ID, Status: store.RunCompleted, EndedAt: t0.Add(time.Second)}); err != nil {
		t.Fatalf("FinishRun: %v", err)
	}
	unknown := id()

	for _, ids := range [][]string{nil, {}} {
		if lost, err := st.RenewLeases(c, node, ids, t0.Add(time.Hour)); err != nil || lost != nil {
			t.Errorf("RenewLeases(%#v) = %v, %v; want nil, nil", ids, lost, err)
		}
	}

	until := t0.Add(2*time.Minute + 456789*time.Nanosecond)
	lost, err := st.RenewLeases(c, node, []string{a1.ID, ended.ID, f1.ID, a2.ID, unknown, a3.ID}, until)
	if err != nil {
		t.Fatalf("RenewLeases: %v", err)
	}
	slices.Sort(lost)
	want := []string{ended.ID, f1.ID, unknown}
	slices.Sort(want)
	if !slices.Equal(lost, want) {
		t.Fatalf("RenewLeases lost %v, want %v (ended, foreign, unknown)", lost, want)
	}
	for _, r := range []store.Run{a1, a2, a3} {
		if got := mustGetRun(t, st, r.UserID, r.ID); !sameTime(got.LeaseUntil, stored(until)) || got.Status != store.RunRunning || got.Node != node {
			t.Errorf("renewed run %s: lease %v status %q node %q; want lease %v, running, %q", r.ID, got.LeaseUntil, got.Status, got.Node, stored(until), node)
		}
	}
	for _, r := range []store.Run{ended, f1} {
		if got := mustGetRun(t, st, r.UserID, r.ID); !sameTime(got.LeaseUntil, stored(lease)) {
			t.Errorf("run %s (not the node's or ended): lease %v, want it unchanged at %v", r.ID, got.LeaseUntil, stored(lease))
		}
	}

	// A node that renews only its live runs loses none, and a lease may
	// also be moved back.
	if lost, err := st.RenewLeases(c, node, []string{a1.ID, a3.ID}, lease); err != nil || len(lost) != 0 {
		t.Fatalf("RenewLeases of live runs: lost %v, %v; want none", lost, err)
	}
	if got := mustGetRun(t, st, u, a1.ID); !sameTime(got.LeaseUntil, stored(lease)) {
		t.Errorf("lease %v after renewing to %v", got.LeaseUntil, stored(lease))
	}
	if got := mustGetRun(t, st, u, a2.ID); !sameTime(got.LeaseUntil, stored(until)) {
		t.Errorf("lease of a run left out of the renewal: %v, want it unchanged at %v", got.LeaseUntil, stored(until))
	}
	// Another node cannot renew the node's runs.
	if lost, err := st.RenewLeases(c, foreign, []string{a1.ID, f1.ID}, until); err != nil || !slices.Equal(lost, []string{a1.ID}) {
		t.Fatalf("RenewLeases by another node: lost %v, %v; want [%s]", lost, err, a1.ID)
	}
}

func (s *suite) testReapExpired(t *testing.T) {
	st := s.newStore(t)
	s.reapMu.Lock()
	defer s.reapMu.Unlock()
	c := ctx(t)
	u, node := s.user(t, "u"), s.user(t, "node")
	now := reapBase()
	th := store.Thread{ID: id(), UserID: u, Title: "reap", CreatedAt: base()}
	mustCreateThread(t, st, th)
	mk := func(lease time.Time) store.Run {
		r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", UserMessageID: id(),
			StartedAt: now.Add(-time.Hour), Node: node, LeaseUntil: lease}
		mustCreateRun(t, st, r)
		return r
	}
	var expired []store.Run
	for i := range 3 {
		expired = append(expired, mk(now.Add(-time.Duration(3-i)*time.Second)))
	}
	// Expired by less than the store's precision: now truncated is the same
	// millisecond, so it is not before now.
	sameMs := mk(now.Add(-100 * time.Microsecond))
	fresh := mk(now.Add(time.Second))
	done := mk(now.Add(-time.Minute))
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: done.ID, Status: store.RunCompleted, EndedAt: now.Add(-time.Second)}); err != nil {
		t.Fatalf("FinishRun: %v", err)
	}

	const code, msg = "node_lost", "the node running the run was lost: nodo perdido 💥"
	first, err := st.ReapExpired(c, store.Reap{Before: now, ErrorCode: code, ErrorMessage: msg, Limit: 2})
	if err != nil {
		t.Fatalf("ReapExpired: %v", err)
	}
	if len(first) != 2 {
		t.Fatalf("ReapExpired with limit 2 returned %d runs %v, want 2", len(first), runIDs(first))
	}
	rest, err := st.ReapExpired(c, store.Reap{Before: now, ErrorCode: code, ErrorMessage: msg})
	if err != nil {
		t.Fatalf("ReapExpired: %v", err)
	}
	reaped := append(first, rest...)
	got, want := runIDs(reaped), runIDs(expired)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("ReapExpired returned %v then %v, want the expired runs %v once each", runIDs(first), runIDs(rest), want)
	}
	for _, r := range reaped {
		i := slices.IndexFunc(expired, func(e store.Run) bool { return e.ID == r.ID })
		e := expired[i]
		w := store.Run{ID: e.ID, ThreadID: th.ID, UserID: u, Agent: "demo", Status: store.RunFailed, UserMessageID: e.UserMessageID,
			StartedAt: stored(e.StartedAt), EndedAt: stored(now), ErrorCode: code, ErrorMessage: msg,
			Node: node, LeaseUntil: stored(e.LeaseUntil)}
		checkRun(t, r, w)
		checkRun(t, mustGetRun(t, st, u, r.ID), w)
	}
	if again, err := st.ReapExpired(c, store.Reap{Before: now, ErrorCode: code, ErrorMessage: msg}); err != nil || len(again) != 0 {
		t.Fatalf("third ReapExpired: %v, %v; want nothing left to reap", runIDs(again), err)
	}
	for _, r := range []store.Run{sameMs, fresh} {
		if got := mustGetRun(t, st, u, r.ID); got.Status != store.RunRunning || !got.EndedAt.IsZero() {
			t.Errorf("unexpired run %s: status %q EndedAt %v, want running", r.ID, got.Status, got.EndedAt)
		}
	}
	if got := mustGetRun(t, st, u, done.ID); got.Status != store.RunCompleted || got.ErrorCode != "" {
		t.Errorf("completed run: status %q code %q after ReapExpired, want completed", got.Status, got.ErrorCode)
	}

	// A reaped run is lost to its node, and already ended.
	lost, err := st.RenewLeases(c, node, []string{expired[0].ID, fresh.ID}, now.Add(time.Minute))
	if err != nil || !slices.Equal(lost, []string{expired[0].ID}) {
		t.Fatalf("RenewLeases after ReapExpired: lost %v, %v; want [%s]", lost, err, expired[0].ID)
	}
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: expired[1].ID, Status: store.RunCompleted}); !errors.Is(err, store.ErrNotRunning) {
		t.Fatalf("FinishRun of a reaped run: %v, want ErrNotRunning", err)
	}
	// Once their leases pass, the other runs are reaped too.
	later := now.Add(2 * time.Minute)
	r, err := st.ReapExpired(c, store.Reap{Before: later, ErrorCode: code, ErrorMessage: msg})
	got, want = runIDs(r), []string{sameMs.ID, fresh.ID}
	slices.Sort(got)
	slices.Sort(want)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("ReapExpired after the leases passed: %v, %v; want %v", got, err, want)
	}
}

func (s *suite) testConcurrentReapers(t *testing.T) {
	st := s.newStore(t)
	s.reapMu.Lock()
	defer s.reapMu.Unlock()
	c := ctx(t)
	u, now := s.user(t, "u"), reapBase()
	th := store.Thread{ID: id(), UserID: u, Title: "reapers", CreatedAt: base()}
	mustCreateThread(t, st, th)
	const nodes, perNode, reapers, limit = 3, 15, 10, 4
	byNode := make([][]string, nodes)
	var want []string
	for n := range nodes {
		for i := range perNode {
			r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: now.Add(-time.Hour),
				Node: fmt.Sprintf("%s-%d", s.user(t, "node"), n), LeaseUntil: now.Add(-time.Duration(i+1) * time.Millisecond)}
			mustCreateRun(t, st, r)
			byNode[n] = append(byNode[n], r.ID)
			want = append(want, r.ID)
		}
	}
	fresh := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", Node: s.user(t, "node"), LeaseUntil: now.Add(time.Hour)}
	mustCreateRun(t, st, fresh)

	results := make([][]store.Run, reapers)
	errs := make([]error, reapers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range reapers {
		wg.Go(func() {
			<-start
			for {
				runs, err := st.ReapExpired(c, store.Reap{Before: now, ErrorCode: "node_lost", ErrorMessage: fmt.Sprint("reaper ", i), Limit: limit})
				if err != nil {
					errs[i] = err
					return
				}
				if len(runs) > limit {
					errs[i] = fmt.Errorf("ReapExpired returned %d runs, more than the limit %d", len(runs), limit)
					return
				}
				if len(runs) == 0 {
					return
				}
				results[i] = append(results[i], runs...)
			}
		})
	}
	close(start)
	wg.Wait()
	seen := map[string]int{}
	var got []string
	for i, runs := range results {
		if errs[i] != nil {
			t.Fatalf("reaper %d: %v", i, errs[i])
		}
		for _, r := range runs {
			if prev, dup := seen[r.ID]; dup {
				t.Errorf("run %s returned to reapers %d and %d", r.ID, prev, i)
			}
			seen[r.ID] = i
			got = append(got, r.ID)
			if r.Status != store.RunFailed || r.ErrorMessage != fmt.Sprint("reaper ", i) {
				t.Errorf("run %s returned to reaper %d with status %q message %q", r.ID, i, r.Status, r.ErrorMessage)
			}
			// What the store kept is what its reaper was told.
			if g := mustGetRun(t, st, u, r.ID); g.Status != store.RunFailed || g.ErrorMessage != r.ErrorMessage {
				t.Errorf("run %s stored with status %q message %q, but reaper %d got %q", r.ID, g.Status, g.ErrorMessage, i, r.ErrorMessage)
			}
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("reapers returned %d runs, want each of the %d expired runs exactly once", len(got), len(want))
	}
	if g := mustGetRun(t, st, u, fresh.ID); g.Status != store.RunRunning {
		t.Errorf("unexpired run: status %q after the reapers, want running", g.Status)
	}
	for n, ids := range byNode {
		lost, err := st.RenewLeases(c, fmt.Sprintf("%s-%d", s.user(t, "node"), n), ids, now.Add(time.Hour))
		if err != nil || len(lost) != len(ids) {
			t.Errorf("node %d renewing its reaped runs: lost %d of %d, %v; want all lost", n, len(lost), len(ids), err)
		}
	}
}
