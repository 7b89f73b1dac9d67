package client

import (
	"encoding/json"
	"time"
)

// Protocol is the WebSocket subprotocol and contract version this package speaks.
const Protocol = "agentwire.v1"

// Close codes of the wire contract (PROTOCOL.md section 6) and what a Conn
// does on each.
const (
	CloseNormal          = 1000 // the Conn stops, Err is nil
	CloseGoingAway       = 1001 // server restarting: reconnect with resume
	CloseAbnormal        = 1006 // no close frame (network error): reconnect with resume
	ClosePolicyViolation = 1008 // the Conn stops with a *CloseError
	CloseTooLarge        = 1009 // the Conn stops with a *CloseError
	CloseInternalError   = 1011 // reconnect with resume
	CloseNoPong          = 4000 // reconnect with resume
	CloseTokenExpired    = 4001 // Options.Token is called again, then reconnect with resume
	CloseSlowConsumer    = 4008 // reconnect with resume
	CloseTooManyErrors   = 4029 // reconnect with resume after at least Options.TooManyErrorsBackoff
)

// Types of the stream events agentwire's runs produce, plus the
// resync_required notice a Conn delivers among them.
const (
	TypeUserMessage       = "user_message"
	TypeAgentStarted      = "agent_started"
	TypeAgentThinking     = "agent_thinking"
	TypeToolExecuting     = "tool_executing"
	TypeToolCompleted     = "tool_completed"
	TypeAgentMessageDelta = "agent_message_delta"
	TypeAgentCompleted    = "agent_completed"
	TypeAgentError        = "agent_error"
	TypeResyncRequired    = "resync_required"
)

// Position is a place in a user's stream: the last seq handled and its epoch.
// Pass a Conn's Position as Options.Resume to continue elsewhere.
type Position struct {
	Seq   uint64
	Epoch string
}

// Event is one stream event (it has a Seq), or, with Type TypeResyncRequired
// and Resync set, the server's notice that events were lost: reload state
// over REST, events then continue live from Resync.HeadSeq.
type Event struct {
	Type     string
	Seq      uint64
	Epoch    string
	TS       time.Time // zero when the frame had no valid RFC 3339 ts
	ThreadID string
	RunID    string
	Data     json.RawMessage // the event's data object, as received
	Resync   *ResyncRequired // set only for TypeResyncRequired
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
}

// AgentThinking is the data of agent_thinking.
type AgentThinking struct {
	Text string `json:"text"`
}

// ToolExecuting is the data of tool_executing.
type ToolExecuting struct {
	ToolCallID string          `json:"tool_call_id"`
	Tool       string          `json:"tool"`
	Args       json.RawMessage `json:"args"`
}

// ToolCompleted is the data of tool_completed.
type ToolCompleted struct {
	ToolCallID string          `json:"tool_call_id"`
	Tool       string          `json:"tool"`
	OK         bool            `json:"ok"`
	Result     json.RawMessage `json:"result"`
	DurationMS int64           `json:"duration_ms"`
	Error      string          `json:"error,omitempty"`
}

// AgentMessageDelta is the data of agent_message_delta: one chunk of the answer.
type AgentMessageDelta struct {
	MessageID string `json:"message_id"`
	Delta     string `json:"delta"`
}

// AgentCompleted is the data of agent_completed.
type AgentCompleted struct {
	MessageID     string `json:"message_id"`
	FinalResponse string `json:"final_response"`
	DurationMS    int64  `json:"duration_ms"`
}

// AgentError is the data of agent_error; Code is cancelled, timeout,
// agent_failed, too_many_runs, node_lost, …
type AgentError struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	DurationMS int64  `json:"duration_ms"`
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

// ConnectionEstablished is the first frame of every connection.
type ConnectionEstablished struct {
	ConnectionID        string `json:"connection_id"`
	UserID              string `json:"user_id"`
	Protocol            string `json:"protocol"`
	Epoch               string `json:"epoch"`
	HeadSeq             uint64 `json:"head_seq"`
	HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
	MaxMessageBytes     int64  `json:"max_message_bytes"`
}

// ResyncRequired says the server could not replay what was missed (another
// epoch, or older than its retained window).
type ResyncRequired struct {
	Epoch   string `json:"epoch"`
	HeadSeq uint64 `json:"head_seq"`
	Reason  string `json:"reason"`
}

// Ack answers a user_message or stop_agent frame. ClientMessageID is the
// idempotency key the user_message was sent with.
type Ack struct {
	Ref             string
	ThreadID        string
	RunID           string
	MessageID       string
	ClientMessageID string
}

// wireFrame is any server frame, decoded loosely.
type wireFrame struct {
	Type      string          `json:"type"`
	Seq       uint64          `json:"seq"`
	Epoch     string          `json:"epoch"`
	TS        string          `json:"ts"`
	ThreadID  string          `json:"thread_id"`
	RunID     string          `json:"run_id"`
	Data      json.RawMessage `json:"data"`
	Ref       string          `json:"ref"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	MessageID string          `json:"message_id"`
	HeadSeq   uint64          `json:"head_seq"`
	Reason    string          `json:"reason"`
	Alias     string          `json:"alias"`
}

func (f *wireFrame) event() Event {
	ev := Event{Type: f.Type, Seq: f.Seq, Epoch: f.Epoch, ThreadID: f.ThreadID, RunID: f.RunID, Data: f.Data}
	if ts, err := time.Parse(time.RFC3339Nano, f.TS); err == nil {
		ev.TS = ts
	}
	return ev
}

// clientFrame is every frame this package sends.
type clientFrame struct {
	Type            string  `json:"type"`
	ID              string  `json:"id,omitempty"`
	Content         string  `json:"content,omitempty"`
	ThreadID        string  `json:"thread_id,omitempty"`
	ClientMessageID string  `json:"client_message_id,omitempty"`
	RunID           string  `json:"run_id,omitempty"`
	Since           *uint64 `json:"since,omitempty"`
	Epoch           string  `json:"epoch,omitempty"`
}
