package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentwire/agentwire/internal/admin"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/protocol"
)

// adminKeyName is the context key of the admin key's name.
type adminKeyName struct{}

func adminKeyFrom(ctx context.Context) string {
	n, _ := ctx.Value(adminKeyName{}).(string)
	return n
}

// requireAdmin returns the middleware of the admin API: the bearer must be
// one of the admin keys. A publish API key or a user's valid JWT is 403
// forbidden (right credentials, wrong endpoint); anything else is 401. Each
// refusal counts in failures as "admin_key".
func requireAdmin(keys *auth.NamedKeys, apiKeys *auth.APIKeys, users Verifier, failures *prometheus.CounterVec) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := auth.BearerToken(r)
			name, admin := keys.Check(tok)
			if admin {
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), adminKeyName{}, name)))
				return
			}
			failures.WithLabelValues("admin_key").Inc()
			if ok && apiKeys != nil && apiKeys.Check(tok) {
				httpx.Error(w, http.StatusForbidden, protocol.CodeForbidden, "a publish API key cannot call the admin API: use a key from --admin-keys")
				return
			}
			if ok && users != nil {
				if _, err := users.Verify(r.Context(), tok); err == nil {
					httpx.Error(w, http.StatusForbidden, protocol.CodeForbidden, "a user's token cannot call the admin API: use a key from --admin-keys")
					return
				}
			}
			httpx.Error(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "send Authorization: Bearer <admin key> with a key from --admin-keys")
		})
	}
}

// adminDeps is what the admin handlers use.
type adminDeps struct {
	bus         admin.Bus
	revocations admin.Revocations
	store       store.Store
	runs        sender
	log         *slog.Logger
}

// adminWait bounds the wait for every node's answer to a connection list.
const adminWait = 2 * time.Second

// pathUser is the {user} of an admin path, or "" after answering 400.
func pathUser(w http.ResponseWriter, r *http.Request) string {
	u := r.PathValue("user")
	if u == "" || len(u) > maxUserID || !isKey(u) {
		httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "user must be 1-256 bytes without control characters")
		return ""
	}
	return u
}

// logAction logs an admin action with the name of the key that made it.
func (d *adminDeps) logAction(r *http.Request, action string, attrs ...any) {
	d.log.Info("admin action", append([]any{"key", adminKeyFrom(r.Context()), "action", action}, attrs...)...)
}

// handleAdminConns is GET /api/v1/admin/users/{user}/connections: the
// user's live connections on every node.
func handleAdminConns(d *adminDeps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := pathUser(w, r)
		if user == "" {
			return
		}
		d.logAction(r, "list_connections", "user", user)
		ctx, cancel := context.WithTimeout(r.Context(), adminWait)
		defer cancel()
		conns, asked, answered, err := admin.ListConns(ctx, d.bus, user, ulid.Make().String())
		if err != nil {
			d.log.Error("admin: list connections", "user", user, "err", err)
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "cluster coordination unavailable, retry")
			return
		}
		httpx.JSON(w, http.StatusOK, protocol.AdminConnections{
			UserID: user, Connections: conns, Nodes: asked, Answered: orEmpty(answered),
			Complete: len(answered) >= len(asked),
		})
	})
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Admin run pages.
const (
	adminRunsDefault = 100
	adminRunsMax     = 500
)

// handleAdminRuns is GET /api/v1/admin/runs?user=&after=&limit=: the
// running and waiting runs of every user (or one), oldest first, paged.
func handleAdminRuns(d *adminDeps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		query := store.ActiveRunQuery{UserID: q.Get("user"), Limit: adminRunsDefault}
		if query.UserID != "" && (len(query.UserID) > maxUserID || !isKey(query.UserID)) {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "user must be 1-256 bytes without control characters")
			return
		}
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > adminRunsMax {
				httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "limit must be 1-500")
				return
			}
			query.Limit = n
		}
		if v := q.Get("after"); v != "" {
			c, ok := parseRunCursor(v)
			if !ok {
				httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "after must be the next of a previous page")
				return
			}
			query.After = c
		}
		runs, more, err := d.store.ListActiveRuns(r.Context(), query)
		if err != nil {
			d.log.Error("admin: list runs", "err", err)
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "store unavailable, retry")
			return
		}
		next := ""
		if more && len(runs) > 0 {
			last := runs[len(runs)-1]
			next = strconv.FormatInt(last.StartedAt.UnixMilli(), 10) + "." + last.ID
		}
		httpx.List(w, "runs", runs, next, func(run store.Run) any { return adminRun(run) })
	})
}

func adminRun(r store.Run) protocol.AdminRun {
	ar := protocol.AdminRun{RunID: r.ID, ThreadID: r.ThreadID, UserID: r.UserID, Agent: r.Agent, Status: string(r.Status),
		Node: r.Node, StartedAt: r.StartedAt}
	if !r.LeaseUntil.IsZero() {
		ar.LeaseUntil = &r.LeaseUntil
	}
	return ar
}

