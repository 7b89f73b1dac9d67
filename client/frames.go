package client

import "github.com/agentwire/agentwire/protocol"

// The wire vocabulary is package protocol's: frame and event types
// (protocol.TypeAgentCompleted, …), close codes (protocol.CloseTokenExpired,
// …), error codes (protocol.CodeNotFound, …) and the event data below.

// Position is a place in a user's stream: the last seq handled and its
// epoch. Pass a Conn's Position as Options.Resume to continue elsewhere.
type Position = protocol.Cursor

// Event is one stream event (it has a Seq), or, with Type
// protocol.TypeResyncRequired and Resync set, the server's notice that
// events were lost: reload state over REST, events then continue live from
// Resync.HeadSeq. The event's data decodes with its accessors
// (Event.AgentCompleted, …).
type Event struct {
	protocol.Event
	Resync *ResyncRequired // set only for protocol.TypeResyncRequired
}

// Data of the stream events agentwire's runs produce, as in package protocol.
type (
	// UserMessage is the data of a user_message event.
	UserMessage = protocol.UserMessage
	// AgentStarted is the data of agent_started.
	AgentStarted = protocol.AgentStarted
	// AgentThinking is the data of agent_thinking.
	AgentThinking = protocol.AgentThinking
	// ToolExecuting is the data of tool_executing.
	ToolExecuting = protocol.ToolExecuting
	// ToolCompleted is the data of tool_completed.
	ToolCompleted = protocol.ToolCompleted
	// AgentMessageDelta is the data of agent_message_delta.
	AgentMessageDelta = protocol.AgentMessageDelta
	// AgentCompleted is the data of agent_completed.
	AgentCompleted = protocol.AgentCompleted
	// AgentError is the data of agent_error.
	AgentError = protocol.AgentError
)

// ConnectionEstablished is the first frame of every connection.
type ConnectionEstablished = protocol.ConnectionEstablished

// ResyncRequired says the server could not replay what was missed (another
// epoch, or older than its retained window).
type ResyncRequired = protocol.ResyncRequired

// Ack answers a user_message or stop_agent frame. ClientMessageID is the
// idempotency key the user_message was sent with.
type Ack struct {
	protocol.AckFrame
	ClientMessageID string
}
