package stream

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Encode builds ev's wire frame:
//
//	{"type":…,"seq":…,"epoch":…,"ts":…,"thread_id":…,"run_id":…,"data":{…}}
//
// thread_id and run_id are omitted when empty. Data must be valid JSON (the
// producers validate it); nil or empty data encodes as {}. Every backend calls
// Encode once per appended event and keeps the bytes.
func Encode(ev *Event) []byte {
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
// <, > and &: it is what producers use for Record.Data, for the reason
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
