// Package protocol is agentwire's wire vocabulary (docs/PROTOCOL.md), shared
// by the server and the Go SDK: the frames clients send and their decoding
// and validation, the stream events and their data, the other server frames
// and their encoding, every close code, error code and resync reason, the
// resume position, and the shapes of the HTTP API.
//
// Decode never panics and answers every bad input with an *Error whose Code
// is one of the contract's codes, so the transport can send it back as an
// error frame and keep the connection open. The encoders build each frame
// once, byte for byte as the contract writes it.
//
// The package imports nothing of agentwire: every other package, and any
// other program, may import it.
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

// Server frame types that are not stream events.
const (
	TypeAck                   = "ack"
	TypePong                  = "pong"
	TypeError                 = "error"
	TypeResyncRequired        = "resync_required"
	TypeDeprecation           = "deprecation"
	TypeConnectionEstablished = "connection_established"
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

	// stop_agent and user_input. Always non-empty.
	RunID string

	// user_input: the request answered (non-empty) and the answer (exactly
	// one field set).
	RequestID string
	Answer    InputAnswer

	// resume: the position to replay after. Never None; without since (or
	// with null) Seq is 0, the beginning of the retained history, and
	// without epoch Epoch is "", any epoch.
	Cursor Cursor
}

// Error is a protocol error to send back as an error frame. Ref is the
// frame's id when it could be read, "" otherwise. Message never quotes the
// client's input, so it is safe to log.
type Error struct {
	Code    ErrorCode
	Message string
	Ref     string
}

// Error returns "protocol: <code>: <message>".
func (e *Error) Error() string {
	return "protocol: " + string(e.Code) + ": " + e.Message
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
