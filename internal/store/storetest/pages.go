package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/store"
)

// pagedThread creates a thread of n messages, each 1 ms after the previous
// except for runs of three with the same time (insertion order decides
// those), inserted out of order, and returns them in list order.
func pagedThread(t *testing.T, st Store, u string, n int) (store.Thread, []store.Message) {
	t.Helper()
	t0 := base()
	th := store.Thread{ID: id(), UserID: u, Title: "paged", CreatedAt: t0}
	mustCreateThread(t, st, th)
	msgs := make([]store.Message, n)
	for i := range msgs {
		// Ids run against the time order, so an id order would show.
		msgs[i] = store.Message{ID: fmt.Sprintf("m%03d-%s", n-i, id()), ThreadID: th.ID, UserID: u, Role: store.RoleUser,
			Content: fmt.Sprintf("message %d", i), CreatedAt: stored(t0.Add(time.Duration(i/3) * time.Millisecond))}
	}
	// Groups of equal times are inserted in order; the groups themselves
	// backwards, so the order is by time, not insertion.
	for g := (n - 1) / 3; g >= 0; g-- {
		for i := g * 3; i < min(n, g*3+3); i++ {
			mustAddMessage(t, st, msgs[i])
		}
	}
	return th, msgs
}

func (s *suite) testMessagePages(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u := s.user(t, "u")
	th, msgs := pagedThread(t, st, u, 14)

	page := func(q store.MessageQuery) ([]store.Message, bool) {
		t.Helper()
		got, more, err := st.ListMessages(c, u, th.ID, q)
		if err != nil {
			t.Fatalf("ListMessages(%+v): %v", q, err)
		}
		return got, more
	}
	want := func(q store.MessageQuery, from, to int, wantMore bool) []store.Message {
		t.Helper()
		got, more := page(q)
		if !slices.Equal(messageIDs(got), messageIDs(msgs[from:to])) || more != wantMore {
			t.Fatalf("ListMessages(%+v) = %v, more %v; want %v, more %v", q, messageIDs(got), more, messageIDs(msgs[from:to]), wantMore)
		}
		return got
	}

	// Forward from the start, 5 at a time: every message once, in order.
	want(store.MessageQuery{Limit: 5}, 0, 5, true)
	want(store.MessageQuery{Limit: 5, After: msgs[4].ID}, 5, 10, true)
	want(store.MessageQuery{Limit: 5, After: msgs[9].ID}, 10, 14, false)
	want(store.MessageQuery{Limit: 4, After: msgs[9].ID}, 10, 14, false) // exactly the rest: no more
	want(store.MessageQuery{Limit: 5, After: msgs[13].ID}, 14, 14, false)
	// A cursor inside a group of equal times.
	want(store.MessageQuery{Limit: 2, After: msgs[7].ID}, 8, 10, true)
	// Backward from a message: the newest Limit before it, oldest first.
	want(store.MessageQuery{Limit: 5, Before: msgs[13].ID}, 8, 13, true)
	want(store.MessageQuery{Limit: 5, Before: msgs[8].ID}, 3, 8, true)
	want(store.MessageQuery{Limit: 5, Before: msgs[3].ID}, 0, 3, false)
	want(store.MessageQuery{Limit: 3, Before: msgs[3].ID}, 0, 3, false)
	want(store.MessageQuery{Limit: 5, Before: msgs[0].ID}, 0, 0, false)
	want(store.MessageQuery{Limit: 2, Before: msgs[8].ID}, 6, 8, true)
	// Defaults: no limit is DefaultListLimit, here everything.
	want(store.MessageQuery{}, 0, 14, false)
	want(store.MessageQuery{Limit: -1}, 0, 14, false)

	// Fields come back as stored.
	got, _ := page(store.MessageQuery{Limit: 1, After: msgs[5].ID})
	checkMessage(t, got[0], msgs[6])

	// Cursors that are not messages of this thread.
	other := store.Thread{ID: id(), UserID: u, Title: "other", CreatedAt: base()}
	mustCreateThread(t, st, other)
	foreign := store.Message{ID: id(), ThreadID: other.ID, UserID: u, Role: store.RoleUser, Content: "elsewhere"}
	mustAddMessage(t, st, foreign)
	for _, q := range []store.MessageQuery{{After: foreign.ID}, {Before: foreign.ID}, {After: "no-such-message"}, {Before: th.ID}} {
		if got, more, err := st.ListMessages(c, u, th.ID, q); !errors.Is(err, store.ErrBadCursor) {
			t.Errorf("ListMessages(%+v) = %d messages, more %v, %v; want ErrBadCursor", q, len(got), more, err)
		}
	}
	if _, _, err := st.ListMessages(c, u, th.ID, store.MessageQuery{After: msgs[1].ID, Before: msgs[5].ID}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("ListMessages with after and before: %v, want ErrInvalid", err)
	}
	// Another user with a valid cursor learns nothing: the thread is not
	// found, before any cursor is looked at.
	mallory := s.user(t, "mallory")
	for _, q := range []store.MessageQuery{{}, {After: msgs[2].ID}, {Before: msgs[2].ID}, {After: "no-such-message"}} {
		if got, _, err := st.ListMessages(c, mallory, th.ID, q); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ListMessages(%+v) by another user: %d messages, %v; want ErrNotFound", q, len(got), err)
		}
	}
}

