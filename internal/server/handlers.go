package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/auth/tickets"
	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/internal/runs"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// handleNotFound answers 404 not_found for any path no route serves.
func handleNotFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.Error(w, http.StatusNotFound, protocol.CodeNotFound, "no such endpoint")
	})
}

// handleMethodNotAllowed answers 405 method_not_allowed, with Allow: allow,
// for any other method on an API path.
func handleMethodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		httpx.Error(w, http.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed, "use "+allow)
	})
}

// handleHealthz answers 200 while the process serves HTTP at all.
func handleHealthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// pinger is a backend /readyz checks.
type pinger interface {
	Ping(ctx context.Context) error
}

// handleReadyz answers 200 when the node should get new work: the stream
// and the store answer a ping and the process is not draining (draining nil:
// never); 503 otherwise. jwks (nil: no JWKS configured) reports the last
// JWKS fetch's failure, shown as detail only.
func handleReadyz(st, db pinger, draining func() bool, jwks func() error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		checks := map[string]string{"stream": "ok", "store": "ok"}
		ready := true
		if draining != nil && draining() {
			checks["process"], ready = "draining", false
		}
		if err := st.Ping(ctx); err != nil {
			checks["stream"], ready = "unreachable", false
		}
		if err := db.Ping(ctx); err != nil {
			checks["store"], ready = "unreachable", false
		}
		if jwks != nil {
			// Detail only: cached keys still verify, and every node shares
			// the one JWKS, so taking this node out would help no one.
			checks["jwks"] = "ok"
			if jwks() != nil {
				checks["jwks"] = "last fetch failed"
			}
		}
		if !ready {
			httpx.JSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "checks": checks})
			return
		}
		httpx.JSON(w, http.StatusOK, map[string]any{"status": "ok", "checks": checks})
	})
}

// handleTickets exchanges the user's JWT for a one-time ticket for /ws.
func handleTickets(issuer tickets.Store, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims := claimsFrom(r.Context())
		t, exp, err := issuer.Issue(r.Context(), claims)
		if err != nil {
			if errors.Is(err, auth.ErrExpired) || errors.Is(err, auth.ErrInvalid) {
				httpx.Error(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "token cannot be exchanged for a ticket")
				return
			}
			log.Error("issue ticket", "user", claims.Subject, "err", err)
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "could not issue a ticket, retry")
			return
		}
		httpx.JSON(w, http.StatusOK, protocol.Ticket{Ticket: t, ExpiresAt: exp.UTC()})
	})
}

// Paging of GET /api/v1/events.
const (
	defaultEventsLimit = 100
	maxEventsLimit     = 1000
	// eventsPageBytes bounds what one stream read holds while the answer is
	// written: a response of many large events is read and sent piece by
	// piece, never built whole.
	eventsPageBytes = 256 << 10
)

