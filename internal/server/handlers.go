package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/runs"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

func handleNotFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, protocol.CodeNotFound, "no such endpoint")
	})
}

func handleMethodNotAllowed(allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed, "use "+allow)
	})
}

func handleHealthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

func handleReadyz(d *Deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		checks := map[string]string{"stream": "ok", "store": "ok"}
		ready := true
		if d.Draining != nil && d.Draining() {
			checks["process"], ready = "draining", false
		}
		if err := d.Stream.Ping(ctx); err != nil {
			checks["stream"], ready = "unreachable", false
		}
		if err := d.Store.Ping(ctx); err != nil {
			checks["store"], ready = "unreachable", false
		}
		if d.JWKS != nil {
			// Detail only: cached keys still verify, and every node shares
			// the one JWKS, so taking this node out would help no one.
			checks["jwks"] = "ok"
			if d.JWKS() != nil {
				checks["jwks"] = "last fetch failed"
			}
		}
		if !ready {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "checks": checks})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "checks": checks})
	})
}

func handleTickets(d *Deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, ok := userFromRequest(d, w, r)
		if !ok {
			return
		}
		t, exp, err := d.Tickets.Issue(r.Context(), claims)
		if err != nil {
			if errors.Is(err, auth.ErrExpired) || errors.Is(err, auth.ErrInvalid) {
				writeError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "token cannot be exchanged for a ticket")
				return
			}
			d.Logger.Error("issue ticket", "user", claims.Subject, "err", err)
			writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "could not issue a ticket, retry")
			return
		}
		writeJSON(w, http.StatusOK, protocol.Ticket{Ticket: t, ExpiresAt: exp.UTC()})
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
func handleEvents(d *Deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, ok := userFromRequest(d, w, r)
		if !ok {
			return
		}
		q := r.URL.Query()
		// No position (None) reads from the start of the retained history:
		// its Seq and Epoch are zero.
		cur, err := protocol.ParseCursor(q.Get("since"), q.Get("epoch"))
		if err != nil {
			writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, err.Error())
			return
		}
		limit := defaultEventsLimit
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > maxEventsLimit {
				writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "limit must be an integer from 1 to 1000")
				return
			}
			limit = n
		}
		since, epoch := cur.Seq, cur.Epoch
		user := claims.Subject
		lim := stream.Limit{MaxEvents: limit, MaxBytes: eventsPageBytes}
		events, pos, err := d.Stream.Since(r.Context(), user, since, epoch, lim)
		var resync *stream.ResyncError
		switch {
		case errors.As(err, &resync):
			pos = resync.Position
		case err != nil:
			d.Logger.Error("read events", "user", user, "err", err)
			writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "stream backend unavailable, retry")
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
		sent, last := 0, since
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
			events, _, err = d.Stream.Since(r.Context(), user, last, epoch, lim)
			if err != nil {
				// The status is sent: end the answer here; next leads the
				// client to the same read again (or to resync_required).
				if !errors.Is(err, stream.ErrResync) {
					d.Logger.Error("read events", "user", user, "err", err)
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

// publishToRun adds an external agent's event to a running run of user. The
// run's emitter keeps the per-run order: nothing after the terminal event.
func publishToRun(d *Deps, w http.ResponseWriter, user, runID, typ string, data json.RawMessage) {
	if runID == "" {
		writeError(w, http.StatusConflict, protocol.CodeReservedType,
			"type "+typ+" is an agent event: it needs the run_id of a run of that user that is still running")
		return
	}
	ev, err := d.Runs.Publish(user, runID, typ, data)
	switch {
	case err == nil:
		d.Metrics.Published.Inc()
		writeJSON(w, http.StatusOK, protocol.PublishResponse{Seq: ev.Seq, Epoch: ev.Epoch})
	case errors.Is(err, runs.ErrNotRunning):
		writeError(w, http.StatusConflict, protocol.CodeRunNotRunning,
			"type "+typ+" is an agent event: it is accepted only for a run of that user that is still running")
	case errors.Is(err, runs.ErrBadEvent), errors.Is(err, runs.ErrUnknownToolCall):
		writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, err.Error())
	default:
		d.Logger.Error("publish to run", "user", user, "run", runID, "err", err)
		writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "stream backend unavailable, retry")
	}
}