// parseRunCursor reads a next of handleAdminRuns: <started ms>.<run id>.
func parseRunCursor(v string) (store.RunCursor, bool) {
	ms, id, ok := strings.Cut(v, ".")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil || id == "" || len(id) > maxKeyLen || !isKey(id) {
		return store.RunCursor{}, false
	}
	return store.RunCursor{StartedAt: time.UnixMilli(n).UTC(), ID: id}, true
}

// handleAdminCancel is POST /api/v1/admin/runs/{id}/cancel: the run ends
// as its user's stop would end it, on whichever node runs it.
func handleAdminCancel(d *adminDeps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if id == "" || len(id) > maxKeyLen || !isKey(id) {
			httpx.Error(w, http.StatusNotFound, protocol.CodeNotFound, "no such run")
			return
		}
		run, err := d.store.FindRun(r.Context(), id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			httpx.Error(w, http.StatusNotFound, protocol.CodeNotFound, "no such run")
			return
		case err != nil:
			d.log.Error("admin: find run", "run", id, "err", err)
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "store unavailable, retry")
			return
		case run.Status.Terminal():
			httpx.Error(w, http.StatusConflict, protocol.CodeRunNotRunning, "the run already ended ("+string(run.Status)+")")
			return
		}
		d.logAction(r, "cancel_run", "user", run.UserID, "run", run.ID, "node", run.Node)
		f := protocol.Frame{Type: protocol.TypeStopAgent, RunID: run.ID}
		if _, perr := d.runs.StopAgent(r.Context(), run.UserID, &f); perr != nil {
			sendError(w, perr)
			return
		}
		httpx.JSON(w, http.StatusOK, protocol.AdminCancel{RunID: run.ID, UserID: run.UserID, ThreadID: run.ThreadID, Node: run.Node})
	})
}

// handleAdminDisconnect is POST /api/v1/admin/users/{user}/disconnect:
// every connection of the user, on every node, closes with 4003.
func handleAdminDisconnect(d *adminDeps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := pathUser(w, r)
		if user == "" {
			return
		}
		d.logAction(r, "disconnect", "user", user)
		if err := d.bus.Publish(r.Context(), admin.Action{Kind: admin.KindDisconnect, User: user, By: adminKeyFrom(r.Context())}); err != nil {
			d.log.Error("admin: disconnect", "user", user, "err", err)
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "cluster coordination unavailable, retry")
			return
		}
		httpx.JSON(w, http.StatusOK, protocol.AdminUserAction{UserID: user, Action: admin.KindDisconnect})
	})
}

// revokeAhead is how far in the future a revocation's before may lie
// (clock skew between the admin and the server).
const revokeAhead = time.Minute

// handleAdminRevoke is POST /api/v1/admin/users/{user}/revoke, body
// {"before": RFC 3339} (optional, default now): the user's tokens issued
// before it, and those without iat, are refused from now on, and the
// connections that came with one close with 4003 on every node.
func handleAdminRevoke(d *adminDeps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := pathUser(w, r)
		if user == "" {
			return
		}
		var req protocol.AdminRevokeRequest
		if r.ContentLength != 0 && !httpx.DecodeMax(w, r, &req, 4<<10) {
			return
		}
		now := time.Now()
		before := now
		if req.Before != nil {
			before = *req.Before
			if before.After(now.Add(revokeAhead)) {
				httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "before must not be in the future")
				return
			}
		}
		d.logAction(r, "revoke", "user", user, "before", before.UTC().Format(time.RFC3339Nano))
		// The revocation is stored first: a connect that registers after the
		// broadcast below was applied still finds it (ws.Config.Revocations).
		if err := d.revocations.Revoke(r.Context(), user, before); err != nil {
			d.log.Error("admin: revoke", "user", user, "err", err)
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "cluster coordination unavailable, retry")
			return
		}
		if err := d.bus.Publish(r.Context(), admin.Action{Kind: admin.KindRevoke, User: user, Before: before.UnixMilli(), By: adminKeyFrom(r.Context())}); err != nil {
			d.log.Error("admin: revoke broadcast", "user", user, "err", err)
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "revocation stored; closing open connections failed, retry")
			return
		}
		httpx.JSON(w, http.StatusOK, protocol.AdminUserAction{UserID: user, Action: admin.KindRevoke, RevokedBefore: before.UTC().Truncate(time.Millisecond)})
	})
}

// handleAdminNodes is GET /api/v1/admin/nodes: the live nodes.
func handleAdminNodes(d *adminDeps) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nodes, err := d.bus.Nodes(r.Context())
		if err != nil {
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "cluster coordination unavailable, retry")
			return
		}
		httpx.JSON(w, http.StatusOK, protocol.AdminNodes{Nodes: orEmpty(nodes)})
	})
}
