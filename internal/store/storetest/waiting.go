package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/store"
)

// issue 11 C: a run waiting for its user's answer (store.RunWaiting) is a
// live run: listed, leased, renewed, finished and reaped like a running one.
func (s *suite) testRunWaiting(t *testing.T) {
	st := s.newStore(t)
	c := ctx(t)
	u, node := s.user(t, "u"), s.user(t, "node")
	th := store.Thread{ID: id(), UserID: u, Title: "waiting", CreatedAt: base()}
	mustCreateThread(t, st, th)
	r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: base(), Node: node, LeaseUntil: base().Add(time.Minute)}
	mustCreateRun(t, st, r)

	for _, waiting := range []bool{true, true, false, true} {
		if err := st.SetRunWaiting(c, u, r.ID, waiting); err != nil {
			t.Fatalf("SetRunWaiting(%v): %v", waiting, err)
		}
		want := store.RunRunning
		if waiting {
			want = store.RunWaiting
		}
		if got := mustGetRun(t, st, u, r.ID); got.Status != want || !got.EndedAt.IsZero() {
			t.Fatalf("after SetRunWaiting(%v): status %q, ended %v; want %q", waiting, got.Status, got.EndedAt, want)
		}
	}
	if want := store.RunWaiting; want.Terminal() {
		t.Fatal("RunWaiting is terminal")
	}
	running, err := st.ListRunning(c, u)
	if err != nil || len(running) != 1 || running[0].ID != r.ID {
		t.Fatalf("ListRunning: %v, %v; want the waiting run", runIDs(running), err)
	}
	until := base().Add(time.Hour)
	if lost, err := st.RenewLeases(c, node, []string{r.ID}, until); err != nil || len(lost) != 0 {
		t.Fatalf("RenewLeases of a waiting run: lost %v, %v", lost, err)
	}
	if got := mustGetRun(t, st, u, r.ID); !sameTime(got.LeaseUntil, stored(until)) || got.Status != store.RunWaiting {
		t.Fatalf("after renewal: %+v", got)
	}
	if err := st.SetRunWaiting(c, s.user(t, "other"), r.ID, false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetRunWaiting of another user's run: %v, want ErrNotFound", err)
	}
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: r.ID, Status: store.RunCancelled, EndedAt: base().Add(time.Second)}); err != nil {
		t.Fatalf("FinishRun of a waiting run: %v", err)
	}
	for _, waiting := range []bool{true, false} {
		if err := st.SetRunWaiting(c, u, r.ID, waiting); !errors.Is(err, store.ErrNotRunning) {
			t.Fatalf("SetRunWaiting(%v) of an ended run: %v, want ErrNotRunning", waiting, err)
		}
	}
	if got := mustGetRun(t, st, u, r.ID); got.Status != store.RunCancelled {
		t.Fatalf("an ended run moved to %q", got.Status)
	}
}

// issue 11 C: a waiting run of a dead node is reaped once.
func (s *suite) testReapWaiting(t *testing.T) {
	st := s.newStore(t)
	s.reapMu.Lock()
	defer s.reapMu.Unlock()
	c := ctx(t)
	u, node := s.user(t, "u"), s.user(t, "node")
	now := reapBase()
	th := store.Thread{ID: id(), UserID: u, Title: "reap waiting", CreatedAt: base()}
	mustCreateThread(t, st, th)
	r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: now.Add(-time.Hour), Node: node, LeaseUntil: now.Add(-time.Second)}
	mustCreateRun(t, st, r)
	if err := st.SetRunWaiting(c, u, r.ID, true); err != nil {
		t.Fatal(err)
	}
	reap := store.Reap{Before: now, ErrorCode: "node_lost", ErrorMessage: "lost"}
	reaped, err := st.ReapExpired(c, reap)
	if err != nil || !slices.Contains(runIDs(reaped), r.ID) {
		t.Fatalf("ReapExpired: %v, %v; want the waiting run", runIDs(reaped), err)
	}
	if again, err := st.ReapExpired(c, reap); err != nil || slices.Contains(runIDs(again), r.ID) {
		t.Fatalf("second ReapExpired: %v, %v; the waiting run reaped twice", runIDs(again), err)
	}
	if got := mustGetRun(t, st, u, r.ID); got.Status != store.RunFailed || got.ErrorCode != "node_lost" {
		t.Fatalf("reaped waiting run: %q %q", got.Status, got.ErrorCode)
	}
}
