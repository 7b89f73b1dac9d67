package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// ErrUnknownToolCall is returned by ToolCompleted for a call id that was
// never announced by ToolExecuting (or already completed).
var ErrUnknownToolCall = errors.New("runs: tool_completed without its tool_executing")

// emitter is the agent.Emitter of one run. Its mutex orders the run's events
// and makes the terminal event final: after it every method returns
// agent.ErrRunEnded and appends nothing. The lock is held across the stream
// append (not socket I/O) so a run's events keep the order of the calls.
type emitter struct {
	m         *Manager
	user      string
	threadID  string
	runID     string
	messageID string // the assistant message the deltas build
	started   time.Time
	received  time.Time // the user_message's arrival

	mu      sync.Mutex
	last    stream.Event // the run's latest appended event
	ended   bool
	delta   bool            // an agent_message_delta was appended
	answer  strings.Builder // every delta's text, held ones included
	deltas  deltaBatch      // delta text held by the delta window (deltas.go)
	pending map[string]bool // tool calls executing
	tr      *transcript     // what the store keeps of the run; nil when off
	usage   protocol.Usage  // summed by AddUsage
	// waiting is the input request the agent waits on (nil when none);
	// answered are the requests of the run already answered.
	waiting  *waitReq
	answered map[string]bool
	// The run's span and those of its executing tool calls (trace.go);
	// nil when tracing is off.
	span    trace.Span
	tools   map[string]trace.Span
	traceID string // of span, in agent_started
}

var _ agent.Emitter = (*emitter)(nil)

// appendLocked appends one event of the run. Data is marshalled here, once.
func (e *emitter) appendLocked(typ string, data any) error {
	b, err := protocol.MarshalData(data)
	if err != nil {
		return fmt.Errorf("runs: %s data: %w", typ, err)
	}
	return e.appendRawLocked(typ, b)
}

func (e *emitter) appendRawLocked(typ string, data json.RawMessage) error {
	return e.appendRecordLocked(stream.Record{Type: typ, ThreadID: e.threadID, RunID: e.runID, Data: data})
}

// appendRecordLocked appends rec after the delta text the run holds, if
// any, so held text never comes after a later event.
func (e *emitter) appendRecordLocked(rec stream.Record) error {
	if err := e.flushDeltasLocked(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.traceContext(context.Background()), appendTimeout)
	defer cancel()
	ev, err := e.m.stream.Append(ctx, e.user, rec)
	if err != nil {
		e.m.log.Error("append run event", "user", e.user, "run", e.runID, "type", rec.Type, "err", err)
		return fmt.Errorf("%w: %w", errStream, err)
	}
	e.last = ev
	if rec.Type == protocol.TypeAgentMessageDelta && !e.delta {
		e.delta = true
		e.m.metrics.FirstDelta(e.m.now().Sub(e.received))
	}
	// Deltas are folded by Delta and the terminal event kept by endLocked.
	// A tool_progress is left out: its tool_completed supersedes it, and a
	// tool reporting progress often would spend the transcript's bytes
	// before the events that matter.
	if e.tr != nil && rec.Type != protocol.TypeAgentMessageDelta && rec.Type != protocol.TypeToolProgress && !ev.Wire().Terminal() {
		e.tr.add(e.user, ev)
		// A run that starts waiting for its user writes what it has:
		// the wait may be long, and costs the agent nothing.
		if now := e.m.now(); now.Sub(e.tr.saved) >= transcriptSaveEvery || rec.Type == protocol.TypeInputRequired {
			e.saveLocked(now)
		}
	}
	return nil
}

// errStream wraps a failed append of a run event: the run was cut short
// by the stream, not by its agent.
var errStream = errors.New("runs: stream unavailable")

// appendTimeout bounds one append of a run event.
const appendTimeout = 10 * time.Second

func (e *emitter) start(agentName string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.appendRecordLocked(startRecord(e.threadID, e.runID, agentName, e.traceID))
}

func (e *emitter) Thinking(text string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return agent.ErrRunEnded
	}
	return e.appendLocked(protocol.TypeAgentThinking, protocol.AgentThinking{Text: text})
}

func (e *emitter) ToolExecuting(callID, tool string, args any) error {
	if args == nil {
		args = map[string]any{}
	}
	raw, err := protocol.MarshalData(args)
	if err != nil || len(raw) == 0 || raw[0] != '{' {
		return fmt.Errorf("runs: tool args must be a JSON object")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return agent.ErrRunEnded
	}
	if callID == "" || tool == "" {
		return errors.New("runs: tool_executing needs a call id and a tool name")
	}
	if e.pending == nil {
		e.pending = make(map[string]bool)
	}
	if err := e.appendLocked(protocol.TypeToolExecuting, protocol.ToolExecuting{ToolCallID: callID, Tool: tool, Args: raw}); err != nil {
		return err
	}
	e.pending[callID] = true
	e.traceToolLocked(callID, tool)
	return nil
}

