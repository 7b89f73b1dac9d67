package mcptools_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/agenttest"
	"github.com/agentwire/agentwire/internal/agent/mcptools"
	"github.com/agentwire/agentwire/internal/agent/openai"
	"github.com/agentwire/agentwire/internal/agent/tools"
	"github.com/agentwire/agentwire/protocol"
)

// stdioEnv makes the test binary an MCP server on stdin and stdout (the
// stdio transport's "local process"): TestMain runs it instead of the tests.
const stdioEnv = "MCPTOOLS_TEST_STDIO_SERVER" // not AGENTWIRE_…: the process would not get it

func TestMain(m *testing.M) {
	if os.Getenv(stdioEnv) == "1" {
		srv := newMCPServer(func() { os.Exit(3) }, nil) // "vanish" ends the process mid-call
		if err := srv.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

type addArgs struct {
	A float64 `json:"a"`
	B float64 `json:"b"`
}

type sum struct {
	Sum float64 `json:"sum"`
}

// newMCPServer is the MCP server of the tests, written with the same SDK:
// add (structured result), count (three progress notifications, a
// step's work apart, then text: a notification that arrives after its
// call's answer is dropped by the client), fail (a tool error) and vanish (calls gone, which makes the server
// go away during the call).
func newMCPServer(gone func(), release <-chan struct{}) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "testserver", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "add", Description: "adds a and b"},
		func(_ context.Context, _ *mcp.CallToolRequest, in addArgs) (*mcp.CallToolResult, sum, error) {
			return nil, sum{Sum: in.A + in.B}, nil
		})
	s.AddTool(&mcp.Tool{Name: "count", Description: "counts to three", InputSchema: json.RawMessage(`{"type":"object"}`)},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			for i := 1; i <= 3; i++ {
				if i > 1 {
					time.Sleep(120 * time.Millisecond) // the work between two steps
				}
				err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
					ProgressToken: req.Params.GetProgressToken(), Progress: float64(i), Total: 3, Message: fmt.Sprintf("step %d", i)})
				if err != nil {
					return nil, err
				}
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "counted"}}}, nil
		})
	s.AddTool(&mcp.Tool{Name: "fail", InputSchema: json.RawMessage(`{"type":"object"}`)},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "no such file"}}}, nil
		})
	s.AddTool(&mcp.Tool{Name: "vanish", InputSchema: json.RawMessage(`{"type":"object"}`)},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: 1})
			gone()
			select {
			case <-ctx.Done():
			case <-release:
			}
			return nil, errors.New("gone")
		})
	return s
}

// httpServer serves newMCPServer over Streamable HTTP. vanish closes the
// listener and every connection; its handler stays blocked until the test
// ends.
func httpServer(t *testing.T) (*httptest.Server, *mcp.Server) {
	t.Helper()
	var ts *httptest.Server
	var once sync.Once
	release := make(chan struct{})
	srv := newMCPServer(func() {
		once.Do(func() {
			_ = ts.Listener.Close() // nothing new connects
			ts.CloseClientConnections()
		})
	}, release)
	ts = httptest.NewUnstartedServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	ts.Config.SetKeepAlivesEnabled(false)
	ts.Start()
	t.Cleanup(func() {
		close(release)
		ts.CloseClientConnections()
		ts.Close()
		for ss := range srv.Sessions() { // a session its client abandoned (go-sdk #499)
			_ = ss.Close()
		}
	})
	return ts, srv
}

func stdioServer(t *testing.T) mcptools.Server {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(stdioEnv, "1") // inherited by the process
	return mcptools.Server{Name: "local", Command: []string{exe, "-test.run=^$"}}
}

