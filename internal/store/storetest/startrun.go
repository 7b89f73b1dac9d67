package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/store"
)

// startArgs returns a user message of u in thread threadID at at, and the
// run answering it, linked to each other.
func startArgs(u, threadID, node string, at time.Time) (store.Message, store.Run) {
	m := store.Message{ID: id(), ThreadID: threadID, UserID: u, Role: store.RoleUser, Content: "question at " + at.String(), CreatedAt: at}
	r := store.Run{ID: id(), ThreadID: threadID, UserID: u, Agent: "demo", UserMessageID: m.ID, StartedAt: at,
		Node: node, LeaseUntil: at.Add(30*time.Second + 456789*time.Nanosecond)}
	m.RunID = r.ID
	return m, r
}

// wantRun returns what a store keeps of r, stored by StartRun.
func wantRun(r store.Run) store.Run {
	return store.Run{ID: r.ID, ThreadID: r.ThreadID, UserID: r.UserID, Agent: r.Agent, Status: store.RunRunning,
		UserMessageID: r.UserMessageID, StartedAt: stored(r.StartedAt), Node: r.Node, LeaseUntil: stored(r.LeaseUntil)}
}

func storedMessage(m store.Message) store.Message {
	m.CreatedAt = stored(m.CreatedAt)
	return m
}

func checkMessages(t *testing.T, what string, got, want []store.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: messages %v, want %v", what, messageIDs(got), messageIDs(want))
	}
	for i := range want {
		checkMessage(t, got[i], storedMessage(want[i]))
	}
}

func (s *suite) testStartRunNewThread(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, node, t0 := s.user(t, "u"), s.user(t, "node"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "new", CreatedAt: t0}
	at := t0.Add(1500 * time.Microsecond)
	m, r := startArgs(u, th.ID, node, at)
	r.Status, r.EndedAt, r.ErrorCode = store.RunCompleted, at.Add(time.Hour), "ignored"
	history, err := st.StartRun(c, &th, m, r, 50)
	if err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	checkMessages(t, "history of a new thread", history, []store.Message{m})
	// UpdatedAt: CreatedAt, moved forward to the message's time.
	checkThread(t, mustGetThread(t, st, u, th.ID), store.Thread{ID: th.ID, UserID: u, Title: "new", CreatedAt: stored(t0), UpdatedAt: stored(at)})
	checkMessages(t, "ListMessages", mustListMessages(t, st, u, th.ID), []store.Message{m})
	checkRun(t, mustGetRun(t, st, u, r.ID), wantRun(r))
	if running := mustListRunning(t, st, u); len(running) != 1 || running[0].ID != r.ID {
		t.Fatalf("ListRunning: %v, want [%s]", runIDs(running), r.ID)
	}

	// A message older than the new thread's UpdatedAt leaves it, and zero
	// times mean now.
	th2 := store.Thread{ID: id(), UserID: u, Title: "later", CreatedAt: t0, UpdatedAt: t0.Add(time.Hour)}
	m2, r2 := startArgs(u, th2.ID, node, t0.Add(time.Minute))
	if _, err := st.StartRun(c, &th2, m2, r2, 0); err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	checkThread(t, mustGetThread(t, st, u, th2.ID), store.Thread{ID: th2.ID, UserID: u, Title: "later", CreatedAt: stored(t0), UpdatedAt: stored(t0.Add(time.Hour))})

	th3 := store.Thread{ID: id(), UserID: u, Title: "now"}
	m3, r3 := startArgs(u, th3.ID, "", time.Time{})
	r3.StartedAt, r3.LeaseUntil = time.Time{}, time.Time{}
	before := time.Now().Truncate(store.TimePrecision)
	history, err = st.StartRun(c, &th3, m3, r3, -1)
	after := time.Now()
	if err != nil {
		t.Fatalf("StartRun with zero times: %v", err)
	}
	got := mustGetThread(t, st, u, th3.ID)
	gr := mustGetRun(t, st, u, r3.ID)
	for name, tm := range map[string]time.Time{"thread CreatedAt": got.CreatedAt, "thread UpdatedAt": got.UpdatedAt,
		"message CreatedAt": history[0].CreatedAt, "run StartedAt": gr.StartedAt} {
		if tm.Before(before) || tm.After(after) || tm.Location() != time.UTC {
			t.Errorf("%s %v, want a UTC time between %v and %v", name, tm, before, after)
		}
	}
	if !gr.LeaseUntil.IsZero() || gr.Node != "" {
		t.Errorf("run without a lease: node %q lease %v, want none", gr.Node, gr.LeaseUntil)
	}
}

