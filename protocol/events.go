package protocol

import (
	"encoding/json"
	"time"
)

// Stream event types of a run (contract section 4), in a run's order. A
// run's user_message echo has type TypeUserMessage. Each has its data
// struct below and an accessor on Event.
const (
	TypeAgentStarted  = "agent_started"
	TypeAgentThinking = "agent_thinking"
	TypeToolExecuting = "tool_executing"
	TypeToolCompleted = "tool_completed"
	// TypeToolProgress comes between a call's tool_executing and its
	// tool_completed, as often as the tool reports progress (MCP tools).
	TypeToolProgress      = "tool_progress"
	TypeAgentMessageDelta = "agent_message_delta"
	TypeAgentCompleted    = "agent_completed"
	TypeAgentError        = "agent_error"
)

// RunEventType reports whether typ is one of the stream events agentwire's
// runs produce (the echo included): publishing them is reserved to a run.
func RunEventType(typ string) bool {
	switch typ {
	case TypeUserMessage, TypeAgentStarted, TypeAgentThinking, TypeToolExecuting,
		TypeToolCompleted, TypeToolProgress, TypeAgentMessageDelta, TypeAgentCompleted, TypeAgentError,
		TypeInputRequired, TypeInputReceived:
		return true
	}
	return false
}

// Event is one stream event: an event of a run or a published one. Its frame
// is
//
//	{"type":…,"seq":…,"epoch":…,"ts":…,"thread_id":…,"run_id":…,"data":{…}}
//
// (EncodeEvent); thread_id and run_id are absent when empty.
type Event struct {
	Type     string
	Seq      uint64
	Epoch    string
	TS       time.Time // zero when a decoded frame had no valid RFC 3339 ts
	ThreadID string
	RunID    string
	Data     json.RawMessage // the event's data object; nil encodes as {}
}

// Terminal reports whether e ends its run (agent_completed or agent_error).
func (e Event) Terminal() bool {
	return e.Type == TypeAgentCompleted || e.Type == TypeAgentError
}

// UserMessage is the data of a user_message event: the echo every tab sees.
type UserMessage struct {
	MessageID       string `json:"message_id"`
	Content         string `json:"content"`
	ClientMessageID string `json:"client_message_id,omitempty"`
}

// AgentStarted is the data of agent_started.
type AgentStarted struct {
	Agent string `json:"agent"`
	// TraceID is the run's OpenTelemetry trace id (32 lowercase hex
	// digits) when the server traces (OTEL_… set), so support can find
	// the run's trace from a user's screen; absent otherwise.
	TraceID string `json:"trace_id,omitempty"`
}

// AgentThinking is the data of agent_thinking.
type AgentThinking struct {
	Text string `json:"text"`
}

// ToolExecuting is the data of tool_executing. Args is a JSON object.
type ToolExecuting struct {
	ToolCallID string          `json:"tool_call_id"`
	Tool       string          `json:"tool"`
	Args       json.RawMessage `json:"args"`
}

// ToolCompleted is the data of tool_completed, after the tool_executing of
// the same ToolCallID.
type ToolCompleted struct {
	ToolCallID string          `json:"tool_call_id"`
	Tool       string          `json:"tool"`
	OK         bool            `json:"ok"`
	Result     json.RawMessage `json:"result"`
	DurationMS int64           `json:"duration_ms"`
	Error      string          `json:"error,omitempty"`
}

// ToolProgress is the data of tool_progress: how far the call ToolCallID
// (announced by tool_executing, not yet completed) has come. Progress grows
// with each event of a call; Total is absent when the tool does not know it.
type ToolProgress struct {
	ToolCallID string   `json:"tool_call_id"`
	Progress   float64  `json:"progress"`
	Total      *float64 `json:"total,omitempty"`
	Message    string   `json:"message,omitempty"`
}

// AgentMessageDelta is the data of agent_message_delta: one chunk of the
// answer.
type AgentMessageDelta struct {
	Delta     string `json:"delta"`
	MessageID string `json:"message_id"`
}

// AgentCompleted is the data of agent_completed: the whole answer, and the
// tokens the run's model calls used when the agent knows them.
type AgentCompleted struct {
	MessageID     string `json:"message_id"`
	FinalResponse string `json:"final_response"`
	DurationMS    int64  `json:"duration_ms"`
	Usage         *Usage `json:"usage,omitempty"`
}

// Usage is the tokens a run's model calls consumed, summed over the run:
// InputTokens sent to the model (prompt), OutputTokens it generated.
type Usage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// UsageOf is the usage of a run that used in and out tokens, or nil (no
// "usage" field) when it reported none.
func UsageOf(in, out int64) *Usage {
	if in == 0 && out == 0 {
		return nil
	}
	return &Usage{InputTokens: in, OutputTokens: out}
}

