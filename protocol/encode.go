package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// EncodeEvent builds ev's wire frame:
//
//	{"type":…,"seq":…,"epoch":…,"ts":…,"thread_id":…,"run_id":…,"data":{…}}
//
// thread_id and run_id are omitted when empty. Data must be valid JSON (the
// producers validate it); nil or empty data encodes as {}. Every stream
// backend calls it once per appended event and keeps the bytes.
func EncodeEvent(ev Event) []byte {
	n := 128 + len(ev.Type) + len(ev.Epoch) + len(ev.ThreadID) + len(ev.RunID) + len(ev.Data)
	b := make([]byte, 0, n)
	b = append(b, `{"type":`...)
	b = AppendString(b, ev.Type)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, ev.Seq, 10)
	b = append(b, `,"epoch":`...)
	b = AppendString(b, ev.Epoch)
	b = append(b, `,"ts":"`...)
	b = ev.TS.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if ev.ThreadID != "" {
		b = append(b, `,"thread_id":`...)
		b = AppendString(b, ev.ThreadID)
	}
	if ev.RunID != "" {
		b = append(b, `,"run_id":`...)
		b = AppendString(b, ev.RunID)
	}
	b = append(b, `,"data":`...)
	if len(ev.Data) == 0 {
		b = append(b, `{}`...)
	} else {
		b = append(b, ev.Data...)
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
// <, > and & are kept as they are: frames go to WebSocket and API clients,
// not into HTML, and escaping them made each one six bytes. U+2028 and
// U+2029 are escaped, as encoding/json does, for JavaScript parsers that
// predate ES2019.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// MarshalData encodes v as encoding/json does, without its HTML escaping of
// <, > and &: it is what producers use for an event's data, for the reason
// given at AppendString.
func MarshalData(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}

// EncodeFrame encodes the client frame f, canonically (Alias is ignored):
//
//	{"type":"user_message","id":…,"content":…,"thread_id":…,"client_message_id":…}
//	{"type":"stop_agent","id":…,"run_id":…}
//	{"type":"user_input","id":…,"run_id":…,"request_id":…,"approved"|"text"|"choice":…}
//	{"type":"resume","id":…,"since":…,"epoch":…}
//	{"type":"ping","id":…}
//
// omitting id, thread_id, client_message_id and epoch when empty. It is the
// inverse of Decode for a valid canonical frame.
func EncodeFrame(f *Frame) []byte {
	b := make([]byte, 0, 64+len(f.ID)+len(f.Content)+len(f.ThreadID)+len(f.ClientMessageID)+len(f.RunID)+len(f.Cursor.Epoch))
	b = append(b, `{"type":`...)
	b = AppendString(b, f.Type)
	b = appendField(b, "id", f.ID)
	switch f.Type {
	case TypeUserMessage:
		b = append(b, `,"content":`...)
		b = AppendString(b, f.Content)
		b = appendField(b, "thread_id", f.ThreadID)
		b = appendField(b, "client_message_id", f.ClientMessageID)
	case TypeStopAgent:
		b = append(b, `,"run_id":`...)
		b = AppendString(b, f.RunID)
	case TypeUserInput:
		b = append(b, `,"run_id":`...)
		b = AppendString(b, f.RunID)
		b = append(b, `,"request_id":`...)
		b = AppendString(b, f.RequestID)
		switch {
		case f.Answer.Approved != nil:
			b = append(b, `,"approved":`...)
			b = strconv.AppendBool(b, *f.Answer.Approved)
		case f.Answer.Text != nil:
			b = append(b, `,"text":`...)
			b = AppendString(b, *f.Answer.Text)
		case f.Answer.Choice != nil:
			b = append(b, `,"choice":`...)
			b = AppendString(b, *f.Answer.Choice)
		}
	case TypeResume:
		b = append(b, `,"since":`...)
		b = strconv.AppendUint(b, f.Cursor.Seq, 10)
		b = appendField(b, "epoch", f.Cursor.Epoch)
	}
	return append(b, '}')
}

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
	b = AppendString(b, string(e.Code))
	b = append(b, `,"message":`...)
	b = AppendString(b, e.Message)
	b = appendField(b, "ref", e.Ref)
	return append(b, '}')
}

// EncodeResync encodes
//
//	{"type":"resync_required","epoch":…,"head_seq":…,"reason":…}
//
// telling the client that its resume position cannot be served and that live
// delivery continues after head.
func EncodeResync(epoch string, head uint64, reason ResyncReason) []byte {
	b := make([]byte, 0, 96+len(epoch)+len(reason))
	b = append(b, `{"type":"resync_required","epoch":`...)
	b = AppendString(b, epoch)
	b = append(b, `,"head_seq":`...)
	b = strconv.AppendUint(b, head, 10)
	b = append(b, `,"reason":`...)
	b = AppendString(b, string(reason))
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
	b = AppendString(b, alias)
	b = append(b, `,"replacement":`...)
	b = AppendString(b, repl)
	b = append(b, `,"message":`...)
	b = AppendString(b, msg)
	return append(b, '}')
}

// ResyncRequired is the resync_required frame: the client's position cannot
// be served (Reason), and live delivery continues after HeadSeq of Epoch.
type ResyncRequired struct {
	Epoch   string       `json:"epoch"`
	HeadSeq uint64       `json:"head_seq"`
	Reason  ResyncReason `json:"reason"`
}

// ConnectionEstablished is the first frame the server sends on a connection.
// Protocol is always Version: EncodeConnectionEstablished writes it whatever
// the field holds.
type ConnectionEstablished struct {
	ConnectionID        string `json:"connection_id"`
	UserID              string `json:"user_id"`
	Protocol            string `json:"protocol"`
	Epoch               string `json:"epoch"`
	HeadSeq             uint64 `json:"head_seq"`
	HeartbeatIntervalMS int64  `json:"heartbeat_interval_ms"`
	MaxMessageBytes     int64  `json:"max_message_bytes"`
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
	b = AppendString(b, c.ConnectionID)
	b = append(b, `,"user_id":`...)
	b = AppendString(b, c.UserID)
	b = append(b, `,"protocol":"`+Version+`","epoch":`...)
	b = AppendString(b, c.Epoch)
	b = append(b, `,"head_seq":`...)
	b = strconv.AppendUint(b, c.HeadSeq, 10)
	b = append(b, `,"heartbeat_interval_ms":`...)
	b = strconv.AppendInt(b, c.HeartbeatIntervalMS, 10)
	b = append(b, `,"max_message_bytes":`...)
	b = strconv.AppendInt(b, c.MaxMessageBytes, 10)
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
	return AppendString(b, value)
}
