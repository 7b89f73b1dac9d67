// Package httpx is the one place agentwire's HTTP answers are encoded and
// request bodies decoded: the JSON writers, the error body of the public
// protocol package and the bounded JSON body decoder. The API handlers
// (server), the /ws pre-upgrade refusals (ws) and the page (web) all answer
// through it, so every error has the same shape and the same headers.
package httpx

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

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
	if err := json.Unmarshal(body, v); err != nil {
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

// jsonErrText describes a decode error without quoting the body.
func jsonErrText(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "field " + te.Field + " has the wrong type"
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
