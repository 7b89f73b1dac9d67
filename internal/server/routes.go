package server

import (
	"net/http"

	"github.com/agentwire/agentwire/web"
)

// addRoutes is the whole HTTP surface of agentwire, in one place.
func addRoutes(mux *http.ServeMux, d *Deps) {
	mux.Handle("GET /ws", d.WS)

	// The list endpoints share a per-user bound of requests in flight.
	reads := newReadLimiter(d.MaxReadsPerUser)
	mux.Handle("POST /api/v1/tickets", handleTickets(d))
	mux.Handle("GET /api/v1/events", limitReads(d, reads, handleEvents(d)))
	mux.Handle("GET /api/v1/threads", limitReads(d, reads, handleThreads(d)))
	mux.Handle("GET /api/v1/threads/{id}/messages", limitReads(d, reads, handleMessages(d)))
	mux.Handle("GET /api/v1/runs/{id}", handleRun(d))
	mux.Handle("GET /api/v1/config", handleConfig(d))
	mux.Handle("POST /api/v1/publish", requireAPIKey(d, handlePublish(d)))

	if d.DevLogin {
		mux.Handle("POST /auth/dev-login", handleDevLogin(d))
	}

	mux.Handle("GET /healthz", handleHealthz())
	mux.Handle("GET /readyz", handleReadyz(d))
	mux.Handle("GET /metrics", d.Metrics.Handler())

	// Any other method on an API path: a JSON 405, not the mux's plain text.
	for path, allow := range map[string]string{
		"/ws": "GET", "/api/v1/tickets": "POST", "/api/v1/events": "GET", "/api/v1/threads": "GET",
		"/api/v1/threads/{id}/messages": "GET", "/api/v1/runs/{id}": "GET", "/api/v1/config": "GET",
		"/api/v1/publish": "POST", "/healthz": "GET", "/readyz": "GET", "/metrics": "GET",
	} {
		mux.Handle(path, handleMethodNotAllowed(allow))
	}

	page := web.Handler()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /static/", page)
	mux.Handle("/", handleNotFound())
}