// handleEvents serves the replay rule of /ws over plain HTTP, at most limit
// events (default 100, at most 1000) per request; "next" is the since of the
// next request when more events remain. A position the stream cannot serve
// answers 200 with no events, "resync_required": true and the reason, so a
// polling client reloads and continues from head_seq. The answer is written
// as the stream is read.
func handleEvents(st stream.Stream, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := claimsFrom(r.Context()).Subject
		q := r.URL.Query()
		// No position (None) reads from the start of the retained history,
		// not from the head: its Seq and Epoch are zero, and Since gets it
		// without None.
		cur, err := protocol.ParseCursor(q.Get("since"), q.Get("epoch"))
		if err != nil {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, err.Error())
			return
		}
		limit := defaultEventsLimit
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > maxEventsLimit {
				httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "limit must be an integer from 1 to 1000")
				return
			}
			limit = n
		}
		cur.None = false
		lim := stream.Limit{MaxEvents: limit, MaxBytes: eventsPageBytes}
		events, pos, err := st.Since(r.Context(), user, cur, lim)
		var resync *stream.ResyncError
		switch {
		case errors.As(err, &resync):
			pos = resync.Position
		case err != nil:
			log.Error("read events", "user", user, "err", err)
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "stream backend unavailable, retry")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		bw := bufio.NewWriterSize(w, 32<<10)
		// A protocol.EventsPage. The frames are JSON already: splice them in
		// rather than re-encode.
		var b []byte
		b = append(b, `{"epoch":`...)
		b = protocol.AppendString(b, pos.Epoch)
		b = append(b, `,"head_seq":`...)
		b = strconv.AppendUint(b, pos.Head, 10)
		if resync != nil {
			b = append(b, `,"resync_required":true,"reason":`...)
			b = protocol.AppendString(b, string(resync.Reason))
		}
		b = append(b, `,"events":[`...)
		_, _ = bw.Write(b)

		// Every page stops at the head first reported, so the answer is one
		// consistent view: events up to head_seq.
		sent, last := 0, cur.Seq
		for resync == nil {
			for _, ev := range events {
				if ev.Seq > pos.Head {
					break
				}
				if sent > 0 {
					_ = bw.WriteByte(',')
				}
				_, _ = bw.Write(ev.Frame)
				sent++
				last = ev.Seq
			}
			if sent >= limit || last >= pos.Head || len(events) == 0 {
				break
			}
			lim.MaxEvents = limit - sent
			events, _, err = st.Since(r.Context(), user, protocol.Cursor{Seq: last, Epoch: cur.Epoch}, lim)
			if err != nil {
				// The status is sent: end the answer here; next leads the
				// client to the same read again (or to resync_required).
				if !errors.Is(err, stream.ErrResync) {
					log.Error("read events", "user", user, "err", err)
				}
				break
			}
		}
		b = append(b[:0], ']')
		if resync == nil && last < pos.Head {
			b = append(b, `,"next":`...)
			b = strconv.AppendUint(b, last, 10)
		}
		b = append(b, "}\n"...)
		_, _ = bw.Write(b)
		_ = bw.Flush()
	})
}

var publishType = regexp.MustCompile(`^[a-z][a-z0-9_.]{0,63}$`)

// runPublisher adds an external agent's event to a running run
// (runs.Manager).
type runPublisher interface {
	Publish(user, runID, typ string, data json.RawMessage) (stream.Event, error)
}

// publishToRun adds an external agent's event to a running run of user. The
// run's emitter keeps the per-run order: nothing after the terminal event.
func publishToRun(rn runPublisher, published prometheus.Counter, log *slog.Logger, w http.ResponseWriter, user, runID, typ string, data json.RawMessage) {
	if runID == "" {
		httpx.Error(w, http.StatusConflict, protocol.CodeReservedType,
			"type "+typ+" is an agent event: it needs the run_id of a run of that user that is still running")
		return
	}
	ev, err := rn.Publish(user, runID, typ, data)
	switch {
	case err == nil:
		published.Inc()
		httpx.JSON(w, http.StatusOK, protocol.PublishResponse{Seq: ev.Seq, Epoch: ev.Epoch})
	case errors.Is(err, runs.ErrNotRunning):
		httpx.Error(w, http.StatusConflict, protocol.CodeRunNotRunning,
			"type "+typ+" is an agent event: it is accepted only for a run of that user that is still running")
	case errors.Is(err, runs.ErrBadEvent), errors.Is(err, runs.ErrUnknownToolCall):
		httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, err.Error())
	default:
		log.Error("publish to run", "user", user, "run", runID, "err", err)
		httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "stream backend unavailable, retry")
	}
}

// Field bounds of POST /api/v1/publish.
const (
	maxUserID  = auth.MaxSubject
	maxKeyLen  = 128
	maxDataLen = 64 << 10
)

