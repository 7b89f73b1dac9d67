// Package config is what `agentwire serve` is configured with: one Config,
// its defaults declared once (Default), loaded from flags and their
// AGENTWIRE_… environment variables and validated once (Load). An error
// names the flag or variable at fault.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/agentwire/agentwire/internal/agent/mcptools"
	"github.com/agentwire/agentwire/internal/agent/openai"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/redisx"
	"github.com/agentwire/agentwire/internal/runs"
	"github.com/agentwire/agentwire/internal/server"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/tracing"
	"github.com/agentwire/agentwire/internal/ws"
)

// MinSecretBytes is the shortest HS256 secret accepted without --dev
// (RFC 7518 3.2: an HS256 key must have at least 256 bits; a short secret
// can be brute-forced from any one token).
const MinSecretBytes = 32

// Agents --agent accepts.
const (
	AgentDemo   = "demo"
	AgentOpenAI = "openai"
	AgentHTTP   = "http"
	AgentAGUI   = "agui"
)

// Config is everything serve is configured with; each field is one flag
// (named in its comment), validated by Load.
type Config struct {
	Keys Keys // --data-dir and the token keys, shared with `agentwire token`

	Addr  string // --addr
	Dev   bool   // --dev
	Agent string // --agent: AgentDemo, AgentOpenAI or AgentHTTP

	OpenAIBaseURL string // --openai-base-url
	OpenAIAPIKey  string // --openai-api-key
	OpenAIModel   string // --openai-model
	// RequireApproval: tools whose calls the openai agent asks the user
	// to approve first; "*" is every tool (--require-approval).
	RequireApproval []string
	AgentURL        string // --agent-url
	// MCPServers are the MCP servers whose tools the openai agent is
	// offered (--mcp-server NAME=URL or NAME=stdio:COMMAND, repeatable).
	MCPServers []mcptools.Server
	// UserTokenQuota is the tokens one user's runs may use per UTC day
	// (--user-token-quota); 0 is no quota.
	UserTokenQuota int

	RedisURL       string // --redis-url; "" is one node, in memory
	DatabaseURL    string // --database-url (postgres://…); "" is SQLite in the data dir
	DatabaseSchema string // --database-schema

	RunLeaseTTL    time.Duration // --run-lease-ttl
	RunLeaseRenew  time.Duration // --run-lease-renew
	MaxRunsPerUser int           // --max-runs-per-user
	RunTimeout     time.Duration // --run-timeout
	Transcripts    bool          // --transcripts
	InputTimeout   time.Duration // --input-timeout
	DeltaWindow    time.Duration // --delta-window; 0 is off

	APIKeys []string // --api-keys, comma-separated
	// AdminKeys are the admin API's keys by name (--admin-keys
	// name:key,…); none: the admin API is not served.
	AdminKeys      map[string]string
	RevocationTTL  time.Duration // --revocation-ttl
	AllowedOrigins []string      // --allowed-origins, comma-separated
	LogLevel       slog.Level    // --log-level

	MaxConnsPerUser int           // --max-connections-per-user
	MaxQueueBytes   int           // --max-queue-bytes
	MaxMessageBytes int           // --max-message-bytes
	RetentionEvents int           // --retention-events
	RetentionAge    time.Duration // --retention-age
	RetentionBytes  int           // --retention-bytes
	RateLimit       float64       // --rate-limit
	RateBurst       int           // --rate-burst
	PingInterval    time.Duration // --ping-interval
	PongTimeout     time.Duration // --pong-timeout
	ReadTimeout     time.Duration // --read-timeout
	WriteTimeout    time.Duration // --write-timeout

	DebugAddr       string        // --debug-addr; "" is off
	DrainTimeout    time.Duration // --drain-timeout
	ShutdownTimeout time.Duration // --shutdown-timeout

	// Tracing is OpenTelemetry tracing, configured by the standard OTEL_…
	// variables only (tracing.FromEnv), not by flags; off when they are
	// unset.
	Tracing tracing.Settings
}

