package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/agentwire/agentwire/internal/store"
)

// threadJSON, messageJSON and runJSON are the REST shapes of the contract.
type threadJSON struct {
	ID        string    `json:"id"`
	Title     string    `json:"title"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type messageJSON struct {
	ID        string    `json:"id"`
	Role      string    `json:"role"`
	Content   string    `json:"content"`
	RunID     string    `json:"run_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

type runJSON struct {
	ID           string     `json:"id"`
	ThreadID     string     `json:"thread_id"`
	Status       string     `json:"status"`
	Agent        string     `json:"agent,omitempty"`
	StartedAt    time.Time  `json:"started_at"`
	EndedAt      *time.Time `json:"ended_at,omitempty"`
	ErrorCode    string     `json:"error_code,omitempty"`
	ErrorMessage string     `json:"error_message,omitempty"`
}

// storeFailed answers a store error: 404 for anything missing or owned by
// another user (never 403: existence is not revealed), 503 otherwise.
func storeFailed(d *Deps, w http.ResponseWriter, user, what string, err error) {
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "no such "+what)
		return
	}
	d.Logger.Error("store", "user", user, "read", what, "err", err)
	writeError(w, http.StatusServiceUnavailable, "unavailable", "store unavailable, retry")
}

func handleThreads(d *Deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, ok := userFromRequest(d, w, r)
		if !ok {
			return
		}
		threads, err := d.Store.ListThreads(r.Context(), claims.Subject, 100)
		if err != nil {
			storeFailed(d, w, claims.Subject, "threads", err)
			return
		}
		out := make([]threadJSON, 0, len(threads))
		for _, t := range threads {
			out = append(out, threadJSON{ID: t.ID, Title: t.Title, CreatedAt: t.CreatedAt.UTC(), UpdatedAt: t.UpdatedAt.UTC()})
		}
		writeJSON(w, http.StatusOK, map[string]any{"threads": out})
	})
}

func handleMessages(d *Deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, ok := userFromRequest(d, w, r)
		if !ok {
			return
		}
		msgs, err := d.Store.ListMessages(r.Context(), claims.Subject, r.PathValue("id"))
		if err != nil {
			storeFailed(d, w, claims.Subject, "thread", err)
			return
		}
		out := make([]messageJSON, 0, len(msgs))
		for _, m := range msgs {
			out = append(out, messageJSON{ID: m.ID, Role: m.Role, Content: m.Content, RunID: m.RunID, CreatedAt: m.CreatedAt.UTC()})
		}
		writeJSON(w, http.StatusOK, map[string]any{"messages": out})
	})
}

func handleRun(d *Deps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, ok := userFromRequest(d, w, r)
		if !ok {
			return
		}
		run, err := d.Store.GetRun(r.Context(), claims.Subject, r.PathValue("id"))
		if err != nil {
			storeFailed(d, w, claims.Subject, "run", err)
			return
		}
		out := runJSON{ID: run.ID, ThreadID: run.ThreadID, Status: string(run.Status), Agent: run.Agent,
			StartedAt: run.StartedAt.UTC(), ErrorCode: run.ErrorCode, ErrorMessage: run.ErrorMessage}
		if !run.EndedAt.IsZero() {
			e := run.EndedAt.UTC()
			out.EndedAt = &e
		}
		writeJSON(w, http.StatusOK, out)
	})
}
