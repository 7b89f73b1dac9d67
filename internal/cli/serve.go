package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/demo"
	"github.com/agentwire/agentwire/internal/agent/httpagent"
	"github.com/agentwire/agentwire/internal/agent/openai"
	"github.com/agentwire/agentwire/internal/agent/tools"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/cluster"
	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/runs"
	"github.com/agentwire/agentwire/internal/server"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/store/postgres"
	"github.com/agentwire/agentwire/internal/store/sqlite"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	redisstream "github.com/agentwire/agentwire/internal/stream/redis"
	"github.com/agentwire/agentwire/internal/ws"
)

type serveFlags struct {
	keys           keyFlags
	addr           string
	dev            bool
	agent          string
	openaiBaseURL  string
	openaiAPIKey   string
	openaiModel    string
	agentURL       string
	redisURL       string
	databaseURL    string
	databaseSchema string
	runLeaseTTL    time.Duration
	runLeaseRenew  time.Duration
	maxRuns        int
	runTimeout     time.Duration
	drainTimeout   time.Duration
	apiKeys        string
	allowedOrigins string
	logLevel       string

	maxConnsPerUser int
	maxQueueBytes   int
	maxMessageBytes int
	retentionEvents int
	retentionAge    time.Duration
	retentionBytes  int
	rateLimit       float64
	rateBurst       int
	pingInterval    time.Duration
	pongTimeout     time.Duration
	shutdownTimeout time.Duration
	debugAddr       string
	readTimeout     time.Duration
	writeTimeout    time.Duration
}

