package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Decode parses one WebSocket text message into a validated Frame.
//
// On bad input it returns a *Error, checking in this order:
//   - bad_json: the message is not valid UTF-8, not valid JSON, or not a JSON
//     object;
//   - invalid_message: "id" is present but not a string of at most MaxIDBytes;
//   - unknown_type: "type" is missing, null, not a string, or neither a
//     canonical type nor a deprecated alias. A missing type is unknown_type,
//     not invalid_message, because the type is what says which fields a frame
//     needs: until it is known no other field can be missing or wrong;
//   - invalid_message: a field the frame's type uses is missing, of the wrong
//     JSON type or out of bounds; the Message names the field. Decoded text
//     never holds NUL (no store can keep it), and ids (id, thread_id,
//     client_message_id, run_id, epoch) hold no control character at all.
//
// From the "id" check on, Error.Ref carries the frame's id when it is valid.
//
// Field names match exactly (case-sensitive); when a name repeats, the last
// value wins, as in encoding/json. A null field is treated as absent, and so
// is an empty optional string (thread_id "" asks for a new thread). Fields the
// frame's type does not use are ignored whatever their value.
//
// resume: since and epoch are both optional, as in the connect query, and
// make Frame.Cursor (never None: a resume always replays). Without since (or
// with null) the client asks for everything still retained: Cursor.Seq is 0.
// since must be a JSON integer in [0, 2^64-1]; strings, fractions, exponents
// and negative numbers are invalid_message.
//
// Deprecated aliases are mapped to their canonical type and recorded in
// Frame.Alias: chat, agent_request, execute_agent and start_agent take their
// text from "content", else from the first non-empty of payload.content,
// payload.text, payload.message and payload.user_request, and their thread
// from "thread_id", else payload.thread_id; session_restore takes since from
// "last_seq", else "since". A candidate that is present but not a string is
// invalid_message, as is a payload that is not an object.
//
// Decode never panics and does not retain msg. The result is a *Error rather
// than an error so callers get the code without a type assertion; compare it
// with nil before storing it in an error variable.
func Decode(msg []byte) (Frame, *Error) { return decode(msg, nil) }

// DecodeAs decodes an HTTP request body, a JSON object with the fields of a
// client frame of type typ (TypeUserMessage for POST /api/v1/messages), as
// Decode decodes that frame: same limits, same errors. A "type" member in
// body is ignored.
func DecodeAs(typ string, body []byte) (Frame, *Error) {
	return decode(body, AppendString(nil, typ))
}

// decode is Decode, with the type forced to the JSON string typ when set.
func decode(msg, typ []byte) (Frame, *Error) {
	var f Frame
	if !utf8.Valid(msg) {
		return f, &Error{Code: CodeBadJSON, Message: "frame is not valid UTF-8"}
	}
	// Everything below relies on msg being valid JSON: the member scanner
	// only finds the extent of values, it does not check their syntax.
	if !json.Valid(msg) {
		return f, &Error{Code: CodeBadJSON, Message: "frame is not valid JSON"}
	}
	if i := skipSpace(msg, 0); i >= len(msg) || msg[i] != '{' {
		return f, &Error{Code: CodeBadJSON, Message: "frame must be a JSON object"}
	}

	var r rawFrame
	it := newMembers(msg)
	for {
		name, val, ok := it.next()
		if !ok {
			break
		}
		r.set(name, val)
	}
	if typ != nil {
		r.typ = typ
	}

	var e *Error
	if f.ID, e = optionalString(r.id, "id", MaxIDBytes, ""); e != nil {
		return Frame{}, e
	}
	if f.Type, f.Alias, e = resolveType(r.typ, f.ID); e != nil {
		return Frame{}, e
	}
	switch f.Type {
	case TypeUserMessage:
		e = decodeUserMessage(&f, &r)
	case TypeStopAgent:
		f.RunID, e = requiredString(r.runID, "run_id", MaxKeyBytes, f.ID)
	case TypeResume:
		e = decodeResume(&f, &r)
	case TypeUserInput:
		e = decodeUserInput(&f, &r)
	}
	if e != nil {
		return Frame{}, e
	}
	return f, nil
}

