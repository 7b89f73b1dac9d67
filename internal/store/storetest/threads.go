package storetest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/store"
)

// issue 12: renaming and deleting a thread.

func (s *suite) testRenameThread(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other, t0 := s.user(t, "u"), s.user(t, "other"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "first title", CreatedAt: t0, UpdatedAt: t0.Add(time.Minute)}
	mustCreateThread(t, st, th)

	got, err := st.RenameThread(c, u, th.ID, "Renamed 🚀")
	if err != nil {
		t.Fatalf("RenameThread: %v", err)
	}
	want := th
	want.Title, want.CreatedAt, want.UpdatedAt = "Renamed 🚀", stored(th.CreatedAt), stored(th.UpdatedAt)
	checkThread(t, got, want)
	checkThread(t, mustGetThread(t, st, u, th.ID), want) // UpdatedAt unchanged: the list order stays

	if _, err := st.RenameThread(c, other, th.ID, "stolen"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RenameThread of another user's thread: %v, want ErrNotFound", err)
	}
	if _, err := st.RenameThread(c, u, id(), "nothing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RenameThread of a missing thread: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "  ", " padded", "line\nbreak", "nul\x00", strings.Repeat("x", store.MaxTitleRunes+1), "bad \xff"} {
		if _, err := st.RenameThread(c, u, th.ID, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("RenameThread to %q: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := st.RenameThread(c, u, th.ID, strings.Repeat("é", store.MaxTitleRunes)); err != nil {
		t.Errorf("RenameThread to %d runes: %v", store.MaxTitleRunes, err)
	}
}

func (s *suite) testDeleteThread(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other, node, t0 := s.user(t, "u"), s.user(t, "other"), s.user(t, "node"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "doomed", CreatedAt: t0}
	keep := store.Thread{ID: id(), UserID: u, Title: "kept", CreatedAt: t0}
	m1, r1 := startArgs(u, th.ID, node, t0.Add(time.Second))
	if _, err := st.StartRun(c, &th, m1, r1, 0); err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	km, kr := startArgs(u, keep.ID, node, t0.Add(time.Second))
	if _, err := st.StartRun(c, &keep, km, kr, 0); err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	ev := store.RunEvent{UserID: u, RunID: r1.ID, Index: 1, Type: "agent_started", Seq: 7, Epoch: "ep", TS: t0, Data: []byte(`{}`)}
	if err := st.AppendRunEvents(c, u, r1.ID, []store.RunEvent{ev}); err != nil {
		t.Fatalf("AppendRunEvents: %v", err)
	}
	finish := func(runID string, at time.Time) {
		t.Helper()
		if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: runID, Status: store.RunCompleted, EndedAt: at}); err != nil {
			t.Fatalf("FinishRun: %v", err)
		}
	}
	msgs := func(threadID string) int { return len(mustListMessages(t, st, u, threadID)) }

	// A running run, then one waiting for input, keeps the thread whole.
	if err := st.DeleteThread(c, u, th.ID); !errors.Is(err, store.ErrRunInProgress) {
		t.Fatalf("DeleteThread with a running run: %v, want ErrRunInProgress", err)
	}
	finish(r1.ID, t0.Add(2*time.Second))
	mustAddMessage(t, st, store.Message{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleAssistant, Content: "answer", RunID: r1.ID, CreatedAt: t0.Add(2 * time.Second)})
	m2, r2 := startArgs(u, th.ID, node, t0.Add(3*time.Second))
	if _, err := st.StartRun(c, nil, m2, r2, 0); err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	if err := st.SetRunWaiting(c, u, r2.ID, true); err != nil {
		t.Fatalf("SetRunWaiting: %v", err)
	}
	if err := st.DeleteThread(c, u, th.ID); !errors.Is(err, store.ErrRunInProgress) {
		t.Fatalf("DeleteThread with a run waiting for input: %v, want ErrRunInProgress", err)
	}
	if n := msgs(th.ID); n != 3 {
		t.Fatalf("%d messages after a refused delete, want 3", n)
	}
	finish(r2.ID, t0.Add(4*time.Second))

	if err := st.DeleteThread(c, other, th.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteThread of another user's thread: %v, want ErrNotFound", err)
	}
	if err := st.DeleteThread(c, u, th.ID); err != nil {
		t.Fatalf("DeleteThread: %v", err)
	}
	if _, err := st.GetThread(c, u, th.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetThread after DeleteThread: %v, want ErrNotFound", err)
	}
	if _, _, err := st.ListMessages(c, u, th.ID, store.MessageQuery{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ListMessages after DeleteThread: %v, want ErrNotFound", err)
	}
	for _, runID := range []string{r1.ID, r2.ID} {
		if _, err := st.GetRun(c, u, runID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetRun after DeleteThread: %v, want ErrNotFound", err)
		}
		if _, _, err := st.ListRunEvents(c, u, runID, store.RunEventQuery{}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ListRunEvents after DeleteThread: %v, want ErrNotFound", err)
		}
	}
	if tr, err := st.RunTranscripts(c, u, []string{r1.ID}, 0); err != nil || len(tr) != 0 {
		t.Errorf("RunTranscripts after DeleteThread: %v, %v, want none", tr, err)
	}
	if err := st.DeleteThread(c, u, th.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteThread twice: %v, want ErrNotFound", err)
	}
	// The user's other thread is untouched.
	ths, err := listThreads(c, st, u, 10)
	if err != nil || len(ths) != 1 || ths[0].ID != keep.ID {
		t.Errorf("threads after DeleteThread: %v, %v, want only %s", threadIDs(ths), err, keep.ID)
	}
	if n := msgs(keep.ID); n != 1 {
		t.Errorf("%d messages in the kept thread, want 1", n)
	}
	mustGetRun(t, st, u, kr.ID)
}
