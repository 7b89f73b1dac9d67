package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/store"
)

// testTokenUsage: FinishRun stores a run's tokens, GetRun returns them, and
// TokensUsed sums the ended runs of one user started since a time.
func (s *suite) testTokenUsage(t *testing.T) {
	st, c := s.newStore(t), ctx(t)
	u, other, t0 := s.user(t, "u"), s.user(t, "other"), base()
	th := store.Thread{ID: id(), UserID: u, Title: "usage", CreatedAt: t0.Add(-48 * time.Hour)}
	mustCreateThread(t, st, th)
	oth := store.Thread{ID: id(), UserID: other, Title: "usage", CreatedAt: t0}
	mustCreateThread(t, st, oth)

	finish := func(user, thread string, started time.Time, status store.RunStatus, in, out int64) store.Run {
		t.Helper()
		r := store.Run{ID: id(), ThreadID: thread, UserID: user, Agent: "openai", StartedAt: started}
		mustCreateRun(t, st, r)
		o := store.Outcome{UserID: user, RunID: r.ID, Status: status, EndedAt: started.Add(time.Second), InputTokens: in, OutputTokens: out}
		if status != store.RunCompleted {
			o.ErrorCode = "agent_failed"
		}
		if err := st.FinishRun(c, o); err != nil {
			t.Fatalf("FinishRun: %v", err)
		}
		return r
	}
	r1 := finish(u, th.ID, t0, store.RunCompleted, 100, 20)
	finish(u, th.ID, t0.Add(time.Hour), store.RunFailed, 5, 0)
	finish(u, th.ID, t0.Add(-25*time.Hour), store.RunCompleted, 1000, 0) // the day before
	finish(other, oth.ID, t0, store.RunCompleted, 50, 50)
	mustCreateRun(t, st, store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "openai", StartedAt: t0}) // running: not counted

	if got := mustGetRun(t, st, u, r1.ID); got.InputTokens != 100 || got.OutputTokens != 20 {
		t.Errorf("GetRun tokens %d/%d, want 100/20", got.InputTokens, got.OutputTokens)
	}
	for _, tc := range []struct {
		user  string
		since time.Time
		want  int64
	}{
		{u, t0, 125},
		{u, t0.Add(-48 * time.Hour), 1125},
		{u, t0.Add(2 * time.Hour), 0},
		{other, t0, 100},
		{s.user(t, "nobody"), t0, 0},
	} {
		got, err := st.TokensUsed(c, tc.user, tc.since)
		if err != nil || got != tc.want {
			t.Errorf("TokensUsed(%s, %v) = %d, %v; want %d", tc.user, tc.since, got, err, tc.want)
		}
	}

	r := store.Run{ID: id(), ThreadID: th.ID, UserID: u, Agent: "openai", StartedAt: t0}
	mustCreateRun(t, st, r)
	if err := st.FinishRun(c, store.Outcome{UserID: u, RunID: r.ID, Status: store.RunCompleted, InputTokens: -1}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("FinishRun with negative tokens: %v, want ErrInvalid", err)
	}
}
