// Package agenttest provides a fake agent.Emitter for the tests of agents.
package agenttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/protocol"
)

// ErrOrder is returned (wrapped) by a Recorder method called against the
// per-run order rules other than after the end, or with arguments that would
// not encode.
var ErrOrder = errors.New("agenttest: event breaks the run's rules")

// Event is one recorded call. Only the fields of its Type are set.
type Event struct {
	Type       string
	Text       string               // agent_thinking
	ToolCallID string               // tool_executing, tool_completed
	Tool       string               // tool_executing, tool_completed
	Args       json.RawMessage      // tool_executing: args as they would be sent
	OK         bool                 // tool_completed
	Result     json.RawMessage      // tool_completed: result as it would be sent
	Duration   time.Duration        // tool_completed
	Error      string               // tool_completed
	Delta      string               // agent_message_delta
	Final      string               // agent_completed: final_response
	Code       protocol.ErrorCode   // agent_error
	Message    string               // agent_error
	Data       json.RawMessage      // a relayed type (Emitter.Event): data as it would be sent
	Input      agent.InputRequest   // input_required
	Answer     protocol.InputAnswer // input_received
	Progress   agent.Progress       // tool_progress
}

// Recorder is an agent.Emitter that records events in order and enforces
// the contract's per-run rules the way the runs package does: a
// tool_completed needs its tool_executing first, tool args must encode as a
// JSON object, and after the terminal event (Complete, Fail or End) every
// method returns agent.ErrRunEnded. Broken rules are also kept in
// Violations. The zero value is ready to use; it is safe for concurrent use.
type Recorder struct {
	// OnEvent, when set before use, is called after each recorded event,
	// outside the Recorder's lock (so it may call the Recorder, or cancel a
	// context to test cancellation at a precise point).
	OnEvent func(Event)
	// Answer, when set before use, answers RequestInput (after the request
	// is recorded as input_required, before input_received); without it
	// RequestInput fails with agent.ErrRunEnded, as a run whose user never
	// answers does.
	Answer func(agent.InputRequest) protocol.InputAnswer

	mu         sync.Mutex
	events     []Event
	ended      bool
	open       map[string]string // tool_call_id → tool, announced and not completed
	seen       map[string]bool   // every tool_call_id announced
	deltas     strings.Builder
	violations []string
	usage      protocol.Usage
}

var _ agent.Emitter = (*Recorder)(nil)

// Thinking records agent_thinking.
func (r *Recorder) Thinking(text string) error {
	return r.record(Event{Type: protocol.TypeAgentThinking, Text: text})
}

// ToolExecuting records tool_executing.
func (r *Recorder) ToolExecuting(callID, tool string, args any) error {
	b, err := json.Marshal(args)
	if err != nil || len(b) == 0 || b[0] != '{' {
		return r.violate(fmt.Sprintf("tool_executing %q: args %s (%v) are not a JSON object", callID, b, err))
	}
	if callID == "" || tool == "" {
		return r.violate(fmt.Sprintf("tool_executing with empty tool_call_id %q or tool %q", callID, tool))
	}
	return r.record(Event{Type: protocol.TypeToolExecuting, ToolCallID: callID, Tool: tool, Args: b})
}

// ToolCompleted records tool_completed.
func (r *Recorder) ToolCompleted(res agent.ToolResult) error {
	b, err := json.Marshal(res.Result)
	if err != nil {
		return r.violate(fmt.Sprintf("tool_completed %q: result does not encode: %v", res.CallID, err))
	}
	return r.record(Event{Type: protocol.TypeToolCompleted, ToolCallID: res.CallID, Tool: res.Tool, OK: res.OK, Result: b, Duration: res.Duration, Error: res.Error})
}

// ToolProgress records tool_progress; its call must be executing.
func (r *Recorder) ToolProgress(p agent.Progress) error {
	return r.record(Event{Type: protocol.TypeToolProgress, ToolCallID: p.CallID, Progress: p})
}

// AddUsage adds u to the run's usage (Usage), recording no event.
func (r *Recorder) AddUsage(u protocol.Usage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return agent.ErrRunEnded
	}
	r.usage.InputTokens += u.InputTokens
	r.usage.OutputTokens += u.OutputTokens
	return nil
}

