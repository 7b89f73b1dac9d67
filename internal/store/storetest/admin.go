package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/store"
)

// testActiveRuns (issue 14): ListActiveRuns pages through the running and
// waiting runs of every user, oldest first, and FindRun reads any user's
// run. The store may hold other tests' runs: only this test's users are
// checked.
func (s *suite) testActiveRuns(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other, t0 := s.user(t, "u"), s.user(t, "other"), base()
	mine := map[string]bool{u: true, other: true}
	var all []store.Run
	for i, user := range []string{u, other, u, other, u} {
		th := store.Thread{ID: id(), UserID: user, Title: "t", CreatedAt: t0}
		mustCreateThread(t, st, th)
		// Two runs start in the same millisecond: the id breaks the tie.
		at := t0.Add(time.Duration(i/2) * time.Second)
		r := store.Run{ID: id(), ThreadID: th.ID, UserID: user, Agent: "demo", StartedAt: at, Node: "n1", LeaseUntil: at.Add(time.Hour)}
		mustCreateRun(t, st, r)
		all = append(all, r)
	}
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: all[2].ID, Status: store.RunCompleted}); err != nil {
		t.Fatalf("FinishRun: %v", err)
	}
	if err := st.SetRunWaiting(c, other, all[3].ID, true); err != nil {
		t.Fatalf("SetRunWaiting: %v", err)
	}
	want := []store.Run{all[0], all[1], all[3], all[4]}
	slices.SortFunc(want, func(a, b store.Run) int {
		if d := a.StartedAt.Compare(b.StartedAt); d != 0 {
			return d
		}
		if a.ID < b.ID {
			return -1
		}
		return 1
	})

	// Every page of two, across users.
	var got []store.Run
	var after store.RunCursor
	for pages := 0; ; pages++ {
		if pages > 10000 {
			t.Fatal("ListActiveRuns never ends")
		}
		page, more, err := st.ListActiveRuns(c, store.ActiveRunQuery{After: after, Limit: 2})
		if err != nil {
			t.Fatalf("ListActiveRuns: %v", err)
		}
		if len(page) > 2 || (more && len(page) == 0) {
			t.Fatalf("ListActiveRuns page of %d runs, more %v, with limit 2", len(page), more)
		}
		for _, r := range page {
			if r.Status != store.RunRunning && r.Status != store.RunWaiting {
				t.Errorf("ListActiveRuns returned run %s with status %q", r.ID, r.Status)
			}
			if mine[r.UserID] {
				got = append(got, r)
			}
		}
		if !more {
			break
		}
		last := page[len(page)-1]
		after = store.RunCursor{StartedAt: last.StartedAt, ID: last.ID}
	}
	if ids := runIDs(got); !slices.Equal(ids, runIDs(want)) {
		t.Fatalf("ListActiveRuns over every page = %v, want %v (oldest first, then by id)", ids, runIDs(want))
	}
	if got[2].Status != store.RunWaiting || got[2].Node != "n1" || got[2].UserID != other {
		t.Errorf("waiting run listed as %+v", got[2])
	}

	// One user's.
	page, more, err := st.ListActiveRuns(c, store.ActiveRunQuery{UserID: u})
	if err != nil || more {
		t.Fatalf("ListActiveRuns of one user: more %v, err %v", more, err)
	}
	if ids := runIDs(page); !slices.Equal(ids, []string{all[0].ID, all[4].ID}) {
		t.Fatalf("ListActiveRuns of %s = %v, want %v", u, ids, []string{all[0].ID, all[4].ID})
	}
	if page, _, err := st.ListActiveRuns(c, store.ActiveRunQuery{UserID: s.user(t, "nobody")}); err != nil || len(page) != 0 {
		t.Fatalf("ListActiveRuns of a user without runs = %v, %v", runIDs(page), err)
	}

	// FindRun: any user's, ended or not.
	for _, r := range all {
		f, err := st.FindRun(c, r.ID)
		if err != nil || f.UserID != r.UserID || f.ThreadID != r.ThreadID {
			t.Errorf("FindRun(%s) = %+v, %v; want the run of %s", r.ID, f, err, r.UserID)
		}
	}
	if _, err := st.FindRun(c, id()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("FindRun of an unknown id: %v, want ErrNotFound", err)
	}
}
