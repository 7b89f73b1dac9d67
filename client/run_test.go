package client_test

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/client"
	"github.com/agentwire/agentwire/protocol"
)

// runEvents reads r's events until its channel closes; it fails when no
// event comes for 10 s (a hang guard, not a measure).
func runEvents(t *testing.T, r *client.Run, each func(i int, ev client.Event)) []client.Event {
	t.Helper()
	const idle = 10 * time.Second
	timeout := time.NewTimer(idle)
	defer timeout.Stop()
	var out []client.Event
	for {
		select {
		case ev, ok := <-r.Events():
			if !ok {
				return out
			}
			timeout.Reset(idle)
			if each != nil {
				each(len(out), ev)
			}
			out = append(out, ev)
		case <-timeout.C:
			t.Fatalf("no event of run %s for %v; got %d", r.RunID, idle, len(out))
		}
	}
}

// checkRun fails unless evs are one whole run's events, each once, in seq
// order: user_message first, terminal last.
func checkRun(t *testing.T, runID string, evs []client.Event) {
	t.Helper()
	if len(evs) < 3 || evs[0].Type != protocol.TypeUserMessage || !evs[len(evs)-1].Terminal() {
		t.Fatalf("run %s: %d events, first %v", runID, len(evs), evs)
	}
	for i, ev := range evs {
		if ev.RunID != runID {
			t.Fatalf("event %d (%s) of run %q on the Run of %s", i, ev.Type, ev.RunID, runID)
		}
		if i > 0 && ev.Seq <= evs[i-1].Seq {
			t.Fatalf("seq %d after %d: repeated or out of order", ev.Seq, evs[i-1].Seq)
		}
	}
}

func seqs(evs []client.Event) []uint64 {
	var out []uint64
	for _, ev := range evs {
		out = append(out, ev.Seq)
	}
	return out
}

// Two runs at once through a proxy cut mid-run: each Run gets its own
// events only, every one exactly once, the same as Conn.Events has for
// it; Wait returns the terminal event, whether the caller reads Events
// (the cut run) or not (the other).
func TestRunHandleAcrossCut(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	p := newProxy(t, strings.TrimPrefix(s.URL, "http://"))
	c := dial(t, client.Options{URL: p.URL(), Token: s.tokenFunc("handle", nil), InitialBackoff: 50 * time.Millisecond})
	ctx := ctxT(t)
	all := make(chan []client.Event, 1)
	go func() {
		var got []client.Event
		for ev := range c.Events() {
			got = append(got, ev)
		}
		all <- got
	}()

	cut, err := c.Send(ctx, "slow: what is 12*(3+4)?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.Send(ctx, "what is 1+1?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cut.RunID == "" || cut.ThreadID == "" || cut.ClientMessageID == "" || other.RunID == cut.RunID {
		t.Fatalf("runs %+v, %+v", cut.Ack, other.Ack)
	}
	evs := runEvents(t, cut, func(i int, _ client.Event) {
		if i == 2 {
			p.cut()
		}
	})
	checkRun(t, cut.RunID, evs)
	if p.accepted.Load() < 2 {
		t.Fatalf("%d connections through the proxy, want a reconnect", p.accepted.Load())
	}
	final, err := cut.Wait(ctx)
	if err != nil || final.Seq != evs[len(evs)-1].Seq {
		t.Fatalf("Wait: %+v, %v; last event %d", final, err, evs[len(evs)-1].Seq)
	}
	if d, ok := final.AgentCompleted(); !ok || !strings.Contains(d.FinalResponse, "84") {
		t.Fatalf("terminal %s %s", final.Type, final.Data)
	}
	final, err = other.Wait(ctx)
	if d, ok := final.AgentCompleted(); err != nil || !ok || !strings.Contains(d.FinalResponse, "2") || final.RunID != other.RunID {
		t.Fatalf("other run: %s %s, %v", final.Type, final.Data, err)
	}
	if _, ok := <-other.Events(); ok {
		t.Fatal("the Run's channel is still open after Wait")
	}

	c.Close()
	var mine []client.Event
	for _, ev := range <-all {
		if ev.RunID == cut.RunID {
			mine = append(mine, ev)
		}
	}
	if got, want := seqs(evs), seqs(mine); !slices.Equal(got, want) {
		t.Fatalf("Run had seqs %v, Conn.Events %v", got, want)
	}
}

// Over SSE the run's echo may come before the HTTP answer; the Run still
// gets it, Stop ends the run, and Wait returns its agent_error.
func TestRunHandleSSEStop(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc("handle-sse", nil), SSE: true, RunsOnly: true})
	ctx := ctxT(t)
	r, err := c.Send(ctx, "slow please", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	evs := runEvents(t, r, nil)
	checkRun(t, r.RunID, evs)
	final, err := r.Wait(ctx)
	if e, ok := final.AgentError(); err != nil || !ok || e.Code != protocol.CodeCancelled {
		t.Fatalf("Wait: %s %s, %v", final.Type, final.Data, err)
	}
	c.Close()
	if _, err := c.Send(ctx, "after close", client.SendOptions{}); err == nil {
		t.Fatal("Send after Close succeeded")
	}
}

