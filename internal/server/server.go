// Package server wires agentwire's HTTP surface: NewServer takes every
// dependency, every route is in routes.go, and every handler is made by a
// function that takes only what that handler uses and returns an
// http.Handler. Authentication is middleware (requireUser, requireAPIKey)
// that puts the verified user in the request's context; answers are encoded
// and bodies decoded by internal/httpx.
package server

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/agentwire/agentwire/internal/admin"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/auth/tickets"
	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/runs"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/tracing"
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
	Tickets  tickets.Store
	APIKeys  *auth.APIKeys
	// AdminKeys are the admin API's keys: without any, the admin API is
	// not served. AdminBus carries its actions to every node; Revocations
	// is checked on every user request (nil: none is).
	AdminKeys   *auth.NamedKeys
	AdminBus    admin.Bus
	Revocations admin.Revocations
	// Signer signs dev-login tokens; DevLogin enables POST /auth/dev-login.
	Signer   *auth.Signer
	DevLogin bool
	DevTTL   time.Duration
	Issuer   string
	Audience string
	// WS is the /ws endpoint, SSE GET /api/v1/stream (nil: not served).
	WS  http.Handler
	SSE http.Handler
	// Draining reports that the process is shutting down: /readyz fails so
	// load balancers stop sending new work. Nil means never.
	Draining func() bool
	// BodyTimeout and WriteTimeout bound every request but the WebSocket
	// upgrade (see withDeadlines); MaxReadsPerUser bounds one user's list
	// requests in flight (see limitReads). Zero means the Default….
	BodyTimeout     time.Duration
	WriteTimeout    time.Duration
	MaxReadsPerUser int
	// RateLimit and RateBurst bound each user's requests per second on this
	// node to the endpoints that send (POST /api/v1/messages, the AG-UI
	// run request, a stop over HTTP), the --rate-limit and --rate-burst of
	// a WebSocket connection's frames (see limitRate). Zero means no bound.
	RateLimit float64
	RateBurst int
	// JWKS reports the last JWKS fetch's failure (nil: fine), shown by
	// /readyz; nil when no JWKS is configured.
	JWKS func() error

	// Hub carries the AG-UI endpoints' responses as connections of their
	// user, admitted by Place (ws.Server.Place: the connection limit, on
	// this node and across the cluster, and the drain, as for /ws); they
	// send a heartbeat comment every SSEHeartbeat (0: 15 s). Without Hub
	// and Place the AG-UI endpoints are not served.
	Hub          *hub.Hub
	Place        Placer
	SSEHeartbeat time.Duration
	// OriginAllowed is the --allowed-origins policy of browsers calling
	// the AG-UI endpoints from another origin (CORS); nil: same host only.
	OriginAllowed func(*http.Request) bool
	// Tracer, when set, traces every request (a server span named by its
	// route, the caller's traceparent its parent: a publish joins its
	// caller's trace); an SSE stream or AG-UI response is one request.
	Tracer *tracing.Tracer
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
	var h http.Handler = mux
	if d.Tracer != nil {
		h = routeNames(mux)
	}
	return d.Tracer.Handler(withDeadlines(d.BodyTimeout, d.WriteTimeout, secureHeaders(h)))
}

// routeNames names each request's span after the route the mux matched,
// never the raw path, which carries ids.
func routeNames(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r)
		tracing.Route(r)
	})
}

// secureHeaders sets the headers every answer carries.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		httpx.SetShared(h, "X-Content-Type-Options", valNosniff)
		httpx.SetShared(h, "Referrer-Policy", valNoReferrer)
		next.ServeHTTP(w, r)
	})
}

// The values secureHeaders sets, one slice each for all answers.
var (
	valNosniff    = []string{"nosniff"}
	valNoReferrer = []string{"no-referrer"}
)