// Usage returns the sum of what AddUsage was given.
func (r *Recorder) Usage() protocol.Usage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.usage
}

// Delta records agent_message_delta.
func (r *Recorder) Delta(text string) error {
	return r.record(Event{Type: protocol.TypeAgentMessageDelta, Delta: text})
}

// Complete records agent_completed; an empty final becomes the
// concatenated deltas, as in the runs package.
func (r *Recorder) Complete(final string) error {
	return r.record(Event{Type: protocol.TypeAgentCompleted, Final: final})
}

// Fail records agent_error.
func (r *Recorder) Fail(code protocol.ErrorCode, message string) error {
	return r.record(Event{Type: protocol.TypeAgentError, Code: code, Message: message})
}

// Event records a relayed event (protocol.RelayedEventType) with its data
// as it would be sent; other types, or data that is not a JSON object, are
// violations.
func (r *Recorder) Event(typ string, data any) error {
	if !protocol.RelayedEventType(typ) {
		return r.violate(fmt.Sprintf("Event(%q): not a relayed event type", typ))
	}
	b, err := json.Marshal(data)
	if err != nil || len(b) == 0 || b[0] != '{' {
		return r.violate(fmt.Sprintf("Event(%q): data %s (%v) is not a JSON object", typ, b, err))
	}
	return r.record(Event{Type: typ, Data: b})
}

// End ends the run from outside, as the runs package does on stop_agent or
// timeout: later calls return agent.ErrRunEnded. It records nothing.
func (r *Recorder) End() {
	r.mu.Lock()
	r.ended = true
	r.mu.Unlock()
}

// RequestInput records input_required, then input_received with the
// answer of r.Answer.
func (r *Recorder) RequestInput(ctx context.Context, req agent.InputRequest) (protocol.InputAnswer, error) {
	if err := r.record(Event{Type: protocol.TypeInputRequired, Input: req, ToolCallID: req.ToolCallID}); err != nil {
		return protocol.InputAnswer{}, err
	}
	if r.Answer == nil {
		r.End()
		return protocol.InputAnswer{}, agent.ErrRunEnded
	}
	if err := ctx.Err(); err != nil {
		return protocol.InputAnswer{}, err
	}
	a := r.Answer(req)
	if a.Kind() != req.Kind {
		return protocol.InputAnswer{}, r.violate(fmt.Sprintf("answer of kind %q to a %q request", a.Kind(), req.Kind))
	}
	if err := r.record(Event{Type: protocol.TypeInputReceived, Answer: a}); err != nil {
		return protocol.InputAnswer{}, err
	}
	return a, nil
}

func (r *Recorder) violate(msg string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return agent.ErrRunEnded
	}
	r.violations = append(r.violations, msg)
	return fmt.Errorf("%w: %s", ErrOrder, msg)
}

func (r *Recorder) record(e Event) error {
	r.mu.Lock()
	if r.ended {
		r.mu.Unlock()
		return agent.ErrRunEnded
	}
	switch e.Type {
	case protocol.TypeToolExecuting:
		if r.seen[e.ToolCallID] {
			r.mu.Unlock()
			return r.violate(fmt.Sprintf("tool_executing %q announced twice", e.ToolCallID))
		}
		if r.open == nil {
			r.open, r.seen = map[string]string{}, map[string]bool{}
		}
		r.open[e.ToolCallID], r.seen[e.ToolCallID] = e.Tool, true
	case protocol.TypeToolCompleted:
		tool, ok := r.open[e.ToolCallID]
		if !ok || tool != e.Tool {
			r.mu.Unlock()
			return r.violate(fmt.Sprintf("tool_completed %q (%s) without its tool_executing", e.ToolCallID, e.Tool))
		}
		delete(r.open, e.ToolCallID)
	case protocol.TypeToolProgress:
		if _, ok := r.open[e.ToolCallID]; !ok {
			r.mu.Unlock()
			return r.violate(fmt.Sprintf("tool_progress %q outside its call", e.ToolCallID))
		}
	case protocol.TypeAgentMessageDelta:
		r.deltas.WriteString(e.Delta)
	case protocol.TypeAgentCompleted:
		if e.Final == "" {
			e.Final = r.deltas.String()
		}
		r.ended = true
	case protocol.TypeAgentError:
		r.ended = true
	}
	r.events = append(r.events, e)
	hook := r.OnEvent
	r.mu.Unlock()
	if hook != nil {
		hook(e)
	}
	return nil
}