// rawFrame holds the raw JSON values of the top-level members Decode reads;
// a field is nil when the member is absent.
type rawFrame struct {
	typ, id                               []byte
	content, threadID, clientMessageID    []byte
	runID, since, lastSeq, epoch, payload []byte
	requestID, approved, text, choice     []byte
}

func (r *rawFrame) set(name, val []byte) {
	switch string(name) {
	case "type":
		r.typ = val
	case "id":
		r.id = val
	case "content":
		r.content = val
	case "thread_id":
		r.threadID = val
	case "client_message_id":
		r.clientMessageID = val
	case "run_id":
		r.runID = val
	case "since":
		r.since = val
	case "last_seq":
		r.lastSeq = val
	case "epoch":
		r.epoch = val
	case "payload":
		r.payload = val
	case "request_id":
		r.requestID = val
	case "approved":
		r.approved = val
	case "text":
		r.text = val
	case "choice":
		r.choice = val
	}
}

// rawPayload holds the members of a legacy frame's payload object.
type rawPayload struct {
	content, text, message, userRequest, threadID []byte
}

func (p *rawPayload) set(name, val []byte) {
	switch string(name) {
	case "content":
		p.content = val
	case "text":
		p.text = val
	case "message":
		p.message = val
	case "user_request":
		p.userRequest = val
	case "thread_id":
		p.threadID = val
	}
}

func resolveType(raw []byte, ref string) (typ, alias string, e *Error) {
	if isNull(raw) {
		return "", "", &Error{Code: CodeUnknownType, Message: `missing field "type"`, Ref: ref}
	}
	if raw[0] != '"' {
		return "", "", &Error{Code: CodeUnknownType, Message: `field "type" must be a string`, Ref: ref}
	}
	name := raw[1 : len(raw)-1]
	if bytes.IndexByte(name, '\\') >= 0 {
		name = unquote(raw)
	}
	switch string(name) {
	case TypeUserMessage:
		return TypeUserMessage, "", nil
	case TypeStopAgent:
		return TypeStopAgent, "", nil
	case TypeResume:
		return TypeResume, "", nil
	case TypeUserInput:
		return TypeUserInput, "", nil
	case TypePing:
		return TypePing, "", nil
	case "chat":
		return TypeUserMessage, "chat", nil
	case "agent_request":
		return TypeUserMessage, "agent_request", nil
	case "execute_agent":
		return TypeUserMessage, "execute_agent", nil
	case "start_agent":
		return TypeUserMessage, "start_agent", nil
	case "session_restore":
		return TypeResume, "session_restore", nil
	}
	// The client's type is not quoted back: it may be arbitrary junk.
	return "", "", &Error{Code: CodeUnknownType, Message: "unknown frame type; expected user_message, stop_agent, user_input, resume or ping", Ref: ref}
}

func decodeUserMessage(f *Frame, r *rawFrame) *Error {
	var e *Error
	if f.Alias == "" {
		e = decodeContentAndThread(f, r)
	} else {
		e = decodeLegacyContentAndThread(f, r)
	}
	if e != nil {
		return e
	}
	f.ClientMessageID, e = optionalString(r.clientMessageID, "client_message_id", MaxKeyBytes, f.ID)
	return e
}

func decodeContentAndThread(f *Frame, r *rawFrame) *Error {
	var e *Error
	if f.Content, e = requiredText(r.content, "content", MaxContentBytes, f.ID); e != nil {
		return e
	}
	f.ThreadID, e = optionalString(r.threadID, "thread_id", MaxKeyBytes, f.ID)
	return e
}