// A Run whose reader is too slow makes the Conn drop the connection and
// resume, as Conn.Events does: the Run still gets each event once.
func TestRunHandleSlowReader(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	dropped := &logSignal{msg: "events consumer too slow", ch: make(chan struct{})}
	c := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc("handle-slow", nil), RunsOnly: true, EventBuffer: 2,
		SlowConsumerTimeout: 50 * time.Millisecond, Logger: slog.New(dropped)})
	first := c.Established().ConnectionID
	ctx := ctxT(t)
	r, err := c.Send(ctx, "what is 12*(3+4)?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.Events() // watched: the Conn waits for this reader
	select {
	case <-dropped.ch:
	case <-ctx.Done():
		t.Fatal("the Conn did not drop the connection of a Run nobody reads")
	}
	evs := runEvents(t, r, nil)
	checkRun(t, r.RunID, evs)
	if c.Established().ConnectionID == first {
		t.Fatal("the slow reader did not make the Conn reconnect")
	}
	c.Close()
	if ev, ok := <-c.Events(); ok { // RunsOnly: nothing on Events, closed by Close
		t.Fatalf("event %s on Events with RunsOnly", ev.Type)
	}
}

// A reconnect that lands on a server with another epoch (a restart with a
// memory stream) gets resync_required: the Run gets the notice, its
// channel closes, and Wait says ErrResync.
func TestRunHandleResync(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	p := newProxy(t, strings.TrimPrefix(s.URL, "http://"))
	c := dial(t, client.Options{URL: p.URL(), Token: s.tokenFunc("handle-resync", nil), RunsOnly: true, InitialBackoff: 50 * time.Millisecond})
	ctx := ctxT(t)
	r, err := c.Send(ctx, "slow: what is 12*(3+4)?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other := startServer(t)
	evs := runEvents(t, r, func(i int, _ client.Event) {
		if i == 0 {
			p.to(strings.TrimPrefix(other.URL, "http://"))
			p.cut()
		}
	})
	last := evs[len(evs)-1]
	if last.Type != protocol.TypeResyncRequired || last.Resync == nil || last.Resync.Epoch == evs[0].Epoch {
		t.Fatalf("last event %+v, want resync_required with a new epoch", last)
	}
	if _, err := r.Wait(ctx); !errors.Is(err, client.ErrResync) {
		t.Fatalf("Wait: %v, want ErrResync", err)
	}
	// The Conn goes on, on the new server.
	r2, err := c.Send(ctx, "what is 1+1?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if final, err := r2.Wait(ctx); err != nil || !final.Terminal() {
		t.Fatalf("run after the resync: %+v, %v", final, err)
	}
}