func (e *emitter) ToolCompleted(r agent.ToolResult) error {
	raw, err := protocol.MarshalData(r.Result)
	if err != nil {
		return fmt.Errorf("runs: tool result: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return agent.ErrRunEnded
	}
	if !e.pending[r.CallID] {
		return ErrUnknownToolCall
	}
	delete(e.pending, r.CallID)
	e.m.metrics.ToolCall(r.Tool, r.OK, r.Duration)
	e.traceToolEndLocked(r.CallID, r.OK)
	return e.appendLocked(protocol.TypeToolCompleted, protocol.ToolCompleted{
		ToolCallID: r.CallID, Tool: r.Tool, OK: r.OK, Result: raw, DurationMS: r.Duration.Milliseconds(), Error: r.Error})
}

func (e *emitter) ToolProgress(p agent.Progress) error {
	d := protocol.ToolProgress{ToolCallID: p.CallID, Progress: p.Progress, Message: p.Message}
	if p.Total > 0 {
		d.Total = &p.Total
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return agent.ErrRunEnded
	}
	if !e.pending[p.CallID] {
		return ErrUnknownToolCall
	}
	return e.appendLocked(protocol.TypeToolProgress, d)
}

func (e *emitter) AddUsage(u protocol.Usage) error {
	if u.InputTokens < 0 || u.OutputTokens < 0 {
		return errors.New("runs: negative token usage")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return agent.ErrRunEnded
	}
	e.usage.InputTokens += u.InputTokens
	e.usage.OutputTokens += u.OutputTokens
	return nil
}

func (e *emitter) Event(typ string, data any) error {
	if !protocol.RelayedEventType(typ) {
		return fmt.Errorf("runs: %q is not a relayed event type", typ)
	}
	raw, err := protocol.MarshalData(data)
	if err != nil || len(raw) == 0 || raw[0] != '{' {
		return fmt.Errorf("runs: %s data must be a JSON object", typ)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return agent.ErrRunEnded
	}
	return e.appendRawLocked(typ, raw)
}

func (e *emitter) Complete(final string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return agent.ErrRunEnded
	}
	// Held delta text goes first; should the stream refuse it, the
	// agent learns it here, as from a refused Delta.
	if err := e.flushDeltasLocked(); err != nil {
		return err
	}
	if final == "" {
		final = e.answer.String()
	}
	return e.endLocked(store.RunCompleted, "", final)
}

func (e *emitter) Fail(code protocol.ErrorCode, message string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return agent.ErrRunEnded
	}
	if code == "" {
		code = protocol.CodeAgentFailed
	}
	return e.endLocked(statusFor(code), code, message)
}

// end is the runs package's own way to end a run (stop, timeout, an agent
// that did not finish). It reports whether this call ended the run.
func (e *emitter) end(code protocol.ErrorCode, message string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return false
	}
	_ = e.endLocked(statusFor(code), code, message)
	return true
}

// abandon ends the run here without a terminal event, because the store says
// it ended elsewhere (reaped as lost by another node, which announced it).
func (e *emitter) abandon() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return false
	}
	e.ended = true
	e.pending = nil
	e.deltas.take() // the run's end is in the stream already: nothing may follow it
	e.traceEndLocked(store.RunFailed, protocol.CodeNodeLost)
	e.m.releaseSlot(e.user, e.runID)
	e.m.release(e)
	return true
}

func statusFor(code protocol.ErrorCode) store.RunStatus {
	switch code {
	case protocol.CodeCancelled:
		return store.RunCancelled
	case protocol.CodeTimeout, protocol.CodeInputTimeout:
		return store.RunTimeout
	}
	return store.RunFailed
}

// endLocked stores the outcome (and the answer), frees the run's cluster
// slot, then appends the terminal event, so a client that sees
// agent_completed finds the answer in the thread and the run ended in REST,
// and may start its next run at once. The run is ended even when storing or
// appending fails: nothing may follow a terminal. A store that fails is
// retried by the lease loop; a terminal event the stream refuses is retried
// by resend, under the run's end key. The store keeps the end unannounced
// until the stream has it (endAppended), so should this node die before,
// whoever claims the end once its lease lapses appends it (see announce).
func (e *emitter) endLocked(status store.RunStatus, code protocol.ErrorCode, text string) error {
	// Held delta text precedes the terminal event. A refusal is logged by
	// the append and the text lost, as a refused Delta's; the run ends all
	// the same.
	_ = e.flushDeltasLocked()
	e.ended = true
	e.pending = nil
	defer e.m.release(e)
	defer e.traceEndLocked(status, code)
	ctx, cancel := context.WithTimeout(e.traceContext(context.Background()), appendTimeout)
	defer cancel()
	now := e.m.now()
	dur := now.Sub(e.started).Milliseconds()
	fin := finish{Outcome: store.Outcome{UserID: e.user, RunID: e.runID, Status: status, EndedAt: now, ErrorCode: string(code),
		InputTokens: e.usage.InputTokens, OutputTokens: e.usage.OutputTokens}}
	e.m.countTokens(e.usage)
	e.m.metrics.Ended(string(status), now.Sub(e.started))
	if status == store.RunCompleted {
		fin.answer = &store.Message{ID: e.messageID, ThreadID: e.threadID, UserID: e.user,
			Role: store.RoleAssistant, Content: text, RunID: e.runID, CreatedAt: now}
	} else {
		fin.ErrorMessage = text
	}
	rec := stream.Record{ThreadID: e.threadID, RunID: e.runID, IdempotencyKey: endKey(e.runID)}
	if status == store.RunCompleted {
		rec.Type = protocol.TypeAgentCompleted
		done := protocol.AgentCompleted{MessageID: e.messageID, FinalResponse: text, DurationMS: dur}
		if e.usage != (protocol.Usage{}) {
			done.Usage = &e.usage
		}
		rec.Data, _ = protocol.MarshalData(done)
	} else {
		rec.Type = protocol.TypeAgentError
		rec.Data, _ = protocol.MarshalData(protocol.AgentError{Code: code, Message: text, DurationMS: dur})
	}
	if e.tr != nil {
		// The terminal event is stored with the outcome, before the
		// stream has it: its seq is not known yet (zero).
		e.tr.add(e.user, stream.Event{TS: now, Record: rec})
		fin.Events = e.tr.take(true)
	}
	e.m.record(ctx, fin)
	e.m.releaseSlot(e.user, e.runID)
	if err := e.appendRecordLocked(rec); err != nil {
		e.m.resend(e.user, func() { e.m.endAppended(e.runID) }, rec)
		return err
	}
	e.m.endAppended(e.runID)
	return nil
}