// decodeLegacyContentAndThread reads the text and thread of a deprecated
// alias of user_message, which older clients put at the top level or in a
// payload object.
func decodeLegacyContentAndThread(f *Frame, r *rawFrame) *Error {
	var e *Error

	var p rawPayload
	if !isNull(r.payload) {
		if r.payload[0] != '{' {
			return invalid(f.ID, `field "payload" must be an object`)
		}
		it := newMembers(r.payload)
		for {
			name, val, ok := it.next()
			if !ok {
				break
			}
			p.set(name, val)
		}
	}
	candidates := [...]struct {
		raw  []byte
		name string
	}{
		{r.content, "content"},
		{p.content, "payload.content"},
		{p.text, "payload.text"},
		{p.message, "payload.message"},
		{p.userRequest, "payload.user_request"},
	}
	for _, c := range candidates {
		if f.Content, e = optionalText(c.raw, c.name, MaxContentBytes, f.ID); e != nil {
			return e
		}
		if f.Content != "" {
			break
		}
	}
	if f.Content == "" {
		return invalid(f.ID, `missing field "content" (or payload.content, payload.text, payload.message, payload.user_request)`)
	}
	if f.ThreadID, e = optionalString(r.threadID, "thread_id", MaxKeyBytes, f.ID); e != nil || f.ThreadID != "" {
		return e
	}
	f.ThreadID, e = optionalString(p.threadID, "payload.thread_id", MaxKeyBytes, f.ID)
	return e
}

// decodeUserInput reads run_id, request_id and exactly one answer field:
// approved (a JSON boolean), text (a string of at most MaxContentBytes,
// without NUL) or
// choice (a string of at most MaxKeyBytes).
func decodeUserInput(f *Frame, r *rawFrame) *Error {
	var e *Error
	if f.RunID, e = requiredString(r.runID, "run_id", MaxKeyBytes, f.ID); e != nil {
		return e
	}
	if f.RequestID, e = requiredString(r.requestID, "request_id", MaxKeyBytes, f.ID); e != nil {
		return e
	}
	n := 0
	if !isNull(r.approved) {
		n++
		switch string(r.approved) {
		case "true", "false":
			v := string(r.approved) == "true"
			f.Answer.Approved = &v
		default:
			return invalid(f.ID, `field "approved" must be a boolean`)
		}
	}
	if !isNull(r.text) {
		n++
		v, e := optionalText(r.text, "text", MaxContentBytes, f.ID)
		if e != nil {
			return e
		}
		f.Answer.Text = &v
	}
	if !isNull(r.choice) {
		n++
		v, e := requiredText(r.choice, "choice", MaxKeyBytes, f.ID)
		if e != nil {
			return e
		}
		f.Answer.Choice = &v
	}
	if n != 1 {
		return invalid(f.ID, `exactly one of "approved", "text" and "choice" is required`)
	}
	return nil
}

func decodeResume(f *Frame, r *rawFrame) *Error {
	raw, name := r.since, "since"
	if f.Alias != "" && !isNull(r.lastSeq) {
		raw, name = r.lastSeq, "last_seq"
	}
	var e *Error
	if f.Cursor.Seq, e = optionalSeq(raw, name, f.ID); e != nil {
		return e
	}
	f.Cursor.Epoch, e = optionalString(r.epoch, "epoch", MaxKeyBytes, f.ID)
	return e
}

func invalid(ref, msg string) *Error {
	return &Error{Code: CodeInvalidMessage, Message: msg, Ref: ref}
}

// isNull reports whether raw is an absent member or JSON null. raw is a
// complete JSON value, so a leading 'n' can only be null.
func isNull(raw []byte) bool {
	return len(raw) == 0 || raw[0] == 'n'
}

// optionalString decodes the id member field from raw: absent and null give
// "". The length limit applies to the decoded string, which must not hold a
// control character (see isKey).
func optionalString(raw []byte, field string, limit int, ref string) (string, *Error) {
	s, e := decodeString(raw, field, limit, ref)
	if e == nil && !isKey(s) {
		return "", invalid(ref, `field "`+field+`" must not contain control characters`)
	}
	return s, e
}

// optionalText is optionalString for free text (content), where only NUL is
// refused: no store can keep it (PostgreSQL text), and newlines are text.
func optionalText(raw []byte, field string, limit int, ref string) (string, *Error) {
	s, e := decodeString(raw, field, limit, ref)
	if e == nil && strings.IndexByte(s, 0) >= 0 {
		return "", invalid(ref, `field "`+field+`" must not contain NUL`)
	}
	return s, e
}