// Events returns a copy of the recorded events, in order.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Types returns the recorded event types, in order.
func (r *Recorder) Types() []string {
	var out []string
	for _, e := range r.Events() {
		out = append(out, e.Type)
	}
	return out
}

// Of returns the recorded events of type typ, in order.
func (r *Recorder) Of(typ string) []Event {
	var out []Event
	for _, e := range r.Events() {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

// Text returns the concatenated deltas.
func (r *Recorder) Text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deltas.String()
}

// Ended reports whether the run has ended (terminal event or End).
func (r *Recorder) Ended() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ended
}

// Terminal returns the terminal event, if one was recorded.
func (r *Recorder) Terminal() (Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.events); n > 0 {
		if e := r.events[n-1]; e.Type == protocol.TypeAgentCompleted || e.Type == protocol.TypeAgentError {
			return e, true
		}
	}
	return Event{}, false
}

// Violations returns the rules broken so far.
func (r *Recorder) Violations() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.violations...)
}

// AssertValid fails t if any rule was broken or a tool call was announced
// but never completed.
func (r *Recorder) AssertValid(t testing.TB) {
	t.Helper()
	for _, v := range r.Violations() {
		t.Errorf("rule broken: %s", v)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, tool := range r.open {
		t.Errorf("tool call %q (%s) never completed", id, tool)
	}
}

// AssertTypes fails t unless the recorded types are exactly want.
func (r *Recorder) AssertTypes(t testing.TB, want ...string) {
	t.Helper()
	got := r.Types()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("event types:\n got %v\nwant %v", got, want)
	}
}

// Completed asserts the run ended with agent_completed, that the rules
// held, and returns final_response.
func (r *Recorder) Completed(t testing.TB) string {
	t.Helper()
	r.AssertValid(t)
	e, ok := r.Terminal()
	if !ok || e.Type != protocol.TypeAgentCompleted {
		t.Fatalf("run did not complete; events: %s", r)
	}
	return e.Final
}

// Failed asserts the run ended with agent_error and returns its code and
// message.
func (r *Recorder) Failed(t testing.TB) (code protocol.ErrorCode, message string) {
	t.Helper()
	for _, v := range r.Violations() {
		t.Errorf("rule broken: %s", v)
	}
	e, ok := r.Terminal()
	if !ok || e.Type != protocol.TypeAgentError {
		t.Fatalf("run did not fail; events: %s", r)
	}
	return e.Code, e.Message
}

// String lists the events, one per line, for failure messages.
func (r *Recorder) String() string {
	var b strings.Builder
	for _, e := range r.Events() {
		b.WriteString("\n  " + e.Type)
		switch e.Type {
		case protocol.TypeAgentThinking:
			fmt.Fprintf(&b, " %q", e.Text)
		case protocol.TypeToolExecuting:
			fmt.Fprintf(&b, " %s %s %s", e.ToolCallID, e.Tool, e.Args)
		case protocol.TypeToolCompleted:
			fmt.Fprintf(&b, " %s %s ok=%v result=%s error=%q", e.ToolCallID, e.Tool, e.OK, e.Result, e.Error)
		case protocol.TypeToolProgress:
			fmt.Fprintf(&b, " %s %v/%v %q", e.ToolCallID, e.Progress.Progress, e.Progress.Total, e.Progress.Message)
		case protocol.TypeAgentMessageDelta:
			fmt.Fprintf(&b, " %q", e.Delta)
		case protocol.TypeAgentCompleted:
			fmt.Fprintf(&b, " %q", e.Final)
		case protocol.TypeAgentError:
			fmt.Fprintf(&b, " %s %q", e.Code, e.Message)
		default:
			fmt.Fprintf(&b, " %s", e.Data)
		}
	}
	return b.String()
}