// start runs a Set over servers until the test ends and checks that, once
// Ready, it offers want tools.
func start(t *testing.T, cfg mcptools.Config, want int) *mcptools.Set {
	t.Helper()
	set, err := mcptools.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { set.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-set.Ready()
	if n := set.Registry().Len(); n != want {
		t.Fatalf("tools once ready: %d, want %d", n, want)
	}
	return set
}

func waitTools(t *testing.T, set *mcptools.Set, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for set.Registry().Len() != want {
		if time.Now().After(deadline) {
			t.Fatalf("tools: got %d, want %d", set.Registry().Len(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseServer(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]mcptools.Server{
		"files=http://127.0.0.1:9000/mcp": {Name: "files", URL: "http://127.0.0.1:9000/mcp"},
		"git=stdio:mcp-git --repo .":      {Name: "git", Command: []string{"mcp-git", "--repo", "."}},
	} {
		got, err := mcptools.ParseServer(in)
		if err != nil || got.Name != want.Name || got.URL != want.URL || strings.Join(got.Command, " ") != strings.Join(want.Command, " ") {
			t.Errorf("ParseServer(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "files", "=http://x", "a b=http://x", "f=ftp://x", "f=stdio:", "f=stdio:  ", "f=localhost:80"} {
		if _, err := mcptools.ParseServer(bad); err == nil {
			t.Errorf("ParseServer(%q) accepted", bad)
		}
	}
}

// transports runs f against the test server over each transport.
func transports(t *testing.T, f func(t *testing.T, srv mcptools.Server)) {
	t.Run("http", func(t *testing.T) {
		ts, _ := httpServer(t)
		f(t, mcptools.Server{Name: "remote", URL: ts.URL})
	})
	t.Run("stdio", func(t *testing.T) { f(t, stdioServer(t)) })
}

func TestCallsAndProgress(t *testing.T) {
	transports(t, func(t *testing.T, srv mcptools.Server) {
		set := start(t, mcptools.Config{Servers: []mcptools.Server{srv}, Builtin: tools.Default()}, 6)
		reg := set.Registry()
		if _, ok := reg.Get("calculator"); !ok {
			t.Error("built-in calculator missing")
		}
		ctx := context.Background()

		var rec agenttest.Recorder
		res, err := tools.CallTool(ctx, &rec, reg, "c1", srv.Name+".add", json.RawMessage(`{"a":2,"b":40}`))
		if err != nil || !strings.Contains(fmt.Sprint(string(res.(json.RawMessage))), `"sum":42`) {
			t.Fatalf("add: %s, %v", res, err)
		}
		res, err = tools.CallTool(ctx, &rec, reg, "c2", srv.Name+".count", nil)
		if err != nil || string(res.(json.RawMessage)) != `"counted"` {
			t.Fatalf("count: %s, %v", res, err)
		}
		_, err = tools.CallTool(ctx, &rec, reg, "c3", srv.Name+".fail", nil)
		if !errors.Is(err, tools.ErrCallFailed) || !strings.Contains(err.Error(), "no such file") {
			t.Fatalf("fail: %v", err)
		}
		rec.AssertValid(t)
		prog := rec.Of(protocol.TypeToolProgress)
		if len(prog) == 0 {
			t.Fatalf("no tool_progress; events: %s", &rec)
		}
		for _, p := range prog {
			if p.ToolCallID != "c2" || p.Progress.Total != 3 || !strings.HasPrefix(p.Progress.Message, "step ") {
				t.Errorf("progress %+v", p.Progress)
			}
		}
	})
}

// fakeModel is a Chat Completions endpoint that asks for one tool call,
// then answers with the tool's result it was sent.
type fakeModel struct {
	t    *testing.T
	call string // the function name to call
	mu   sync.Mutex
	reqs []map[string]any
}

func (f *fakeModel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		f.t.Errorf("request: %v", err)
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, body)
	n := len(f.reqs)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	send := func(v any) {
		b, _ := json.Marshal(v)
		fmt.Fprintf(w, "data: %s\n\n", b)
	}
	choice := func(delta any, finish any) map[string]any {
		return map[string]any{"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}}
	}
	if n == 1 {
		send(choice(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "id": "call_1",
			"function": map[string]any{"name": f.call, "arguments": `{}`}}}}, "tool_calls"))
		send(map[string]any{"choices": []any{}, "usage": map[string]any{"prompt_tokens": 10, "completion_tokens": 5}})
	} else {
		msgs := body["messages"].([]any)
		last := msgs[len(msgs)-1].(map[string]any)
		send(choice(map[string]any{"content": fmt.Sprintf("tool said %v", last["content"])}, "stop"))
		send(map[string]any{"choices": []any{}, "usage": map[string]any{"prompt_tokens": 20, "completion_tokens": 7}})
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

// runAgent runs the OpenAI agent, with set's tools, against model.
func runAgent(t *testing.T, set *mcptools.Set, model *fakeModel) *agenttest.Recorder {
	t.Helper()
	ms := httptest.NewServer(model)
	t.Cleanup(ms.Close)
	a, err := openai.New(openai.Config{BaseURL: ms.URL, Model: "m", Tools: set})
	if err != nil {
		t.Fatal(err)
	}
	rec := &agenttest.Recorder{}
	if err := a.Run(context.Background(), runOf("call it"), rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestOpenAIAgentCallsMCPTool: the OpenAI agent (a fake model) is offered
// the MCP tools beside the built-in ones, under valid function names, calls
// one with progress, and gets its result back; usage is summed.
func TestOpenAIAgentCallsMCPTool(t *testing.T) {
	transports(t, func(t *testing.T, srv mcptools.Server) {
		set := start(t, mcptools.Config{Servers: []mcptools.Server{srv}, Builtin: tools.Default()}, 6)
		model := &fakeModel{t: t, call: srv.Name + "_count"}
		rec := runAgent(t, set, model)
		if got := rec.Completed(t); got != `tool said "counted"` {
			t.Errorf("answer %q", got)
		}
		exec := rec.Of(protocol.TypeToolExecuting)
		if len(exec) != 1 || exec[0].Tool != srv.Name+".count" {
			t.Errorf("tool_executing %+v", exec)
		}
		if len(rec.Of(protocol.TypeToolProgress)) == 0 {
			t.Errorf("no tool_progress: %s", rec)
		}
		if u := rec.Usage(); u != (protocol.Usage{InputTokens: 30, OutputTokens: 12}) {
			t.Errorf("usage %+v", u)
		}
		var names []string
		for _, f := range model.reqs[0]["tools"].([]any) {
			names = append(names, f.(map[string]any)["function"].(map[string]any)["name"].(string))
		}
		if got := strings.Join(names, " "); !strings.Contains(got, srv.Name+"_add") || !strings.Contains(got, "calculator") || strings.Contains(got, ".") {
			t.Errorf("functions offered: %s", got)
		}
	})
}

// TestServerGoesAwayMidCall: the call ends with an error naming the server,
// the run goes on (the model is told), and the set reconnects once the
// server is back.
func TestServerGoesAwayMidCall(t *testing.T) {
	transports(t, func(t *testing.T, srv mcptools.Server) {
		set := start(t, mcptools.Config{Servers: []mcptools.Server{srv}, Builtin: tools.Default(), CallTimeout: 30 * time.Second}, 6)
		startAt := time.Now()
		rec := runAgent(t, set, &fakeModel{t: t, call: srv.Name + "_vanish"})
		rec.Completed(t)
		done := rec.Of(protocol.TypeToolCompleted)
		if len(done) != 1 || done[0].OK || !strings.Contains(done[0].Error, fmt.Sprintf("MCP server %q", srv.Name)) {
			t.Fatalf("tool_completed %+v", done)
		}
		if d := time.Since(startAt); d > 20*time.Second {
			t.Errorf("the call took %v to fail", d)
		}

		// Down now: the next call fails at once, saying so.
		var rec2 agenttest.Recorder
		_, err := tools.CallTool(context.Background(), &rec2, set.Registry(), "c2", srv.Name+".add", json.RawMessage(`{"a":1,"b":1}`))
		if err == nil {
			if srv.URL != "" {
				t.Fatal("call to a closed server succeeded")
			}
			return // a stdio server is restarted by the reconnect: it may be back already
		}
		if !errors.Is(err, tools.ErrCallFailed) || !strings.Contains(err.Error(), srv.Name) {
			t.Fatalf("call while down: %v", err)
		}
	})
}

// TestListChanged: a tool the server adds is offered without a restart.
func TestListChanged(t *testing.T) {
	ts, srv := httpServer(t)
	set := start(t, mcptools.Config{Servers: []mcptools.Server{{Name: "remote", URL: ts.URL}}}, 4)
	srv.AddTool(&mcp.Tool{Name: "late", InputSchema: json.RawMessage(`{"type":"object"}`)},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "here"}}}, nil
		})
	waitTools(t, set, 5)
	if _, ok := set.Registry().Get("remote.late"); !ok {
		t.Fatal("remote.late not offered")
	}
}

// TestDownAtStart: a server that cannot be reached offers nothing, and
// the built-in tools still work.
func TestDownAtStart(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	url := ts.URL
	ts.Close()
	set, err := mcptools.New(mcptools.Config{Servers: []mcptools.Server{{Name: "gone", URL: url}}, Builtin: tools.Default(), ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { set.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	<-set.Ready() // tried, and failed
	if n := set.Registry().Len(); n != 2 {
		t.Errorf("tools %d, want the 2 built-in", n)
	}
}

func runOf(text string) agent.Run {
	return agent.Run{ID: "r1", ThreadID: "t1", UserID: "u1", Messages: []agent.Message{{Role: "user", Content: text}}}
}

// TestRunWithEndedContext returns at once, Ready closed.
func TestRunWithEndedContext(t *testing.T) {
	set, err := mcptools.New(mcptools.Config{Servers: []mcptools.Server{{Name: "x", URL: "http://127.0.0.1:1/mcp"}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	set.Run(ctx)
	<-set.Ready()
}
