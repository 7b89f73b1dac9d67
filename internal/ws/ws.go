// Package ws is the /ws endpoint: authentication and origin policy before the
// upgrade, the upgrade itself (gobwas/ws), frame reading that decodes and
// answers client frames, heartbeats, rate and error limits, and token expiry.
// Outbound frames go through the hub's per-connection queue; this package only
// supplies the socket (conn.go, writer.go).
//
// It also serves the same stream over Server-Sent Events (GET
// /api/v1/stream, sse.go), through the same admission (admit, place,
// redeem): one connection limit, one drain and shutdown for both; Place
// gives the other endpoints that carry a hub connection over HTTP (AG-UI)
// that limit, drain and shutdown too.
//
// On Linux an idle connection owns no goroutine and no read buffer: its socket
// sits in an epoll set (poll_linux.go) and a goroutine is started only when
// bytes arrive; heartbeats and token expiry of all connections run on one
// timing wheel (wheel.go). Elsewhere, or for a socket that is not a plain
// file descriptor, each connection has a reading goroutine (conn.readLoop).
package ws

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/tracing"
	"github.com/agentwire/agentwire/protocol"
)

// Defaults of the contract.
const (
	DefaultMaxMessageBytes = 64 << 10
	DefaultPingInterval    = 25 * time.Second
	DefaultPongTimeout     = 10 * time.Second
	DefaultRateLimit       = 20 // frames per second
	DefaultRateBurst       = 40
	DefaultErrorLimit      = 20 // errors tolerated in ErrorWindow; one more closes with 4029
	DefaultErrorWindow     = 10 * time.Second
	// DefaultOpTimeout bounds what one client frame or join does in the
	// store and the stream, so a hung backend cannot pin a reader.
	DefaultOpTimeout = 10 * time.Second
)

// Authenticator verifies a bearer JWT.
type Authenticator interface {
	Verify(ctx context.Context, token string) (auth.Claims, error)
}

// TicketRedeemer consumes a single-use connect ticket. Peek reads it
// without consuming it: a connect refused by a later check (origin,
// connection limit, handshake) leaves the ticket usable.
type TicketRedeemer interface {
	Redeem(ctx context.Context, ticket string) (auth.Claims, error)
	Peek(ctx context.Context, ticket string) (auth.Claims, error)
}

// Handler acts on the client frames that reach beyond the connection. user is
// the authenticated subject of the connection the frame came on; nothing a
// client sends can name another user.
type Handler interface {
	UserMessage(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error)
	StopAgent(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error)
	UserInput(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error)
}

// Revocations answers whether an admin revoked the token a connection came
// with (the admin API: tokens of user issued before a time, or without
// iat when issuedAt is zero).
type Revocations interface {
	Revoked(ctx context.Context, user string, issuedAt time.Time) (bool, error)
}

// ConnLimiter counts a user's connections across every node.
type ConnLimiter interface {
	Acquire(ctx context.Context, user, connID string, max int) (bool, error)
	Release(ctx context.Context, user, connID string) error
}

