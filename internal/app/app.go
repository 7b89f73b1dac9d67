// Package app owns the life of one agentwire server: New builds every
// backend from a config.Config and binds the listeners, Run starts every
// loop and serves, Shutdown stops them in the documented order
// (ARCHITECTURE.md, "Lifecycle order") and releases what New opened.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentwire/agentwire/internal/admin"
	adminredis "github.com/agentwire/agentwire/internal/admin/redis"
	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/aguiagent"
	"github.com/agentwire/agentwire/internal/agent/demo"
	"github.com/agentwire/agentwire/internal/agent/httpagent"
	"github.com/agentwire/agentwire/internal/agent/mcptools"
	"github.com/agentwire/agentwire/internal/agent/openai"
	"github.com/agentwire/agentwire/internal/agent/tools"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/auth/tickets"
	ticketsredis "github.com/agentwire/agentwire/internal/auth/tickets/redis"
	"github.com/agentwire/agentwire/internal/config"
	"github.com/agentwire/agentwire/internal/hub"
	hubredis "github.com/agentwire/agentwire/internal/hub/redis"
	"github.com/agentwire/agentwire/internal/leantcp"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/redisx"
	"github.com/agentwire/agentwire/internal/runs"
	runsredis "github.com/agentwire/agentwire/internal/runs/redis"
	"github.com/agentwire/agentwire/internal/server"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/store/postgres"
	"github.com/agentwire/agentwire/internal/store/sqlite"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	redisstream "github.com/agentwire/agentwire/internal/stream/redis"
	"github.com/agentwire/agentwire/internal/tracing"
	"github.com/agentwire/agentwire/internal/ws"
)

// traceFlushTimeout bounds the export of the last spans at shutdown.
const traceFlushTimeout = 5 * time.Second

// settleTimeout bounds how long Shutdown waits for this node's last events
// to come back through the stream before it closes the sockets.
const settleTimeout = 2 * time.Second

// App is one agentwire server: its backends, its listeners and its loops.
type App struct {
	cfg config.Config
	log *slog.Logger

	verifier *auth.Verifier
	stream   stream.Stream
	// redisStream is stream with --redis-url: Run starts its pub/sub loop.
	redisStream *redisstream.Stream
	store       store.Store
	conns       *hubredis.Conns // the cluster-wide connection limit; nil on one node
	adminNode   *admin.Node     // applies admin actions here; nil without --admin-keys
	hub         *hub.Hub
	runs        *runs.Manager
	ws          *ws.Server
	http        *http.Server
	ln          net.Listener
	debug       *http.Server // pprof on --debug-addr; nil when off
	debugLn     net.Listener
	draining    atomic.Bool
	apiKeys     int
	mcp         *mcptools.Set   // the MCP servers' tools (--mcp-server); nil without
	tracer      *tracing.Tracer // OpenTelemetry (OTEL_… variables); nil when off

	// closers release what New opened, in reverse order.
	closers []func()

	started   atomic.Bool
	serveErr  chan error         // the HTTP server's end, once Run started it
	stopLoops context.CancelFunc // ends the loops Run started
	loops     sync.WaitGroup

	shutdownOnce sync.Once
}

