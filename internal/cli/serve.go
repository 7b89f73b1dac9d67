package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/inbox"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/server"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/internal/ws"
)

type serveFlags struct {
	keys           keyFlags
	addr           string
	dev            bool
	agent          string
	apiKeys        string
	allowedOrigins string
	logLevel       string

	maxConnsPerUser int
	maxQueueBytes   int
	maxMessageBytes int
	retentionEvents int
	retentionAge    time.Duration
	rateLimit       float64
	rateBurst       int
	pingInterval    time.Duration
	pongTimeout     time.Duration
	shutdownTimeout time.Duration
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := newFlagSet("serve", getenv, stderr)
	var o serveFlags
	o.keys.register(f)
	f.String(&o.addr, "addr", "AGENTWIRE_ADDR", "127.0.0.1:8080", "listen address; :0 picks a free port")
	f.Bool(&o.dev, "dev", "AGENTWIRE_DEV", false, "development mode: enables POST /auth/dev-login and allows localhost origins")
	f.String(&o.agent, "agent", "AGENTWIRE_AGENT", "demo", "agent that answers user messages")
	f.String(&o.apiKeys, "api-keys", "AGENTWIRE_API_KEYS", "", "comma-separated API keys for the server endpoints (POST /api/v1/publish)")
	f.String(&o.allowedOrigins, "allowed-origins", "AGENTWIRE_ALLOWED_ORIGINS", "", "comma-separated browser origins allowed on /ws; empty: same origin only; * any")
	f.String(&o.logLevel, "log-level", "AGENTWIRE_LOG_LEVEL", "info", "debug, info, warn or error")
	f.Int(&o.maxConnsPerUser, "max-connections-per-user", "AGENTWIRE_MAX_CONNECTIONS_PER_USER", hub.DefaultMaxConnsPerUser, "WebSocket connections one user may hold")
	f.Int(&o.maxQueueBytes, "max-queue-bytes", "AGENTWIRE_MAX_QUEUE_BYTES", hub.DefaultMaxQueueBytes, "bound of a connection's outbound queue; over it the connection closes with 4008")
	f.Int(&o.maxMessageBytes, "max-message-bytes", "AGENTWIRE_MAX_MESSAGE_BYTES", ws.DefaultMaxMessageBytes, "largest client frame; a larger one closes with 1009")
	f.Int(&o.retentionEvents, "retention-events", "AGENTWIRE_RETENTION_EVENTS", stream.DefaultMaxEvents, "events kept per user for resume")
	f.Duration(&o.retentionAge, "retention-age", "AGENTWIRE_RETENTION_AGE", stream.DefaultMaxAge, "how long events are kept for resume")
	f.Float(&o.rateLimit, "rate-limit", "AGENTWIRE_RATE_LIMIT", ws.DefaultRateLimit, "client frames per second per connection")
	f.Int(&o.rateBurst, "rate-burst", "AGENTWIRE_RATE_BURST", ws.DefaultRateBurst, "burst of client frames per connection")
	f.Duration(&o.pingInterval, "ping-interval", "AGENTWIRE_PING_INTERVAL", ws.DefaultPingInterval, "server ping interval")
	f.Duration(&o.pongTimeout, "pong-timeout", "AGENTWIRE_PONG_TIMEOUT", ws.DefaultPongTimeout, "close with 4000 when no pong arrives this long after a ping")
	f.Duration(&o.shutdownTimeout, "shutdown-timeout", "AGENTWIRE_SHUTDOWN_TIMEOUT", 10*time.Second, "how long SIGTERM waits for sockets to close")
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := newLogger(o.logLevel, stderr)
	if err != nil {
		return err
	}
	if o.agent != "demo" {
		return fmt.Errorf("--agent %q: the only agent available is demo", o.agent)
	}
	if o.maxConnsPerUser <= 0 || o.maxQueueBytes <= 0 || o.maxMessageBytes <= 0 || o.retentionEvents <= 0 ||
		o.retentionAge <= 0 || o.rateLimit <= 0 || o.rateBurst <= 0 || o.pingInterval <= 0 || o.pongTimeout <= 0 {
		return errors.New("limits, retention and heartbeat settings must be positive")
	}

	authCfg, secret, err := o.keys.keys()
	if err != nil {
		return err
	}
	verifier, err := auth.NewVerifier(ctx, authCfg)
	if err != nil {
		return err
	}
	defer verifier.Close()

	m := metrics.New()
	st := memory.New(memory.Options{Retention: stream.Retention{MaxEvents: o.retentionEvents, MaxAge: o.retentionAge}})
	defer st.Close()
	h := hub.New(hub.Config{Stream: st, Metrics: m, Logger: log, MaxConnsPerUser: o.maxConnsPerUser, MaxQueueBytes: o.maxQueueBytes})
	tickets := auth.NewTickets(auth.TicketTTL, nil)
	wsSrv := ws.New(ws.Config{
		Hub: h, Verifier: verifier, Tickets: tickets, Handler: inbox.New(st, log), Metrics: m, Logger: log,
		AllowedOrigins: splitList(o.allowedOrigins), Dev: o.dev,
		MaxMessageBytes: o.maxMessageBytes, PingInterval: o.pingInterval, PongTimeout: o.pongTimeout,
		RateLimit: o.rateLimit, RateBurst: o.rateBurst,
	})
	deps := server.Deps{
		Logger: log, Metrics: m, Stream: st, Verifier: verifier, Tickets: tickets,
		APIKeys: auth.NewAPIKeys(splitList(o.apiKeys)), DevLogin: o.dev,
		Issuer: o.keys.issuer, Audience: o.keys.audience, WS: wsSrv,
	}
	if secret != nil {
		deps.Signer = auth.NewSigner(secret)
	}
	if o.dev {
		log.Warn("development mode: /auth/dev-login issues a token for any user_id; never expose this server")
	}

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return err
	}
	httpSrv := &http.Server{
		Handler:           server.NewServer(deps),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	fmt.Fprintf(stdout, "listening on http://%s\n", ln.Addr())
	log.Info("agentwire started", "addr", ln.Addr().String(), "dev", o.dev, "agent", o.agent, "api_keys", deps.APIKeys.Len())

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: closing sockets with 1001")
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if err := wsSrv.Shutdown(sctx); err != nil {
		log.Warn("sockets still open at shutdown timeout", "err", err)
	}
	if err := httpSrv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
		_ = httpSrv.Close()
	}
	<-serveErr
	return nil
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ExitCode maps Run's error to a process exit code.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	return 1
}
