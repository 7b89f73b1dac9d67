package runs

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/protocol"
)

// asker asks one approval, then completes with "yes" or "no", or returns
// the error RequestInput gave.
func asker(work time.Duration) agentFunc {
	return func(ctx context.Context, _ agent.Run, em agent.Emitter) error {
		ans, err := em.RequestInput(ctx, agent.InputRequest{Kind: protocol.InputApproval, Prompt: "ok?"})
		if err != nil {
			return err
		}
		time.Sleep(work)
		if *ans.Approved {
			return em.Complete("yes")
		}
		return em.Complete("no")
	}
}

// waitRequest waits until run asks and returns its request id.
func (f *fixture) waitRequest(t *testing.T, user, runID string) string {
	t.Helper()
	var id string
	waitFor(t, "input_required", func() bool {
		for _, e := range f.events(t, user, runID) {
			if e.Type == protocol.TypeInputRequired {
				id, _ = e.Data["request_id"].(string)
			}
		}
		return id != ""
	})
	return id
}

func (f *fixture) answer(user, runID, reqID string, a protocol.InputAnswer) (protocol.AckFrame, *protocol.Error) {
	return f.m.UserInput(context.Background(), user, &protocol.Frame{Type: protocol.TypeUserInput, ID: "i", RunID: runID, RequestID: reqID, Answer: a})
}

func yes(v bool) protocol.InputAnswer { return protocol.InputAnswer{Approved: &v} }

func TestInputFirstAnswerWins(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, asker(0), Config{})
		ack, _ := f.send(t, "ann", "go", "")
		req := f.waitRequest(t, "ann", ack.RunID)
		waitFor(t, "status waiting_for_input", func() bool {
			r, err := f.store.GetRun(context.Background(), "ann", ack.RunID)
			return err == nil && r.Status == store.RunWaiting
		})
		if _, e := f.answer("bob", ack.RunID, req, yes(true)); e == nil || e.Code != protocol.CodeNotFound {
			t.Fatalf("another user's answer: %v", e)
		}
		if _, e := f.answer("ann", ack.RunID, "nope", yes(true)); e == nil || e.Code != protocol.CodeNotFound {
			t.Fatalf("an unknown request: %v", e)
		}
		text := "x"
		if _, e := f.answer("ann", ack.RunID, req, protocol.InputAnswer{Text: &text}); e == nil || e.Code != protocol.CodeInvalidMessage {
			t.Fatalf("an answer of the wrong kind: %v", e)
		}
		if a, e := f.answer("ann", ack.RunID, req, yes(false)); e != nil || a.RunID != ack.RunID {
			t.Fatalf("first answer: %+v %v", a, e)
		}
		if _, e := f.answer("ann", ack.RunID, req, yes(true)); e == nil || e.Code != protocol.CodeConflict {
			t.Fatalf("second answer: %v, want conflict", e)
		}
		evs := f.waitTerminal(t, "ann", ack.RunID)
		checkOrder(t, evs)
		var types []string
		for _, e := range evs {
			types = append(types, e.Type)
		}
		want := []string{protocol.TypeUserMessage, protocol.TypeAgentStarted, protocol.TypeInputRequired, protocol.TypeInputReceived, protocol.TypeAgentCompleted}
		if len(types) != len(want) {
			t.Fatalf("events %v, want %v", types, want)
		}
		for i := range want {
			if types[i] != want[i] {
				t.Fatalf("events %v, want %v", types, want)
			}
		}
		if got := evs[3].Data["approved"]; got != false || evs[3].Data["request_id"] != req {
			t.Fatalf("input_received %v", evs[3].Data)
		}
		if evs[4].Data["final_response"] != "no" {
			t.Fatalf("answer %v", evs[4].Data)
		}
		if _, e := f.answer("ann", ack.RunID, req, yes(true)); e == nil || e.Code != protocol.CodeConflict {
			t.Fatalf("an answer after the end: %v, want conflict", e)
		}
		if r, _ := f.store.GetRun(context.Background(), "ann", ack.RunID); r.Status != store.RunCompleted {
			t.Fatalf("status %s, want completed", r.Status)
		}
	})
}