// New builds every backend cfg names — token verifier, stream, ticket
// store, cluster limits, store, metrics, hub, runs, /ws and the HTTP
// handler — and binds the listeners, but serves nothing and starts none of
// agentwire's loops: that is Run. Before it returns, the runs a SQLite file
// still has as running (cut short by the previous process) end with
// node_lost. ctx bounds the connections made at start. After New, call
// Shutdown to release what it opened, whether Run ran or not.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			a.release()
		}
	}()
	if a.tracer, err = tracing.New(ctx, cfg.Tracing); err != nil {
		return nil, err
	}
	if a.tracer != nil {
		// Closed last: the spans of everything else's end are exported.
		a.closers = append(a.closers, func() {
			fctx, cancel := context.WithTimeout(context.Background(), traceFlushTimeout)
			defer cancel()
			if err := a.tracer.Shutdown(fctx); err != nil {
				log.Warn("traces not all exported at shutdown", "err", err)
			}
		})
		log.Info("tracing on: OTLP over HTTP", "endpoint", cfg.Tracing.Endpoint)
	}
	ag, err := a.newAgent(&cfg)
	if err != nil {
		return nil, err
	}
	authCfg, err := cfg.Keys.Auth()
	if err != nil {
		return nil, err
	}
	if cfg.ShortSecret() {
		log.Warn("--jwt-secret is shorter than 32 bytes: accepted only because of --dev", "bytes", len(authCfg.Secret))
	}
	authCfg.Logger = log
	a.verifier, err = auth.NewVerifier(ctx, authCfg)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.verifier.Close)
	if err := a.verifier.JWKSStatus(); err != nil {
		log.Error("!!! JWKS unreachable at start: every token is refused until it answers; agentwire keeps trying (see the JWKS fetch failed line)")
	}

	m := metrics.New()
	retention := stream.Retention{MaxEvents: cfg.RetentionEvents, MaxAge: cfg.RetentionAge, MaxBytes: cfg.RetentionBytes}
	var tix tickets.Store = tickets.NewMemory(tickets.TTL, nil)
	var adminBus interface {
		admin.Bus
		admin.Revocations
	}
	runCfg := runs.Config{MaxPerUser: cfg.MaxRunsPerUser, Timeout: cfg.RunTimeout, InputTimeout: cfg.InputTimeout, NoTranscripts: !cfg.Transcripts, DeltaWindow: cfg.DeltaWindow,
		LeaseTTL: cfg.RunLeaseTTL, RenewEvery: cfg.RunLeaseRenew, ReapEvery: cfg.RunLeaseRenew}
	if cfg.RedisURL != "" {
		// One client for everything the nodes share in Redis; it closes
		// after everything using it (closers run last opened first).
		rc, err := redisx.Dial(cfg.RedisURL, 0, log)
		if err != nil {
			return nil, err
		}
		a.closers = append(a.closers, rc.Close)
		rs, err := redisstream.New(ctx, redisstream.Options{Client: rc, Retention: retention, Logger: log})
		if err != nil {
			return nil, err
		}
		a.stream, a.redisStream = stream.Traced(stream.Timed(rs, m.StreamAppend.WithLabelValues("redis")), a.tracer, "redis"), rs
		a.closers = append(a.closers, func() { _ = rs.Close() })
		tix = ticketsredis.New(rc, redisx.DefaultPrefix, tickets.TTL)
		a.conns = hubredis.New(rc, redisx.DefaultPrefix, 0)
		// A run's slot lives as long as its lease: the runs of a node that
		// died stop counting when a reaper may end them.
		runCfg.Slots = runsredis.NewSlots(rc, redisx.DefaultPrefix, cfg.RunLeaseTTL)
		runCfg.Stops = runsredis.NewStops(rc, redisx.DefaultPrefix)
		runCfg.Inputs = runsredis.NewInputs(rc, redisx.DefaultPrefix)
		if len(cfg.AdminKeys) > 0 {
			adminBus = adminredis.New(rc, redisx.DefaultPrefix, cfg.RevocationTTL, log)
		}
	} else {
		st := memory.New(memory.Options{Retention: retention})
		a.stream = stream.Traced(stream.Timed(st, m.StreamAppend.WithLabelValues("memory")), a.tracer, "memory")
		a.closers = append(a.closers, func() { _ = st.Close() })
	}
	a.store, err = openStore(ctx, &cfg, log)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, func() { _ = a.store.Close() })
	system := "sqlite"
	if cfg.Postgres() {
		system = "postgresql"
	}
	a.store = store.Traced(a.store, a.tracer, system)
	runCfg.Stream, runCfg.Store, runCfg.Agent, runCfg.Logger = a.stream, a.store, ag, log
	runCfg.TokenQuota, runCfg.Metrics = int64(cfg.UserTokenQuota), m
	runCfg.Tracer = a.tracer
	a.runs = runs.New(runCfg)
	if !cfg.Postgres() {
		// The SQLite file belongs to this process alone: runs it still has
		// as running were cut short by the previous one (ARCHITECTURE.md).
		n, err := a.runs.EndLeftovers(ctx)
		if err != nil {
			return nil, fmt.Errorf("end the runs the last process left running: %w", err)
		}
		if n > 0 {
			log.Warn("runs left running by the previous process ended with node_lost", "runs", n)
		}
	}
	a.hub = hub.New(hub.Config{Stream: a.stream, Metrics: m, Logger: log, MaxConnsPerUser: cfg.MaxConnsPerUser, MaxQueueBytes: cfg.MaxQueueBytes})
	if len(cfg.AdminKeys) > 0 && adminBus == nil {
		adminBus = admin.NewMemory(a.runs.Node(), cfg.RevocationTTL)
	}
	wsCfg := ws.Config{
		Hub: a.hub, Verifier: a.verifier, Tickets: tix, Handler: a.runs, Metrics: m, Logger: log,
		AllowedOrigins: cfg.AllowedOrigins, Dev: cfg.Dev, MaxConnsPerUser: cfg.MaxConnsPerUser,
		MaxMessageBytes: cfg.MaxMessageBytes, PingInterval: cfg.PingInterval, PongTimeout: cfg.PongTimeout,
		RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst, Tracer: a.tracer,
	}
	if a.conns != nil {
		wsCfg.Limiter = a.conns
	}
	if adminBus != nil {
		wsCfg.Revocations = adminBus
		a.adminNode = &admin.Node{ID: a.runs.Node(), Hub: a.hub, Bus: adminBus, Log: log}
	}
	a.ws = ws.New(wsCfg)
	apiKeys := auth.NewAPIKeys(cfg.APIKeys)
	a.apiKeys = apiKeys.Len()
	deps := server.Deps{
		Logger: log, Metrics: m, Stream: a.stream, Store: a.store, Runs: a.runs, Verifier: a.verifier, Tickets: tix,
		APIKeys: apiKeys, DevLogin: cfg.Dev,
		Issuer: cfg.Keys.Issuer, Audience: cfg.Keys.Audience, WS: a.ws, SSE: http.HandlerFunc(a.ws.ServeSSE), Draining: a.draining.Load,
		BodyTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst,
	}
	deps.Hub, deps.Place, deps.OriginAllowed = a.hub, a.ws.Place, a.ws.OriginAllowed
	deps.Tracer = a.tracer
	if adminBus != nil {
		deps.AdminKeys, deps.AdminBus, deps.Revocations = auth.NewNamedKeys(cfg.AdminKeys), adminBus, adminBus
	}
	if authCfg.JWKSURL != "" {
		deps.JWKS = a.verifier.JWKSStatus
	}
	if authCfg.Secret != nil {
		deps.Signer = auth.NewSigner(authCfg.Secret)
	}
	if cfg.Dev {
		log.Warn("development mode: /auth/dev-login issues a token for any user_id; never expose this server")
	}
	a.http = &http.Server{
		Handler: server.NewServer(deps),
		// Bodies and answers are bounded per request by the handler (see
		// server.DefaultBodyTimeout); ReadTimeout and WriteTimeout would also
		// bound a long answer and the WebSocket upgrade.
		ReadHeaderTimeout: min(10*time.Second, cfg.ReadTimeout),
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	a.ln, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("--addr %s: address already in use (another agentwire?); stop it or pick another address with --addr, e.g. --addr 127.0.0.1:8081", cfg.Addr)
		}
		return nil, fmt.Errorf("--addr %s: %w", cfg.Addr, err)
	}
	// Connections accepted lean: 152 bytes less of heap for each, what
	// counts for idle WebSocket connections (package leantcp).
	a.ln = leantcp.Wrap(a.ln)
	a.closers = append(a.closers, func() { _ = a.ln.Close() })
	if cfg.DebugAddr != "" {
		a.debugLn, err = net.Listen("tcp", cfg.DebugAddr)
		if err != nil {
			return nil, fmt.Errorf("--debug-addr: %w", err)
		}
		a.closers = append(a.closers, func() { _ = a.debugLn.Close() })
		a.debug = newDebugServer()
	}
	return a, nil
}

