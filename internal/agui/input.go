package agui

import (
	"bytes"
	"encoding/json"
	"strings"

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

// InterruptID is the id of the interrupt a run's input_required becomes:
// the run and the request, so that a resume names both.
func InterruptID(runID, requestID string) string { return runID + ":" + requestID }

// ResumeFrame returns the user_input a resuming run request asks for: its
// one resume entry answers interrupt "<run id>:<request id>" with a payload
// of agentwire's answer shape ({"approved": bool}, {"text": string} or
// {"choice": string}) or a bare boolean (approved); "cancelled" without a
// payload denies (an approval; another kind of question refuses it). The
// frame is validated as a user_input frame from a WebSocket.
func (in *RunAgentInput) ResumeFrame() (protocol.Frame, *protocol.Error) {
	bad := func(msg string) (protocol.Frame, *protocol.Error) {
		return protocol.Frame{}, &protocol.Error{Code: protocol.CodeInvalidMessage, Message: msg}
	}
	if len(in.Resume) != 1 {
		return bad("resume must hold exactly one entry: a run asks one question at a time")
	}
	e := in.Resume[0]
	runID, reqID, ok := strings.Cut(e.InterruptID, ":")
	if !ok {
		return bad("interruptId is not one of agentwire's")
	}
	f := protocol.Frame{Type: protocol.TypeUserInput, RunID: runID, RequestID: reqID}
	payload := bytes.TrimSpace(e.Payload)
	switch {
	case len(payload) == 0 || string(payload) == "null":
		if e.Status != ResumeCancelled {
			return bad("a resolved resume entry needs a payload")
		}
		no := false
		f.Answer.Approved = &no
	case string(payload) == "true" || string(payload) == "false":
		v := string(payload) == "true"
		f.Answer.Approved = &v
	default:
		if json.Unmarshal(payload, &f.Answer) != nil {
			return bad(`payload must be {"approved": bool}, {"text": string}, {"choice": string} or a boolean`)
		}
	}
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