// minSecretBytes is the shortest HS256 secret serve accepts without --dev.
const minSecretBytes = 32

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := newFlagSet("serve", getenv, stderr)
	var o serveFlags
	o.keys.register(f)
	f.String(&o.addr, "addr", "AGENTWIRE_ADDR", "127.0.0.1:8080", "listen address; :0 picks a free port")
	f.Bool(&o.dev, "dev", "AGENTWIRE_DEV", false, "development mode: enables POST /auth/dev-login and allows localhost origins")
	f.String(&o.agent, "agent", "AGENTWIRE_AGENT", "demo", "agent that answers user messages: demo, openai or http")
	f.String(&o.openaiBaseURL, "openai-base-url", "AGENTWIRE_OPENAI_BASE_URL", openai.DefaultBaseURL, "OpenAI-compatible API root (--agent openai)")
	f.String(&o.openaiAPIKey, "openai-api-key", "AGENTWIRE_OPENAI_API_KEY", "", "API key of the OpenAI-compatible endpoint (--agent openai)")
	f.String(&o.openaiModel, "openai-model", "AGENTWIRE_OPENAI_MODEL", "", "model name (--agent openai)")
	f.String(&o.redisURL, "redis-url", "AGENTWIRE_REDIS_URL", "", "redis://… shared by every node: streams, tickets, connection and run limits, stop requests (default: in memory, one node)")
	f.String(&o.databaseURL, "database-url", "AGENTWIRE_DATABASE_URL", "", "postgres://… shared by every node (default: SQLite in --data-dir)")
	f.String(&o.databaseSchema, "database-schema", "AGENTWIRE_DATABASE_SCHEMA", "public", "PostgreSQL schema holding agentwire's tables; created if missing (--database-url postgres://…)")
	f.Duration(&o.runLeaseTTL, "run-lease-ttl", "AGENTWIRE_RUN_LEASE_TTL", runs.DefaultLeaseTTL, "how long a run's lease lasts unrenewed; a run of a dead node ends with node_lost about this long after its last renewal")
	f.Duration(&o.runLeaseRenew, "run-lease-renew", "AGENTWIRE_RUN_LEASE_RENEW", runs.DefaultRenewEvery, "how often a node renews its runs' leases and reaps expired ones; keep well under --run-lease-ttl")
	f.String(&o.agentURL, "agent-url", "AGENTWIRE_AGENT_URL", "", "URL the http agent POSTs runs to (--agent http)")
	f.Int(&o.maxRuns, "max-runs-per-user", "AGENTWIRE_MAX_RUNS_PER_USER", runs.DefaultMaxPerUser, "concurrent runs one user may have (across the cluster with --redis-url); more answer too_many_runs")
	f.Duration(&o.runTimeout, "run-timeout", "AGENTWIRE_RUN_TIMEOUT", runs.DefaultTimeout, "a run still going after this ends with agent_error timeout")
	f.Duration(&o.drainTimeout, "drain-timeout", "AGENTWIRE_DRAIN_TIMEOUT", 10*time.Second, "on SIGTERM, how long running runs may finish before they are cancelled")
	f.String(&o.apiKeys, "api-keys", "AGENTWIRE_API_KEYS", "", "comma-separated API keys for the server endpoints (POST /api/v1/publish)")
	f.String(&o.allowedOrigins, "allowed-origins", "AGENTWIRE_ALLOWED_ORIGINS", "", "comma-separated browser origins allowed on /ws; empty: same origin only; * any")
	f.String(&o.logLevel, "log-level", "AGENTWIRE_LOG_LEVEL", "info", "debug, info, warn or error")
	f.Int(&o.maxConnsPerUser, "max-connections-per-user", "AGENTWIRE_MAX_CONNECTIONS_PER_USER", hub.DefaultMaxConnsPerUser, "WebSocket connections one user may hold")
	f.Int(&o.maxQueueBytes, "max-queue-bytes", "AGENTWIRE_MAX_QUEUE_BYTES", hub.DefaultMaxQueueBytes, "bound of a connection's outbound queue; over it the connection closes with 4008")
	f.Int(&o.maxMessageBytes, "max-message-bytes", "AGENTWIRE_MAX_MESSAGE_BYTES", ws.DefaultMaxMessageBytes, "largest client frame; a larger one closes with 1009")
	f.Int(&o.retentionEvents, "retention-events", "AGENTWIRE_RETENTION_EVENTS", stream.DefaultMaxEvents, "events kept per user for resume")
	f.Duration(&o.retentionAge, "retention-age", "AGENTWIRE_RETENTION_AGE", stream.DefaultMaxAge, "how long events are kept for resume")
	f.Int(&o.retentionBytes, "retention-bytes", "AGENTWIRE_RETENTION_BYTES", stream.DefaultMaxBytes, "frame bytes kept per user for resume; the oldest events go first")
	f.Float(&o.rateLimit, "rate-limit", "AGENTWIRE_RATE_LIMIT", ws.DefaultRateLimit, "client frames per second per connection")
	f.Int(&o.rateBurst, "rate-burst", "AGENTWIRE_RATE_BURST", ws.DefaultRateBurst, "burst of client frames per connection")
	f.Duration(&o.pingInterval, "ping-interval", "AGENTWIRE_PING_INTERVAL", ws.DefaultPingInterval, "server ping interval")
	f.Duration(&o.pongTimeout, "pong-timeout", "AGENTWIRE_PONG_TIMEOUT", ws.DefaultPongTimeout, "close with 4000 when no pong arrives this long after a ping")
	f.String(&o.debugAddr, "debug-addr", "AGENTWIRE_DEBUG_ADDR", "", "serve Go's pprof profiles on this separate address (e.g. 127.0.0.1:6060); off when empty")
	f.Duration(&o.readTimeout, "read-timeout", "AGENTWIRE_READ_TIMEOUT", server.DefaultBodyTimeout, "a request body must arrive within this (its headers within 10 s, or this if shorter); WebSockets are not affected")
	f.Duration(&o.writeTimeout, "write-timeout", "AGENTWIRE_WRITE_TIMEOUT", server.DefaultWriteTimeout, "each write of an HTTP answer must complete within this: a client that stops reading is cut; WebSockets are not affected")
	f.Duration(&o.shutdownTimeout, "shutdown-timeout", "AGENTWIRE_SHUTDOWN_TIMEOUT", 10*time.Second, "how long SIGTERM waits for sockets to close")
	if err := f.parse(args); err != nil {
		return err
	}
	log, err := newLogger(o.logLevel, stderr)
	if err != nil {
		return err
	}
	ag, err := newAgent(&o)
	if err != nil {
		return err
	}
	if o.maxRuns <= 0 || o.runTimeout <= 0 || o.drainTimeout < 0 || o.maxConnsPerUser <= 0 || o.maxQueueBytes <= 0 || o.maxMessageBytes <= 0 || o.retentionEvents <= 0 || o.retentionBytes <= 0 ||
		o.retentionAge <= 0 || o.rateLimit <= 0 || o.rateBurst <= 0 || o.pingInterval <= 0 || o.pongTimeout <= 0 ||
		o.runLeaseTTL <= 0 || o.runLeaseRenew <= 0 || o.readTimeout <= 0 || o.writeTimeout <= 0 {
		return errors.New("limits, retention and heartbeat settings must be positive")
	}

	authCfg, secret, err := o.keys.keys()
	if err != nil {
		return err
	}
	if n := len(authCfg.Secret); n > 0 && n < minSecretBytes {
		// RFC 7518 3.2: an HS256 key must have at least 256 bits; a short
		// secret can be brute-forced from any one token.
		if !o.dev {
			return fmt.Errorf("--jwt-secret is %d bytes: HS256 needs at least %d (a shorter one is accepted only with --dev)", n, minSecretBytes)
		}
		log.Warn("--jwt-secret is shorter than 32 bytes: accepted only because of --dev", "bytes", n)
	}
	authCfg.Logger = log
	verifier, err := auth.NewVerifier(ctx, authCfg)
	if err != nil {
		return err
	}
	defer verifier.Close()
	if err := verifier.JWKSStatus(); err != nil {
		log.Error("!!! JWKS unreachable at start: every token is refused until it answers; agentwire keeps trying (see the JWKS fetch failed line)")
	}

	m := metrics.New()
	retention := stream.Retention{MaxEvents: o.retentionEvents, MaxAge: o.retentionAge, MaxBytes: o.retentionBytes}
	var (
		st      stream.Stream
		tickets auth.TicketStore = auth.NewTickets(auth.TicketTTL, nil)
		conns   *cluster.Slots
		runCfg  = runs.Config{MaxPerUser: o.maxRuns, Timeout: o.runTimeout,
			LeaseTTL: o.runLeaseTTL, RenewEvery: o.runLeaseRenew, ReapEvery: o.runLeaseRenew}
	)
	if o.redisURL != "" {
		rs, err := redisstream.New(ctx, redisstream.Options{URL: o.redisURL, Retention: retention, Logger: log})
		if err != nil {
			return err
		}
		rs.Start()
		st = rs
		rc, err := cluster.Connect(o.redisURL)
		if err != nil {
			return err
		}
		defer rc.Close()
		tickets = cluster.NewTickets(rc, redisstream.DefaultPrefix, auth.TicketTTL)
		conns = cluster.NewConns(rc, redisstream.DefaultPrefix, 0)
		// A run's slot lives as long as its lease: the runs of a node that
		// died stop counting when a reaper may end them.
		runCfg.Slots = cluster.NewRuns(rc, redisstream.DefaultPrefix, o.runLeaseTTL)
		runCfg.Stops = cluster.NewStops(rc, redisstream.DefaultPrefix)
	} else {
		st = memory.New(memory.Options{Retention: retention})
	}
	defer st.Close()
	db, err := openStore(ctx, &o, log)
	if err != nil {
		return err
	}
	defer db.Close()
	runCfg.Stream, runCfg.Store, runCfg.Agent, runCfg.Logger = st, db, ag, log
	runner := runs.New(runCfg)
	runner.Start()
	if o.databaseURL == "" {
		// The SQLite file belongs to this process alone: runs it still has
		// as running were cut short by the previous one (ARCHITECTURE.md).
		n, err := runner.EndLeftovers(ctx)
		if err != nil {
			return fmt.Errorf("end the runs the last process left running: %w", err)
		}
		if n > 0 {
			log.Warn("runs left running by the previous process ended with node_lost", "runs", n)
		}
	}
	h := hub.New(hub.Config{Stream: st, Metrics: m, Logger: log, MaxConnsPerUser: o.maxConnsPerUser, MaxQueueBytes: o.maxQueueBytes})
	wsCfg := ws.Config{
		Hub: h, Verifier: verifier, Tickets: tickets, Handler: runner, Metrics: m, Logger: log,
		AllowedOrigins: splitList(o.allowedOrigins), Dev: o.dev, MaxConnsPerUser: o.maxConnsPerUser,
		MaxMessageBytes: o.maxMessageBytes, PingInterval: o.pingInterval, PongTimeout: o.pongTimeout,
		RateLimit: o.rateLimit, RateBurst: o.rateBurst,
	}
	if conns != nil {
		wsCfg.Limiter = conns
		stopRefresh := refreshConns(conns, h, log)
		defer stopRefresh()
	}
	wsSrv := ws.New(wsCfg)
	var draining atomic.Bool
	deps := server.Deps{
		Logger: log, Metrics: m, Stream: st, Store: db, Runs: runner, Verifier: verifier, Tickets: tickets,
		APIKeys: auth.NewAPIKeys(splitList(o.apiKeys)), DevLogin: o.dev,
		Issuer: o.keys.issuer, Audience: o.keys.audience, WS: wsSrv, Draining: draining.Load,
		BodyTimeout: o.readTimeout, WriteTimeout: o.writeTimeout,
	}
	if authCfg.JWKSURL != "" {
		deps.JWKS = verifier.JWKSStatus
	}
	if secret != nil {
		deps.Signer = auth.NewSigner(secret)
	}
	if o.dev {
		log.Warn("development mode: /auth/dev-login issues a token for any user_id; never expose this server")
	}

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("--addr %s: address already in use (another agentwire?); stop it or pick another address with --addr, e.g. --addr 127.0.0.1:8081", o.addr)
		}
		return fmt.Errorf("--addr %s: %w", o.addr, err)
	}
	httpSrv := &http.Server{
		Handler: server.NewServer(deps),
		// Bodies and answers are bounded per request by the handler (see
		// server.DefaultBodyTimeout); ReadTimeout and WriteTimeout would also
		// bound a long answer and the WebSocket upgrade.
		ReadHeaderTimeout: min(10*time.Second, o.readTimeout),
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if o.debugAddr != "" {
		stopDebug, err := serveDebug(o.debugAddr, log)
		if err != nil {
			return err
		}
		defer stopDebug()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	fmt.Fprintf(stdout, "listening on http://%s\n", dialable(ln.Addr()))
	log.Info("agentwire started", "addr", ln.Addr().String(), "dev", o.dev, "agent", o.agent, "api_keys", deps.APIKeys.Len())

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	draining.Store(true)
	wsSrv.Drain()
	log.Info("shutting down: draining runs", "runs", runner.Running(), "drain_timeout", o.drainTimeout.String())
	dctx, dcancel := context.WithTimeout(context.Background(), o.drainTimeout)
	runner.Shutdown(dctx)
	dcancel()
	settle, cancelSettle := context.WithTimeout(context.Background(), 2*time.Second)
	h.Settle(settle) // this node's last events come back through the stream before its sockets close
	cancelSettle()
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

// refreshConns keeps this node's entries in the cluster-wide connection
// count alive, every third of their TTL, until the returned stop is called.
func refreshConns(conns *cluster.Slots, h *hub.Hub, log *slog.Logger) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(conns.TTL() / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), conns.TTL()/3)
				if err := conns.Refresh(ctx, h.ConnIDs()); err != nil {
					log.Warn("refresh cluster connection counts", "err", err)
				}
				cancel()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// dialable is the listener's address as a client on this machine reaches
// it: a wildcard host (":0", "0.0.0.0", "[::]") is printed as 127.0.0.1,
// which every such listener accepts.
func dialable(a net.Addr) string {
	t, ok := a.(*net.TCPAddr)
	if !ok || !t.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(t.Port))
}