// The run timeout does not count the wait; the input timeout does.
func TestInputTimeouts(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, asker(3*time.Second), Config{Timeout: 5 * time.Second, InputTimeout: 9 * time.Minute})
		ack, _ := f.send(t, "ann", "go", "")
		req := f.waitRequest(t, "ann", ack.RunID)
		time.Sleep(8 * time.Minute) // far past the run timeout, within the input timeout
		if _, e := f.answer("ann", ack.RunID, req, yes(true)); e != nil {
			t.Fatalf("answer after 8 min: %v", e)
		}
		evs := f.waitTerminal(t, "ann", ack.RunID)
		if last := evs[len(evs)-1]; last.Type != protocol.TypeAgentCompleted {
			t.Fatalf("terminal %v: the wait counted against the run timeout", last)
		}

		// A fresh stream: the memory stream keeps 10 minutes of events.
		f = newFixture(t, asker(0), Config{Timeout: 5 * time.Second, InputTimeout: 9 * time.Minute})
		ack, _ = f.send(t, "ann", "go", "")
		f.waitRequest(t, "ann", ack.RunID)
		evs = f.waitTerminalWithin(t, "ann", ack.RunID, 9*time.Minute+30*time.Second)
		if last := evs[len(evs)-1]; last.Type != protocol.TypeAgentError || last.Data["code"] != string(protocol.CodeInputTimeout) {
			t.Fatalf("terminal %v, want input_timeout", last)
		}
		r, _ := f.store.GetRun(context.Background(), "ann", ack.RunID)
		if r.Status != store.RunTimeout || r.ErrorCode != string(protocol.CodeInputTimeout) {
			t.Fatalf("stored %s %s", r.Status, r.ErrorCode)
		}

		// Work after the answer still has the run time left before the wait.
		f2 := newFixture(t, asker(10*time.Second), Config{Timeout: 5 * time.Second})
		ack, _ = f2.send(t, "ann", "go", "")
		req = f2.waitRequest(t, "ann", ack.RunID)
		f2.answer("ann", ack.RunID, req, yes(true))
		evs = f2.waitTerminal(t, "ann", ack.RunID)
		if last := evs[len(evs)-1]; last.Data["code"] != string(protocol.CodeTimeout) {
			t.Fatalf("terminal %v, want timeout", last)
		}
	})
}

func (f *fixture) waitTerminalWithin(t *testing.T, user, runID string, d time.Duration) []ev {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		synctest.Wait()
		evs := f.events(t, user, runID)
		if n := len(evs); n > 0 && (evs[n-1].Type == protocol.TypeAgentCompleted || evs[n-1].Type == protocol.TypeAgentError) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("no terminal event within %v", d)
		}
		time.Sleep(10 * time.Second)
	}
}

func TestStopWhileWaiting(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		got := make(chan error, 1)
		f := newFixture(t, agentFunc(func(ctx context.Context, _ agent.Run, em agent.Emitter) error {
			_, err := em.RequestInput(ctx, agent.InputRequest{Kind: protocol.InputText, Prompt: "name?"})
			got <- err
			return err
		}), Config{})
		ack, _ := f.send(t, "ann", "go", "")
		req := f.waitRequest(t, "ann", ack.RunID)
		if _, e := f.m.StopAgent(context.Background(), "ann", &protocol.Frame{Type: protocol.TypeStopAgent, RunID: ack.RunID}); e != nil {
			t.Fatal(e)
		}
		evs := f.waitTerminal(t, "ann", ack.RunID)
		if last := evs[len(evs)-1]; last.Data["code"] != string(protocol.CodeCancelled) {
			t.Fatalf("terminal %v", last)
		}
		if err := <-got; !errors.Is(err, agent.ErrRunEnded) {
			t.Fatalf("RequestInput returned %v, want ErrRunEnded", err)
		}
		text := "x"
		if _, e := f.answer("ann", ack.RunID, req, protocol.InputAnswer{Text: &text}); e == nil || e.Code != protocol.CodeConflict {
			t.Fatalf("answer after stop: %v", e)
		}
	})
}

func TestInputRequestChecked(t *testing.T) {
	t.Parallel()
	for _, req := range []agent.InputRequest{
		{Kind: "yes", Prompt: "p"},
		{Kind: protocol.InputText},
		{Kind: protocol.InputChoice, Prompt: "p"},
		{Kind: protocol.InputChoice, Prompt: "p", Options: []string{""}},
		{Kind: protocol.InputText, Prompt: "p", Schema: []byte(`[1]`)},
	} {
		if checkInputRequest(req) == nil {
			t.Errorf("%+v accepted", req)
		}
	}
	if err := checkInputRequest(agent.InputRequest{Kind: protocol.InputChoice, Prompt: "p", Options: []string{"a", "b"}}); err != nil {
		t.Error(err)
	}
}

// An agent that stops asking (its own context) goes on under the run
// timeout, not the input timeout, and is running again.
func TestAgentGivesUpAsking(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, agentFunc(func(ctx context.Context, _ agent.Run, em agent.Emitter) error {
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			if _, err := em.RequestInput(qctx, agent.InputRequest{Kind: protocol.InputText, Prompt: "name?"}); !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			time.Sleep(3 * time.Second)
			return em.Complete("nobody answered")
		}), Config{Timeout: 10 * time.Second, InputTimeout: 2 * time.Second})
		ack, _ := f.send(t, "ann", "go", "")
		evs := f.waitTerminal(t, "ann", ack.RunID)
		if last := evs[len(evs)-1]; last.Type != protocol.TypeAgentCompleted {
			t.Fatalf("terminal %v, want completed (the input timeout disarmed)", last)
		}
	})
}