func (s *suite) testMessagePageBytes(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u := s.user(t, "u")
	th := store.Thread{ID: id(), UserID: u, Title: "big", CreatedAt: base()}
	mustCreateThread(t, st, th)
	sizes := []int{400, 300, 300, 1000, 50, 50, 10}
	var msgs []store.Message
	for i, n := range sizes {
		m := store.Message{ID: id(), ThreadID: th.ID, UserID: u, Role: store.RoleAssistant, Content: strings.Repeat("<", n),
			CreatedAt: base().Add(time.Duration(i) * time.Millisecond)}
		mustAddMessage(t, st, m)
		msgs = append(msgs, m)
	}
	cases := []struct {
		q        store.MessageQuery
		from, to int
		more     bool
	}{
		{store.MessageQuery{MaxBytes: 1000}, 0, 3, true},                     // 400+300+300 fits exactly
		{store.MessageQuery{MaxBytes: 999}, 0, 2, true},                      // the third would go over
		{store.MessageQuery{MaxBytes: 100, After: msgs[2].ID}, 3, 4, true},   // the first always joins
		{store.MessageQuery{MaxBytes: 1000, After: msgs[3].ID}, 4, 7, false}, // the rest fits
		{store.MessageQuery{MaxBytes: 1000, Limit: 2, After: msgs[3].ID}, 4, 6, true},
		{store.MessageQuery{MaxBytes: 700, Before: msgs[4].ID}, 3, 4, true}, // backward: 1000 alone
		{store.MessageQuery{MaxBytes: 700, Before: msgs[3].ID}, 1, 3, true}, // 300+300, not the 400
		{store.MessageQuery{MaxBytes: 1000, Before: msgs[3].ID}, 0, 3, false},
		{store.MessageQuery{MaxBytes: 0}, 0, 7, false}, // no bound
	}
	for _, tc := range cases {
		got, more, err := st.ListMessages(c, u, th.ID, tc.q)
		if err != nil {
			t.Fatalf("ListMessages(%+v): %v", tc.q, err)
		}
		if !slices.Equal(messageIDs(got), messageIDs(msgs[tc.from:tc.to])) || more != tc.more {
			t.Errorf("ListMessages(after %q before %q, limit %d, max %d bytes) = %d messages %v, more %v; want messages %d-%d, more %v",
				tc.q.After, tc.q.Before, tc.q.Limit, tc.q.MaxBytes, len(got), messageIDs(got), more, tc.from, tc.to-1, tc.more)
		}
	}
}

func (s *suite) testThreadPages(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, t0 := s.user(t, "u"), base()
	// Seven threads; 1-3 share one UpdatedAt, so the cursor needs the id.
	ths := make([]store.Thread, 7)
	for i := range ths {
		at := t0.Add(time.Duration(i) * time.Second)
		if i >= 1 && i <= 3 {
			at = t0.Add(time.Second)
		}
		ths[i] = store.Thread{ID: id(), UserID: u, Title: "t", CreatedAt: stored(at), UpdatedAt: stored(at)}
		mustCreateThread(t, st, ths[i])
	}
	order := slices.Clone(ths)
	slices.SortFunc(order, func(a, b store.Thread) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	mustCreateThread(t, st, store.Thread{ID: id(), UserID: s.user(t, "other"), Title: "not mine", CreatedAt: t0.Add(time.Second)})

	var all []store.Thread
	q := store.ThreadQuery{Limit: 2}
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatalf("ListThreads: no end after 10 pages")
		}
		got, more, err := st.ListThreads(c, u, q)
		if err != nil {
			t.Fatalf("ListThreads(%+v): %v", q, err)
		}
		all = append(all, got...)
		if wantMore := len(all) < len(order); more != wantMore || len(got) > 2 || len(got) == 0 {
			t.Fatalf("ListThreads page %d: %d threads, more %v; want more %v", pages, len(got), more, wantMore)
		}
		if !more {
			break
		}
		last := got[len(got)-1]
		q.After = store.ThreadCursor{UpdatedAt: last.UpdatedAt, ID: last.ID}
	}
	if !slices.Equal(threadIDs(all), threadIDs(order)) {
		t.Fatalf("ListThreads pages = %v, want %v", threadIDs(all), threadIDs(order))
	}

	// A cursor is a position: it works after its thread moved on.
	moved := order[2]
	mustAddMessage(t, st, store.Message{ID: id(), ThreadID: moved.ID, UserID: u, Role: store.RoleUser, Content: "bump", CreatedAt: t0.Add(time.Hour)})
	got, more, err := st.ListThreads(c, u, store.ThreadQuery{Limit: 10, After: store.ThreadCursor{UpdatedAt: moved.UpdatedAt, ID: moved.ID}})
	if err != nil || more || !slices.Equal(threadIDs(got), threadIDs(order[3:])) {
		t.Fatalf("ListThreads after a moved thread = %v, more %v, %v; want %v", threadIDs(got), more, err, threadIDs(order[3:]))
	}
}