// AgentError is the data of agent_error; Code is CodeCancelled,
// CodeTimeout, CodeAgentFailed or CodeNodeLost.
type AgentError struct {
	Code       ErrorCode `json:"code"`
	Message    string    `json:"message"`
	DurationMS int64     `json:"duration_ms"`
}

func decodeData[T any](e Event, typ string) (T, bool) {
	var v T
	if e.Type != typ || json.Unmarshal(e.Data, &v) != nil {
		return v, false
	}
	return v, true
}

// UserMessage returns e's data when e is a well-formed user_message.
func (e Event) UserMessage() (UserMessage, bool) { return decodeData[UserMessage](e, TypeUserMessage) }

// AgentStarted returns e's data when e is a well-formed agent_started.
func (e Event) AgentStarted() (AgentStarted, bool) {
	return decodeData[AgentStarted](e, TypeAgentStarted)
}

// AgentThinking returns e's data when e is a well-formed agent_thinking.
func (e Event) AgentThinking() (AgentThinking, bool) {
	return decodeData[AgentThinking](e, TypeAgentThinking)
}

// ToolExecuting returns e's data when e is a well-formed tool_executing.
func (e Event) ToolExecuting() (ToolExecuting, bool) {
	return decodeData[ToolExecuting](e, TypeToolExecuting)
}

// ToolCompleted returns e's data when e is a well-formed tool_completed.
func (e Event) ToolCompleted() (ToolCompleted, bool) {
	return decodeData[ToolCompleted](e, TypeToolCompleted)
}

// ToolProgress returns e's data when e is a well-formed tool_progress.
func (e Event) ToolProgress() (ToolProgress, bool) {
	return decodeData[ToolProgress](e, TypeToolProgress)
}

// AgentMessageDelta returns e's data when e is a well-formed agent_message_delta.
func (e Event) AgentMessageDelta() (AgentMessageDelta, bool) {
	return decodeData[AgentMessageDelta](e, TypeAgentMessageDelta)
}

// AgentCompleted returns e's data when e is a well-formed agent_completed.
func (e Event) AgentCompleted() (AgentCompleted, bool) {
	return decodeData[AgentCompleted](e, TypeAgentCompleted)
}

// AgentError returns e's data when e is a well-formed agent_error.
func (e Event) AgentError() (AgentError, bool) { return decodeData[AgentError](e, TypeAgentError) }

// ServerFrame is any frame the server sends, decoded loosely by
// DecodeServerFrame: the fields of every frame type side by side, each zero
// when the frame has none. connection_established decodes into
// ConnectionEstablished instead.
type ServerFrame struct {
	Type string `json:"type"`

	// Stream events (Event); Epoch also of resync_required.
	Seq      uint64          `json:"seq"`
	Epoch    string          `json:"epoch"`
	TS       string          `json:"ts"`
	ThreadID string          `json:"thread_id"`
	RunID    string          `json:"run_id"`
	Data     json.RawMessage `json:"data"`

	// ack, pong and error; ThreadID and RunID also of ack.
	Ref       string    `json:"ref"`
	MessageID string    `json:"message_id"`
	Code      ErrorCode `json:"code"`
	Message   string    `json:"message"`

	// resync_required.
	HeadSeq uint64       `json:"head_seq"`
	Reason  ResyncReason `json:"reason"`

	// deprecation.
	Alias       string `json:"alias"`
	Replacement string `json:"replacement"`
}

// DecodeServerFrame decodes one server frame. It fails only on input that is
// not a JSON object of the frame fields' types.
func DecodeServerFrame(b []byte) (ServerFrame, error) {
	var f ServerFrame
	err := json.Unmarshal(b, &f)
	return f, err
}

// Event returns the stream event f holds (f.Seq is not 0 for one).
func (f *ServerFrame) Event() Event {
	ev := Event{Type: f.Type, Seq: f.Seq, Epoch: f.Epoch, ThreadID: f.ThreadID, RunID: f.RunID, Data: f.Data}
	if ts, err := time.Parse(time.RFC3339Nano, f.TS); err == nil {
		ev.TS = ts
	}
	return ev
}

// Ack returns the ack f holds.
func (f *ServerFrame) Ack() AckFrame {
	return AckFrame{Ref: f.Ref, ThreadID: f.ThreadID, RunID: f.RunID, MessageID: f.MessageID}
}

// Err returns the error frame f holds.
func (f *ServerFrame) Err() *Error {
	return &Error{Code: f.Code, Message: f.Message, Ref: f.Ref}
}

// Resync returns the resync_required frame f holds.
func (f *ServerFrame) Resync() ResyncRequired {
	return ResyncRequired{Epoch: f.Epoch, HeadSeq: f.HeadSeq, Reason: f.Reason}
}
