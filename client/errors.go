package client

import (
	"errors"
	"fmt"

	"github.com/agentwire/agentwire/protocol"
)

// ErrClosed is returned by requests on a Conn that Close stopped, or that
// stopped on its own (see Conn.Err) before the answer came.
var ErrClosed = errors.New("client: connection closed")

// Error is an error frame answering a request: Code is the contract's
// (protocol.CodeNotFound, protocol.CodeTooManyRuns, …), Ref the request's id.
type Error = protocol.Error

// HTTPError is a non-2xx answer of the HTTP API, or of the WebSocket
// handshake (401 unauthorized, 403 forbidden_origin, 429 too_many_connections).
type HTTPError struct {
	Status  int
	Code    protocol.ErrorCode // "" when the body was not the contract's
	Message string
}

func (e *HTTPError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("agentwire: HTTP %d", e.Status)
	}
	return fmt.Sprintf("agentwire: HTTP %d: %s: %s", e.Status, e.Code, e.Message)
}

// CloseError is why a Conn stopped for good: the server closed with a code
// the contract says not to retry (protocol.ClosePolicyViolation,
// protocol.CloseTooLarge).
type CloseError struct {
	Code   protocol.CloseCode
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("agentwire: connection closed with %d: %s", e.Code, e.Reason)
}
