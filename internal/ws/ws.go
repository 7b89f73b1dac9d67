// Package ws is the /ws endpoint: authentication and origin policy before the
// upgrade, the upgrade itself (gorilla/websocket), the read loop that decodes
// and answers client frames, heartbeats, rate and error limits, and token
// expiry. Outbound frames go through the hub's per-connection queue; this
// package only supplies the socket (see transport.go).
package ws

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/protocol"
	"github.com/agentwire/agentwire/internal/stream"
)

// Close codes of the contract (section 6) that this package sends.
const (
	CloseGoingAway     = 1001 // server shutting down
	CloseTooBig        = 1009 // frame over max_message_bytes (gorilla sends it)
	CloseNoPong        = 4000 // no pong within the heartbeat timeout
	CloseTokenExpired  = 4001 // the token's exp passed
	CloseTooManyErrors = 4029 // too many errors in the error window
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
)

// Authenticator verifies a bearer JWT.
type Authenticator interface {
	Verify(ctx context.Context, token string) (auth.Claims, error)
}

// TicketRedeemer consumes a single-use connect ticket.
type TicketRedeemer interface {
	Redeem(ctx context.Context, ticket string) (auth.Claims, error)
}

// Handler acts on the client frames that reach beyond the connection. user is
// the authenticated subject of the connection the frame came on; nothing a
// client sends can name another user.
type Handler interface {
	UserMessage(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error)
	StopAgent(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error)
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

	MaxMessageBytes int
	PingInterval    time.Duration
	PongTimeout     time.Duration
	RateLimit       float64
	RateBurst       int
	ErrorLimit      int
	ErrorWindow     time.Duration
}

// Server serves /ws.
type Server struct {
	cfg      Config
	log      *slog.Logger
	upgrader websocket.Upgrader
	origins  map[string]bool
	anyOrig  bool

	mu       sync.Mutex
	shutdown bool
	wg       sync.WaitGroup // one per live read loop
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	s := &Server{cfg: cfg, log: cfg.Logger, origins: map[string]bool{}}
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
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// Measured at 10k idle connections (see the commit that chose the
		// library): net/http's hijacked 4 KiB buffers are not kept, and idle
		// connections hold no write buffer: one is taken from the pool for
		// each message and given back once it is written.
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{protocol.Version},
		CheckOrigin:     func(*http.Request) bool { return true }, // checked before, with a JSON 403
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			writeError(w, status, "bad_request", reason.Error())
		},
	}
	return s
}

// ServeHTTP authenticates, checks the origin and the per-user limit, upgrades
// and starts the connection's read loop.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := s.cfg.Metrics
	if !s.originAllowed(r) {
		m.AuthFailures.WithLabelValues("origin").Inc()
		writeError(w, http.StatusForbidden, "forbidden_origin", "origin not allowed")
		return
	}
	claims, err := s.authenticate(r)
	if err != nil {
		m.AuthFailures.WithLabelValues(auth.Reason(err)).Inc()
		writeError(w, http.StatusUnauthorized, "unauthorized", unauthorizedMessage(err))
		return
	}
	if !claims.ExpiresAt.IsZero() && !time.Now().Before(claims.ExpiresAt) {
		m.AuthFailures.WithLabelValues("expired").Inc()
		writeError(w, http.StatusUnauthorized, "unauthorized", "token expired")
		return
	}
	resume, since, epoch, err := resumeQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}

	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "server is shutting down")
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()

	t := &transport{}
	c := s.cfg.Hub.NewConn(newID(), claims.Subject, t)
	if err := s.cfg.Hub.Register(r.Context(), c); err != nil {
		s.wg.Done()
		if errors.Is(err, hub.ErrTooManyConnections) {
			writeError(w, http.StatusTooManyRequests, "too_many_connections", "user already has the maximum number of connections")
			return
		}
		s.log.Error("register connection", "user", claims.Subject, "err", err)
		writeError(w, http.StatusServiceUnavailable, "unavailable", "stream backend unavailable")
		return
	}
	wsc, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has answered the client.
		s.cfg.Hub.Unregister(c)
		s.wg.Done()
		return
	}
	if !t.attach(wsc) {
		s.cfg.Hub.Unregister(c)
		s.wg.Done()
		return
	}
	sess := &session{srv: s, conn: c, t: t, ws: wsc, user: claims.Subject, exp: claims.ExpiresAt}
	// The join runs here, on the request's goroutine, so the read loop's
	// goroutine starts small and stays small while the connection idles.
	if !sess.setup(resume, since, epoch) {
		go sess.drainAndClean()
		return
	}
	go sess.readLoop()
}

