package server

import (
	"net/http"

	"github.com/agentwire/agentwire/protocol"
	"github.com/agentwire/agentwire/web"
)

// addRoutes is the whole HTTP surface of agentwire, in one place: each
// handler gets only the dependencies it uses, and authentication is the
// middleware in front of it.
func addRoutes(mux *http.ServeMux, d *Deps) {
	user := requireUser(d.Verifier, d.Revocations, d.Metrics.AuthFailures)
	apiKey := requireAPIKey(d.APIKeys, d.Metrics.AuthFailures)
	// The list endpoints share a per-user bound of requests in flight.
	reads := limitReads(d.MaxReadsPerUser)

	// Browsers on other allowed origins (--allowed-origins) may call the
	// HTTP transport and the AG-UI endpoints; /ws checks origins itself.
	corsGet := allowCORS("GET", d.OriginAllowed, d.Metrics.AuthFailures)
	corsPost := allowCORS("POST", d.OriginAllowed, d.Metrics.AuthFailures)

	mux.Handle("GET /ws", d.WS)
	if d.SSE != nil {
		mux.Handle("GET /api/v1/stream", corsGet(d.SSE))
		mux.Handle("OPTIONS /api/v1/stream", corsGet(handleMethodNotAllowed("GET")))
	}
	// Sending is bounded per user like a WebSocket connection's frames.
	sends := limitRate(d.RateLimit, d.RateBurst, d.Metrics.FramesIn.WithLabelValues(protocol.CodeRateLimited.String()))
	mux.Handle("POST /api/v1/messages", corsPost(user(sends(handleSendMessage(d.Runs)))))
	mux.Handle("OPTIONS /api/v1/messages", corsPost(handleMethodNotAllowed("POST")))
	mux.Handle("POST /api/v1/runs/{id}/stop", corsPost(user(sends(handleStopRun(d.Runs)))))
	mux.Handle("OPTIONS /api/v1/runs/{id}/stop", corsPost(handleMethodNotAllowed("POST")))
	mux.Handle("POST /api/v1/runs/{id}/input", corsPost(user(sends(handleRunInput(d.Runs)))))
	mux.Handle("OPTIONS /api/v1/runs/{id}/input", corsPost(handleMethodNotAllowed("POST")))

	mux.Handle("POST /api/v1/tickets", user(handleTickets(d.Tickets, d.Logger)))
	mux.Handle("GET /api/v1/events", user(reads(handleEvents(d.Stream, d.Logger))))
	mux.Handle("GET /api/v1/threads", user(reads(handleThreads(d.Store, d.Logger))))
	mux.Handle("GET /api/v1/threads/{id}/messages", user(reads(handleMessages(d.Store, d.Logger))))
	mux.Handle("PATCH /api/v1/threads/{id}", user(handleRenameThread(d.Store, d.Logger)))
	mux.Handle("DELETE /api/v1/threads/{id}", user(handleDeleteThread(d.Store, d.Logger)))
	mux.Handle("GET /api/v1/runs/{id}", user(handleRun(d.Store, d.Logger)))
	mux.Handle("GET /api/v1/runs/{id}/events", user(reads(handleRunEvents(d.Store, d.Logger))))
	mux.Handle("GET /api/v1/config", handleConfig(d.DevLogin))
	mux.Handle("POST /api/v1/publish", apiKey(handlePublish(d.Stream, d.Runs, d.Metrics.Published, d.Logger)))
	mux.Handle("POST /api/v1/publish/stream", apiKey(handlePublishStream(d.Stream, d.Metrics.Published, d.Draining, d.BodyTimeout, d.Logger)))

	if d.Hub != nil && d.Place != nil {
		ag := &aguiServer{hub: d.Hub, place: d.Place, runs: d.Runs, store: d.Store, stream: d.Stream,
			heartbeat: d.SSEHeartbeat, log: d.Logger, replayed: d.Metrics.ResumeReplayed, resync: d.Metrics.ResumeResync}
		mux.Handle("POST /api/v1/agui", corsPost(user(sends(handleAGUIRun(ag)))))
		mux.Handle("POST /api/v1/agui/connect", corsPost(user(handleAGUIConnect(ag))))
		mux.Handle("OPTIONS /api/v1/agui", corsPost(handleMethodNotAllowed("POST")))
		mux.Handle("OPTIONS /api/v1/agui/connect", corsPost(handleMethodNotAllowed("POST")))
	}

	if d.AdminKeys.Len() > 0 && d.AdminBus != nil && d.Revocations != nil {
		adm := requireAdmin(d.AdminKeys, d.APIKeys, d.Verifier, d.Metrics.AuthFailures)
		ad := &adminDeps{bus: d.AdminBus, revocations: d.Revocations, store: d.Store, runs: d.Runs, log: d.Logger}
		mux.Handle("GET /api/v1/admin/nodes", adm(handleAdminNodes(ad)))
		mux.Handle("GET /api/v1/admin/runs", adm(handleAdminRuns(ad)))
		mux.Handle("POST /api/v1/admin/runs/{id}/cancel", adm(handleAdminCancel(ad)))
		mux.Handle("GET /api/v1/admin/users/{user}/connections", adm(handleAdminConns(ad)))
		mux.Handle("POST /api/v1/admin/users/{user}/disconnect", adm(handleAdminDisconnect(ad)))
		mux.Handle("POST /api/v1/admin/users/{user}/revoke", adm(handleAdminRevoke(ad)))
		for path, allow := range map[string]string{
			"/api/v1/admin/nodes": "GET", "/api/v1/admin/runs": "GET", "/api/v1/admin/runs/{id}/cancel": "POST",
			"/api/v1/admin/users/{user}/connections": "GET", "/api/v1/admin/users/{user}/disconnect": "POST",
			"/api/v1/admin/users/{user}/revoke": "POST",
		} {
			mux.Handle(path, handleMethodNotAllowed(allow))
		}
	}

	if d.DevLogin {
		mux.Handle("POST /auth/dev-login", handleDevLogin(d.Signer, d.DevTTL, d.Issuer, d.Audience))
	}

	mux.Handle("GET /healthz", handleHealthz())
	mux.Handle("GET /readyz", handleReadyz(d.Stream, d.Store, d.Draining, d.JWKS))
	mux.Handle("GET /metrics", d.Metrics.Handler())

	// Any other method on an API path: a JSON 405, not the mux's plain text.
	for path, allow := range map[string]string{
		"/ws": "GET", "/api/v1/tickets": "POST", "/api/v1/events": "GET", "/api/v1/threads": "GET",
		"/api/v1/threads/{id}/messages": "GET", "/api/v1/runs/{id}": "GET", "/api/v1/runs/{id}/events": "GET", "/api/v1/config": "GET",
		"/api/v1/publish": "POST", "/api/v1/publish/stream": "POST", "/api/v1/agui": "POST", "/api/v1/agui/connect": "POST", "/healthz": "GET", "/readyz": "GET", "/metrics": "GET",
		"/api/v1/stream": "GET", "/api/v1/messages": "POST", "/api/v1/runs/{id}/stop": "POST",
		"/api/v1/runs/{id}/input": "POST", "/api/v1/threads/{id}": "PATCH, DELETE",
	} {
		mux.Handle(path, handleMethodNotAllowed(allow))
	}

	page := web.Handler()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /static/", page)
	mux.Handle("/", handleNotFound())
}