// Config configures the endpoint. Zero values take the contract defaults.
type Config struct {
	Hub      *hub.Hub
	Verifier Authenticator
	Tickets  TicketRedeemer
	Handler  Handler
	Metrics  *metrics.Metrics
	Logger   *slog.Logger

	// AllowedOrigins lists origins (scheme://host[:port]) browsers may connect
	// from; "*" allows any. Empty means same origin only. Requests without an
	// Origin header (not from a browser) are always allowed.
	AllowedOrigins []string
	// Dev additionally allows http(s)://localhost, 127.0.0.1 and [::1] origins.
	Dev bool

	// Limiter, when set, holds the per-user connection limit for the whole
	// cluster (MaxConnsPerUser connections); the hub still holds it per node.
	Limiter         ConnLimiter
	MaxConnsPerUser int
	// Revocations, when set, refuses (401) a connection whose token an
	// admin revoked. It is asked once the connection is registered, so a
	// revocation racing the connect either is seen here or finds the
	// connection registered and closes it.
	Revocations Revocations

	MaxMessageBytes int
	PingInterval    time.Duration
	PongTimeout     time.Duration
	RateLimit       float64
	RateBurst       int
	ErrorLimit      int
	ErrorWindow     time.Duration
	// OpTimeout bounds each client frame's and each join's calls into the
	// store and stream (0: DefaultOpTimeout).
	OpTimeout time.Duration
	// SSEHeartbeat is the interval of GET /api/v1/stream's heartbeat
	// comments (0: hub/sse.DefaultHeartbeat, 15 s).
	SSEHeartbeat time.Duration
	// Tracer, when set, traces each WebSocket session (from the upgrade
	// to the close) and each client frame but ping, each frame its own
	// trace linked to the session's span. An SSE stream is its HTTP
	// request's span.
	Tracer *tracing.Tracer
}

// Server serves /ws.
type Server struct {
	cfg       Config
	log       *slog.Logger
	origins   map[string]bool
	anyOrig   bool
	frameWait time.Duration // bound on reading the rest of a frame that has begun to arrive
	wheel     *wheel        // heartbeats and token expiry of every connection
	poll      pollSet       // epoll instances (Linux), started with the first connection
	readLoops bool          // tests: read every connection with its own goroutine (the portable path)

	// Buffers lent per message, per readable event and per batch, and the
	// epoll connection ids (0 is the pollers' stop event).
	msgBufs, readBufs, batchBufs sync.Pool
	connIDs                      atomic.Uint64

	// base is the parent of every frame's and join's context; Shutdown
	// cancels it.
	base     context.Context
	stopBase context.CancelFunc

	mu       sync.Mutex
	shutdown bool
	wg       sync.WaitGroup // one per connection, from Register until it is closed and unregistered
}

// New returns the /ws endpoint.
func New(cfg Config) *Server {
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PongTimeout <= 0 {
		cfg.PongTimeout = DefaultPongTimeout
	}
	if cfg.RateLimit <= 0 {
		cfg.RateLimit = DefaultRateLimit
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = DefaultRateBurst
	}
	if cfg.ErrorLimit <= 0 {
		cfg.ErrorLimit = DefaultErrorLimit
	}
	if cfg.ErrorWindow <= 0 {
		cfg.ErrorWindow = DefaultErrorWindow
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, origins: map[string]bool{}}
	s.base, s.stopBase = context.WithCancel(context.Background())
	s.msgBufs.New, s.readBufs.New, s.batchBufs.New = newMsgBuf, newReadBuf, newBatchBuf
	for _, o := range cfg.AllowedOrigins {
		o = strings.TrimRight(strings.TrimSpace(o), "/")
		switch o {
		case "":
		case "*":
			s.anyOrig = true
		default:
			s.origins[strings.ToLower(o)] = true
		}
	}
	s.frameWait = cfg.PingInterval + cfg.PongTimeout
	s.wheel = newWheel(wheelTick(cfg.PingInterval, cfg.PongTimeout))
	return s
}

