// Package agui holds the AG-UI wire types (protocol 1.0, @ag-ui/core 1.0.0)
// that agentwire speaks in both directions: the /api/v1/agui endpoints emit
// them to AG-UI front ends, and the agui upstream agent reads them from AG-UI
// agent servers. Only the fields agentwire reads or writes are declared;
// unknown fields are ignored on decode.
package agui

import (
	"encoding/json"
	"strings"
)

// EventType is an AG-UI event's "type" discriminator.
type EventType string

// Every event type of AG-UI protocol 1.0.
const (
	TextMessageStart        EventType = "TEXT_MESSAGE_START"
	TextMessageContent      EventType = "TEXT_MESSAGE_CONTENT"
	TextMessageEnd          EventType = "TEXT_MESSAGE_END"
	TextMessageChunk        EventType = "TEXT_MESSAGE_CHUNK"
	ToolCallStart           EventType = "TOOL_CALL_START"
	ToolCallArgs            EventType = "TOOL_CALL_ARGS"
	ToolCallEnd             EventType = "TOOL_CALL_END"
	ToolCallChunk           EventType = "TOOL_CALL_CHUNK"
	ToolCallResult          EventType = "TOOL_CALL_RESULT"
	StateSnapshot           EventType = "STATE_SNAPSHOT"
	StateDelta              EventType = "STATE_DELTA"
	MessagesSnapshot        EventType = "MESSAGES_SNAPSHOT"
	ActivitySnapshot        EventType = "ACTIVITY_SNAPSHOT"
	ActivityDelta           EventType = "ACTIVITY_DELTA"
	Raw                     EventType = "RAW"
	Custom                  EventType = "CUSTOM"
	RunStarted              EventType = "RUN_STARTED"
	RunFinished             EventType = "RUN_FINISHED"
	RunError                EventType = "RUN_ERROR"
	StepStarted             EventType = "STEP_STARTED"
	StepFinished            EventType = "STEP_FINISHED"
	ReasoningStart          EventType = "REASONING_START"
	ReasoningMessageStart   EventType = "REASONING_MESSAGE_START"
	ReasoningMessageContent EventType = "REASONING_MESSAGE_CONTENT"
	ReasoningMessageEnd     EventType = "REASONING_MESSAGE_END"
	ReasoningMessageChunk   EventType = "REASONING_MESSAGE_CHUNK"
	ReasoningEnd            EventType = "REASONING_END"
	ReasoningEncryptedValue EventType = "REASONING_ENCRYPTED_VALUE"
	SubagentStarted         EventType = "SUBAGENT_STARTED"
	SubagentFinished        EventType = "SUBAGENT_FINISHED"
	SubagentError           EventType = "SUBAGENT_ERROR"
)

// Event is any AG-UI event, flattened: each event type uses the subset of
// fields the AG-UI schema gives it. Fields whose JSON type differs between
// event types (delta: a string for content events, a JSON Patch array for
// STATE_DELTA; content: a string or content parts) are kept raw; use the
// helpers to read and write them.
type Event struct {
	Type      EventType       `json:"type"`
	Timestamp int64           `json:"timestamp,omitempty"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`

	ThreadID    string `json:"threadId,omitempty"`
	RunID       string `json:"runId,omitempty"`
	ParentRunID string `json:"parentRunId,omitempty"`

	MessageID       string `json:"messageId,omitempty"`
	Role            string `json:"role,omitempty"`
	Name            string `json:"name,omitempty"`
	ToolCallID      string `json:"toolCallId,omitempty"`
	ToolCallName    string `json:"toolCallName,omitempty"`
	ParentMessageID string `json:"parentMessageId,omitempty"`
	StepName        string `json:"stepName,omitempty"`

	Delta    json.RawMessage `json:"delta,omitempty"`
	Content  json.RawMessage `json:"content,omitempty"`
	Snapshot json.RawMessage `json:"snapshot,omitempty"`
	Messages []Message       `json:"messages,omitzero"` // MESSAGES_SNAPSHOT: present even when empty

	Result  json.RawMessage `json:"result,omitempty"`
	Outcome *Outcome        `json:"outcome,omitempty"`

	// RUN_ERROR
	Message string `json:"message,omitempty"`
	Code    string `json:"code,omitempty"`

	// ACTIVITY_SNAPSHOT carries MessageID, ActivityType, Content (an
	// object) and Replace; ACTIVITY_DELTA MessageID, ActivityType and Patch.
	ActivityType string          `json:"activityType,omitempty"`
	Patch        json.RawMessage `json:"patch,omitempty"`
	Replace      *bool           `json:"replace,omitempty"`

	// RAW carries Event and Source; CUSTOM carries Name and Value.
	Event  json.RawMessage `json:"event,omitempty"`
	Source string          `json:"source,omitempty"`
	Value  json.RawMessage `json:"value,omitempty"`
}

