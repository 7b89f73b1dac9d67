// Package httpx is the one place agentwire's HTTP answers are encoded and
// request bodies decoded: the JSON writers, the error body of the public
// protocol package and the bounded JSON body decoder. The API handlers
// (server), the /ws pre-upgrade refusals (ws) and the page (web) all answer
// through it, so every error has the same shape and the same headers.
package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	sjson "github.com/segmentio/encoding/json"

	"github.com/agentwire/agentwire/protocol"
)

// MaxBody bounds every JSON request body (128 KiB).
const MaxBody = 128 << 10

// JSON answers v as JSON with Cache-Control: no-store. API JSON is not
// HTML: < > & are written as they are, not as \u003c escapes (six bytes for
// one).
func JSON(w http.ResponseWriter, status int, v any) {
	setJSONHeaders(w.Header())
	w.WriteHeader(status)
	_ = newEncoder(w).Encode(v)
}

// RawJSON answers b, JSON already encoded (a protocol frame, say), with the
// headers of JSON.
func RawJSON(w http.ResponseWriter, status int, b []byte) {
	setJSONHeaders(w.Header())
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// Header values of every JSON answer, one slice each for all answers.
var (
	valJSON    = []string{"application/json"}
	valNoStore = []string{"no-store"}
)

// setJSONHeaders sets Content-Type: application/json and Cache-Control:
// no-store.
func setJSONHeaders(h http.Header) {
	SetShared(h, "Content-Type", valJSON)
	SetShared(h, "Cache-Control", valNoStore)
}

// SetShared sets header key (canonical already) to v, a one-element slice
// shared by every answer: what Header.Set does without allocating the slice
// or canonicalising the key, on the hot path of every request. Shared is
// safe because nothing writes into a header's values in place: Header.Add
// appends to a full slice (a copy), net/http clones the map before writing.
func SetShared(h http.Header, key string, v []string) {
	h[key] = v[:1:1]
}

// Error answers the contract's error body,
// {"error":{"code":code,"message":msg}}, with status.
func Error(w http.ResponseWriter, status int, code protocol.ErrorCode, msg string) {
	JSON(w, status, protocol.ErrorBody{Error: protocol.ErrorDetail{Code: code, Message: msg}})
}

// List answers a 200 page (protocol.ThreadsPage, protocol.MessagesPage:
// {"<name>":[…],"next":…,"has_more":…}) item by item, so the answer is never
// held whole in memory: each item is encoded into the response's buffer,
// which the server flushes to the socket as it fills. next is null when
// empty, and has_more is whether next is set.
func List[T any](w http.ResponseWriter, name string, items []T, next string, item func(T) any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := newEncoder(w)
	_, _ = io.WriteString(w, `{"`+name+`":[`)
	for i, it := range items {
		if i > 0 {
			_, _ = io.WriteString(w, ",")
		}
		if err := enc.Encode(item(it)); err != nil {
			return // the client is gone or too slow (write deadline): the connection closes
		}
	}
	_, _ = io.WriteString(w, `],"`+protocol.ListNext+`":`)
	if next == "" {
		_, _ = io.WriteString(w, "null")
	} else {
		_ = enc.Encode(next)
	}
	_, _ = io.WriteString(w, `,"`+protocol.ListHasMore+`":`+strconv.FormatBool(next != "")+"}\n")
}

func newEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

// Decode reads the request body, one JSON object, into v, refusing trailing
// data and bodies over MaxBody. On failure it writes the error answer
// itself (413 too_large, 400 bad_json) and reports false.
func Decode(w http.ResponseWriter, r *http.Request, v any) bool {
	return DecodeMax(w, r, v, MaxBody)
}

// DecodeMax is Decode with a bound of max bytes (a multiple of 1 KiB) for
// the bodies that carry more than a request's fields: an AG-UI run request
// holds the conversation so far.
func DecodeMax(w http.ResponseWriter, r *http.Request, v any, max int64) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			Error(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "request body over "+strconv.FormatInt(max>>10, 10)+" KiB")
			return false
		}
		Error(w, http.StatusBadRequest, protocol.CodeBadJSON, "request body is not a valid JSON object: "+jsonErrText(err))
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		Error(w, http.StatusBadRequest, protocol.CodeBadJSON, "request body has data after the JSON object")
		return false
	}
	return true
}

