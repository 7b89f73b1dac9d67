package agui

import (
	"github.com/agentwire/agentwire/protocol"
)

// UserFrame returns the user_message an AG-UI run request asks for: the text
// of its last user message (text content parts joined), in its thread, with
// that message's id as the client_message_id, so a retried request (same
// message id) starts no second run. The frame is validated exactly as a
// user_message frame from a WebSocket (protocol.Decode): a missing user
// message, empty or oversized text, or an id over its bound or holding a
// control character is an invalid_message error. An empty threadId is
// passed on empty (a new thread).
func (in *RunAgentInput) UserFrame() (protocol.Frame, *protocol.Error) {
	last := -1
	for i := range in.Messages {
		if in.Messages[i].Role == RoleUser {
			last = i
		}
	}
	if last < 0 {
		return protocol.Frame{}, &protocol.Error{Code: protocol.CodeInvalidMessage, Message: "messages hold no user message"}
	}
	m := &in.Messages[last]
	f := protocol.Frame{Type: protocol.TypeUserMessage, Content: m.Text(), ThreadID: in.ThreadID, ClientMessageID: m.ID}
	return protocol.Decode(protocol.EncodeFrame(&f))
}

// ConnectInput is the body of POST /api/v1/agui/connect: the RunAgentInput
// an AG-UI client sends to connect (its other fields are ignored), and
// optionally the position to resume after, as an SSE id
// ("<epoch>:<seq>"), for clients that cannot set Last-Event-ID.
type ConnectInput struct {
	ThreadID    string `json:"threadId"`
	RunID       string `json:"runId"`
	LastEventID string `json:"lastEventId"`
}