// handlePublish appends a server's event to a user's stream (POST
// /api/v1/publish), or to a running run for the agent event types;
// published counts the events accepted.
func handlePublish(st stream.Stream, rn runPublisher, published prometheus.Counter, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// JSON is UTF-8 (RFC 8259), and encoding/json lets other bytes
		// through inside data: one such byte appended to the stream would go
		// out in every later text frame of the user, which compliant clients
		// must fail (1007), so the whole body is checked first.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, httpx.MaxBody))
		if err != nil {
			httpx.Error(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "request body over 128 KiB")
			return
		}
		if !utf8.Valid(body) {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidJSON, "request body is not valid UTF-8")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var req protocol.PublishRequest
		if !httpx.Decode(w, r, &req) {
			return
		}
		switch {
		case !isKey(req.UserID) || !isKey(req.ThreadID) || !isKey(req.RunID) || !isKey(req.IdempotencyKey):
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "user_id, thread_id, run_id and idempotency_key must not contain control characters")
			return
		case req.UserID == "" || len(req.UserID) > maxUserID:
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "user_id is required (1-256 bytes)")
			return
		case !publishType.MatchString(req.Type):
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "type must match ^[a-z][a-z0-9_.]{0,63}$")
			return
		case len(req.ThreadID) > maxKeyLen || len(req.RunID) > maxKeyLen || len(req.IdempotencyKey) > maxKeyLen:
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "thread_id, run_id and idempotency_key are at most 128 bytes")
			return
		case len(req.Data) > maxDataLen:
			httpx.Error(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "data is over 64 KiB")
			return
		}
		data := bytes.TrimSpace(req.Data)
		if len(data) == 0 || bytes.Equal(data, []byte("null")) {
			data = nil
		} else if data[0] != '{' {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "data must be a JSON object")
			return
		} else {
			var compact bytes.Buffer
			if err := json.Compact(&compact, data); err != nil {
				httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "data must be a JSON object")
				return
			}
			data = compact.Bytes()
		}
		if protocol.RunEventType(req.Type) {
			publishToRun(rn, published, log, w, req.UserID, req.RunID, req.Type, data)
			return
		}
		ev, err := st.Append(r.Context(), req.UserID, stream.Record{
			Type: req.Type, ThreadID: req.ThreadID, RunID: req.RunID, Data: data, IdempotencyKey: req.IdempotencyKey,
		})
		if err != nil {
			log.Error("publish", "user", req.UserID, "type", req.Type, "err", err)
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "stream backend unavailable, retry with the same idempotency_key")
			return
		}
		published.Inc()
		httpx.JSON(w, http.StatusOK, protocol.PublishResponse{Seq: ev.Seq, Epoch: ev.Epoch})
	})
}

// isKey reports whether the id s has no C0 control character nor DEL (the
// rule client frames follow too): PostgreSQL refuses NUL in text, and a
// control character in an id only hides what it is.
func isKey(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

var devUser = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)

// handleDevLogin signs a JWT for any user_id (POST /auth/dev-login, --dev
// only) with signer (nil: 501), valid for ttl, with issuer and audience.
func handleDevLogin(signer *auth.Signer, ttl time.Duration, issuer, audience string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req protocol.DevLoginRequest
		if !httpx.Decode(w, r, &req) {
			return
		}
		if !devUser.MatchString(req.UserID) {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "user_id must be 1-64 characters of A-Z a-z 0-9 _ . @ -")
			return
		}
		if signer == nil {
			httpx.Error(w, http.StatusNotImplemented, protocol.CodeNoSigningKey, "dev login needs an HS256 secret (--jwt-secret or the generated one)")
			return
		}
		tok, exp, err := signer.Sign(req.UserID, ttl, issuer, audience)
		if err != nil {
			httpx.Error(w, http.StatusInternalServerError, protocol.CodeInternal, "could not sign a token")
			return
		}
		httpx.JSON(w, http.StatusOK, protocol.DevLoginResponse{Token: tok, ExpiresAt: exp.UTC()})
	})
}
