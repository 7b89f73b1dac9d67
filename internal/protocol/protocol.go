// Package protocol decodes and validates the frames clients send to agentwire
// and encodes the server frames that are not stream events (ack, pong, error,
// resync_required, deprecation, connection_established).
//
// It implements sections 3 to 5 of the wire contract (PROTOCOL.md). Decode
// never panics and answers every bad input with an *Error whose Code is one of
// the contract's codes, so the transport can send it back as an error frame
// and keep the connection open.
package protocol

// Version is the protocol name announced in connection_established; it is
// also the WebSocket subprotocol the server selects.
const Version = "agentwire.v1"

// Canonical client frame types.
const (
	TypeUserMessage = "user_message"
	TypeStopAgent   = "stop_agent"
	TypeResume      = "resume"
	TypePing        = "ping"
)

// Stream event types of a run (contract section 4). A run's user_message
// echo has type TypeUserMessage.
const (
	TypeAgentStarted      = "agent_started"
	TypeAgentThinking     = "agent_thinking"
	TypeToolExecuting     = "tool_executing"
	TypeToolCompleted     = "tool_completed"
	TypeAgentMessageDelta = "agent_message_delta"
	TypeAgentCompleted    = "agent_completed"
	TypeAgentError        = "agent_error"
)

// Server frame types that are not stream events.
const (
	TypeAck                   = "ack"
	TypePong                  = "pong"
	TypeError                 = "error"
	TypeResyncRequired        = "resync_required"
	TypeDeprecation           = "deprecation"
	TypeConnectionEstablished = "connection_established"
)

// Error codes of the contract (section 5) plus those the server uses.
const (
	CodeBadJSON        = "bad_json"
	CodeUnknownType    = "unknown_type"
	CodeInvalidMessage = "invalid_message"
	CodeNotFound       = "not_found"
	CodeRateLimited    = "rate_limited"
	CodeTooManyRuns    = "too_many_runs"
	CodeInternal       = "internal_error"
)

// Size limits of client frame fields, in bytes of the decoded UTF-8 string.
const (
	// MaxContentBytes bounds user_message content (which must be non-empty).
	MaxContentBytes = 32768
	// MaxIDBytes bounds the "id" every client frame may carry.
	MaxIDBytes = 64
	// MaxKeyBytes bounds thread_id, run_id, client_message_id and epoch.
	MaxKeyBytes = 128
)

// Frame is a decoded, validated client frame.
//
// Type is always one of the canonical Type constants; Alias is the deprecated
// type name the client used, or "" when it used the canonical one. ID is the
// client's "id" ("" when none), to be echoed as "ref" in replies.
type Frame struct {
	Type  string
	Alias string
	ID    string

	// user_message. ThreadID "" means a new thread; ClientMessageID "" means
	// no idempotency key.
	Content         string
	ThreadID        string
	ClientMessageID string

	// stop_agent. Always non-empty.
	RunID string

	// resume. HasSince is false when the client sent no since (or null): the
	// replay then starts at the beginning of the retained history, and Since
	// is 0. Epoch "" means the client knows no epoch.
	Since    uint64
	Epoch    string
	HasSince bool
}

// Error is a protocol error to send back as an error frame. Ref is the
// frame's id when it could be read, "" otherwise. Message never quotes the
// client's input, so it is safe to log.
type Error struct {
	Code    string
	Message string
	Ref     string
}

// Error returns "protocol: <code>: <message>".
func (e *Error) Error() string {
	return "protocol: " + e.Code + ": " + e.Message
}

// aliases lists the deprecated client frame types in a stable order.
var aliases = [...]string{"chat", "agent_request", "execute_agent", "start_agent", "session_restore"}

// Replacement returns the canonical type that replaces the deprecated alias,
// or "" when alias is not a deprecated type name.
func Replacement(alias string) string {
	switch alias {
	case "chat", "agent_request", "execute_agent", "start_agent":
		return TypeUserMessage
	case "session_restore":
		return TypeResume
	}
	return ""
}

// Aliases returns every deprecated type name Decode accepts, in a stable
// order: the complete label set of agentwire_deprecated_messages_total. The
// caller owns the returned slice.
func Aliases() []string {
	out := make([]string, len(aliases))
	copy(out, aliases[:])
	return out
}