func (s *suite) testStartRunExistingThread(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, node, t0 := s.user(t, "u"), s.user(t, "node"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "chat", CreatedAt: t0}
	mustCreateThread(t, st, th)
	earlier := []store.Message{
		{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleUser, Content: "hi", CreatedAt: t0.Add(time.Second)},
		{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleAssistant, Content: "hello", CreatedAt: t0.Add(2 * time.Second)},
	}
	for _, m := range earlier {
		mustAddMessage(t, st, m)
	}
	at := t0.Add(3*time.Second + 700*time.Microsecond)
	m, r := startArgs(u, th.ID, node, at)
	history, err := st.StartRun(c, nil, m, r, 0)
	if err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	all := append(slices.Clone(earlier), m)
	checkMessages(t, "history", history, all)
	checkMessages(t, "ListMessages", mustListMessages(t, st, u, th.ID), all)
	checkRun(t, mustGetRun(t, st, u, r.ID), wantRun(r))
	// UpdatedAt moves forward to the message's time, and the thread goes
	// to the top of the user's list.
	checkThread(t, mustGetThread(t, st, u, th.ID), store.Thread{ID: th.ID, UserID: u, Title: "chat", CreatedAt: stored(t0), UpdatedAt: stored(at)})
	other := store.Thread{ID: id(), UserID: u, Title: "other", CreatedAt: t0.Add(3 * time.Second)}
	mustCreateThread(t, st, other)
	if list, err := listThreads(c, st, u, 0); err != nil || !slices.Equal(threadIDs(list), []string{th.ID, other.ID}) {
		t.Fatalf("ListThreads = %v, %v; want the bumped thread first", threadIDs(list), err)
	}

	// An older message does not move UpdatedAt backwards; it is listed in
	// time order.
	old, oldRun := startArgs(u, th.ID, node, t0.Add(1500*time.Millisecond))
	history, err = st.StartRun(c, nil, old, oldRun, 0)
	if err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	checkMessages(t, "history", history, []store.Message{earlier[0], old, earlier[1], m})
	if got := mustGetThread(t, st, u, th.ID); !got.UpdatedAt.Equal(stored(at)) {
		t.Fatalf("UpdatedAt %v after an older message, want it to stay %v", got.UpdatedAt, stored(at))
	}

	running := mustListRunning(t, st, u)
	if len(running) != 2 {
		t.Fatalf("ListRunning: %d runs, want 2", len(running))
	}
}

