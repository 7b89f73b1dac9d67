package runs

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// Bounds of a run's stored transcript (see transcript): no stored event's
// data is longer than about maxStepBytes (its text cut, with
// protocol.TruncatedMarker), and a run stores at most maxTranscriptBytes of
// events before its terminal event, which is always stored.
const (
	maxStepBytes       = 16 << 10
	maxTranscriptBytes = 256 << 10
)

// transcriptSaveEvery is how often a running run writes the steps it took
// to the store: its transcript goes with its outcome (store.Outcome.Events,
// the same transaction), so a run shorter than this costs the store no
// write of its own; a longer one writes at its first step past each
// interval. What a node that dies loses is the steps since its last write
// (the run ends node_lost, with what was written).
const transcriptSaveEvery = time.Second

// transcript keeps the events of one run for the store, under the
// emitter's lock: every event but deltas, which are folded into one
// agent_message_delta per stretch of text (before the next other event
// and at the end), so a run that fails or is stopped keeps the answer it
// had. Events are written at most every transcriptSaveEvery and with the
// outcome; those the store did not take stay pending and go with the next
// write (an index is stored once, so a retry is harmless).
type transcript struct {
	saved   time.Time // the last write, or the run's start
	next    int       // the next event's index
	bytes   int       // data kept so far, before the terminal event
	full    bool
	pending []store.RunEvent

	fold      strings.Builder // the deltas since the last flush (bounded)
	foldEv    store.RunEvent  // the first of them: its seq, epoch and time
	messageID string
}

// add records ev, a non-delta event the stream took (or, for the terminal
// event, is about to take: seq zero), after the fold.
func (t *transcript) add(user string, ev stream.Event) {
	t.flushFold()
	t.keep(user, ev.RunID, ev.Type, ev.Seq, ev.Epoch, ev.TS, ev.Data, ev.Wire().Terminal())
}

// delta folds one delta the stream took.
func (t *transcript) delta(user string, ev stream.Event, text string) {
	if t.fold.Len() == 0 {
		t.foldEv = store.RunEvent{UserID: user, RunID: ev.RunID, Epoch: ev.Epoch, TS: ev.TS}
	}
	// The fold's position is its last delta's: a reader that has it has
	// every delta up to there.
	t.foldEv.Seq = ev.Seq
	if t.fold.Len() <= maxStepBytes {
		t.fold.WriteString(text)
	}
}

func (t *transcript) flushFold() {
	if t.fold.Len() == 0 {
		return
	}
	data, _ := protocol.MarshalData(protocol.AgentMessageDelta{Delta: t.fold.String(), MessageID: t.messageID})
	f := t.foldEv
	t.fold.Reset()
	t.keep(f.UserID, f.RunID, protocol.TypeAgentMessageDelta, f.Seq, f.Epoch, f.TS, data, false)
}

func (t *transcript) keep(user, runID, typ string, seq uint64, epoch string, ts time.Time, data json.RawMessage, terminal bool) {
	data = clipData(typ, data, maxStepBytes)
	if !terminal {
		if t.full || t.bytes+len(data) > maxTranscriptBytes {
			t.full = true
			return
		}
		t.bytes += len(data)
	}
	t.next++
	t.pending = append(t.pending, store.RunEvent{UserID: user, RunID: runID, Index: t.next, Type: typ,
		Seq: seq, Epoch: epoch, TS: ts, Data: data})
}

// take returns the pending events (with the fold when flush is set) and
// forgets them.
func (t *transcript) take(flush bool) []store.RunEvent {
	if flush {
		t.flushFold()
	}
	p := t.pending
	t.pending = nil
	return p
}

// saveLocked writes the run's pending events (the emitter's lock held), at
// now. It waits at most transcriptSaveTimeout, so a slow or unreachable
// store delays the run's events little; a failure is logged, the events
// stay pending (they go with the outcome at the latest), and the next try
// waits transcriptRetryAfter.
func (e *emitter) saveLocked(now time.Time) {
	e.tr.saved = now
	if len(e.tr.pending) == 0 {
		return
	}
	evs := e.tr.take(false)
	ctx, cancel := context.WithTimeout(e.traceContext(context.Background()), transcriptSaveTimeout)
	defer cancel()
	if err := e.m.store.AppendRunEvents(ctx, e.user, e.runID, evs); err != nil {
		e.m.log.Warn("store run events, will retry", "user", e.user, "run", e.runID, "err", err)
		e.tr.pending = append(evs, e.tr.pending...)
		e.tr.saved = now.Add(transcriptRetryAfter - transcriptSaveEvery)
	}
}

// Bounds of a running run's writes of its transcript.
const (
	transcriptSaveTimeout = time.Second
	transcriptRetryAfter  = 30 * time.Second
)

// clipData returns data cut to about max bytes: the text a type carries
// (thinking, the answer, an error message, a tool's result or arguments)
// cut at a rune boundary and marked with protocol.TruncatedMarker; the data
// of other types becomes {"truncated":true}.
func clipData(typ string, data json.RawMessage, max int) json.RawMessage {
	if len(data) <= max {
		return data
	}
	// Escaping may make the cut text longer than its bytes (up to six
	// times): cut shorter until the data fits.
	for room := max - 256; room >= 64; room /= 2 {
		if out, ok := clipOnce(typ, data, room); !ok {
			break
		} else if len(out) <= max {
			return out
		}
	}
	return json.RawMessage(`{"truncated":true}`)
}

// clipOnce is data of typ with its text cut to room bytes; false for a type
// with no text to cut.
func clipOnce(typ string, data json.RawMessage, room int) (json.RawMessage, bool) {
	var v any
	switch typ {
	case protocol.TypeAgentThinking:
		v = clipped(data, func(d *protocol.AgentThinking) { d.Text = clipText(d.Text, room) })
	case protocol.TypeAgentMessageDelta:
		v = clipped(data, func(d *protocol.AgentMessageDelta) { d.Delta = clipText(d.Delta, room) })
	case protocol.TypeAgentCompleted:
		v = clipped(data, func(d *protocol.AgentCompleted) { d.FinalResponse = clipText(d.FinalResponse, room) })
	case protocol.TypeAgentError:
		v = clipped(data, func(d *protocol.AgentError) { d.Message = clipText(d.Message, room) })
	case protocol.TypeToolExecuting:
		v = clipped(data, func(d *protocol.ToolExecuting) {
			d.Args, _ = json.Marshal(map[string]string{"truncated": clipText(string(d.Args), room)})
		})
	case protocol.TypeToolCompleted:
		v = clipped(data, func(d *protocol.ToolCompleted) {
			d.Result, _ = json.Marshal(clipText(string(d.Result), room))
			d.Error = clipText(d.Error, 1024)
		})
	default:
		return nil, false
	}
	out, err := protocol.MarshalData(v)
	return out, err == nil
}

// clipped is data decoded as a T and cut by cut.
func clipped[T any](data json.RawMessage, cut func(*T)) T {
	var d T
	_ = json.Unmarshal(data, &d)
	cut(&d)
	return d
}

// clipText cuts s to at most n bytes at a rune boundary, followed by
// protocol.TruncatedMarker, when it is longer.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n = max(n-len(protocol.TruncatedMarker), 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + protocol.TruncatedMarker
}