// ServeHTTP authenticates, checks the origin and the per-user limit, upgrades
// and starts the connection's read loop.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	adm, ok := s.admit(w, r, func() (protocol.Cursor, error) {
		return protocol.ParseCursor(q.Get("since"), q.Get("epoch"))
	})
	if !ok {
		return
	}
	claims, ticket, cur := adm.claims, adm.ticket, adm.cur
	c := &conn{session: session{srv: s}}
	if !claims.ExpiresAt.IsZero() {
		c.hb.exp = s.wheel.at(claims.ExpiresAt)
	}
	c.hc = s.cfg.Hub.NewConn(newID(), claims.Subject, c)
	c.hc.Describe("websocket", claims.IssuedAt)
	if c.life.limited, ok = s.place(w, r, c.hc); !ok {
		return
	}
	if t := s.cfg.Tracer; t != nil {
		// Ended by finish, which every path from here reaches once.
		// The span lives in the activity, made now (before the reader
		// starts), so an idle connection without tracing pays nothing.
		_, c.activity().span = t.Start(r.Context(), "websocket session", trace.SpanKindServer)
	}
	if status, msg := checkHandshake(r); status != 0 {
		if msg == errBadVersion {
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		httpx.Error(w, status, protocol.CodeBadRequest, msg)
		c.finish()
		return
	}
	if !s.redeem(w, r, ticket) {
		c.finish()
		return
	}
	up := ws.HTTPUpgrader{Timeout: 10 * time.Second}
	if offersSubprotocol(r, protocol.Version) {
		// Answer agentwire.v1 only: a bearer.<JWT> offered with it is never
		// echoed.
		up.Header = http.Header{"Sec-Websocket-Protocol": {protocol.Version}}
	}
	nc, rw, _, err := up.Upgrade(r, w)
	if err != nil {
		// The upgrader has answered the client (checkHandshake leaves only a
		// failed hijack or response write).
		if nc != nil {
			_ = nc.Close()
		}
		c.finish()
		return
	}
	// The socket is ours now: nothing of the HTTP server's per-request
	// deadlines (a write deadline left by an earlier request on a
	// keep-alive connection) may cut it. Heartbeats and per-write deadlines
	// bound it from here.
	_ = nc.SetDeadline(time.Time{})
	if n := rw.Reader.Buffered(); n > 0 {
		// Frames the client sent right behind its handshake.
		b, _ := rw.Reader.Peek(n)
		pre := append([]byte(nil), b...)
		c.in.pre = &pre
	}
	if !c.attach(nc) {
		c.finish()
		return
	}
	// The join runs here, on the request's goroutine, which ends right after:
	// nothing of it stays with the idle connection.
	if !c.setup(cur) {
		return // closing with 1011: the close path finishes the connection
	}
	s.startReading(c)
}

// admission is a connect that passed the checks every transport of the
// user's stream shares: its verified claims, the ticket it came with (to
// redeem once the transport's own checks pass) and its resume position.
type admission struct {
	claims auth.Claims
	ticket string
	cur    protocol.Cursor
}

// admit runs the checks of a connect in the contract's order (section 2):
// origin, credentials, token expiry, position (cursor), drain. On failure it
// has answered and reports false; on success the connect counts in
// Shutdown's wait (s.wg) until place fails or the connection finishes.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, cursor func() (protocol.Cursor, error)) (admission, bool) {
	m := s.cfg.Metrics
	if !s.originAllowed(r) {
		m.AuthFailures.WithLabelValues("origin").Inc()
		httpx.Error(w, http.StatusForbidden, protocol.CodeForbiddenOrigin, "origin not allowed")
		return admission{}, false
	}
	claims, ticket, err := s.authenticate(r)
	if err != nil {
		m.AuthFailures.WithLabelValues(auth.Reason(err)).Inc()
		httpx.Error(w, http.StatusUnauthorized, protocol.CodeUnauthorized, unauthorizedMessage(err))
		return admission{}, false
	}
	if !claims.ExpiresAt.IsZero() && !time.Now().Before(claims.ExpiresAt) {
		m.AuthFailures.WithLabelValues("expired").Inc()
		httpx.Error(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "token expired")
		return admission{}, false
	}
	cur, err := cursor()
	if err != nil {
		httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, err.Error())
		return admission{}, false
	}
	if !s.enter(w) {
		return admission{}, false
	}
	return admission{claims: claims, ticket: ticket, cur: cur}, true
}

// enter refuses a connect while the server drains (answering 503
// shutting_down, false) and otherwise counts it in Shutdown's wait.
func (s *Server) enter(w http.ResponseWriter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeShuttingDown, "server is shutting down")
		return false
	}
	s.wg.Add(1)
	return true
}