// Default returns the configuration serve runs with when no flag or
// variable is set.
func Default() Config {
	return Config{
		Keys:            Keys{DataDir: "./data"},
		Addr:            "127.0.0.1:8080",
		Agent:           AgentDemo,
		OpenAIBaseURL:   openai.DefaultBaseURL,
		DatabaseSchema:  "public",
		RunLeaseTTL:     runs.DefaultLeaseTTL,
		RunLeaseRenew:   runs.DefaultRenewEvery,
		MaxRunsPerUser:  runs.DefaultMaxPerUser,
		RunTimeout:      runs.DefaultTimeout,
		Transcripts:     true,
		InputTimeout:    runs.DefaultInputTimeout,
		DeltaWindow:     runs.DefaultDeltaWindow,
		RevocationTTL:   30 * 24 * time.Hour,
		LogLevel:        slog.LevelInfo,
		MaxConnsPerUser: hub.DefaultMaxConnsPerUser,
		MaxQueueBytes:   hub.DefaultMaxQueueBytes,
		MaxMessageBytes: ws.DefaultMaxMessageBytes,
		RetentionEvents: stream.DefaultMaxEvents,
		RetentionAge:    stream.DefaultMaxAge,
		RetentionBytes:  stream.DefaultMaxBytes,
		RateLimit:       ws.DefaultRateLimit,
		RateBurst:       ws.DefaultRateBurst,
		PingInterval:    ws.DefaultPingInterval,
		PongTimeout:     ws.DefaultPongTimeout,
		ReadTimeout:     server.DefaultBodyTimeout,
		WriteTimeout:    server.DefaultWriteTimeout,
		DrainTimeout:    10 * time.Second,
		ShutdownTimeout: 10 * time.Second,
	}
}