// Field bounds of POST /api/v1/publish.
const (
	maxUserID  = auth.MaxSubject
	maxKeyLen  = 128
	maxDataLen = 64 << 10
)

func handlePublish(d *Deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// JSON is UTF-8 (RFC 8259), and encoding/json lets other bytes
		// through inside data: one such byte appended to the stream would go
		// out in every later text frame of the user, which compliant clients
		// must fail (1007), so the whole body is checked first.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "request body over 128 KiB")
			return
		}
		if !utf8.Valid(body) {
			writeError(w, http.StatusBadRequest, protocol.CodeInvalidJSON, "request body is not valid UTF-8")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var req protocol.PublishRequest
		if !decodeBody(w, r, &req) {
			return
		}
		switch {
		case !isKey(req.UserID) || !isKey(req.ThreadID) || !isKey(req.RunID) || !isKey(req.IdempotencyKey):
			writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "user_id, thread_id, run_id and idempotency_key must not contain control characters")
			return
		case req.UserID == "" || len(req.UserID) > maxUserID:
			writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "user_id is required (1-256 bytes)")
			return
		case !publishType.MatchString(req.Type):
			writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "type must match ^[a-z][a-z0-9_.]{0,63}$")
			return
		case len(req.ThreadID) > maxKeyLen || len(req.RunID) > maxKeyLen || len(req.IdempotencyKey) > maxKeyLen:
			writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "thread_id, run_id and idempotency_key are at most 128 bytes")
			return
		case len(req.Data) > maxDataLen:
			writeError(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "data is over 64 KiB")
			return
		}
		data := bytes.TrimSpace(req.Data)
		if len(data) == 0 || bytes.Equal(data, []byte("null")) {
			data = nil
		} else if data[0] != '{' {
			writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "data must be a JSON object")
			return
		} else {
			var compact bytes.Buffer
			if err := json.Compact(&compact, data); err != nil {
				writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "data must be a JSON object")
				return
			}
			data = compact.Bytes()
		}
		if protocol.RunEventType(req.Type) {
			publishToRun(d, w, req.UserID, req.RunID, req.Type, data)
			return
		}
		ev, err := d.Stream.Append(r.Context(), req.UserID, stream.Record{
			Type: req.Type, ThreadID: req.ThreadID, RunID: req.RunID, Data: data, IdempotencyKey: req.IdempotencyKey,
		})
		if err != nil {
			d.Logger.Error("publish", "user", req.UserID, "type", req.Type, "err", err)
			writeError(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "stream backend unavailable, retry with the same idempotency_key")
			return
		}
		d.Metrics.Published.Inc()
		writeJSON(w, http.StatusOK, protocol.PublishResponse{Seq: ev.Seq, Epoch: ev.Epoch})
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

func handleDevLogin(d *Deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req protocol.DevLoginRequest
		if !decodeBody(w, r, &req) {
			return
		}
		if !devUser.MatchString(req.UserID) {
			writeError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "user_id must be 1-64 characters of A-Z a-z 0-9 _ . @ -")
			return
		}
		if d.Signer == nil {
			writeError(w, http.StatusNotImplemented, protocol.CodeNoSigningKey, "dev login needs an HS256 secret (--jwt-secret or the generated one)")
			return
		}
		tok, exp, err := d.Signer.Sign(req.UserID, d.DevTTL, d.Issuer, d.Audience)
		if err != nil {
			writeError(w, http.StatusInternalServerError, protocol.CodeInternal, "could not sign a token")
			return
		}
		writeJSON(w, http.StatusOK, protocol.DevLoginResponse{Token: tok, ExpiresAt: exp.UTC()})
	})
}
