// Package inbox accepts the user_message and stop_agent frames of a
// connection. A message is appended to its sender's stream as a user_message
// event, so every tab of the user sees it, and acknowledged with its thread
// and message ids. Agent runs (started from here) are not part of this
// package yet: until they are, stop_agent finds no run to stop.
package inbox

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/oklog/ulid/v2"

	"github.com/agentwire/agentwire/internal/protocol"
	"github.com/agentwire/agentwire/internal/stream"
)

// Inbox handles the client frames that act on a user's conversation.
type Inbox struct {
	stream stream.Stream
	log    *slog.Logger
}

// New returns an Inbox appending to s.
func New(s stream.Stream, log *slog.Logger) *Inbox {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Inbox{stream: s, log: log}
}

type userMessageData struct {
	MessageID       string `json:"message_id"`
	Content         string `json:"content"`
	ClientMessageID string `json:"client_message_id,omitempty"`
}

// UserMessage appends f's content to user's stream. A client_message_id seen
// within the idempotency window returns the first ack and appends nothing.
func (in *Inbox) UserMessage(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	thread := f.ThreadID
	if thread == "" {
		thread = ulid.Make().String()
	}
	data, err := json.Marshal(userMessageData{MessageID: ulid.Make().String(), Content: f.Content, ClientMessageID: f.ClientMessageID})
	if err != nil {
		return protocol.AckFrame{}, &protocol.Error{Code: protocol.CodeInternal, Message: "could not encode the message", Ref: f.ID}
	}
	rec := stream.Record{Type: protocol.TypeUserMessage, ThreadID: thread, Data: data}
	if f.ClientMessageID != "" {
		rec.IdempotencyKey = "client_message_id:" + f.ClientMessageID
	}
	ev, err := in.stream.Append(ctx, user, rec)
	if err != nil {
		in.log.Error("append user message", "user", user, "err", err)
		return protocol.AckFrame{}, &protocol.Error{Code: protocol.CodeInternal, Message: "message not accepted: stream unavailable, retry with the same client_message_id", Ref: f.ID}
	}
	// On a repeated client_message_id ev is the first event: answer with its ids.
	var first userMessageData
	if err := json.Unmarshal(ev.Data, &first); err != nil {
		return protocol.AckFrame{}, &protocol.Error{Code: protocol.CodeInternal, Message: "stored message unreadable", Ref: f.ID}
	}
	return protocol.AckFrame{Ref: f.ID, ThreadID: ev.ThreadID, MessageID: first.MessageID}, nil
}

// StopAgent answers not_found: no run of the user is running here.
func (in *Inbox) StopAgent(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	return protocol.AckFrame{}, &protocol.Error{Code: protocol.CodeNotFound, Message: "no such run", Ref: f.ID}
}