// Load parses serve's args (without "serve"), each flag defaulting to its
// AGENTWIRE_… variable read through getenv and then to Default, and
// validates the result. A mistake is a UsageError or an error naming the
// flag; -h is a *HelpError listing the flags.
func Load(args []string, getenv func(string) string) (Config, error) {
	c := Default()
	f := NewFlagSet("serve", getenv)
	c.Keys.Register(f)
	var apiKeys, adminKeys, origins, logLevel, requireApproval string
	var mcpServers []string
	f.String(&c.Addr, "addr", "AGENTWIRE_ADDR", c.Addr, "listen address; :0 picks a free port")
	f.Bool(&c.Dev, "dev", "AGENTWIRE_DEV", c.Dev, "development mode: enables POST /auth/dev-login and allows localhost origins")
	f.String(&c.Agent, "agent", "AGENTWIRE_AGENT", c.Agent, "agent that answers user messages: demo, openai, http or agui")
	f.String(&c.OpenAIBaseURL, "openai-base-url", "AGENTWIRE_OPENAI_BASE_URL", c.OpenAIBaseURL, "OpenAI-compatible API root (--agent openai)")
	f.String(&c.OpenAIAPIKey, "openai-api-key", "AGENTWIRE_OPENAI_API_KEY", c.OpenAIAPIKey, "API key of the OpenAI-compatible endpoint (--agent openai)")
	f.String(&c.OpenAIModel, "openai-model", "AGENTWIRE_OPENAI_MODEL", c.OpenAIModel, "model name (--agent openai)")
	f.Repeated(&mcpServers, "mcp-server", "AGENTWIRE_MCP_SERVER", "an MCP server whose tools the openai agent may call, as NAME.tool: NAME=URL (Streamable HTTP) or NAME=stdio:COMMAND ARGS (a local process)")
	f.String(&requireApproval, "require-approval", "AGENTWIRE_REQUIRE_APPROVAL", "", "comma-separated tools whose calls ask the user to approve first, or * for every tool (--agent openai); a denial is the call's result")
	f.String(&c.RedisURL, "redis-url", "AGENTWIRE_REDIS_URL", c.RedisURL, "Redis shared by every node (streams, tickets, connection and run limits, stop requests): redis://host:port/db, redis-cluster://h1:p1,h2:p2,… or redis-sentinel://h1:p1,…/?master=NAME (default: in memory, one node)")
	f.String(&c.DatabaseURL, "database-url", "AGENTWIRE_DATABASE_URL", c.DatabaseURL, "postgres://… shared by every node (default: SQLite in --data-dir)")
	f.String(&c.DatabaseSchema, "database-schema", "AGENTWIRE_DATABASE_SCHEMA", c.DatabaseSchema, "PostgreSQL schema holding agentwire's tables; created if missing (--database-url postgres://…)")
	f.Duration(&c.RunLeaseTTL, "run-lease-ttl", "AGENTWIRE_RUN_LEASE_TTL", c.RunLeaseTTL, "how long a run's lease lasts unrenewed; a run of a dead node ends with node_lost about this long after its last renewal")
	f.Duration(&c.RunLeaseRenew, "run-lease-renew", "AGENTWIRE_RUN_LEASE_RENEW", c.RunLeaseRenew, "how often a node renews its runs' leases and reaps expired ones; keep well under --run-lease-ttl")
	f.String(&c.AgentURL, "agent-url", "AGENTWIRE_AGENT_URL", c.AgentURL, "URL the http or agui agent POSTs runs to (--agent http, --agent agui)")
	f.Int(&c.MaxRunsPerUser, "max-runs-per-user", "AGENTWIRE_MAX_RUNS_PER_USER", c.MaxRunsPerUser, "concurrent runs one user may have (across the cluster with --redis-url); more answer too_many_runs")
	f.Int(&c.UserTokenQuota, "user-token-quota", "AGENTWIRE_USER_TOKEN_QUOTA", c.UserTokenQuota, "tokens one user's runs may use per UTC day (as the agent reports them, e.g. --agent openai); past it a message answers quota_exceeded; 0: no quota")
	f.Duration(&c.RunTimeout, "run-timeout", "AGENTWIRE_RUN_TIMEOUT", c.RunTimeout, "a run still going after this ends with agent_error timeout")
	f.Bool(&c.Transcripts, "transcripts", "AGENTWIRE_TRANSCRIPTS", c.Transcripts, "store each run's events with it (GET /api/v1/runs/{id}/events, the steps in a thread's messages); false keeps only answers and outcomes")
	f.Duration(&c.InputTimeout, "input-timeout", "AGENTWIRE_INPUT_TIMEOUT", c.InputTimeout, "a run waiting for its user's answer (input_required) this long ends with agent_error input_timeout; the run timeout does not count the wait")
	f.Duration(&c.DeltaWindow, "delta-window", "AGENTWIRE_DELTA_WINDOW", c.DeltaWindow, "an agent's agent_message_delta text is held this long at most and sent with the deltas that follow as one event (fewer events, the same text); 0 sends each delta as it comes; at most 1s")
	f.Duration(&c.DrainTimeout, "drain-timeout", "AGENTWIRE_DRAIN_TIMEOUT", c.DrainTimeout, "on SIGTERM, how long running runs may finish before they are cancelled")
	f.String(&apiKeys, "api-keys", "AGENTWIRE_API_KEYS", "", "comma-separated API keys for the server endpoints (POST /api/v1/publish)")
	f.String(&adminKeys, "admin-keys", "AGENTWIRE_ADMIN_KEYS", "", "comma-separated name:key pairs for the admin API (/api/v1/admin/…); the name is logged with each admin action, never the key; each key at least 16 bytes and different from every --api-keys key; none: no admin API")
	f.Duration(&c.RevocationTTL, "revocation-ttl", "AGENTWIRE_REVOCATION_TTL", c.RevocationTTL, "how long an admin's revocation of a user's tokens is kept (longer than your tokens live)")
	f.String(&origins, "allowed-origins", "AGENTWIRE_ALLOWED_ORIGINS", "", "comma-separated browser origins allowed on /ws; empty: same origin only; * any")
	f.String(&logLevel, "log-level", "AGENTWIRE_LOG_LEVEL", strings.ToLower(c.LogLevel.String()), "debug, info, warn or error")
	f.Int(&c.MaxConnsPerUser, "max-connections-per-user", "AGENTWIRE_MAX_CONNECTIONS_PER_USER", c.MaxConnsPerUser, "WebSocket connections one user may hold")
	f.Int(&c.MaxQueueBytes, "max-queue-bytes", "AGENTWIRE_MAX_QUEUE_BYTES", c.MaxQueueBytes, "bound of a connection's outbound queue; over it the connection closes with 4008")
	f.Int(&c.MaxMessageBytes, "max-message-bytes", "AGENTWIRE_MAX_MESSAGE_BYTES", c.MaxMessageBytes, "largest client frame; a larger one closes with 1009")
	f.Int(&c.RetentionEvents, "retention-events", "AGENTWIRE_RETENTION_EVENTS", c.RetentionEvents, "events kept per user for resume")
	f.Duration(&c.RetentionAge, "retention-age", "AGENTWIRE_RETENTION_AGE", c.RetentionAge, "how long events are kept for resume")
	f.Int(&c.RetentionBytes, "retention-bytes", "AGENTWIRE_RETENTION_BYTES", c.RetentionBytes, "frame bytes kept per user for resume; the oldest events go first")
	f.Float(&c.RateLimit, "rate-limit", "AGENTWIRE_RATE_LIMIT", c.RateLimit, "client frames per second per connection")
	f.Int(&c.RateBurst, "rate-burst", "AGENTWIRE_RATE_BURST", c.RateBurst, "burst of client frames per connection")
	f.Duration(&c.PingInterval, "ping-interval", "AGENTWIRE_PING_INTERVAL", c.PingInterval, "server ping interval")
	f.Duration(&c.PongTimeout, "pong-timeout", "AGENTWIRE_PONG_TIMEOUT", c.PongTimeout, "close with 4000 when no pong arrives this long after a ping")
	f.String(&c.DebugAddr, "debug-addr", "AGENTWIRE_DEBUG_ADDR", c.DebugAddr, "serve Go's pprof profiles on this separate address (e.g. 127.0.0.1:6060); off when empty")
	f.Duration(&c.ReadTimeout, "read-timeout", "AGENTWIRE_READ_TIMEOUT", c.ReadTimeout, "a request body must arrive within this (its headers within 10 s, or this if shorter); WebSockets are not affected")
	f.Duration(&c.WriteTimeout, "write-timeout", "AGENTWIRE_WRITE_TIMEOUT", c.WriteTimeout, "each write of an HTTP answer must complete within this: a client that stops reading is cut; WebSockets are not affected")
	f.Duration(&c.ShutdownTimeout, "shutdown-timeout", "AGENTWIRE_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, "how long SIGTERM waits for sockets to close")
	if err := f.Parse(args); err != nil {
		return Config{}, err
	}
	c.APIKeys, c.AllowedOrigins = splitList(apiKeys), splitList(origins)
	admin, err := parseAdminKeys(adminKeys)
	if err != nil {
		return Config{}, UsageError{err}
	}
	c.AdminKeys = admin
	for _, v := range mcpServers {
		srv, err := mcptools.ParseServer(v)
		if err != nil {
			return Config{}, UsageError{fmt.Errorf("--mcp-server %w", err)}
		}
		c.MCPServers = append(c.MCPServers, srv)
	}
	c.RequireApproval = splitList(requireApproval)
	if c.Tracing, err = tracing.FromEnv(getenv); err != nil {
		return Config{}, UsageError{err}
	}
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return Config{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// validate checks what the flags' types cannot.
func (c *Config) validate() error {
	var errs []error
	positive := func(flag string, ok bool, v any) {
		if !ok {
			errs = append(errs, fmt.Errorf("--%s %v: must be positive", flag, v))
		}
	}
	positive("max-runs-per-user", c.MaxRunsPerUser > 0, c.MaxRunsPerUser)
	positive("run-timeout", c.RunTimeout > 0, c.RunTimeout)
	positive("input-timeout", c.InputTimeout > 0, c.InputTimeout)
	positive("run-lease-ttl", c.RunLeaseTTL > 0, c.RunLeaseTTL)
	positive("run-lease-renew", c.RunLeaseRenew > 0, c.RunLeaseRenew)
	positive("max-connections-per-user", c.MaxConnsPerUser > 0, c.MaxConnsPerUser)
	positive("max-queue-bytes", c.MaxQueueBytes > 0, c.MaxQueueBytes)
	positive("max-message-bytes", c.MaxMessageBytes > 0, c.MaxMessageBytes)
	positive("retention-events", c.RetentionEvents > 0, c.RetentionEvents)
	positive("retention-age", c.RetentionAge > 0, c.RetentionAge)
	positive("retention-bytes", c.RetentionBytes > 0, c.RetentionBytes)
	positive("rate-limit", c.RateLimit > 0, c.RateLimit)
	positive("rate-burst", c.RateBurst > 0, c.RateBurst)
	positive("ping-interval", c.PingInterval > 0, c.PingInterval)
	positive("pong-timeout", c.PongTimeout > 0, c.PongTimeout)
	positive("read-timeout", c.ReadTimeout > 0, c.ReadTimeout)
	positive("write-timeout", c.WriteTimeout > 0, c.WriteTimeout)
	positive("revocation-ttl", c.RevocationTTL > 0, c.RevocationTTL)
	for name, key := range c.AdminKeys {
		if slices.Contains(c.APIKeys, key) {
			errs = append(errs, fmt.Errorf("--admin-keys: the key of %q is also an --api-keys key; admin keys must be their own", name))
		}
	}
	if c.UserTokenQuota < 0 {
		errs = append(errs, fmt.Errorf("--user-token-quota %d: must not be negative (0 is no quota)", c.UserTokenQuota))
	}
	if c.DeltaWindow < 0 || c.DeltaWindow > runs.MaxDeltaWindow {
		errs = append(errs, UsageError{fmt.Errorf("--delta-window %v: want 0 (off) to %v", c.DeltaWindow, runs.MaxDeltaWindow)})
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("--drain-timeout %v: must not be negative", c.DrainTimeout))
	}
	switch c.Agent {
	case AgentDemo:
	case AgentOpenAI:
		if c.OpenAIModel == "" {
			errs = append(errs, errors.New("--agent openai needs --openai-model (and usually --openai-api-key)"))
		}
	case AgentHTTP, AgentAGUI:
		if c.AgentURL == "" {
			errs = append(errs, fmt.Errorf("--agent %s needs --agent-url", c.Agent))
		}
	default:
		errs = append(errs, fmt.Errorf("--agent %q: want demo, openai, http or agui", c.Agent))
	}
	if len(c.MCPServers) > 0 && c.Agent != AgentOpenAI {
		errs = append(errs, fmt.Errorf("--mcp-server: MCP tools are offered to the model of --agent openai; --agent %s does not call them", c.Agent))
	}
	if c.DatabaseURL != "" && !c.Postgres() {
		errs = append(errs, errors.New("--database-url: want postgres://…; without it the SQLite file in --data-dir is used"))
	}
	if c.RedisURL != "" {
		if _, _, err := redisx.ParseURL(c.RedisURL); err != nil {
			errs = append(errs, fmt.Errorf("--redis-url: %w", err))
		}
	}
	if err := c.Keys.validate(); err != nil {
		errs = append(errs, err)
	}
	if n := len(c.Keys.Secret); n > 0 && n < MinSecretBytes && !c.Dev {
		errs = append(errs, fmt.Errorf("--jwt-secret is %d bytes: HS256 needs at least %d (a shorter one is accepted only with --dev)", n, MinSecretBytes))
	}
	return errors.Join(errs...)
}

// MinAdminKeyBytes is the shortest admin key accepted.
const MinAdminKeyBytes = 16

// parseAdminKeys reads --admin-keys: comma-separated name:key pairs, names
// of letters, digits, '.', '_' or '-' (at most 64), unique, keys at least
// MinAdminKeyBytes long.
func parseAdminKeys(v string) (map[string]string, error) {
	keys := map[string]string{}
	for _, pair := range splitList(v) {
		name, key, ok := strings.Cut(pair, ":")
		name, key = strings.TrimSpace(name), strings.TrimSpace(key)
		switch {
		case !ok || name == "" || key == "":
			return nil, errors.New("--admin-keys: want comma-separated name:key pairs")
		case len(name) > 64 || strings.IndexFunc(name, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
		}) >= 0:
			return nil, fmt.Errorf("--admin-keys: key name %q: want at most 64 letters, digits, '.', '_' or '-'", name)
		case len(key) < MinAdminKeyBytes:
			return nil, fmt.Errorf("--admin-keys: the key of %q is %d bytes, want at least %d", name, len(key), MinAdminKeyBytes)
		}
		if _, dup := keys[name]; dup {
			return nil, fmt.Errorf("--admin-keys: key name %q given twice", name)
		}
		keys[name] = key
	}
	if len(keys) == 0 {
		return nil, nil
	}
	return keys, nil
}

// Postgres reports whether --database-url names PostgreSQL (else the store
// is the SQLite file in the data dir).
func (c *Config) Postgres() bool {
	return strings.HasPrefix(c.DatabaseURL, "postgres://") || strings.HasPrefix(c.DatabaseURL, "postgresql://")
}

// ShortSecret reports whether --jwt-secret is under MinSecretBytes, which
// Load accepts only with --dev.
func (c *Config) ShortSecret() bool {
	n := len(c.Keys.Secret)
	return n > 0 && n < MinSecretBytes
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

// Keys choose how user tokens are verified and, for HS256, signed: serve
// and `agentwire token` register the same flags, so both use the same key.
type Keys struct {
	DataDir       string // --data-dir: agentwire's files (the generated secret, the SQLite file)
	Secret        string // --jwt-secret: HS256
	PublicKeyFile string // --jwt-public-key-file: RS256, ES256 or EdDSA
	JWKSURL       string // --jwks-url
	Issuer        string // --jwt-issuer: required iss, when set
	Audience      string // --jwt-audience: required aud, when set
}

// Register defines the key flags on f, with k's fields as defaults.
func (k *Keys) Register(f *FlagSet) {
	f.String(&k.DataDir, "data-dir", "AGENTWIRE_DATA_DIR", k.DataDir, "directory for agentwire's files (the generated JWT secret)")
	f.String(&k.Secret, "jwt-secret", "AGENTWIRE_JWT_SECRET", k.Secret, "HS256 secret for user tokens")
	f.String(&k.PublicKeyFile, "jwt-public-key-file", "AGENTWIRE_JWT_PUBLIC_KEY_FILE", k.PublicKeyFile, "PEM public key (RSA, EC P-256 or Ed25519) for user tokens")
	f.String(&k.JWKSURL, "jwks-url", "AGENTWIRE_JWKS_URL", k.JWKSURL, "JWKS URL for user tokens")
	f.String(&k.Issuer, "jwt-issuer", "AGENTWIRE_JWT_ISSUER", k.Issuer, "required iss claim, when set")
	f.String(&k.Audience, "jwt-audience", "AGENTWIRE_JWT_AUDIENCE", k.Audience, "required aud claim, when set")
}

func (k *Keys) validate() error {
	n := 0
	for _, s := range []string{k.Secret, k.PublicKeyFile, k.JWKSURL} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return errors.New("set only one of --jwt-secret, --jwt-public-key-file and --jwks-url")
	}
	return nil
}

// Auth resolves the verification config; its Secret is the HS256 signing
// secret, if any. With no key configured the secret is generated once and
// kept in the data dir.
func (k *Keys) Auth() (auth.Config, error) {
	cfg := auth.Config{PublicKeyFile: k.PublicKeyFile, JWKSURL: k.JWKSURL, Issuer: k.Issuer, Audience: k.Audience}
	if err := k.validate(); err != nil {
		return cfg, err
	}
	switch {
	case k.Secret != "":
		cfg.Secret = []byte(k.Secret)
	case k.PublicKeyFile == "" && k.JWKSURL == "":
		secret, err := auth.LoadOrCreateSecret(k.DataDir)
		if err != nil {
			return cfg, fmt.Errorf("--data-dir %s: %w", k.DataDir, err)
		}
		cfg.Secret = secret
	}
	return cfg, nil
}