func (s *suite) testStartRunHistoryLimit(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, node, t0 := s.user(t, "u"), s.user(t, "node"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "long", CreatedAt: t0}
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	m0, r0 := startArgs(u, th.ID, node, at(1))
	if _, err := st.StartRun(c, &th, m0, r0, 1); err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	all := []store.Message{m0}
	// Equal times, inserted out of id order: insertion order decides.
	for _, mid := range []string{"zzz-" + id(), "aaa-" + id()} {
		m := store.Message{ID: mid, ThreadID: th.ID, UserID: u, Role: store.RoleAssistant, Content: mid, CreatedAt: at(5)}
		mustAddMessage(t, st, m)
		all = append(all, m)
	}
	// Inserted before the later ones but older: listed by time.
	older := store.Message{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleAssistant, Content: "older", CreatedAt: at(3)}
	mustAddMessage(t, st, older)
	all = []store.Message{m0, older, all[1], all[2]}

	// want -1: all of them.
	for i, tc := range []struct{ limit, want int }{
		{3, 3}, {1, 1}, {0, -1}, {-1, -1}, {100, -1}, {9, 9}, {11, -1}, // 11: exactly all
	} {
		m, r := startArgs(u, th.ID, node, at(10+i))
		history, err := st.StartRun(c, nil, m, r, tc.limit)
		if err != nil {
			t.Fatalf("StartRun(limit %d): %v", tc.limit, err)
		}
		all = append(all, m)
		want := all
		if tc.want >= 0 {
			want = all[len(all)-tc.want:]
		}
		checkMessages(t, "history", history, want)
	}
	checkMessages(t, "ListMessages", mustListMessages(t, st, u, th.ID), all)
}

func (s *suite) testStartRunOwnership(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	alice, mallory, node, t0 := s.user(t, "alice"), s.user(t, "mallory"), s.user(t, "node"), base()
	th := store.Thread{ID: id(), UserID: alice, Title: "secret", CreatedAt: t0}
	mustCreateThread(t, st, th)
	mine := store.Message{ID: id(), ThreadID: th.ID, UserID: alice, Role: store.RoleUser, Content: "mine", CreatedAt: t0}
	mustAddMessage(t, st, mine)

	m, r := startArgs(mallory, th.ID, node, t0.Add(time.Hour))
	if h, err := st.StartRun(c, nil, m, r, 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("StartRun in another user's thread: %d messages, %v; want ErrNotFound", len(h), err)
	}
	missing, missingRun := startArgs(alice, id(), node, t0.Add(time.Hour))
	if _, err := st.StartRun(c, nil, missing, missingRun, 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("StartRun in a missing thread: %v, want ErrNotFound", err)
	}

	// Nothing landed: not the message, the run, nor the UpdatedAt move.
	checkThread(t, mustGetThread(t, st, alice, th.ID), store.Thread{ID: th.ID, UserID: alice, Title: "secret", CreatedAt: stored(t0), UpdatedAt: stored(t0)})
	checkMessages(t, "owner's messages", mustListMessages(t, st, alice, th.ID), []store.Message{mine})
	for _, u := range []string{alice, mallory} {
		for _, rid := range []string{r.ID, missingRun.ID} {
			if _, err := st.GetRun(c, u, rid); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetRun(%s) of a refused run: %v, want ErrNotFound", u, err)
			}
		}
		if runs := mustListRunning(t, st, u); len(runs) != 0 {
			t.Errorf("ListRunning(%s): %v, want none", u, runIDs(runs))
		}
	}
	// The ids are still free.
	mr := store.Thread{ID: id(), UserID: mallory, Title: "own"}
	mustCreateThread(t, st, mr)
	m.ThreadID, r.ThreadID = mr.ID, mr.ID
	if _, err := st.StartRun(c, nil, m, r, 0); err != nil {
		t.Fatalf("StartRun with the refused ids in the user's own thread: %v", err)
	}
}