// serveDebug serves net/http/pprof on its own listener, never on the public
// one: profiles reveal internals and cost CPU.
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("pprof listening", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}

// openStore opens PostgreSQL when --database-url names it, else the SQLite
// file in the data dir.
func openStore(ctx context.Context, o *serveFlags, log *slog.Logger) (store.Store, error) {
	switch {
	case strings.HasPrefix(o.databaseURL, "postgres://"), strings.HasPrefix(o.databaseURL, "postgresql://"):
		return postgres.Open(ctx, o.databaseURL, postgres.Options{Schema: o.databaseSchema, Logger: log})
	case o.databaseURL != "":
		return nil, errors.New("--database-url: want postgres://…; without it the SQLite file in --data-dir is used")
	}
	if err := os.MkdirAll(o.keys.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", o.keys.dataDir, err)
	}
	db, err := sqlite.Open(ctx, filepath.Join(o.keys.dataDir, "agentwire.db"))
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", o.keys.dataDir, err)
	}
	return db, nil
}

// newAgent builds the agent --agent names.
func newAgent(o *serveFlags) (agent.Agent, error) {
	switch o.agent {
	case "demo":
		return demo.New(demo.Options{}), nil
	case "openai":
		if o.openaiModel == "" {
			return nil, errors.New("--agent openai needs --openai-model (and usually --openai-api-key)")
		}
		return openai.New(openai.Config{BaseURL: o.openaiBaseURL, APIKey: o.openaiAPIKey, Model: o.openaiModel, Tools: tools.Default()})
	case "http":
		if o.agentURL == "" {
			return nil, errors.New("--agent http needs --agent-url")
		}
		return httpagent.New(httpagent.Config{URL: o.agentURL})
	}
	return nil, fmt.Errorf("--agent %q: want demo, openai or http", o.agent)
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
	case errors.Is(err, errUsage), errors.As(err, new(usageError)):
		return 2
	}
	return 1
}
