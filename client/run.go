package client

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/agentwire/agentwire/protocol"
)

// ErrResync ends a Run whose events the server could no longer replay
// (resync_required): some of them, perhaps its terminal event, are lost.
// Conn.Run and Conn.RunEvents still tell how the run went.
var ErrResync = errors.New("client: the run's events were lost (resync_required); read it with Conn.Run")

// Run is a handle on one run started by Conn.Send: its events alone, in seq
// order, each once across reconnects (see Events), its end (Wait) and Stop.
// The embedded Ack has its RunID, ThreadID, MessageID and ClientMessageID.
type Run struct {
	Ack
	c   *Conn
	sub *runSub
}

// runSub is the read loop's side of a Run: its events, bound to the run by
// the ack or by the user_message echo that carries its client_message_id,
// whichever comes first (with SSE the echo may precede the HTTP answer).
type runSub struct {
	sink
	cmid    string
	runID   string        // set under Conn.mu once bound
	ended   bool          // under Conn.mu: endRun ran, the channel is closed
	watched atomic.Bool   // Events was called
	done    chan struct{} // closed after the terminal event (or the end) is set
	last    Event         // the terminal event; valid once done is closed
	err     error         // why the run's events ended without one
}

// sink is one consumer's channel and the position of the last event put
// on it, so that an event a slow consumer drop made the server send again
// is not put on it twice.
type sink struct {
	ch   chan Event
	last Position
	has  bool
}

// Send sends a user_message, like SendMessage, and returns a handle on the
// run it starts, which follows that run from the message's echo on. The
// run's events go to the Run as well as to Conn.Events (see
// Options.RunsOnly). Read the Run's Events until the channel closes, or call
// Wait: as with Conn.Events, a Run whose events nobody takes holds the
// connection back (Options.SlowConsumerTimeout).
func (c *Conn) Send(ctx context.Context, content string, opts SendOptions) (*Run, error) {
	if opts.ClientMessageID == "" {
		opts.ClientMessageID = randomID()
	}
	sub := &runSub{sink: sink{ch: make(chan Event, c.opts.EventBuffer)}, cmid: opts.ClientMessageID, done: make(chan struct{})}
	c.mu.Lock()
	if c.stopped {
		err := c.stoppedErr()
		c.mu.Unlock()
		return nil, err
	}
	c.subs[sub.cmid] = sub
	c.mu.Unlock()
	ack, err := c.sendMessage(ctx, content, opts, sub)
	if err != nil {
		c.mu.Lock()
		if c.subs[sub.cmid] == sub {
			delete(c.subs, sub.cmid)
		}
		if sub.runID != "" && c.runs[sub.runID] == sub {
			delete(c.runs, sub.runID)
		}
		c.mu.Unlock()
		return nil, err
	}
	c.bind(sub, ack.RunID) // over SSE the ack comes from the HTTP answer
	return &Run{Ack: ack, c: c, sub: sub}, nil
}

// Events returns the channel of the run's events (from its user_message
// echo on; for a ClientMessageID repeated after its run's echo, from the
// ack on), in seq order, each seq once across reconnects. It is closed
// after the terminal event (agent_completed or agent_error), when the Conn
// stops, or after a resync_required notice (then Wait returns ErrResync).
func (r *Run) Events() <-chan Event {
	r.sub.watched.Store(true)
	return r.sub.ch
}

// Wait returns the run's terminal event (agent_completed or agent_error:
// a run that failed is not an error of Wait). It fails with ctx's error,
// with ErrResync, or with why the Conn stopped. A caller that never called
// Events need not read anything: Wait takes the run's events itself (and
// drops them); after Events, Wait leaves them to the caller's reader.
func (r *Run) Wait(ctx context.Context) (Event, error) {
	if !r.sub.watched.Load() {
		for {
			select {
			case _, ok := <-r.sub.ch:
				if !ok {
					return r.sub.last, r.sub.err
				}
			case <-ctx.Done():
				return Event{}, ctx.Err()
			}
		}
	}
	select {
	case <-r.sub.done:
		return r.sub.last, r.sub.err
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Stop asks the server to stop the run (Conn.Stop); it then ends with
// agent_error code cancelled, which Events and Wait deliver. A run that has
// already ended is unchanged.
func (r *Run) Stop(ctx context.Context) error {
	_, err := r.c.Stop(ctx, r.RunID)
	return err
}

// bind makes sub the subscription of run runID.
func (c *Conn) bind(sub *runSub, runID string) {
	if runID == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if sub.runID != "" || sub.ended {
		return
	}
	sub.runID = runID
	c.runs[runID] = sub
	if c.subs[sub.cmid] == sub {
		delete(c.subs, sub.cmid)
	}
}

// subFor returns the Run subscribed to ev's run, binding it first when ev
// is the user_message echo of a Run's message.
func (c *Conn) subFor(ev *Event) *runSub {
	if ev.RunID == "" {
		return nil
	}
	c.mu.Lock()
	sub := c.runs[ev.RunID]
	if sub == nil && ev.Type == protocol.TypeUserMessage && len(c.subs) > 0 {
		if um, ok := ev.UserMessage(); ok && um.ClientMessageID != "" {
			sub = c.subs[um.ClientMessageID]
		}
	}
	c.mu.Unlock()
	if sub != nil {
		c.bind(sub, ev.RunID)
	}
	return sub
}

// endRun closes sub's channel after its last event and forgets it; err is
// nil after a terminal event.
func (c *Conn) endRun(sub *runSub, last Event, err error) {
	c.mu.Lock()
	sub.ended = true
	if c.runs[sub.runID] == sub {
		delete(c.runs, sub.runID)
	}
	if c.subs[sub.cmid] == sub {
		delete(c.subs, sub.cmid)
	}
	c.mu.Unlock()
	sub.last, sub.err = last, err
	close(sub.ch)
	close(sub.done)
}

// allSubs returns every Run subscription (endRun forgets each).
func (c *Conn) allSubs() []*runSub {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*runSub, 0, len(c.runs)+len(c.subs))
	for _, s := range c.runs {
		out = append(out, s)
	}
	for _, s := range c.subs {
		if s.runID == "" {
			out = append(out, s)
		}
	}
	return out
}