// Place admits hc, a hub connection of hc.User that another endpoint
// carries over an HTTP response (the AG-UI endpoints, whose requests the
// server's middleware authenticated), as /ws and GET /api/v1/stream admit
// theirs: the drain refusal, the per-user connection limit across the
// cluster (Config.Limiter) and on this node, and the registration with the
// hub. On failure it has answered (503 shutting_down or unavailable, 429
// too_many_connections) and reports false. Otherwise call done once, when
// the connection has ended and is unregistered (its Serve or Discard
// returned): it gives the cluster-wide place back and ends the
// connection's share of Shutdown's wait.
func (s *Server) Place(w http.ResponseWriter, r *http.Request, hc *hub.Conn) (done func(), ok bool) {
	if !s.enter(w) {
		return nil, false
	}
	limited, ok := s.place(w, r, hc)
	if !ok {
		return nil, false
	}
	return s.leave(hc, limited), true
}

// leave is what ends a placed connection that is over: its place in the
// cluster-wide limit (limited: one is held) goes back and Shutdown's wait
// lets it go.
func (s *Server) leave(hc *hub.Conn, limited bool) func() {
	return func() {
		if limited {
			s.releaseLimit(hc.User, hc.ID)
		}
		s.wg.Done()
	}
}

// place takes hc's place in the cluster-wide connection limit (limited:
// one is held, give it back with releaseLimit) and registers it with the
// hub. On failure it has answered, given back what it took and left
// Shutdown's wait.
func (s *Server) place(w http.ResponseWriter, r *http.Request, hc *hub.Conn) (limited, ok bool) {
	if l := s.cfg.Limiter; l != nil {
		ok, err := l.Acquire(r.Context(), hc.User, hc.ID, s.cfg.MaxConnsPerUser)
		if err != nil || !ok {
			s.wg.Done()
			if err != nil {
				s.log.Error("cluster connection limit", "user", hc.User, "err", err)
				httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "cluster coordination unavailable, retry")
				return false, false
			}
			httpx.Error(w, http.StatusTooManyRequests, protocol.CodeTooManyConnections, "user already has the maximum number of connections")
			return false, false
		}
		limited = true
	}
	if err := s.cfg.Hub.Register(r.Context(), hc); err != nil {
		if limited {
			s.releaseLimit(hc.User, hc.ID)
		}
		s.wg.Done()
		if errors.Is(err, hub.ErrTooManyConnections) {
			httpx.Error(w, http.StatusTooManyRequests, protocol.CodeTooManyConnections, "user already has the maximum number of connections")
			return false, false
		}
		s.log.Error("register connection", "user", hc.User, "err", err)
		httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "stream backend unavailable")
		return false, false
	}
	if rv := s.cfg.Revocations; rv != nil {
		var issued time.Time
		if hc.IssuedAt != 0 {
			issued = time.UnixMilli(hc.IssuedAt)
		}
		revoked, err := rv.Revoked(r.Context(), hc.User, issued)
		if err != nil || revoked {
			s.cfg.Hub.Unregister(hc)
			if limited {
				s.releaseLimit(hc.User, hc.ID)
			}
			s.wg.Done()
			if err != nil {
				s.log.Error("check token revocation", "user", hc.User, "err", err)
				httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "cluster coordination unavailable, retry")
				return false, false
			}
			s.cfg.Metrics.AuthFailures.WithLabelValues("revoked").Inc()
			httpx.Error(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "token revoked")
			return false, false
		}
	}
	return limited, true
}

// redeem spends the connect's ticket (none: nothing to do), once every check
// that could refuse the connect has passed, atomically, so of racing
// connects one wins. On failure it has answered 401 and reports false.
func (s *Server) redeem(w http.ResponseWriter, r *http.Request, ticket string) bool {
	if ticket == "" {
		return true
	}
	if _, err := s.cfg.Tickets.Redeem(r.Context(), ticket); err != nil {
		s.cfg.Metrics.AuthFailures.WithLabelValues(auth.Reason(err)).Inc()
		httpx.Error(w, http.StatusUnauthorized, protocol.CodeUnauthorized, unauthorizedMessage(err))
		return false
	}
	return true
}

