package server

import (
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/protocol"
)

// storeFailed answers a store error: 404 for anything missing or owned by
// another user (never 403: existence is not revealed), 503 otherwise.
func storeFailed(log *slog.Logger, w http.ResponseWriter, user, what string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		httpx.Error(w, http.StatusNotFound, protocol.CodeNotFound, "no such "+what)
		return
	}
	log.Error("store", "user", user, "read", what, "err", err)
	httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "store unavailable, retry")
}

// Paging of the list endpoints: limit is the page size (defaultPageLimit
// when absent, at most maxPageLimit), and a messages page also stops after
// pageBytes of content (at least one message), so no page is built bigger
// than about a MiB whatever the limit.
const (
	defaultPageLimit = store.DefaultListLimit
	maxPageLimit     = 1000
	pageBytes        = 1 << 20
)

// pageLimit parses the limit query parameter. It writes the error answer
// itself and reports false.
func pageLimit(w http.ResponseWriter, r *http.Request) (int, bool) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return defaultPageLimit, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPageLimit {
		httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "limit must be an integer from 1 to 1000")
		return 0, false
	}
	return n, true
}

// encodeThreadCursor makes the opaque `next` of GET /api/v1/threads: the
// position (updated_at, id) of the page's last thread, base64url.
func encodeThreadCursor(t store.Thread) string {
	raw := strconv.FormatInt(t.UpdatedAt.UnixMilli(), 10) + "." + t.ID
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func decodeThreadCursor(s string) (store.ThreadCursor, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return store.ThreadCursor{}, false
	}
	ms, id, ok := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || id == "" {
		return store.ThreadCursor{}, false
	}
	return store.ThreadCursor{UpdatedAt: time.UnixMilli(n).UTC(), ID: id}, true
}

// handleThreads lists the user's threads, most recently updated first, a
// page at a time: `next` is an opaque cursor to pass as `after`. The cursor
// is a position, so paging never repeats a thread; a thread updated while
// a client pages moves to the front, where a reload finds it.
func handleThreads(db store.Store, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := claimsFrom(r.Context()).Subject
		limit, ok := pageLimit(w, r)
		if !ok {
			return
		}
		q := store.ThreadQuery{Limit: limit}
		if s := r.URL.Query().Get("after"); s != "" {
			if q.After, ok = decodeThreadCursor(s); !ok {
				httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "after must be the next of a previous page")
				return
			}
		}
		threads, more, err := db.ListThreads(r.Context(), user, q)
		if err != nil {
			storeFailed(log, w, user, "threads", err)
			return
		}
		next := ""
		if more {
			next = encodeThreadCursor(threads[len(threads)-1])
		}
		httpx.List(w, protocol.ListThreads, threads, next, func(t store.Thread) any {
			return protocol.Thread{ID: t.ID, Title: t.Title, CreatedAt: t.CreatedAt.UTC(), UpdatedAt: t.UpdatedAt.UTC()}
		})
	})
}

// handleMessages lists a thread's messages oldest first, a page at a time:
// from the first message, after the message `after`, or the messages just
// before the message `before`. `next` continues in the same direction:
// pass it as `after` (or as `before` when paging with before).
func handleMessages(db store.Store, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := claimsFrom(r.Context()).Subject
		limit, ok := pageLimit(w, r)
		if !ok {
			return
		}
		qs := r.URL.Query()
		q := store.MessageQuery{After: qs.Get("after"), Before: qs.Get("before"), Limit: limit, MaxBytes: pageBytes}
		if q.After != "" && q.Before != "" {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "after and before cannot be used together")
			return
		}
		msgs, more, err := db.ListMessages(r.Context(), user, r.PathValue("id"), q)
		if errors.Is(err, store.ErrBadCursor) {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "after and before must be the id of a message of this thread")
			return
		}
		if err != nil {
			storeFailed(log, w, user, "thread", err)
			return
		}
		msgs, trs, more, err := withTranscripts(r, db, user, msgs, q.Before != "", more)
		if err != nil {
			storeFailed(log, w, user, "thread", err)
			return
		}
		next := ""
		switch {
		case !more:
		case q.Before != "":
			next = msgs[0].ID
		default:
			next = msgs[len(msgs)-1].ID
		}
		httpx.List(w, protocol.ListMessages, msgs, next, func(m store.Message) any {
			out := protocol.Message{ID: m.ID, Role: m.Role, Content: m.Content, RunID: m.RunID, CreatedAt: m.CreatedAt.UTC()}
			if t := trs[m.RunID]; t != nil && m.Role == store.RoleUser {
				out.Run = wireTranscript(t)
			}
			return out
		})
	})
}

// handleRun answers one run of the user, 404 when there is none of theirs.
func handleRun(db store.Store, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := claimsFrom(r.Context()).Subject
		run, err := db.GetRun(r.Context(), user, r.PathValue("id"))
		if err != nil {
			storeFailed(log, w, user, "run", err)
			return
		}
		out := wireRun(run)
		httpx.JSON(w, http.StatusOK, out)
	})
}

// handleRenameThread sets a thread's title: PATCH /api/v1/threads/{id}
// {"title"}. The title is trimmed and must then be 1 to store.MaxTitleRunes
// characters without control characters. Another user's thread is 404.
func handleRenameThread(db store.Store, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := claimsFrom(r.Context()).Subject
		var body struct {
			Title *string `json:"title"`
		}
		if !httpx.Decode(w, r, &body) {
			return
		}
		if body.Title == nil {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "title is required")
			return
		}
		title := strings.TrimSpace(*body.Title)
		if !store.ValidTitle(title) {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest,
				"title must be 1 to "+strconv.Itoa(store.MaxTitleRunes)+" characters, without control characters")
			return
		}
		t, err := db.RenameThread(r.Context(), user, r.PathValue("id"), title)
		if err != nil {
			storeFailed(log, w, user, "thread", err)
			return
		}
		httpx.JSON(w, http.StatusOK, protocol.Thread{ID: t.ID, Title: t.Title, CreatedAt: t.CreatedAt.UTC(), UpdatedAt: t.UpdatedAt.UTC()})
	})
}

// handleDeleteThread deletes a thread with its messages, runs and their
// transcripts: DELETE /api/v1/threads/{id}, 204. A thread with a run still
// running or waiting for input is 409 conflict (stop the run first);
// another user's thread is 404.
func handleDeleteThread(db store.Store, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := claimsFrom(r.Context()).Subject
		err := db.DeleteThread(r.Context(), user, r.PathValue("id"))
		switch {
		case errors.Is(err, store.ErrRunInProgress):
			httpx.Error(w, http.StatusConflict, protocol.CodeConflict, "the thread has a run in progress: stop it first")
		case err != nil:
			storeFailed(log, w, user, "thread", err)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
}