// Addr is the address the HTTP listener is bound to, as a client on this
// machine dials it: a wildcard host (":0", "0.0.0.0", "[::]") is given as
// 127.0.0.1, which every such listener accepts.
func (a *App) Addr() string { return dialable(a.ln.Addr()) }

// Run starts every loop — the HTTP server, the pprof server, the runs'
// lease loop, reaper and stop listener, the JWKS refresh, the refresh of
// this node's entries in the cluster-wide connection count — and serves
// until ctx is done (nil) or the HTTP server fails (its error). What Run started keeps serving
// after it returns, since sockets and runs are still served while they
// drain, until Shutdown. Call it at most once, before Shutdown.
func (a *App) Run(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return errors.New("app: Run called twice")
	}
	loopCtx, stop := context.WithCancel(context.Background())
	a.stopLoops = stop
	if a.redisStream != nil {
		a.redisStream.Start()
	}
	a.runs.Start()
	a.loops.Go(func() { a.verifier.Run(loopCtx) }) // the JWKS refresh; returns at once without one
	if a.mcp != nil {
		a.loops.Go(func() { a.mcp.Run(loopCtx) }) // connects the MCP servers and keeps them connected
		// The first runs are offered the tools of every MCP server that is up.
		select {
		case <-a.mcp.Ready():
		case <-ctx.Done():
		}
	}
	if a.conns != nil {
		a.loops.Go(func() { a.conns.Keep(loopCtx, a.hub.ConnIDs, a.log) })
	}
	if n := a.adminNode; n != nil {
		// Admin actions reach this node's connections; the node is listed
		// as live for the admin API's connection lists.
		a.loops.Go(func() { n.Run(loopCtx) })
		a.loops.Go(func() { n.Bus.Announce(loopCtx, n.ID) })
	}
	if a.debug != nil {
		a.loops.Go(func() { _ = a.debug.Serve(a.debugLn) })
		a.log.Info("pprof listening", "addr", a.debugLn.Addr().String())
	}
	a.serveErr = make(chan error, 1)
	go func() { a.serveErr <- a.http.Serve(a.ln) }()
	a.log.Info("agentwire started", "addr", a.ln.Addr().String(), "dev", a.cfg.Dev, "agent", a.cfg.Agent, "api_keys", a.apiKeys, "admin_keys", len(a.cfg.AdminKeys))
	select {
	case err := <-a.serveErr:
		a.serveErr <- err // Shutdown waits for it
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		return nil
	}
}

