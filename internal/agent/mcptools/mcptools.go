// Package mcptools offers the tools of MCP servers to agentwire's built-in
// agents, beside the built-in tools, through the official Go SDK
// (github.com/modelcontextprotocol/go-sdk). A server is reached over
// Streamable HTTP (--mcp-server NAME=URL) or as a local process over stdio
// (NAME=stdio:COMMAND); its tools are named NAME.tool, listed when it
// connects and again on tools/list_changed, and called through
// tools.CallTool like any tool, so a call emits tool_executing and
// tool_completed, and the server's progress notifications become
// tool_progress. A server that is down fails its calls at once with an
// error that says so; Run reconnects it with backoff.
package mcptools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/oklog/ulid/v2"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/tools"
)

// Defaults of Config.
const (
	DefaultCallTimeout    = 2 * time.Minute
	DefaultConnectTimeout = 10 * time.Second
)

// Bounds on what a server may make agentwire hold or emit.
const (
	// maxResult bounds a call's result, in bytes of its JSON.
	maxResult = 256 << 10
	// maxTools bounds the tools taken from one server.
	maxTools = 128
	// progressInterval is the least time between two tool_progress events
	// of a call (the last notification before the end may be dropped):
	// a server that floods notifications must not flood the user's stream.
	progressInterval = 100 * time.Millisecond
	// protocolVersion is the MCP revision asked for: the newest one with
	// sessions, list_changed and progress as the servers in use speak them.
	protocolVersion = "2025-11-25"
	maxBackoff      = 30 * time.Second
)