func decodeString(raw []byte, field string, limit int, ref string) (string, *Error) {
	if isNull(raw) {
		return "", nil
	}
	if raw[0] != '"' {
		return "", invalid(ref, `field "`+field+`" must be a string`)
	}
	inner := raw[1 : len(raw)-1]
	var s []byte
	if bytes.IndexByte(inner, '\\') < 0 {
		s = inner // checked before copying, so an oversized value costs nothing
	} else {
		s = unquote(raw)
	}
	if len(s) > limit {
		return "", invalid(ref, `field "`+field+`" exceeds `+strconv.Itoa(limit)+` bytes`)
	}
	return string(s), nil
}

// isKey reports whether the id s has no C0 control character nor DEL: ids
// end up in database keys (PostgreSQL refuses NUL in text), logs and URLs,
// where a control character only hides what the id is.
func isKey(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// requiredText is optionalText for a member that must be a non-empty
// string.
func requiredText(raw []byte, field string, limit int, ref string) (string, *Error) {
	return required(raw, field, limit, ref, optionalText)
}

// requiredString is optionalString for a member that must be a non-empty
// string.
func requiredString(raw []byte, field string, limit int, ref string) (string, *Error) {
	return required(raw, field, limit, ref, optionalString)
}

func required(raw []byte, field string, limit int, ref string, opt func([]byte, string, int, string) (string, *Error)) (string, *Error) {
	if isNull(raw) {
		return "", invalid(ref, `missing field "`+field+`"`)
	}
	s, e := opt(raw, field, limit, ref)
	if e == nil && s == "" {
		e = invalid(ref, `field "`+field+`" must not be empty`)
	}
	return s, e
}

// optionalSeq decodes a since with parseSeq, the parser of every resume
// position: a JSON integer in [0, 2^64-1]; absent or null is 0.
func optionalSeq(raw []byte, field, ref string) (uint64, *Error) {
	if isNull(raw) {
		return 0, nil
	}
	// raw is a valid JSON value, so all digits means a plain integer without
	// sign, fraction or exponent (and without leading zeros).
	n, err := parseSeq(raw)
	switch {
	case errors.Is(err, errSeqRange):
		return 0, invalid(ref, `field "`+field+`" exceeds 18446744073709551615`)
	case err != nil:
		return 0, invalid(ref, `field "`+field+`" must be a non-negative integer`)
	}
	return n, nil
}

// unquote decodes the JSON string literal q, which must be valid. Escaped
// lone surrogates become U+FFFD, so the result is always valid UTF-8.
func unquote(q []byte) []byte {
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return nil // unreachable for a valid literal
	}
	return []byte(s)
}

// members iterates over the members of a JSON object. Its input must be
// valid JSON (Decode checks it with json.Valid first): it only finds where
// each name and value ends. Every index is still bounds-checked, so no input
// can make it panic.
type members struct {
	b []byte
	i int
}

// newMembers starts an iteration over obj, whose first non-space byte is '{'.
func newMembers(obj []byte) members {
	return members{b: obj, i: skipSpace(obj, 0) + 1}
}

// next returns the next member's decoded name and raw value; ok is false
// after the last one.
func (m *members) next() (name, val []byte, ok bool) {
	b := m.b
	i := skipSpace(b, m.i)
	if i < len(b) && b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		return nil, nil, false
	}
	end := stringEnd(b, i)
	if end < i+2 {
		return nil, nil, false
	}
	name = b[i+1 : end-1]
	if bytes.IndexByte(name, '\\') >= 0 {
		name = unquote(b[i:end])
	}
	i = skipSpace(b, end)
	if i >= len(b) || b[i] != ':' {
		return nil, nil, false
	}
	i = skipSpace(b, i+1)
	if i >= len(b) {
		return nil, nil, false
	}
	end = valueEnd(b, i)
	m.i = end
	return name, b[i:end], true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the string literal starting at b[i].
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); {
		switch b[i] {
		case '\\':
			i += 2
		case '"':
			return i + 1
		default:
			i++
		}
	}
	return len(b)
}

// valueEnd returns the index just past the JSON value starting at b[i]. It
// walks nested values with a depth counter, not recursion, so deep nesting
// costs no stack.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return len(b)
	}
}
