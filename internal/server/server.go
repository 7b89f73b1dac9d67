// Package server wires agentwire's HTTP surface: every route is in routes.go,
// every handler is a function returning an http.Handler, and NewServer takes
// all dependencies explicitly.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/runs"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// Verifier verifies user JWTs.
type Verifier interface {
	Verify(ctx context.Context, token string) (auth.Claims, error)
}

// Deps are the server's dependencies, built by app.New.
type Deps struct {
	Logger   *slog.Logger
	Metrics  *metrics.Metrics
	Stream   stream.Stream
	Store    store.Store
	Runs     *runs.Manager
	Verifier Verifier
	Tickets  auth.TicketStore
	APIKeys  *auth.APIKeys
	// Signer signs dev-login tokens; DevLogin enables POST /auth/dev-login.
	Signer   *auth.Signer
	DevLogin bool
	DevTTL   time.Duration
	Issuer   string
	Audience string
	// WS is the /ws endpoint.
	WS http.Handler
	// Draining reports that the process is shutting down: /readyz fails so
	// load balancers stop sending new work. Nil means never.
	Draining func() bool
	// BodyTimeout and WriteTimeout bound every request but the WebSocket
	// upgrade (see withDeadlines); MaxReadsPerUser bounds one user's list
	// requests in flight (see limitReads). Zero means the Default….
	BodyTimeout     time.Duration
	WriteTimeout    time.Duration
	MaxReadsPerUser int
	// JWKS reports the last JWKS fetch's failure (nil: fine), shown by
	// /readyz; nil when no JWKS is configured.
	JWKS func() error
}

// NewServer returns the complete HTTP handler.
func NewServer(d Deps) http.Handler {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.DevTTL <= 0 {
		d.DevTTL = 12 * time.Hour
	}
	if d.BodyTimeout <= 0 {
		d.BodyTimeout = DefaultBodyTimeout
	}
	if d.WriteTimeout <= 0 {
		d.WriteTimeout = DefaultWriteTimeout
	}
	if d.MaxReadsPerUser <= 0 {
		d.MaxReadsPerUser = DefaultMaxReadsPerUser
	}
	mux := http.NewServeMux()
	addRoutes(mux, &d)
	return withDeadlines(d.BodyTimeout, d.WriteTimeout, secureHeaders(mux))
}

// writeJSON answers v as JSON. API JSON is not HTML: < > & are written as
// they are, not as \u003c escapes (six bytes for one).
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// writeList answers a page (protocol.ThreadsPage, protocol.MessagesPage:
// {"<name>":[…],"next":…,"has_more":…}) item by item, so the answer is never
// held whole in memory: each item is encoded into the response's buffer,
// which the server flushes to the socket as it fills. next is null when
// empty.
func writeList[T any](w http.ResponseWriter, name string, items []T, next string, item func(T) any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
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

// writeError answers the contract's error body.
func writeError(w http.ResponseWriter, status int, code protocol.ErrorCode, msg string) {
	writeJSON(w, status, protocol.ErrorBody{Error: protocol.ErrorDetail{Code: code, Message: msg}})
}

// maxBodyBytes bounds every JSON request body.
const maxBodyBytes = 128 << 10

// decodeBody reads one JSON object into v, refusing trailing data and bodies
// over maxBodyBytes. It writes the error answer itself and reports false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "request body over 128 KiB")
			return false
		}
		writeError(w, http.StatusBadRequest, protocol.CodeBadJSON, "request body is not a valid JSON object: "+jsonErrText(err))
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, protocol.CodeBadJSON, "request body has data after the JSON object")
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

// claimsKey is the context key of the claims a middleware (limitReads)
// already verified for the request.
type claimsKey struct{}

// userFromRequest verifies the bearer JWT of a user endpoint, once: claims a
// middleware verified are taken from the request's context.
func userFromRequest(d *Deps, w http.ResponseWriter, r *http.Request) (auth.Claims, bool) {
	if c, ok := r.Context().Value(claimsKey{}).(auth.Claims); ok {
		return c, true
	}
	tok, ok := auth.BearerToken(r)
	if !ok {
		d.Metrics.AuthFailures.WithLabelValues("missing").Inc()
		writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "send Authorization: Bearer <JWT>")
		return auth.Claims{}, false
	}
	c, err := d.Verifier.Verify(r.Context(), tok)
	if err != nil {
		d.Metrics.AuthFailures.WithLabelValues(auth.Reason(err)).Inc()
		msg := "invalid token"
		if errors.Is(err, auth.ErrExpired) {
			msg = "token expired"
		}
		writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, msg)
		return auth.Claims{}, false
	}
	return c, true
}

// requireAPIKey guards the server endpoints.
func requireAPIKey(d *Deps, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, ok := auth.BearerToken(r)
		if !ok || d.APIKeys == nil || !d.APIKeys.Check(key) {
			d.Metrics.AuthFailures.WithLabelValues("api_key").Inc()
			writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "send Authorization: Bearer <API key> with a key from --api-keys")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}