// Server is one MCP server to connect to: a --mcp-server value.
type Server struct {
	// Name prefixes its tools' names (NAME.tool).
	Name string
	// URL is the Streamable HTTP endpoint; empty for a local process.
	URL string
	// Command is the local process and its arguments (stdio).
	Command []string
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// ParseServer reads NAME=URL (an http or https Streamable HTTP endpoint) or
// NAME=stdio:COMMAND ARGS… (a process speaking MCP on stdin and stdout).
func ParseServer(v string) (Server, error) {
	name, target, ok := strings.Cut(v, "=")
	if !ok || !nameRE.MatchString(name) {
		return Server{}, fmt.Errorf("%q: want NAME=URL or NAME=stdio:COMMAND, NAME of letters, digits, _ and - (at most 32)", v)
	}
	if cmd, ok := strings.CutPrefix(target, "stdio:"); ok {
		args := strings.Fields(cmd)
		if len(args) == 0 {
			return Server{}, fmt.Errorf("%q: stdio: needs a command", v)
		}
		return Server{Name: name, Command: args}, nil
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Server{}, fmt.Errorf("%q: %q is neither an http(s) URL nor stdio:COMMAND", v, target)
	}
	return Server{Name: name, URL: target}, nil
}

// Config configures a Set.
type Config struct {
	Servers []Server
	// Builtin are offered beside the servers' tools; nil offers none.
	Builtin *tools.Registry
	// CallTimeout bounds one call; default DefaultCallTimeout.
	CallTimeout time.Duration
	// ConnectTimeout bounds one connection attempt (the handshake and the
	// tool list); default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// HTTPClient makes the Streamable HTTP requests; default a client of
	// its own.
	HTTPClient *http.Client
	// Logger logs connections and failures (never arguments or results).
	Logger *slog.Logger
}

// Set is the built-in tools and those of the MCP servers, a tools.Source.
// Its methods are safe for concurrent use.
type Set struct {
	cfg     Config
	log     *slog.Logger
	servers []*server
	reg     atomic.Pointer[tools.Registry]
	mu      sync.Mutex // orders rebuilds of reg
	tried   sync.WaitGroup
	ready   chan struct{} // closed once every server was tried once
}

var _ tools.Source = (*Set)(nil)

// New returns the set for cfg; it connects nothing before Run.
func New(cfg Config) (*Set, error) {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Set{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}
	seen := map[string]bool{}
	for _, sv := range cfg.Servers {
		if seen[sv.Name] {
			return nil, fmt.Errorf("mcp server %q named twice", sv.Name)
		}
		seen[sv.Name] = true
		s.servers = append(s.servers, &server{set: s, cfg: sv, progress: map[string]*progressSink{}})
	}
	s.rebuild()
	return s, nil
}

// Ready is closed once Run has tried to connect to every server once
// (each within ConnectTimeout), whether it could or not: from then on the
// tools of every server that was up are offered.
func (s *Set) Ready() <-chan struct{} { return s.ready }

// Registry returns the tools as they are now.
func (s *Set) Registry() *tools.Registry { return s.reg.Load() }

// Run keeps every server connected until ctx ends, reconnecting with
// backoff (up to 30 s) when one is down or goes away; it returns once
// every connection is closed. Call it once.
func (s *Set) Run(ctx context.Context) {
	var wg sync.WaitGroup
	s.tried.Add(len(s.servers))
	wg.Go(func() { s.tried.Wait(); close(s.ready) })
	for _, sv := range s.servers {
		wg.Go(func() { sv.run(ctx) })
	}
	wg.Wait()
}

// rebuild makes the registry from the built-in tools and each server's
// last known list. A server keeps its tools while it is down: a call then
// says the server is down, which the model can tell the user.
func (s *Set) rebuild() {
	s.mu.Lock()
	defer s.mu.Unlock()
	all := s.cfg.Builtin.List()
	for _, sv := range s.servers {
		all = append(all, sv.toolList()...)
	}
	s.reg.Store(tools.New(all...))
}

// server is one MCP server's connection and tools.
type server struct {
	set *Set
	cfg Server

	mu      sync.Mutex
	session *mcp.ClientSession // nil while down
	tools   []tools.Tool

	pmu      sync.Mutex
	progress map[string]*progressSink // progress token → the call's sink

	lists sync.WaitGroup // tools/list calls after list_changed
}

// redact keeps the server's URL out of a logged error: it may carry a
// credential (user info, a token in the query); its host and path stay.
func (sv *server) redact(err error) string {
	msg := err.Error()
	if sv.cfg.URL == "" {
		return msg
	}
	u, perr := url.Parse(sv.cfg.URL)
	if perr != nil {
		return strings.ReplaceAll(msg, sv.cfg.URL, "[mcp server URL]")
	}
	safe := u.Scheme + "://" + u.Host + u.Path
	msg = strings.ReplaceAll(msg, sv.cfg.URL, safe)
	if u.User != nil {
		msg = strings.ReplaceAll(msg, u.User.String(), "[redacted]")
	}
	if u.RawQuery != "" {
		msg = strings.ReplaceAll(msg, u.RawQuery, "[redacted]")
	}
	return msg
}

func (sv *server) toolList() []tools.Tool {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.tools
}

func (sv *server) current() *mcp.ClientSession {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	return sv.session
}

func (sv *server) run(ctx context.Context) {
	log := sv.set.log.With("mcp_server", sv.cfg.Name)
	var once sync.Once
	tried := func() { once.Do(sv.set.tried.Done) }
	defer tried()         // even when ctx ended before the first attempt
	defer sv.lists.Wait() // the lists list_changed started
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		cs, err := sv.connect(ctx)
		tried()
		if err == nil {
			backoff = 500 * time.Millisecond
			log.Info("mcp server connected", "tools", len(sv.toolList()))
			stop := context.AfterFunc(ctx, func() { _ = cs.Close() })
			_ = cs.Wait()
			stop()
			sv.mu.Lock()
			sv.session = nil
			sv.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			log.Warn("mcp server connection lost; reconnecting")
		} else if ctx.Err() == nil {
			log.Warn("mcp server unreachable; retrying", "err", sv.redact(err), "in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// connect opens a session and lists the tools.
func (sv *server) connect(ctx context.Context) (*mcp.ClientSession, error) {
	cctx, cancel := context.WithTimeout(ctx, sv.set.cfg.ConnectTimeout)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "agentwire", Version: "1"}, &mcp.ClientOptions{
		Capabilities: &mcp.ClientCapabilities{},
		ToolListChangedHandler: func(_ context.Context, req *mcp.ToolListChangedRequest) {
			// Not on the session's reading goroutine: listing waits for
			// an answer that goroutine must read.
			sv.lists.Go(func() {
				lctx, cancel := context.WithTimeout(ctx, sv.set.cfg.ConnectTimeout)
				defer cancel()
				if err := sv.list(lctx, req.Session); err != nil && ctx.Err() == nil {
					sv.set.log.Warn("mcp tools/list after list_changed", "mcp_server", sv.cfg.Name, "err", sv.redact(err))
				}
			})
		},
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			sv.reportProgress(req.Params)
		},
	})
	var tr mcp.Transport
	if sv.cfg.URL != "" {
		// No retries inside the transport: a broken session is closed
		// and run reconnects it, so a call never waits on retries.
		tr = &mcp.StreamableClientTransport{Endpoint: sv.cfg.URL, HTTPClient: sv.set.cfg.HTTPClient, MaxRetries: -1}
	} else {
		// Not CommandContext: the process is ended by closing the session.
		cmd := exec.Command(sv.cfg.Command[0], sv.cfg.Command[1:]...)
		cmd.Env = childEnv(os.Environ())
		tr = &mcp.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}
	}
	cs, err := client.Connect(cctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: protocolVersion})
	if err != nil {
		return nil, err
	}
	if err := sv.list(cctx, cs); err != nil {
		_ = cs.Close()
		return nil, err
	}
	sv.mu.Lock()
	sv.session = cs
	sv.mu.Unlock()
	return cs, nil
}