// releaseLimit gives a connection's place in the cluster-wide limit back,
// in the background: a Redis that does not answer costs the entry's TTL,
// not the caller's time. Shutdown waits for it.
func (s *Server) releaseLimit(user, id string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.cfg.Limiter.Release(ctx, user, id); err != nil {
			s.log.Warn("release cluster connection", "user", user, "conn", id, "err", err)
		}
	}()
}

// opContext is the context of one client frame or join: cancelled at
// Shutdown and after OpTimeout.
func (s *Server) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.base, s.cfg.OpTimeout)
}

// Drain stops accepting connections and leaves the open ones be.
func (s *Server) Drain() {
	s.mu.Lock()
	s.shutdown = true
	s.mu.Unlock()
}

// Shutdown stops accepting connections, closes every open one with 1001 after
// its queued frames, and waits for their read loops to end or ctx to expire.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	s.mu.Unlock()
	s.stopBase()
	s.cfg.Hub.CloseAll(protocol.CloseGoingAway, "server shutting down")
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.poll.stop()
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// authenticate returns the connect's claims. For a ticket it only peeks:
// ServeHTTP redeems it once every other check has passed.
func (s *Server) authenticate(r *http.Request) (c auth.Claims, ticket string, err error) {
	q := r.URL.Query()
	if q.Has("token") || q.Has("access_token") || q.Has("jwt") {
		return auth.Claims{}, "", errJWTInQuery
	}
	if ticket := q.Get("ticket"); ticket != "" {
		if s.cfg.Tickets == nil {
			return auth.Claims{}, "", auth.ErrTicket
		}
		c, err := s.cfg.Tickets.Peek(r.Context(), ticket)
		return c, ticket, err
	}
	if tok, ok := auth.BearerToken(r); ok {
		c, err := s.cfg.Verifier.Verify(r.Context(), tok)
		return c, "", err
	}
	if tok, ok := subprotocolToken(r); ok {
		c, err := s.cfg.Verifier.Verify(r.Context(), tok)
		return c, "", err
	}
	return auth.Claims{}, "", auth.ErrMissing
}

var errJWTInQuery = errors.New("a JWT is never accepted in the query string: use the Authorization header, the bearer.<JWT> subprotocol or a ticket")

func unauthorizedMessage(err error) string {
	switch {
	case errors.Is(err, errJWTInQuery):
		return errJWTInQuery.Error()
	case errors.Is(err, auth.ErrMissing):
		return "missing credentials: send Authorization: Bearer <JWT>, subprotocols agentwire.v1 + bearer.<JWT>, or ?ticket="
	case errors.Is(err, auth.ErrExpired):
		return "token expired"
	case errors.Is(err, auth.ErrTicket):
		return "ticket unknown, expired or already used"
	}
	return "invalid token"
}

// subprotocolToken finds bearer.<JWT> among the offered subprotocols, when
// agentwire.v1 is offered too.
func subprotocolToken(r *http.Request) (string, bool) {
	var tok string
	v1 := false
	for _, p := range subprotocols(r) {
		switch {
		case p == protocol.Version:
			v1 = true
		case strings.HasPrefix(p, "bearer."):
			tok = strings.TrimPrefix(p, "bearer.")
		}
	}
	return tok, v1 && tok != ""
}

func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || s.anyOrig {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if s.origins[strings.ToLower(strings.TrimRight(origin, "/"))] {
		return true
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	if s.cfg.Dev {
		host := u.Hostname()
		if host == "localhost" || host == "127.0.0.1" || host == "::1" {
			return true
		}
	}
	return false
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
