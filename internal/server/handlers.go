package server

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/auth/tickets"
	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
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