// Outcome is RUN_FINISHED's outcome: "success", "interrupt" or "cancelled".
type Outcome struct {
	Type               string          `json:"type"`
	PendingToolCallIDs []string        `json:"pendingToolCallIds,omitempty"`
	Interrupts         json.RawMessage `json:"interrupts,omitempty"`
}

// Outcome types.
const (
	OutcomeSuccess   = "success"
	OutcomeInterrupt = "interrupt"
	OutcomeCancelled = "cancelled"
)

// Message is one AG-UI message (user, assistant, system, developer, tool,
// reasoning). Content is a string, or for user and tool messages a list of
// content parts; read it with Text.
type Message struct {
	ID         string          `json:"id"`
	Role       string          `json:"role"`
	Name       string          `json:"name,omitempty"`
	Content    json.RawMessage `json:"content,omitempty"`
	ToolCalls  []ToolCall      `json:"toolCalls,omitempty"`
	ToolCallID string          `json:"toolCallId,omitempty"`
	Error      string          `json:"error,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
}

// ToolCall is an assistant message's call of a tool.
type ToolCall struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"` // always "function"
	Function FunctionCall    `json:"function"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// FunctionCall names the tool and carries its arguments as a JSON string.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Tool is a tool the front end offers the agent.
type Tool struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
}

// Context is a piece of context the front end gives the agent.
type Context struct {
	Description string `json:"description"`
	Value       string `json:"value"`
}

// RunAgentInput is the body of an AG-UI run request.
type RunAgentInput struct {
	ThreadID        string          `json:"threadId"`
	RunID           string          `json:"runId"`
	ProtocolVersion string          `json:"protocolVersion,omitempty"`
	ParentRunID     string          `json:"parentRunId,omitempty"`
	State           json.RawMessage `json:"state,omitempty"`
	Messages        []Message       `json:"messages"`
	Tools           []Tool          `json:"tools"`
	Context         []Context       `json:"context"`
	ForwardedProps  json.RawMessage `json:"forwardedProps,omitempty"`
	// Resume answers the interrupts of an earlier RUN_FINISHED (see
	// ResumeFrame).
	Resume []ResumeEntry `json:"resume,omitempty"`
}

// ResumeEntry answers one interrupt.
type ResumeEntry struct {
	InterruptID string          `json:"interruptId"`
	Status      string          `json:"status"` // "resolved" or "cancelled"
	Payload     json.RawMessage `json:"payload,omitempty"`
}

// Resume entry statuses.
const (
	ResumeResolved  = "resolved"
	ResumeCancelled = "cancelled"
)

// Interrupt is one entry of an interrupt outcome: a question of a run.
type Interrupt struct {
	ID             string          `json:"id"`
	Reason         string          `json:"reason"`
	Message        string          `json:"message,omitempty"`
	ToolCallID     string          `json:"toolCallId,omitempty"`
	ResponseSchema json.RawMessage `json:"responseSchema,omitempty"`
	Metadata       json.RawMessage `json:"metadata,omitempty"`
}

// Roles.
const (
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleSystem    = "system"
	RoleDeveloper = "developer"
	RoleTool      = "tool"
	RoleReasoning = "reasoning"
)

// String encodes s as a JSON string, for Delta and Content.
func String(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// Text reads a string-or-content-parts value: a JSON string as is, content
// parts as the concatenation of their text parts. Anything else reads as "".
func Text(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// Text is the message's content as text (see the package function Text).
func (m Message) Text() string { return Text(m.Content) }

// DeltaText is a content event's delta as text.
func (e Event) DeltaText() string { return Text(e.Delta) }
