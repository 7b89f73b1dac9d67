package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/protocol"
)

// sender acts on what a client sends, as for the user_message and
// stop_agent frames of /ws (runs.Manager): the plain-HTTP way of sending
// for clients that read their stream over SSE (GET /api/v1/stream).
type sender interface {
	UserMessage(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error)
	StopAgent(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error)
	UserInput(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error)
}

// sendTimeout bounds what one send does in the store and the stream, as a
// client frame's deadline on /ws does (ws.DefaultOpTimeout).
const sendTimeout = 10 * time.Second

// handleSendMessage is POST /api/v1/messages: the body holds the fields of a
// user_message frame (content, thread_id?, client_message_id?, id?), decoded
// and checked as the frame is; the answer is the frame's ack, or its error
// as an HTTP status (sendStatus) with the error body.
func handleSendMessage(s sender) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		f, perr := protocol.DecodeAs(protocol.TypeUserMessage, body)
		if perr != nil {
			sendError(w, perr)
			return
		}
		send(w, r, func(ctx context.Context, user string) (protocol.AckFrame, *protocol.Error) {
			return s.UserMessage(ctx, user, &f)
		})
	})
}

// handleStopRun is POST /api/v1/runs/{id}/stop: stop_agent over HTTP, on
// any node of a cluster; another user's run is 404 not_found.
func handleStopRun(s sender) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, perr := protocol.Decode(protocol.EncodeFrame(&protocol.Frame{Type: protocol.TypeStopAgent, RunID: r.PathValue("id")}))
		if perr != nil {
			sendError(w, perr)
			return
		}
		send(w, r, func(ctx context.Context, user string) (protocol.AckFrame, *protocol.Error) {
			return s.StopAgent(ctx, user, &f)
		})
	})
}

// handleRunInput is POST /api/v1/runs/{id}/input: user_input over HTTP, on
// any node of a cluster. The body holds the frame's other fields
// (request_id and one of approved, text, choice; id optional), decoded and
// checked as the frame is.
func handleRunInput(s sender) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
			sendError(w, &protocol.Error{Code: protocol.CodeBadJSON, Message: "body must be a JSON object"})
			return
		}
		fields["run_id"], _ = json.Marshal(r.PathValue("id"))
		body, _ = json.Marshal(fields)
		f, perr := protocol.DecodeAs(protocol.TypeUserInput, body)
		if perr != nil {
			sendError(w, perr)
			return
		}
		send(w, r, func(ctx context.Context, user string) (protocol.AckFrame, *protocol.Error) {
			return s.UserInput(ctx, user, &f)
		})
	})
}

// readBody reads a send's body, at most httpx.MaxBody (else 413
// too_large); false when it could not be read, answered or not (a client
// that stopped sending: nothing was read, nothing done).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, httpx.MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			httpx.Error(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "request body over 128 KiB")
		}
		return nil, false
	}
	return body, true
}

// send runs do for the request's user and answers the ack. It goes on if the
// client leaves meanwhile, as a frame's does when its socket closes: what it
// started is whole, and a retry with the same client_message_id finds it.
func send(w http.ResponseWriter, r *http.Request, do func(ctx context.Context, user string) (protocol.AckFrame, *protocol.Error)) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), sendTimeout)
	defer cancel()
	ack, perr := do(ctx, claimsFrom(r.Context()).Subject)
	if perr != nil {
		sendError(w, perr)
		return
	}
	httpx.RawJSON(w, http.StatusOK, protocol.EncodeAck(ack))
}

// sendError answers the error frame's code with its HTTP status.
func sendError(w http.ResponseWriter, e *protocol.Error) {
	httpx.Error(w, sendStatus(e.Code), e.Code, e.Message)
}

// sendStatus is the HTTP status of an error a send answers.
func sendStatus(c protocol.ErrorCode) int {
	switch c {
	case protocol.CodeBadJSON, protocol.CodeInvalidMessage, protocol.CodeUnknownType:
		return http.StatusBadRequest
	case protocol.CodeNotFound:
		return http.StatusNotFound
	case protocol.CodeConflict:
		return http.StatusConflict
	case protocol.CodeTooManyRuns, protocol.CodeRateLimited, protocol.CodeQuotaExceeded:
		return http.StatusTooManyRequests
	}
	return http.StatusServiceUnavailable // internal_error: retry (with the same client_message_id)
}