// Shutdown stops the server in the documented order: /readyz fails and
// new connections and runs are refused (drain); running runs may finish
// within --drain-timeout, then are cancelled; this node's last events come
// back through the stream (settle); every socket closes with 1001 after its
// queued frames, and the HTTP server stops, both within
// --shutdown-timeout; then the loops end and what New opened is released.
// ctx bounds the whole; timeouts are logged, not returned (Run returns the
// HTTP server's failure). Later calls do nothing.
func (a *App) Shutdown(ctx context.Context) {
	a.shutdownOnce.Do(func() { a.shutdown(ctx) })
}

func (a *App) shutdown(ctx context.Context) {
	a.draining.Store(true)
	a.ws.Drain()
	a.log.Info("shutting down: draining runs", "runs", a.runs.Running(), "drain_timeout", a.cfg.DrainTimeout.String())
	dctx, cancel := context.WithTimeout(ctx, a.cfg.DrainTimeout)
	a.runs.Shutdown(dctx)
	cancel()
	sctx, cancel := context.WithTimeout(ctx, settleTimeout)
	a.hub.Settle(sctx) // this node's last events come back through the stream before its sockets close
	cancel()
	a.log.Info("shutting down: closing sockets with 1001")
	sctx, cancel = context.WithTimeout(ctx, a.cfg.ShutdownTimeout)
	defer cancel()
	if err := a.ws.Shutdown(sctx); err != nil {
		a.log.Warn("sockets still open at shutdown timeout", "err", err)
	}
	if err := a.http.Shutdown(sctx); err != nil {
		a.log.Warn("http shutdown", "err", err)
		_ = a.http.Close()
	}
	if a.started.Load() {
		<-a.serveErr // Run returned it, if it was a failure
		if a.debug != nil {
			_ = a.debug.Close()
		}
		a.stopLoops()
		a.loops.Wait()
	}
	a.release()
}

// release closes what New opened, the last opened first.
func (a *App) release() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}

// dialable is a's address as a client on this machine reaches it.
func dialable(a net.Addr) string {
	t, ok := a.(*net.TCPAddr)
	if !ok || !t.IP.IsUnspecified() {
		return a.String()
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(t.Port))
}

// newDebugServer serves net/http/pprof, on its own listener, never on the
// public one: profiles reveal internals and cost CPU.
func newDebugServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// openStore opens PostgreSQL when --database-url names it, else the SQLite
// file in the data dir.
func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (store.Store, error) {
	if cfg.Postgres() {
		return postgres.Open(ctx, cfg.DatabaseURL, postgres.Options{Schema: cfg.DatabaseSchema, Logger: log})
	}
	dir := cfg.Keys.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	db, err := sqlite.Open(ctx, filepath.Join(dir, "agentwire.db"))
	if err != nil {
		return nil, fmt.Errorf("--data-dir %s: %w", dir, err)
	}
	return db, nil
}

// newAgent builds the agent --agent names (Load validated the choice), and
// the MCP tool set of --mcp-server, whose loop Run starts.
func (a *App) newAgent(cfg *config.Config) (agent.Agent, error) {
	switch cfg.Agent {
	case config.AgentOpenAI:
		var src tools.Source = tools.Default()
		if len(cfg.MCPServers) > 0 {
			set, err := mcptools.New(mcptools.Config{Servers: cfg.MCPServers, Builtin: tools.Default(), Logger: a.log, HTTPClient: a.tracer.Client(nil)})
			if err != nil {
				return nil, fmt.Errorf("--mcp-server: %w", err)
			}
			a.mcp, src = set, set
		}
		return openai.New(openai.Config{BaseURL: cfg.OpenAIBaseURL, APIKey: cfg.OpenAIAPIKey, Model: cfg.OpenAIModel, Tools: src,
			RequireApproval: cfg.RequireApproval, HTTPClient: a.tracer.Client(nil)})
	case config.AgentHTTP:
		return httpagent.New(httpagent.Config{URL: cfg.AgentURL, HTTPClient: a.tracer.Client(nil)})
	case config.AgentAGUI:
		return aguiagent.New(aguiagent.Config{URL: cfg.AgentURL, HTTPClient: a.tracer.Client(nil)})
	}
	return demo.New(demo.Options{}), nil
}
