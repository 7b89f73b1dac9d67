package runs

import (
	"strings"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/protocol"
)

// Coalescing of a run's agent_message_delta events (Config.DeltaWindow): a
// fast model emits a delta per token, each one an append, an encode and a
// write to every connection of the user. The emitter instead holds the
// text of the deltas an agent emits (Emitter.Delta) for at most the window
// and appends it as one delta. The text is the same, in the same order:
// what a client joins, the transcript and the answer do not change, only
// how many events carry it.
//
// The first delta of a run, and any delta that comes a window or more after
// the run's last delta event, is appended at once: holding it would only add
// the window to the time to the first token (or to the next word after a
// pause). What follows within the window is held.
//
// Pending text is appended as one event, under the emitter's lock, when
//   - any other event of the run is appended (a tool call, thinking, an
//     input request, a published event, the terminal event), before it;
//   - it would grow past maxDeltaBatchBytes;
//   - the window since its first delta has passed (one timer per run);
//   - the run ends in any way (completed, failed, stopped, timed out, shut
//     down), before its terminal event.
//
// Deltas published through the publish API are not held: each is answered
// with its own seq.

// DefaultDeltaWindow is the --delta-window a server runs with.
const DefaultDeltaWindow = 15 * time.Millisecond

// MaxDeltaWindow bounds --delta-window: the longest a delta's text may wait.
const MaxDeltaWindow = time.Second

// maxDeltaBatchBytes bounds the text of one coalesced delta; a single
// delta longer than it is appended as it came.
const maxDeltaBatchBytes = 16 << 10

// deltaBatch is the delta text of one run not yet appended, guarded by the
// emitter's lock.
type deltaBatch struct {
	last  time.Time // when the run's last delta event was appended (zero: none yet)
	text  strings.Builder
	since time.Time   // when its first delta arrived
	timer *time.Timer // armed while text is pending; calls emitter.flushDue
}

// add holds text, arming the timer to call due after window when it is
// the first pending text.
func (b *deltaBatch) add(text string, window time.Duration, due func()) {
	if b.text.Len() == 0 {
		b.since = time.Now()
		if b.timer == nil {
			b.timer = time.AfterFunc(window, due)
		} else {
			b.timer.Reset(window)
		}
	}
	b.text.WriteString(text)
}

// take returns the pending text and forgets it, disarming the timer.
func (b *deltaBatch) take() string {
	if b.text.Len() == 0 {
		return ""
	}
	s := b.text.String()
	b.text.Reset()
	b.timer.Stop()
	return s
}

// due reports whether text is pending since window or longer. A timer that
// fired while a flush (at the byte cap) made way for new text finds it not
// yet due: the timer was armed again for it.
func (b *deltaBatch) due(window time.Duration) bool {
	return b.text.Len() > 0 && time.Since(b.since) >= window
}

// Delta adds text to the run's answer: appended at once without a delta
// window, else held and coalesced (see deltaBatch).
func (e *emitter) Delta(text string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return agent.ErrRunEnded
	}
	if text == "" {
		return nil
	}
	window := e.m.deltaWindow
	if window <= 0 {
		if err := e.appendDeltaLocked(text); err != nil {
			return err
		}
		e.answer.WriteString(text)
		return nil
	}
	if e.deltas.text.Len() == 0 && (e.deltas.last.IsZero() || time.Since(e.deltas.last) >= window) {
		// Nothing held, no delta event within the window: this one goes
		// now (the leading edge).
		if err := e.appendDeltaLocked(text); err != nil {
			return err
		}
		e.answer.WriteString(text)
		return nil
	}
	if n := e.deltas.text.Len(); n > 0 && n+len(text) > maxDeltaBatchBytes {
		if err := e.flushDeltasLocked(); err != nil {
			return err
		}
	}
	e.answer.WriteString(text)
	e.deltas.add(text, window, e.flushDue)
	if e.deltas.text.Len() >= maxDeltaBatchBytes {
		return e.flushDeltasLocked()
	}
	return nil
}

// appendDeltaLocked appends text as one agent_message_delta of the run's
// answer and folds it into the transcript.
func (e *emitter) appendDeltaLocked(text string) error {
	if err := e.appendLocked(protocol.TypeAgentMessageDelta, protocol.AgentMessageDelta{Delta: text, MessageID: e.messageID}); err != nil {
		return err
	}
	if e.m.deltaWindow > 0 {
		e.deltas.last = time.Now()
	}
	if e.tr != nil {
		e.tr.delta(e.user, e.last, text)
	}
	return nil
}

// flushDeltasLocked appends the pending delta text, if any. Text the
// stream refuses is dropped, as a refused delta always was: the error
// cuts the run short.
func (e *emitter) flushDeltasLocked() error {
	text := e.deltas.take()
	if text == "" {
		return nil
	}
	return e.appendDeltaLocked(text)
}

// flushDue is the batch timer's callback: the window of the pending text
// has passed. A stream that refuses it ends the run, as an agent whose
// Delta failed would (there is no agent call to return the error to).
func (e *emitter) flushDue() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended || !e.deltas.due(e.m.deltaWindow) {
		return
	}
	if err := e.flushDeltasLocked(); err != nil {
		e.m.log.Warn("run cut short by the stream", "user", e.user, "run", e.runID, "err", err)
		_ = e.endLocked(store.RunFailed, protocol.CodeAgentFailed, streamLostMessage)
	}
}

// streamLostMessage ends a run whose events the stream stopped taking.
const streamLostMessage = "the event stream was unavailable during the run; send the message again"