func (s *suite) testStartRunAtomicity(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, node, t0 := s.user(t, "u"), s.user(t, "node"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "taken", CreatedAt: t0}
	m0, r0 := startArgs(u, th.ID, node, t0)
	if _, err := st.StartRun(c, &th, m0, r0, 0); err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	later := t0.Add(time.Minute)

	// A taken run id, last of the three writes, in a new thread: neither
	// the thread nor the message is written.
	fresh := store.Thread{ID: id(), UserID: u, Title: "fresh", CreatedAt: later}
	m, r := startArgs(u, fresh.ID, node, later)
	r.ID, m.RunID = r0.ID, r0.ID
	if _, err := st.StartRun(c, &fresh, m, r, 0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("StartRun with a taken run id: %v, want ErrConflict", err)
	}
	if _, err := st.GetThread(c, u, fresh.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("thread of a failed StartRun: %v, want ErrNotFound", err)
	}
	// The message id is free: the message was not written.
	mustCreateThread(t, st, store.Thread{ID: fresh.ID, UserID: u, Title: "fresh", CreatedAt: t0})
	if msgs := mustListMessages(t, st, u, fresh.ID); len(msgs) != 0 {
		t.Fatalf("messages of a failed StartRun: %v, want none", messageIDs(msgs))
	}
	mustAddMessage(t, st, store.Message{ID: m.ID, ThreadID: fresh.ID, UserID: u, Role: store.RoleUser, Content: "x", CreatedAt: t0})

	// The same in an existing thread: no message, no UpdatedAt move.
	m, r = startArgs(u, th.ID, node, later)
	r.ID, m.RunID = r0.ID, r0.ID
	if _, err := st.StartRun(c, nil, m, r, 0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("StartRun with a taken run id: %v, want ErrConflict", err)
	}
	checkThread(t, mustGetThread(t, st, u, th.ID), store.Thread{ID: th.ID, UserID: u, Title: "taken", CreatedAt: stored(t0), UpdatedAt: stored(t0)})
	checkMessages(t, "messages after a failed StartRun", mustListMessages(t, st, u, th.ID), []store.Message{m0})
	checkRun(t, mustGetRun(t, st, u, r0.ID), wantRun(r0))

	// A taken message id: no thread, no run.
	fresh2 := store.Thread{ID: id(), UserID: u, Title: "fresh2", CreatedAt: later}
	m, r = startArgs(u, fresh2.ID, node, later)
	r.UserMessageID, m.ID = m0.ID, m0.ID
	if _, err := st.StartRun(c, &fresh2, m, r, 0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("StartRun with a taken message id: %v, want ErrConflict", err)
	}
	if _, err := st.GetThread(c, u, fresh2.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("thread of a failed StartRun: %v, want ErrNotFound", err)
	}
	if _, err := st.GetRun(c, u, r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("run of a failed StartRun: %v, want ErrNotFound", err)
	}

	// A taken thread id, whoever owns it: no message, no run, and the
	// thread is unchanged.
	for _, owner := range []string{u, s.user(t, "other")} {
		dup := store.Thread{ID: th.ID, UserID: owner, Title: "dup", CreatedAt: later}
		m, r = startArgs(owner, th.ID, node, later)
		if _, err := st.StartRun(c, &dup, m, r, 0); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("StartRun with a taken thread id (user %q): %v, want ErrConflict", owner, err)
		}
		if _, err := st.GetRun(c, owner, r.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("run of a failed StartRun: %v, want ErrNotFound", err)
		}
	}
	checkThread(t, mustGetThread(t, st, u, th.ID), store.Thread{ID: th.ID, UserID: u, Title: "taken", CreatedAt: stored(t0), UpdatedAt: stored(t0)})
	checkMessages(t, "messages after failed StartRuns", mustListMessages(t, st, u, th.ID), []store.Message{m0})
	if running := mustListRunning(t, st, u); len(running) != 1 || running[0].ID != r0.ID {
		t.Fatalf("ListRunning: %v, want only [%s]", runIDs(running), r0.ID)
	}
}