// DecodeBytes is Decode of a body already read (and bounded) by the
// caller, with the same answers: one json.Unmarshal, no second scan.
func DecodeBytes(w http.ResponseWriter, body []byte, v any) bool {
	if err := Unmarshal(body, v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) && strings.Contains(se.Error(), "after top-level value") {
			Error(w, http.StatusBadRequest, protocol.CodeBadJSON, "request body has data after the JSON object")
			return false
		}
		Error(w, http.StatusBadRequest, protocol.CodeBadJSON, "request body is not a valid JSON object: "+jsonErrText(err))
		return false
	}
	return true
}

// MaxDepth bounds the nesting of arrays and objects in a request body:
// encoding/json's own bound, kept by Unmarshal.
const MaxDepth = 10000

// ErrTooDeep is Unmarshal's answer to a body nested deeper than MaxDepth.
var ErrTooDeep = errors.New("json: nested deeper than 10000 levels")

// Unmarshal is json.Unmarshal for the request bodies on the hot paths
// (publish, batch, stream lines): the same results and error types
// (segmentio/encoding/json is a drop-in of encoding/json: it aliases its
// SyntaxError and UnmarshalTypeError, copies RawMessage bytes, validates
// everything it skips), decoded in one pass instead of a validation pass
// then a reflective one: about 4.5× faster on a batch of 100 events, the
// largest single cost of the batch path. That decoder recurses without a
// bound, so a body nested deeper than MaxDepth (which encoding/json refuses
// too) is refused first, by depthWithin: without it, 1 MiB of '[' would
// grow a request's stack to hundreds of MiB.
func Unmarshal(b []byte, v any) error {
	if !depthWithin(b, MaxDepth) {
		return ErrTooDeep
	}
	return sjson.Unmarshal(b, v)
}

// depthWithin reports whether no array or object in b (JSON or not: the
// decoder judges the rest) is nested more than max deep, counting only
// brackets outside strings.
func depthWithin(b []byte, max int) bool {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			// Skip to the closing quote: the next '"' not escaped, i.e.
			// preceded by an even number of backslashes.
			for {
				j := bytes.IndexByte(b[i+1:], '"')
				if j < 0 {
					return true // unterminated: the decoder refuses it
				}
				i += 1 + j
				k := i - 1
				for k >= 0 && b[k] == '\\' {
					k--
				}
				if (i-1-k)%2 == 0 {
					break
				}
			}
		case '[', '{':
			if depth++; depth > max {
				return false
			}
		case ']', '}':
			depth--
		}
	}
	return true
}

// jsonErrText describes a decode error without quoting the body.
func jsonErrText(err error) string {
	if errors.Is(err, ErrTooDeep) {
		return "nested deeper than 10000 levels"
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "field " + fieldPath(te.Field) + " has the wrong type"
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "syntax error"
	}
	if errors.Is(err, io.EOF) {
		return "empty body"
	}
	return "malformed"
}

// fieldPath is an UnmarshalTypeError's Field as encoding/json writes it:
// segmentio/encoding/json includes array indexes ("events.1.type"), which
// are dropped ("events.type").
func fieldPath(f string) string {
	if !strings.ContainsAny(f, "0123456789") {
		return f
	}
	parts := strings.Split(f, ".")
	out := parts[:0]
	for _, p := range parts {
		if _, err := strconv.Atoi(p); err != nil {
			out = append(out, p)
		}
	}
	return strings.Join(out, ".")
}