// Shutdown stops accepting connections, closes every open one with 1001 after
// its queued frames, and waits for their read loops to end or ctx to expire.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	s.mu.Unlock()
	s.cfg.Hub.CloseAll(CloseGoingAway, "server shutting down")
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) authenticate(r *http.Request) (auth.Claims, error) {
	q := r.URL.Query()
	if q.Has("token") || q.Has("access_token") || q.Has("jwt") {
		return auth.Claims{}, errJWTInQuery
	}
	if ticket := q.Get("ticket"); ticket != "" {
		if s.cfg.Tickets == nil {
			return auth.Claims{}, auth.ErrTicket
		}
		return s.cfg.Tickets.Redeem(r.Context(), ticket)
	}
	if tok, ok := auth.BearerToken(r); ok {
		return s.cfg.Verifier.Verify(r.Context(), tok)
	}
	if tok, ok := subprotocolToken(r); ok {
		return s.cfg.Verifier.Verify(r.Context(), tok)
	}
	return auth.Claims{}, auth.ErrMissing
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
	for _, p := range websocket.Subprotocols(r) {
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

// resumeQuery reads ?since=&epoch=. since alone, or epoch alone, asks for a
// replay too (epoch alone means from the start of the retained history).
func resumeQuery(q url.Values) (resume bool, since uint64, epoch string, err error) {
	epoch = q.Get("epoch")
	if sv := q.Get("since"); sv != "" {
		n, perr := parseSeq(sv)
		if perr != nil {
			return false, 0, "", errors.New("since must be a non-negative integer")
		}
		return true, n, epoch, nil
	}
	return epoch != "", 0, epoch, nil
}

func parseSeq(s string) (uint64, error) {
	if len(s) == 0 || len(s) > 19 {
		return 0, errors.New("bad seq")
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, errors.New("bad seq")
		}
		n = n*10 + uint64(c-'0')
	}
	return n, nil
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// writeError answers a plain HTTP error in the contract's shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// session is one upgraded connection's read side.
type session struct {
	srv  *Server
	conn *hub.Conn
	t    *transport
	ws   *websocket.Conn
	user string
	exp  time.Time

	limiter *rate.Limiter
	errs    []time.Time // times of the latest errors, allocated on the first
	aliases uint8       // bit per deprecated alias already announced
	pingT   atomic.Pointer[time.Timer]
	expT    *time.Timer
}

// setup joins the stream and arms the heartbeat and expiry timers.
func (ss *session) setup(resume bool, since uint64, epoch string) bool {
	s := ss.srv
	cfg := &s.cfg
	ss.ws.SetReadLimit(int64(cfg.MaxMessageBytes))
	ss.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.RateBurst)

	_, err := ss.conn.Join(context.Background(), resume, since, epoch, func(pos stream.Position) []byte {
		return protocol.EncodeConnectionEstablished(protocol.ConnectionEstablished{
			ConnectionID:        ss.conn.ID,
			UserID:              ss.user,
			Epoch:               pos.Epoch,
			HeadSeq:             pos.Head,
			HeartbeatIntervalMS: int(cfg.PingInterval / time.Millisecond),
			MaxMessageBytes:     cfg.MaxMessageBytes,
		})
	}, resyncFrame)
	if err != nil {
		s.log.Error("join stream", "user", ss.user, "conn", ss.conn.ID, "err", err)
		ss.conn.Close(hub.CloseInternal, "stream unavailable")
		return false
	}

	if !ss.exp.IsZero() {
		ss.expT = time.AfterFunc(time.Until(ss.exp), func() { ss.conn.Close(CloseTokenExpired, "token expired") })
	}
	deadline := cfg.PingInterval + cfg.PongTimeout
	_ = ss.ws.SetReadDeadline(time.Now().Add(deadline))
	ss.ws.SetPongHandler(func(string) error {
		return ss.ws.SetReadDeadline(time.Now().Add(deadline))
	})
	ss.ws.SetPingHandler(func(data string) error {
		err := ss.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(closeWait))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
	ss.pingT.Store(time.AfterFunc(cfg.PingInterval, ss.ping))
	return true
}

func (ss *session) drainAndClean() {
	defer ss.srv.wg.Done()
	defer ss.cleanup()
	ss.drain()
}

// readLoop reads and answers client frames until the socket closes.
func (ss *session) readLoop() {
	defer ss.srv.wg.Done()
	defer ss.cleanup()
	cfg := &ss.srv.cfg
	ctx := context.Background()
	m := cfg.Metrics
	for {
		mt, msg, err := ss.ws.ReadMessage()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ss.t.closeCode() == 0 {
				m.Closes.WithLabelValues("4000").Inc()
				ss.t.Close(CloseNoPong, "no pong within heartbeat timeout")
			} else if errors.Is(err, websocket.ErrReadLimit) {
				m.Closes.WithLabelValues("1009").Inc()
			}
			return
		}
		m.BytesIn.Add(float64(len(msg)))
		if mt != websocket.TextMessage {
			m.FramesIn.WithLabelValues("invalid").Inc()
			ss.fail(&protocol.Error{Code: protocol.CodeBadJSON, Message: "frames must be JSON text messages"})
			continue
		}
		if !ss.limiter.Allow() {
			m.FramesIn.WithLabelValues("rate_limited").Inc()
			ss.fail(&protocol.Error{Code: protocol.CodeRateLimited, Message: "too many frames: slow down"})
			continue
		}
		f, perr := protocol.Decode(msg)
		if perr != nil {
			m.FramesIn.WithLabelValues("invalid").Inc()
			ss.fail(perr)
			continue
		}
		m.FramesIn.WithLabelValues(f.Type).Inc()
		ss.handle(ctx, &f)
	}
}

func resyncFrame(e *stream.ResyncError) []byte {
	return protocol.EncodeResync(e.Position.Epoch, e.Position.Head, string(e.Reason))
}

func (ss *session) handle(ctx context.Context, f *protocol.Frame) {
	if f.Alias != "" {
		ss.srv.cfg.Metrics.Deprecated.WithLabelValues(f.Alias).Inc()
		if bit := aliasBit(f.Alias); ss.aliases&bit == 0 {
			ss.aliases |= bit
			ss.conn.Send(protocol.EncodeDeprecation(f.Alias))
		}
	}
	switch f.Type {
	case protocol.TypePing:
		ss.conn.Send(protocol.EncodePong(f.ID))
	case protocol.TypeResume:
		if _, err := ss.conn.Join(ctx, true, f.Since, f.Epoch, nil, resyncFrame); err != nil {
			ss.srv.log.Error("resume", "user", ss.user, "conn", ss.conn.ID, "err", err)
			ss.fail(&protocol.Error{Code: protocol.CodeInternal, Message: "stream unavailable, retry", Ref: f.ID})
		}
	case protocol.TypeUserMessage:
		ss.reply(func() (protocol.AckFrame, *protocol.Error) { return ss.srv.cfg.Handler.UserMessage(ctx, ss.user, f) })
	case protocol.TypeStopAgent:
		ss.reply(func() (protocol.AckFrame, *protocol.Error) { return ss.srv.cfg.Handler.StopAgent(ctx, ss.user, f) })
	}
}

// reply sends handle's ack, or its error, before any event it caused.
func (ss *session) reply(handle func() (protocol.AckFrame, *protocol.Error)) {
	var perr *protocol.Error
	ss.conn.Reply(func() []byte {
		ack, err := handle()
		if err != nil {
			perr = err
			return nil
		}
		return protocol.EncodeAck(ack)
	})
	if perr != nil {
		ss.fail(perr)
	}
}

// fail sends an error frame and closes with 4029 when the connection has had
// more than ErrorLimit errors within ErrorWindow.
func (ss *session) fail(e *protocol.Error) {
	cfg := &ss.srv.cfg
	cfg.Metrics.ErrorsSent.WithLabelValues(e.Code).Inc()
	ss.conn.Send(protocol.EncodeError(e))
	now := time.Now()
	if ss.errs == nil {
		ss.errs = make([]time.Time, 0, cfg.ErrorLimit+1)
	}
	ss.errs = append(ss.errs, now)
	if len(ss.errs) > cfg.ErrorLimit {
		if now.Sub(ss.errs[0]) <= cfg.ErrorWindow {
			ss.conn.Close(CloseTooManyErrors, "too many errors")
		}
		ss.errs = append(ss.errs[:0], ss.errs[1:]...)
	}
}

func (ss *session) ping() {
	err := ss.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait))
	if err != nil {
		return // the socket is closing; the read loop ends it
	}
	if t := ss.pingT.Load(); t != nil {
		t.Reset(ss.srv.cfg.PingInterval)
	}
}

// drain reads until the socket closes so the close handshake completes.
func (ss *session) drain() {
	_ = ss.ws.SetReadDeadline(time.Now().Add(closeWait))
	for {
		if _, _, err := ss.ws.ReadMessage(); err != nil {
			return
		}
	}
}

func (ss *session) cleanup() {
	if t := ss.pingT.Load(); t != nil {
		t.Stop()
	}
	if ss.expT != nil {
		ss.expT.Stop()
	}
	ss.srv.cfg.Hub.Unregister(ss.conn)
	ss.conn.Close(1000, "")
	ss.t.Close(1000, "")
}

func aliasBit(alias string) uint8 {
	for i, a := range protocol.Aliases() {
		if a == alias {
			return 1 << i
		}
	}
	return 0
}
