package agui

import (
	"encoding/json"
	"strings"
)

// Messages assembles the messages an AG-UI client builds from a stream of
// events, as @ag-ui/client's default reducer does for the events a
// Translator produces (text, reasoning, tool calls and their results, with
// each event's metadata merged into what it touches). A MESSAGES_SNAPSHOT
// built from it equals what a client that read those events holds, so a
// client that resumes from a snapshot ends up with the same messages as one
// that never lost its connection.
type Messages struct {
	list  []*message
	index map[string]int // message id → position in list
}

// message is a Message whose string content is being built.
type message struct {
	Message
	text    strings.Builder
	hasText bool
}

// Add appends msg as it is (a message known from elsewhere: the thread's
// history, a user message). A message with the id of one already held
// replaces it.
func (m *Messages) Add(msg Message) {
	mm := &message{Message: msg}
	var s string
	if len(msg.Content) > 0 && msg.Content[0] == '"' && json.Unmarshal(msg.Content, &s) == nil {
		mm.text.WriteString(s)
		mm.hasText = true
	}
	if i, ok := m.index[msg.ID]; ok {
		m.list[i] = mm
		return
	}
	m.push(mm)
}

func (m *Messages) push(mm *message) {
	if m.index == nil {
		m.index = make(map[string]int)
	}
	m.index[mm.ID] = len(m.list)
	m.list = append(m.list, mm)
}

func (m *Messages) get(id string) *message {
	if i, ok := m.index[id]; ok {
		return m.list[i]
	}
	return nil
}

// Len is the number of messages held.
func (m *Messages) Len() int { return len(m.list) }

// Apply folds one event into the messages. Events that change no message
// (RUN_*, CUSTOM, …) are ignored.
func (m *Messages) Apply(e Event) {
	switch e.Type {
	case TextMessageStart, ReasoningMessageStart:
		mm := m.get(e.MessageID)
		if mm == nil {
			role := e.Role
			if role == "" {
				role = RoleAssistant
			}
			if e.Type == ReasoningMessageStart {
				role = RoleReasoning
			}
			mm = &message{Message: Message{ID: e.MessageID, Role: role}, hasText: true}
			m.push(mm)
		}
		mm.meta(e)
	case TextMessageContent, ReasoningMessageContent:
		if mm := m.get(e.MessageID); mm != nil {
			mm.hasText = true
			mm.text.WriteString(e.DeltaText())
			mm.meta(e)
		}
	case TextMessageEnd, ReasoningMessageEnd:
		if mm := m.get(e.MessageID); mm != nil {
			mm.meta(e)
		}
	case ToolCallStart:
		if tc := m.toolCall(e.ToolCallID); tc != nil {
			tc.Function.Name = e.ToolCallName
			tc.Metadata = merge(tc.Metadata, e)
			return
		}
		owner := m.get(e.ParentMessageID)
		if owner == nil || owner.Role != RoleAssistant {
			id := e.ToolCallID
			if e.ParentMessageID != "" && owner == nil {
				id = e.ParentMessageID
			}
			owner = &message{Message: Message{ID: id, Role: RoleAssistant}}
			m.push(owner)
		}
		owner.ToolCalls = append(owner.ToolCalls, ToolCall{ID: e.ToolCallID, Type: "function",
			Function: FunctionCall{Name: e.ToolCallName}, Metadata: e.Metadata})
	case ToolCallArgs:
		if tc := m.toolCall(e.ToolCallID); tc != nil {
			tc.Function.Arguments += e.DeltaText()
			tc.Metadata = merge(tc.Metadata, e)
		}
	case ToolCallEnd:
		if tc := m.toolCall(e.ToolCallID); tc != nil {
			tc.Metadata = merge(tc.Metadata, e)
		}
	case ToolCallResult:
		role := e.Role
		if role == "" {
			role = RoleTool
		}
		mm := &message{Message: Message{ID: e.MessageID, Role: role, ToolCallID: e.ToolCallID, Content: e.Content, Metadata: e.Metadata}}
		m.insertResult(mm)
	}
}

// insertResult places a tool message right after the assistant message
// holding its call and the tool messages already after it (the client's
// order), or last when no message holds the call.
func (m *Messages) insertResult(mm *message) {
	at := -1
	for i, x := range m.list {
		if x.Role == RoleAssistant && x.holds(mm.ToolCallID) {
			at = i + 1
			break
		}
	}
	if at < 0 {
		m.push(mm)
		return
	}
	for at < len(m.list) && m.list[at].Role == RoleTool {
		at++
	}
	m.list = append(m.list, nil)
	copy(m.list[at+1:], m.list[at:])
	m.list[at] = mm
	for i := at; i < len(m.list); i++ {
		m.index[m.list[i].ID] = i
	}
}

func (mm *message) holds(toolCallID string) bool {
	for _, tc := range mm.ToolCalls {
		if tc.ID == toolCallID {
			return true
		}
	}
	return false
}

func (m *Messages) toolCall(id string) *ToolCall {
	for _, mm := range m.list {
		for i := range mm.ToolCalls {
			if mm.ToolCalls[i].ID == id {
				return &mm.ToolCalls[i]
			}
		}
	}
	return nil
}

func (mm *message) meta(e Event) { mm.Metadata = merge(mm.Metadata, e) }

// merge is the client's metadata merge for the metadata agentwire sends:
// every event's metadata has the same single key, so the later replaces the
// earlier.
func merge(old []byte, e Event) []byte {
	if len(e.Metadata) == 0 {
		return old
	}
	return e.Metadata
}

// List returns the messages, oldest first.
func (m *Messages) List() []Message {
	out := make([]Message, len(m.list))
	for i, mm := range m.list {
		out[i] = mm.Message
		if mm.hasText {
			out[i].Content = String(mm.text.String())
		}
	}
	return out
}