// list reads the server's tools and rebuilds the set's registry.
func (sv *server) list(ctx context.Context, cs *mcp.ClientSession) error {
	var ts []tools.Tool
	seen := map[string]bool{} // a name listed twice would make tools.New panic
	for t, err := range cs.Tools(ctx, nil) {
		if err != nil {
			return fmt.Errorf("tools/list: %w", err)
		}
		if len(ts) == maxTools {
			sv.set.log.Warn("mcp server lists too many tools; the rest are ignored", "mcp_server", sv.cfg.Name, "max", maxTools)
			break
		}
		if !validToolName(t.Name) || seen[t.Name] {
			sv.set.log.Warn("mcp tool with an unusable or repeated name ignored", "mcp_server", sv.cfg.Name)
			continue
		}
		seen[t.Name] = true
		schema, err := json.Marshal(t.InputSchema)
		if err != nil || len(schema) == 0 || schema[0] != '{' {
			schema = json.RawMessage(`{"type":"object"}`)
		}
		ts = append(ts, &tool{sv: sv, name: sv.cfg.Name + "." + t.Name, remote: t.Name, desc: t.Description, schema: schema})
	}
	sv.mu.Lock()
	sv.tools = ts
	sv.mu.Unlock()
	sv.set.rebuild()
	return nil
}

// validToolName accepts MCP's tool names (letters, digits, _ - . /, at
// most 128) and nothing a log or event would misread.
func validToolName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_-./", c)) {
			return false
		}
	}
	return true
}

// childEnv is the environment of a stdio server: agentwire's own, less its
// AGENTWIRE_… variables, which hold its secrets (signing key, API keys,
// database and model credentials) that a tool process has no use for.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "AGENTWIRE_") {
			out = append(out, kv)
		}
	}
	return out
}

// progressSink forwards one call's progress until the call returns.
type progressSink struct {
	ctx  context.Context
	last time.Time
}

