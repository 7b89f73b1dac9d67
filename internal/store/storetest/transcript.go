package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/store"
)

// testRunEvents checks the transcript of a run: append (idempotent by
// index), pages in index order bounded in count and bytes, ownership, and
// RunTranscripts over several runs with its byte bound.
func (s *suite) testRunEvents(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other, t0 := s.user(t, "u"), s.user(t, "other"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "transcript", CreatedAt: t0}
	mustCreateThread(t, st, th)
	r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: t0}
	mustCreateRun(t, st, r)

	ev := func(run string, i int, typ, data string) store.RunEvent {
		return store.RunEvent{UserID: u, RunID: run, Index: i, Type: typ, Seq: uint64(100 + i), Epoch: "ep",
			TS: t0.Add(time.Duration(i) * time.Millisecond), Data: []byte(data)}
	}
	evs := []store.RunEvent{
		ev(r.ID, 1, "agent_started", `{"agent":"demo"}`),
		ev(r.ID, 2, "agent_thinking", `{"text":"hmm 💭"}`),
		ev(r.ID, 3, "tool_executing", `{"tool_call_id":"c1","tool":"calculator","args":{"expression":"2+2"}}`),
	}
	if err := st.AppendRunEvents(c, u, r.ID, evs); err != nil {
		t.Fatalf("AppendRunEvents: %v", err)
	}
	// A retry of the same indexes changes nothing; new ones are added.
	dup := ev(r.ID, 3, "tool_executing", `{"changed":true}`)
	more := []store.RunEvent{dup, ev(r.ID, 4, "agent_message_delta", `{"delta":"four"}`), ev(r.ID, 5, "agent_error", `{"message":"stopped"}`)}
	if err := st.AppendRunEvents(c, u, r.ID, more); err != nil {
		t.Fatalf("AppendRunEvents (retry and more): %v", err)
	}
	want := append(evs, more[1:]...)
	got, hasMore, err := st.ListRunEvents(c, u, r.ID, store.RunEventQuery{})
	if err != nil || hasMore {
		t.Fatalf("ListRunEvents: more %v, %v", hasMore, err)
	}
	checkEvents(t, got, want)

	// Pages: by count, after an index, by bytes (at least one event).
	got, hasMore, err = st.ListRunEvents(c, u, r.ID, store.RunEventQuery{Limit: 2})
	if err != nil || !hasMore {
		t.Fatalf("ListRunEvents limit 2: more %v, %v", hasMore, err)
	}
	checkEvents(t, got, want[:2])
	got, hasMore, err = st.ListRunEvents(c, u, r.ID, store.RunEventQuery{After: 2, Limit: 2})
	if err != nil || !hasMore {
		t.Fatalf("ListRunEvents after 2: more %v, %v", hasMore, err)
	}
	checkEvents(t, got, want[2:4])
	got, hasMore, err = st.ListRunEvents(c, u, r.ID, store.RunEventQuery{After: 4})
	if err != nil || hasMore {
		t.Fatalf("ListRunEvents after 4: more %v, %v", hasMore, err)
	}
	checkEvents(t, got, want[4:])
	got, hasMore, err = st.ListRunEvents(c, u, r.ID, store.RunEventQuery{MaxBytes: 1})
	if err != nil || !hasMore {
		t.Fatalf("ListRunEvents 1 byte: more %v, %v", hasMore, err)
	}
	checkEvents(t, got, want[:1])

	// Another user's run is not found, for reading and writing.
	if _, _, err := st.ListRunEvents(c, other, r.ID, store.RunEventQuery{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ListRunEvents of another user's run: %v, want ErrNotFound", err)
	}
	foreign := ev(r.ID, 9, "agent_thinking", `{}`)
	foreign.UserID = other
	if err := st.AppendRunEvents(c, other, r.ID, []store.RunEvent{foreign}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AppendRunEvents to another user's run: %v, want ErrNotFound", err)
	}
	if err := st.AppendRunEvents(c, u, r.ID, []store.RunEvent{ev(r.ID, 0, "agent_thinking", `{}`)}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("AppendRunEvents with index 0: %v, want ErrInvalid", err)
	}
	if err := st.AppendRunEvents(c, u, "nope", []store.RunEvent{ev("nope", 1, "agent_thinking", `{}`)}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AppendRunEvents to no run: %v, want ErrNotFound", err)
	}
	if got, _, err := st.ListRunEvents(c, u, r.ID, store.RunEventQuery{}); err != nil || len(got) != len(want) {
		t.Errorf("after refused appends: %d events, %v; want %d", len(got), err, len(want))
	}

	// RunTranscripts: several runs at once, the user's only, bounded.
	r2 := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: t0}
	mustCreateRun(t, st, r2)
	r2evs := []store.RunEvent{ev(r2.ID, 1, "agent_started", `{"agent":"demo"}`), ev(r2.ID, 2, "agent_completed", `{"final_response":"x"}`)}
	if err := st.AppendRunEvents(c, u, r2.ID, r2evs); err != nil {
		t.Fatalf("AppendRunEvents r2: %v", err)
	}
	empty := id() // an id of no run
	all, err := st.RunTranscripts(c, u, []string{r2.ID, r.ID, empty}, 0)
	if err != nil {
		t.Fatalf("RunTranscripts: %v", err)
	}
	if len(all) != 2 || all[r.ID] == nil || all[r2.ID] == nil {
		t.Fatalf("RunTranscripts: %d runs, want 2", len(all))
	}
	checkEvents(t, all[r.ID].Events, want)
	checkEvents(t, all[r2.ID].Events, r2evs)
	if !all[r.ID].Complete || !all[r2.ID].Complete || all[r2.ID].Run.ID != r2.ID || all[r2.ID].Run.Status != store.RunRunning {
		t.Errorf("RunTranscripts: %+v %+v", all[r.ID], all[r2.ID])
	}
	if all, err := st.RunTranscripts(c, other, []string{r.ID, r2.ID}, 0); err != nil || len(all) != 0 {
		t.Errorf("RunTranscripts of another user: %d runs, %v; want none", len(all), err)
	}
	// A bound of one byte reads the first run's first event only: the
	// first run (in id order) is cut, the other has none.
	first, second := r.ID, r2.ID
	if second < first {
		first, second = second, first
	}
	all, err = st.RunTranscripts(c, u, []string{r.ID, r2.ID}, 1)
	if err != nil {
		t.Fatalf("RunTranscripts bounded: %v", err)
	}
	if len(all[first].Events) != 1 || len(all[second].Events) != 0 || all[first].Complete || all[second].Complete {
		t.Errorf("RunTranscripts(1 byte): %d and %d events, complete %v %v; want 1, 0, neither",
			len(all[first].Events), len(all[second].Events), all[first].Complete, all[second].Complete)
	}

	// FinishRun stores the events it is given with the end, once.
	r3 := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: t0}
	mustCreateRun(t, st, r3)
	if err := st.AppendRunEvents(c, u, r3.ID, []store.RunEvent{ev(r3.ID, 1, "agent_started", `{}`)}); err != nil {
		t.Fatal(err)
	}
	end := []store.RunEvent{ev(r3.ID, 1, "agent_started", `{"again":true}`), ev(r3.ID, 2, "agent_message_delta", `{"delta":"part"}`), ev(r3.ID, 3, "agent_error", `{}`)}
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: r3.ID, Status: store.RunCancelled, Events: end, InputTokens: 7, OutputTokens: 3}); err != nil {
		t.Fatalf("FinishRun with events: %v", err)
	}
	// The outcome's tokens go in with its events.
	if got := mustGetRun(t, st, u, r3.ID); got.InputTokens != 7 || got.OutputTokens != 3 {
		t.Errorf("FinishRun with events stored tokens %d/%d, want 7/3", got.InputTokens, got.OutputTokens)
	}
	late := []store.RunEvent{ev(r3.ID, 4, "agent_thinking", `{}`)}
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: r3.ID, Status: store.RunFailed, Events: late}); !errors.Is(err, store.ErrNotRunning) {
		t.Fatalf("FinishRun twice: %v, want ErrNotRunning", err)
	}
	got, _, err = st.ListRunEvents(c, u, r3.ID, store.RunEventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, got, []store.RunEvent{ev(r3.ID, 1, "agent_started", `{}`), end[1], end[2]})
	bad := []store.RunEvent{ev(r.ID, 9, "agent_thinking", `{}`)} // of another run
	r4 := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: t0}
	mustCreateRun(t, st, r4)
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: r4.ID, Status: store.RunFailed, Events: bad}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("FinishRun with another run's events: %v, want ErrInvalid", err)
	}
	if mustGetRun(t, st, u, r4.ID).Status != store.RunRunning {
		t.Error("a refused FinishRun ended the run")
	}

	// Discarding the run drops its transcript.
	m, sr := store.Message{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleUser, Content: "hi", CreatedAt: t0},
		store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "demo", StartedAt: t0, Node: "n", LeaseUntil: t0.Add(time.Hour)}
	m.RunID, sr.UserMessageID = sr.ID, m.ID
	if _, err := st.StartRun(c, nil, m, sr, 0); err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	if err := st.AppendRunEvents(c, u, sr.ID, []store.RunEvent{ev(sr.ID, 1, "agent_started", `{}`)}); err != nil {
		t.Fatalf("AppendRunEvents: %v", err)
	}
	if err := st.DiscardRun(c, u, sr.ID, false); err != nil {
		t.Fatalf("DiscardRun: %v", err)
	}
	if all, err := st.RunTranscripts(c, u, []string{sr.ID}, 0); err != nil || len(all) != 0 {
		t.Errorf("transcript of a discarded run: %d runs, %v", len(all), err)
	}
}

func checkEvents(t *testing.T, got, want []store.RunEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		w := want[i]
		w.TS = stored(w.TS)
		g := got[i]
		if fmt.Sprint(g.UserID, g.RunID, g.Index, g.Type, g.Seq, g.Epoch, string(g.Data)) != fmt.Sprint(w.UserID, w.RunID, w.Index, w.Type, w.Seq, w.Epoch, string(w.Data)) || !g.TS.Equal(w.TS) || g.TS.Location() != time.UTC {
			t.Errorf("event %d: %+v, want %+v", i, g, w)
		}
	}
}