// publish appends an event an external agent sent for this run through the
// publish API and returns it, read under the same lock as the append so it
// is this event and not a later one. Terminal types end the run as Complete
// and Fail do.
func (e *emitter) publish(typ string, data json.RawMessage) (stream.Event, error) {
	// Only the fields it acts on: the rest of data is the publisher's.
	var d struct {
		FinalResponse string             `json:"final_response"`
		Code          protocol.ErrorCode `json:"code"`
		Message       string             `json:"message"`
		ToolCallID    string             `json:"tool_call_id"`
		Tool          string             `json:"tool"`
		OK            *bool              `json:"ok"`
		DurationMS    *int64             `json:"duration_ms"`
	}
	switch typ {
	case protocol.TypeAgentCompleted, protocol.TypeAgentError, protocol.TypeToolExecuting, protocol.TypeToolCompleted:
		if len(data) > 0 {
			if err := json.Unmarshal(data, &d); err != nil {
				return stream.Event{}, fmt.Errorf("%w: data: %v", ErrBadEvent, err)
			}
		}
	case protocol.TypeAgentThinking, protocol.TypeAgentMessageDelta:
	default:
		return stream.Event{}, fmt.Errorf("%w: %s cannot be published", ErrBadEvent, typ)
	}
	if (typ == protocol.TypeToolExecuting || typ == protocol.TypeToolCompleted) && d.ToolCallID == "" {
		return stream.Event{}, fmt.Errorf("%w: %s needs data.tool_call_id", ErrBadEvent, typ)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return stream.Event{}, agent.ErrRunEnded
	}
	var err error
	switch typ {
	case protocol.TypeAgentCompleted:
		if err := e.flushDeltasLocked(); err != nil {
			return stream.Event{}, err
		}
		final := d.FinalResponse
		if final == "" {
			final = e.answer.String()
		}
		err = e.endLocked(store.RunCompleted, "", final)
	case protocol.TypeAgentError:
		if d.Code == "" {
			d.Code = protocol.CodeAgentFailed
		}
		err = e.endLocked(statusFor(d.Code), d.Code, d.Message)
	case protocol.TypeToolExecuting:
		if e.pending[d.ToolCallID] {
			return stream.Event{}, fmt.Errorf("%w: tool call %s is already executing", ErrBadEvent, d.ToolCallID)
		}
		if err = e.appendRawLocked(typ, data); err == nil {
			if e.pending == nil {
				e.pending = make(map[string]bool)
			}
			e.pending[d.ToolCallID] = true
			e.traceToolLocked(d.ToolCallID, d.Tool)
		}
	case protocol.TypeToolCompleted:
		if !e.pending[d.ToolCallID] {
			return stream.Event{}, ErrUnknownToolCall
		}
		if err = e.appendRawLocked(typ, data); err == nil {
			delete(e.pending, d.ToolCallID)
			ok := d.OK != nil && *d.OK
			dur := time.Duration(-1) // not reported: not observed
			if d.DurationMS != nil {
				dur = time.Duration(*d.DurationMS) * time.Millisecond
			}
			e.m.metrics.ToolCall(d.Tool, ok, dur)
			e.traceToolEndLocked(d.ToolCallID, ok)
		}
	case protocol.TypeAgentMessageDelta:
		if err = e.appendRawLocked(typ, data); err == nil && e.tr != nil {
			var d protocol.AgentMessageDelta
			if json.Unmarshal(data, &d) == nil {
				e.tr.delta(e.user, e.last, d.Delta)
			}
		}
	default:
		err = e.appendRawLocked(typ, data)
	}
	if err != nil {
		return stream.Event{}, err
	}
	return e.last, nil
}

// ErrBadEvent is returned for a published event a run cannot take.
var ErrBadEvent = errors.New("runs: event not accepted for this run")