func (sv *server) reportProgress(p *mcp.ProgressNotificationParams) {
	tok, ok := p.ProgressToken.(string)
	if !ok {
		return
	}
	// Under pmu, so that once call has removed its sink no report of it
	// is still being emitted: tool_progress never follows tool_completed.
	sv.pmu.Lock()
	defer sv.pmu.Unlock()
	sink := sv.progress[tok]
	if sink == nil {
		return
	}
	now := time.Now()
	if now.Sub(sink.last) < progressInterval && (p.Total == 0 || p.Progress < p.Total) {
		return
	}
	sink.last = now
	tools.ReportProgress(sink.ctx, agent.Progress{Progress: p.Progress, Total: p.Total, Message: clip(p.Message, 1024)})
}

// tool is one tool of an MCP server.
type tool struct {
	sv     *server
	name   string // NAME.tool
	remote string // the server's name for it
	desc   string
	schema json.RawMessage
}

func (t *tool) Name() string                { return t.name }
func (t *tool) Description() string         { return t.desc }
func (t *tool) Parameters() json.RawMessage { return t.schema }

// Call calls the tool on its server, within CallTimeout, forwarding the
// server's progress notifications. A server that is down, a call that
// times out or a connection that breaks during the call are errors saying
// so; the broken session is closed so that run reconnects it.
func (t *tool) Call(ctx context.Context, args json.RawMessage) (any, error) {
	sv := t.sv
	cs := sv.current()
	if cs == nil {
		return nil, fmt.Errorf("MCP server %q is not connected (down or unreachable): check that it runs and --mcp-server %s=…; agentwire keeps reconnecting", sv.cfg.Name, sv.cfg.Name)
	}
	cctx, cancel := context.WithTimeout(ctx, sv.set.cfg.CallTimeout)
	defer cancel()

	tok := ulid.Make().String()
	sv.pmu.Lock()
	sv.progress[tok] = &progressSink{ctx: ctx}
	sv.pmu.Unlock()
	defer func() {
		sv.pmu.Lock()
		delete(sv.progress, tok)
		sv.pmu.Unlock()
	}()

	var arguments any = json.RawMessage(`{}`)
	if len(args) > 0 && string(args) != "null" {
		arguments = args
	}
	params := &mcp.CallToolParams{Name: t.remote, Arguments: arguments}
	params.SetProgressToken(tok)
	res, err := cs.CallTool(cctx, params)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case cctx.Err() != nil:
		return nil, fmt.Errorf("MCP server %q did not answer within %v", sv.cfg.Name, sv.set.cfg.CallTimeout)
	case errors.Is(err, mcp.ErrConnectionClosed) || !isToolError(err):
		sv.set.log.Warn("mcp call failed; reconnecting", "mcp_server", sv.cfg.Name, "tool", t.remote, "err", sv.redact(err))
		_ = cs.Close()
		return nil, fmt.Errorf("MCP server %q went away during the call: try again once it is back", sv.cfg.Name)
	default:
		return nil, fmt.Errorf("MCP server %q refused the call: %s", sv.cfg.Name, clip(err.Error(), 500))
	}
	return result(res)
}

// isToolError reports whether err is the server's JSON-RPC answer (an
// unknown tool, bad arguments), not a broken connection.
func isToolError(err error) bool {
	var we *jsonrpc.Error
	return errors.As(err, &we)
}

// result turns an MCP result into a tool result: the structured content
// when there is one, else the text of its content (other kinds named), and
// an error when the server flagged one.
func result(res *mcp.CallToolResult) (any, error) {
	var text strings.Builder
	for _, c := range res.Content {
		if text.Len() > 0 {
			text.WriteString("\n")
		}
		switch c := c.(type) {
		case *mcp.TextContent:
			text.WriteString(c.Text)
		default:
			fmt.Fprintf(&text, "[%T content omitted]", c)
		}
	}
	if res.IsError {
		return nil, errors.New(clip(text.String(), 2000))
	}
	var out any = text.String()
	if res.StructuredContent != nil {
		out = res.StructuredContent
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("result does not encode as JSON: %w", err)
	}
	if len(b) > maxResult {
		return nil, fmt.Errorf("result is %d bytes, over the %d allowed", len(b), maxResult)
	}
	return json.RawMessage(b), nil
}

// clip cuts s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
