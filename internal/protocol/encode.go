package protocol

import (
	"strconv"

	"github.com/agentwire/agentwire/internal/stream"
)

// AckFrame is the reply to an accepted user_message or stop_agent.
type AckFrame struct {
	Ref       string // the client frame's id
	ThreadID  string
	RunID     string
	MessageID string
}

// EncodeAck encodes
//
//	{"type":"ack","ref":…,"thread_id":…,"run_id":…,"message_id":…}
//
// omitting every empty field, ref included.
func EncodeAck(a AckFrame) []byte {
	b := make([]byte, 0, 96+len(a.Ref)+len(a.ThreadID)+len(a.RunID)+len(a.MessageID))
	b = append(b, `{"type":"ack"`...)
	b = appendField(b, "ref", a.Ref)
	b = appendField(b, "thread_id", a.ThreadID)
	b = appendField(b, "run_id", a.RunID)
	b = appendField(b, "message_id", a.MessageID)
	return append(b, '}')
}

// EncodePong encodes {"type":"pong","ref":…}, omitting ref when empty.
func EncodePong(ref string) []byte {
	b := make([]byte, 0, 32+len(ref))
	b = append(b, `{"type":"pong"`...)
	b = appendField(b, "ref", ref)
	return append(b, '}')
}

// EncodeError encodes {"type":"error","code":…,"message":…,"ref":…},
// omitting ref when empty. A nil e encodes as internal_error.
func EncodeError(e *Error) []byte {
	if e == nil {
		e = &Error{Code: CodeInternal, Message: "internal error"}
	}
	b := make([]byte, 0, 64+len(e.Code)+len(e.Message)+len(e.Ref))
	b = append(b, `{"type":"error","code":`...)
	b = stream.AppendString(b, e.Code)
	b = append(b, `,"message":`...)
	b = stream.AppendString(b, e.Message)
	b = appendField(b, "ref", e.Ref)
	return append(b, '}')
}

// EncodeResync encodes
//
//	{"type":"resync_required","epoch":…,"head_seq":…,"reason":…}
//
// telling the client that its resume position cannot be served and that live
// delivery continues after head.
func EncodeResync(epoch string, head uint64, reason string) []byte {
	b := make([]byte, 0, 96+len(epoch)+len(reason))
	b = append(b, `{"type":"resync_required","epoch":`...)
	b = stream.AppendString(b, epoch)
	b = append(b, `,"head_seq":`...)
	b = strconv.AppendUint(b, head, 10)
	b = append(b, `,"reason":`...)
	b = stream.AppendString(b, reason)
	return append(b, '}')
}

// EncodeDeprecation encodes the notice sent on the first use of a deprecated
// alias on a connection:
//
//	{"type":"deprecation","alias":"chat","replacement":"user_message","message":"…"}
//
// replacement is Replacement(alias): "" for a name that is not an alias.
func EncodeDeprecation(alias string) []byte {
	repl := Replacement(alias)
	msg := `"` + alias + `" is deprecated and will be removed`
	switch repl {
	case TypeUserMessage:
		msg = `"` + alias + `" is deprecated and will be removed; send "user_message" with "content" and optional "thread_id" instead`
	case TypeResume:
		msg = `"` + alias + `" is deprecated and will be removed; send "resume" with "since" (instead of "last_seq") and "epoch" instead`
	}
	b := make([]byte, 0, 64+len(alias)+len(repl)+2*len(msg))
	b = append(b, `{"type":"deprecation","alias":`...)
	b = stream.AppendString(b, alias)
	b = append(b, `,"replacement":`...)
	b = stream.AppendString(b, repl)
	b = append(b, `,"message":`...)
	b = stream.AppendString(b, msg)
	return append(b, '}')
}

// ConnectionEstablished is the first frame the server sends on a connection.
type ConnectionEstablished struct {
	ConnectionID        string
	UserID              string
	Epoch               string
	HeadSeq             uint64
	HeartbeatIntervalMS int
	MaxMessageBytes     int
}

// EncodeConnectionEstablished encodes
//
//	{"type":"connection_established","connection_id":…,"user_id":…,
//	 "protocol":"agentwire.v1","epoch":…,"head_seq":…,
//	 "heartbeat_interval_ms":…,"max_message_bytes":…}
//
// with every field present, even when empty or zero.
func EncodeConnectionEstablished(c ConnectionEstablished) []byte {
	b := make([]byte, 0, 256+len(c.ConnectionID)+len(c.UserID)+len(c.Epoch))
	b = append(b, `{"type":"connection_established","connection_id":`...)
	b = stream.AppendString(b, c.ConnectionID)
	b = append(b, `,"user_id":`...)
	b = stream.AppendString(b, c.UserID)
	b = append(b, `,"protocol":"`+Version+`","epoch":`...)
	b = stream.AppendString(b, c.Epoch)
	b = append(b, `,"head_seq":`...)
	b = strconv.AppendUint(b, c.HeadSeq, 10)
	b = append(b, `,"heartbeat_interval_ms":`...)
	b = strconv.AppendInt(b, int64(c.HeartbeatIntervalMS), 10)
	b = append(b, `,"max_message_bytes":`...)
	b = strconv.AppendInt(b, int64(c.MaxMessageBytes), 10)
	return append(b, '}')
}

// appendField appends ,"name":"value" unless value is empty.
func appendField(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return stream.AppendString(b, value)
}
