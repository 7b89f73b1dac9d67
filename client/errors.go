package client

import (
	"errors"
	"fmt"
)

// ErrClosed is returned by requests on a Conn that Close stopped, or that
// stopped on its own (see Conn.Err) before the answer came.
var ErrClosed = errors.New("client: connection closed")

// Error is an error frame answering a request: Code is the contract's
// (bad_json, unknown_type, invalid_message, not_found, rate_limited,
// too_many_runs, internal_error, …).
type Error struct {
	Code    string
	Message string
	Ref     string
}

func (e *Error) Error() string { return "agentwire: " + e.Code + ": " + e.Message }

// HTTPError is a non-2xx answer of the HTTP API, or of the WebSocket
// handshake (401 unauthorized, 403 forbidden_origin, 429 too_many_connections).
type HTTPError struct {
	Status  int
	Code    string
	Message string
}

func (e *HTTPError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("agentwire: HTTP %d", e.Status)
	}
	return fmt.Sprintf("agentwire: HTTP %d: %s: %s", e.Status, e.Code, e.Message)
}

// CloseError is why a Conn stopped for good: the server closed with a code
// the contract says not to retry (1008 policy violation, 1009 frame too large).
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("agentwire: connection closed with %d: %s", e.Code, e.Reason)
}