func (s *suite) testStartRunInvalid(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other, t0 := s.user(t, "u"), s.user(t, "other"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "t", CreatedAt: t0}
	mustCreateThread(t, st, th)
	type args struct {
		th *store.Thread
		m  store.Message
		r  store.Run
	}
	valid := func() args {
		m, r := startArgs(u, th.ID, "", t0)
		return args{nil, m, r}
	}
	cases := map[string]func(a *args){
		"assistant message":      func(a *args) { a.m.Role = store.RoleAssistant },
		"message without id":     func(a *args) { a.m.ID, a.r.UserMessageID = "", "" },
		"run without agent":      func(a *args) { a.r.Agent = "" },
		"run of another thread":  func(a *args) { a.r.ThreadID = id() },
		"run of another user":    func(a *args) { a.r.UserID = other },
		"message of another run": func(a *args) { a.m.RunID = id() },
		"run of another message": func(a *args) { a.r.UserMessageID = id() },
		"new thread without title": func(a *args) {
			a.th = &store.Thread{ID: a.m.ThreadID, UserID: u}
		},
		"new thread of another user": func(a *args) {
			a.th = &store.Thread{ID: a.m.ThreadID, UserID: other, Title: "t"}
		},
		"new thread not the message's": func(a *args) {
			a.th = &store.Thread{ID: id(), UserID: u, Title: "t"}
		},
	}
	for name, mutate := range cases {
		a := valid()
		mutate(&a)
		if _, err := st.StartRun(c, a.th, a.m, a.r, 0); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("StartRun with %s: %v, want ErrInvalid", name, err)
		}
	}
	if msgs := mustListMessages(t, st, u, th.ID); len(msgs) != 0 {
		t.Errorf("%d messages after invalid StartRun calls, want none", len(msgs))
	}
	if running := mustListRunning(t, st, u); len(running) != 0 {
		t.Errorf("%d runs after invalid StartRun calls, want none", len(running))
	}
}

// testDiscardRun: a refused message's run, message and new thread go; an
// existing thread and its other messages stay; a finished run, another
// user's run and an unknown run are ErrNotFound and change nothing.
func (s *suite) testDiscardRun(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other, node, t0 := s.user(t, "u"), s.user(t, "other"), s.user(t, "node"), base()

	// A new thread: everything goes.
	th := store.Thread{ID: id(), UserID: u, Title: "new", CreatedAt: t0}
	m, r := startArgs(u, th.ID, node, t0)
	if _, err := st.StartRun(c, &th, m, r, 0); err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	if err := st.DiscardRun(c, other, r.ID, true); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DiscardRun of another user's run: %v, want ErrNotFound", err)
	}
	mustGetRun(t, st, u, r.ID)
	if err := st.DiscardRun(c, u, r.ID, true); err != nil {
		t.Fatalf("DiscardRun: %v", err)
	}
	if _, err := st.GetRun(c, u, r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetRun after DiscardRun: %v, want ErrNotFound", err)
	}
	if _, err := st.GetThread(c, u, th.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetThread after DiscardRun of its only message: %v, want ErrNotFound", err)
	}
	if err := st.DiscardRun(c, u, r.ID, true); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DiscardRun twice: %v, want ErrNotFound", err)
	}

	// An existing thread: only the run and its message go.
	th2 := store.Thread{ID: id(), UserID: u, Title: "chat", CreatedAt: t0}
	mustCreateThread(t, st, th2)
	first, firstRun := startArgs(u, th2.ID, node, t0.Add(time.Second))
	if _, err := st.StartRun(c, nil, first, firstRun, 0); err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: firstRun.ID, Status: store.RunCompleted, EndedAt: t0.Add(2 * time.Second)}); err != nil {
		t.Fatalf("FinishRun: %v", err)
	}
	if err := st.DiscardRun(c, u, firstRun.ID, false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DiscardRun of a finished run: %v, want ErrNotFound", err)
	}
	m2, r2 := startArgs(u, th2.ID, node, t0.Add(3*time.Second))
	if _, err := st.StartRun(c, nil, m2, r2, 0); err != nil {
		t.Fatalf("StartRun: %v", err)
	}
	if err := st.DiscardRun(c, u, r2.ID, false); err != nil {
		t.Fatalf("DiscardRun: %v", err)
	}
	checkMessages(t, "ListMessages after DiscardRun", mustListMessages(t, st, u, th2.ID), []store.Message{first})
	mustGetRun(t, st, u, firstRun.ID)
	if running := mustListRunning(t, st, u); len(running) != 0 {
		t.Fatalf("ListRunning after DiscardRun: %v, want none", runIDs(running))
	}
}
