package openai_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/agenttest"
	"github.com/agentwire/agentwire/internal/agent/openai"
	"github.com/agentwire/agentwire/internal/agent/tools"
	"github.com/agentwire/agentwire/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const apiKey = "sk-test-very-secret-key"

// fake is an OpenAI-compatible endpoint answering the i-th request with
// the i-th script (the last one repeats), recording the requests.
type fake struct {
	t       *testing.T
	scripts []func(w http.ResponseWriter, r *http.Request)
	mu      sync.Mutex
	reqs    []map[string]any
	auth    []string
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		http.Error(w, "wrong route "+r.URL.Path, http.StatusNotFound)
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		f.t.Errorf("request body: %v", err)
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, body)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	i := min(len(f.reqs), len(f.scripts)) - 1
	f.mu.Unlock()
	f.scripts[i](w, r)
}

func (f *fake) requests() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.reqs...)
}

// stream writes chunks as the real wire format does, flushing each.
func stream(chunks ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, c := range chunks {
			fmt.Fprintf(w, "data: %s\n\n", c)
			w.(http.Flusher).Flush()
		}
	}
}

func chunkJSON(delta any, finish any) string {
	b, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
		"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
	})
	return string(b)
}

func content(s string) string { return chunkJSON(map[string]any{"content": s}, nil) }

func role() string { return chunkJSON(map[string]any{"role": "assistant", "content": ""}, nil) }

func finish(reason string) string { return chunkJSON(map[string]any{}, reason) }

// toolDelta is one piece of a streamed tool call; id and name only in the
// first piece, as OpenAI sends them.
func toolDelta(index int, id, name, args string) string {
	tc := map[string]any{"index": index, "function": map[string]any{"arguments": args}}
	if id != "" {
		tc["id"], tc["type"] = id, "function"
	}
	if name != "" {
		tc["function"].(map[string]any)["name"] = name
	}
	return chunkJSON(map[string]any{"tool_calls": []any{tc}}, nil)
}

const done = "[DONE]"

func newAgent(t *testing.T, f *fake, mod func(*openai.Config)) (*openai.Agent, *httptest.Server) {
	t.Helper()
	f.t = t
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg := openai.Config{BaseURL: srv.URL + "/v1/", APIKey: apiKey, Model: "test-model", HTTPClient: srv.Client(), Tools: tools.Default(), RequestTimeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	a, err := openai.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, srv
}

func userRun(msgs ...string) agent.Run {
	r := agent.Run{ID: "r", ThreadID: "t", UserID: "u"}
	for i, m := range msgs {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		r.Messages = append(r.Messages, agent.Message{Role: role, Content: m})
	}
	return r
}

func run(t *testing.T, a *openai.Agent, r agent.Run) *agenttest.Recorder {
	t.Helper()
	rec := &agenttest.Recorder{}
	if err := a.Run(context.Background(), r, rec); err != nil {
		t.Fatalf("Run: %v%s", err, rec)
	}
	return rec
}

func TestPlainAnswer(t *testing.T) {
	t.Parallel()
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){stream(role(), content("Hel"), content("lo!"), finish("stop"), done)}}
	a, _ := newAgent(t, f, nil)
	rec := run(t, a, userRun("hi"))
	rec.AssertTypes(t, "agent_thinking", "agent_message_delta", "agent_message_delta", "agent_completed")
	if got := rec.Completed(t); got != "Hello!" {
		t.Errorf("final = %q", got)
	}
	if th := rec.Of(protocol.TypeAgentThinking)[0].Text; !strings.Contains(th, "test-model") {
		t.Errorf("thinking = %q", th)
	}
	req := f.requests()[0]
	if req["model"] != "test-model" || req["stream"] != true {
		t.Errorf("request = %v", req)
	}
	if tl, _ := req["tools"].([]any); len(tl) != 2 {
		t.Errorf("tools = %v", req["tools"])
	}
	if f.auth[0] != "Bearer "+apiKey {
		t.Errorf("Authorization = %q", f.auth[0])
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){stream(content("ok"), finish("stop"))}} // no [DONE]: finish_reason is enough
	a, _ := newAgent(t, f, func(c *openai.Config) { c.Tools = nil; c.APIKey = "" })
	rec := run(t, a, userRun("first", "answer one", "second"))
	rec.Completed(t)
	msgs := f.requests()[0]["messages"].([]any)
	var got []string
	for _, m := range msgs {
		m := m.(map[string]any)
		got = append(got, fmt.Sprintf("%s:%v", m["role"], m["content"]))
	}
	if len(got) != 4 || !strings.HasPrefix(got[0], "system:") || strings.Join(got[1:], "|") != "user:first|assistant:answer one|user:second" {
		t.Errorf("messages = %q", got)
	}
	if _, ok := f.requests()[0]["tools"]; ok {
		t.Error("tools sent with no registry")
	}
	if f.auth[0] != "" {
		t.Errorf("Authorization %q sent without a key", f.auth[0])
	}
}

func TestToolRound(t *testing.T) {
	t.Parallel()
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){
		stream(role(), content("Let me compute."),
			toolDelta(0, "call_1", "calculator", ""),
			toolDelta(0, "", "", `{"expr`),
			toolDelta(0, "", "", `ession": "12*(3`),
			toolDelta(0, "", "", `+4)"}`),
			finish("tool_calls"), done),
		stream(content("It is "), content("84."), finish("stop"), done),
	}}
	a, _ := newAgent(t, f, nil)
	rec := run(t, a, userRun("what is 12*(3+4)?"))
	rec.AssertTypes(t, "agent_thinking", "agent_message_delta", "tool_executing", "tool_completed",
		"agent_message_delta", "agent_message_delta", "agent_message_delta", "agent_completed")
	if got := rec.Completed(t); got != "Let me compute.\n\nIt is 84." || rec.Text() != got {
		t.Errorf("final = %q, deltas %q", got, rec.Text())
	}
	ex, co := rec.Of(protocol.TypeToolExecuting)[0], rec.Of(protocol.TypeToolCompleted)[0]
	if ex.ToolCallID != "call_1" || ex.Tool != "calculator" || string(ex.Args) != `{"expression":"12*(3+4)"}` {
		t.Errorf("tool_executing = %+v", ex)
	}
	if !co.OK || string(co.Result) != "84" || co.ToolCallID != "call_1" {
		t.Errorf("tool_completed = %+v", co)
	}
	reqs := f.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	msgs := reqs[1]["messages"].([]any)
	asst, tool := msgs[2].(map[string]any), msgs[3].(map[string]any)
	calls := asst["tool_calls"].([]any)
	fn := calls[0].(map[string]any)["function"].(map[string]any)
	if asst["role"] != "assistant" || asst["content"] != "Let me compute." || calls[0].(map[string]any)["id"] != "call_1" ||
		fn["name"] != "calculator" || fn["arguments"] != `{"expression": "12*(3+4)"}` {
		t.Errorf("assistant message = %v", asst)
	}
	if tool["role"] != "tool" || tool["tool_call_id"] != "call_1" || tool["content"] != "84" {
		t.Errorf("tool message = %v", tool)
	}
}

func TestParallelToolCalls(t *testing.T) {
	t.Parallel()
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){
		stream(
			toolDelta(0, "call_a", "calculator", `{"expression":`),
			toolDelta(1, "call_b", "current_time", `{"time`),
			toolDelta(0, "", "", `"2^10"}`),
			toolDelta(1, "", "", `zone":"Europe/Paris"}`),
			finish("tool_calls"), done),
		stream(content("done"), finish("stop"), done),
	}}
	fixed := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	a, _ := newAgent(t, f, func(c *openai.Config) {
		c.Tools = tools.New(tools.Calculator(), tools.CurrentTime(func() time.Time { return fixed }))
	})
	rec := run(t, a, userRun("two things"))
	rec.AssertTypes(t, "agent_thinking", "tool_executing", "tool_completed", "tool_executing", "tool_completed", "agent_message_delta", "agent_completed")
	rec.Completed(t)
	co := rec.Of(protocol.TypeToolCompleted)
	if co[0].ToolCallID != "call_a" || string(co[0].Result) != "1024" || co[1].ToolCallID != "call_b" || string(co[1].Result) != `{"time":"2024-01-02T04:04:05+01:00","timezone":"Europe/Paris"}` {
		t.Errorf("tool results:%s", rec)
	}
	msgs := f.requests()[1]["messages"].([]any)
	if len(msgs) != 5 || msgs[3].(map[string]any)["tool_call_id"] != "call_a" || msgs[4].(map[string]any)["tool_call_id"] != "call_b" {
		t.Errorf("messages = %v", msgs)
	}
	if msgs[2].(map[string]any)["content"] != nil {
		t.Errorf("assistant content = %v, want null", msgs[2].(map[string]any)["content"])
	}
}

func TestUnknownToolAndToolError(t *testing.T) {
	t.Parallel()
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){
		stream(toolDelta(0, "c1", "weather", `{"city":"Paris"}`), toolDelta(1, "c2", "calculator", `{"expression":"1/0"}`), finish("tool_calls"), done),
		stream(content("Sorry."), finish("stop"), done),
	}}
	a, _ := newAgent(t, f, nil)
	rec := run(t, a, userRun("weather?"))
	if rec.Completed(t) != "Sorry." {
		t.Errorf("final %q", rec.Completed(t))
	}
	co := rec.Of(protocol.TypeToolCompleted)
	if co[0].OK || co[0].Error != "unknown tool" || co[1].OK || co[1].Error != "division by zero" {
		t.Errorf("tool_completed:%s", rec)
	}
	msgs := f.requests()[1]["messages"].([]any)
	if c := msgs[3].(map[string]any)["content"]; c != `{"error":"unknown tool"}` {
		t.Errorf("tool message = %v", c)
	}
	if c := msgs[4].(map[string]any)["content"]; c != `{"error":"division by zero"}` {
		t.Errorf("tool message = %v", c)
	}
}

func TestToolRoundLimit(t *testing.T) {
	t.Parallel()
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){
		stream(toolDelta(0, "", "calculator", `{"expression":"1+1"}`), finish("tool_calls"), done),
	}}
	a, _ := newAgent(t, f, func(c *openai.Config) { c.MaxToolRounds = 2 })
	rec := run(t, a, userRun("loop"))
	code, msg := rec.Failed(t)
	if code != protocol.CodeAgentFailed || !strings.Contains(msg, "tool-call limit reached") {
		t.Errorf("agent_error %s %q", code, msg)
	}
	if n := len(f.requests()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	if n := len(rec.Of(protocol.TypeToolCompleted)); n != 2 {
		t.Errorf("%d tool calls, want 2", n)
	}
	// Ids the model left out are generated, distinct per call.
	ex := rec.Of(protocol.TypeToolExecuting)
	if ex[0].ToolCallID == "" || ex[0].ToolCallID == ex[1].ToolCallID {
		t.Errorf("call ids %q %q", ex[0].ToolCallID, ex[1].ToolCallID)
	}
}

func status(code int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func TestFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script func(http.ResponseWriter, *http.Request)
		want   []string
	}{
		{"401", status(401, `{"error":{"message":"Incorrect API key provided: `+apiKey+`","type":"invalid_request_error","code":"invalid_api_key"}}`),
			[]string{"model endpoint returned 401", "Incorrect API key provided: [redacted]", "check --openai-api-key"}},
		{"404", status(404, `{"error":{"message":"The model does not exist"}}`), []string{"404", "does not exist", "--openai-model"}},
		{"429", status(429, `{"error":"slow down"}`), []string{"429", "slow down", "rate limited"}},
		{"500 html", status(500, "<html>Internal   Server\nError</html>"), []string{"returned 500: <html>Internal Server Error</html>", "try again later"}},
		{"malformed chunk", stream(content("a"), `{"choices":[{"index":0,"delta":{"content":"b"`, done), []string{"malformed stream chunk"}},
		{"error chunk", stream(content("a"), `{"error":{"message":"overloaded"}}`), []string{"error mid-stream: overloaded"}},
		{"cut mid-way", stream(role(), content("Hel")), []string{"ended before the answer was finished"}},
		{"not a stream", status(200, `{"choices":[{"message":{"content":"hi"}}]}`), []string{"ended before the answer was finished"}},
		{"abrupt close", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Content-Length", "1000")
			fmt.Fprintf(w, "data: %s\n\n", content("Hel"))
			w.(http.Flusher).Flush()
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		}, []string{"model stream broke"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, _ := newAgent(t, &fake{scripts: []func(http.ResponseWriter, *http.Request){tt.script}}, nil)
			rec := run(t, a, userRun("hi"))
			code, msg := rec.Failed(t)
			if code != protocol.CodeAgentFailed {
				t.Errorf("code %s", code)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, apiKey) {
				t.Errorf("message leaks the API key: %q", msg)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: %s\n\n", content("thinking hard"))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute): // far beyond the bound below
		}
	}}}
	a, _ := newAgent(t, f, func(c *openai.Config) { c.RequestTimeout = 150 * time.Millisecond })
	start := time.Now()
	rec := run(t, a, userRun("hi"))
	_, msg := rec.Failed(t)
	if !strings.Contains(msg, "did not finish answering within 150ms") {
		t.Errorf("message %q", msg)
	}
	// The timeout, not the service's end, ended it: a bound a loaded
	// machine meets, far below the service's minute.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a, err := openai.New(openai.Config{BaseURL: "http://" + addr + "/v1", Model: "m", HTTPClient: &http.Client{Transport: &http.Transport{}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := run(t, a, userRun("hi"))
	_, msg := rec.Failed(t)
	if !strings.Contains(msg, "cannot reach model endpoint") || !strings.Contains(msg, "--openai-base-url") {
		t.Errorf("message %q", msg)
	}
}

func TestCancelMidStream(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: %s\n\n", content("partial"))
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}}}
	defer close(release)
	a, _ := newAgent(t, f, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &agenttest.Recorder{OnEvent: func(e agenttest.Event) {
		if e.Type == protocol.TypeAgentMessageDelta {
			cancel()
		}
	}}
	if err := a.Run(ctx, userRun("hi"), rec); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, ok := rec.Terminal(); ok {
		t.Errorf("terminal event on cancel:%s", rec)
	}
}

func TestStopsWhenRunEnded(t *testing.T) {
	t.Parallel()
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){stream(content("a"), content("b"), content("c"), finish("stop"), done)}}
	a, _ := newAgent(t, f, nil)
	rec := &agenttest.Recorder{}
	rec.OnEvent = func(e agenttest.Event) {
		if e.Type == protocol.TypeAgentMessageDelta {
			rec.End()
		}
	}
	if err := a.Run(context.Background(), userRun("hi"), rec); !errors.Is(err, agent.ErrRunEnded) {
		t.Fatalf("err = %v", err)
	}
	if n := len(rec.Of(protocol.TypeAgentMessageDelta)); n != 1 {
		t.Errorf("%d deltas after the end", n)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, cfg := range []openai.Config{{Model: ""}, {BaseURL: "ftp://x", Model: "m"}, {BaseURL: "not a url", Model: "m"}} {
		if _, err := openai.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	a, err := openai.New(openai.Config{Model: "gpt-4o-mini"})
	if err != nil || a.Name() != "openai" {
		t.Errorf("New default: %v", err)
	}
}

// Earlier tool calls and results in the run's messages go to the model in
// Chat Completions form: the assistant's tool_calls (content null), then
// one tool message per result.
func TestHistoryWithToolCalls(t *testing.T) {
	t.Parallel()
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){stream(content("84."), finish("stop"), done)}}
	a, _ := newAgent(t, f, nil)
	r := agent.Run{ID: "r", ThreadID: "t", UserID: "u", Messages: []agent.Message{
		{Role: agent.RoleUser, Content: "what is 6*7?"},
		{Role: agent.RoleAssistant, ToolCalls: []agent.ToolCall{{ID: "call_1", Name: "calculator", Args: json.RawMessage(`{"expression":"6*7"}`)}}},
		{Role: agent.RoleTool, ToolCallID: "call_1", Content: "42"},
		{Role: agent.RoleAssistant, Content: "It is 42."},
		{Role: agent.RoleUser, Content: "and times 2?"},
	}}
	run(t, a, r).Completed(t)
	msgs := f.requests()[0]["messages"].([]any)
	if len(msgs) != 6 {
		t.Fatalf("%d messages: %v", len(msgs), msgs)
	}
	asst, tool := msgs[2].(map[string]any), msgs[3].(map[string]any)
	calls, _ := asst["tool_calls"].([]any)
	if asst["role"] != "assistant" || asst["content"] != nil || len(calls) != 1 {
		t.Fatalf("assistant message = %v", asst)
	}
	c := calls[0].(map[string]any)
	fn := c["function"].(map[string]any)
	if c["id"] != "call_1" || c["type"] != "function" || fn["name"] != "calculator" || fn["arguments"] != `{"expression":"6*7"}` {
		t.Errorf("tool call = %v", c)
	}
	if tool["role"] != "tool" || tool["tool_call_id"] != "call_1" || tool["content"] != "42" {
		t.Errorf("tool message = %v", tool)
	}
}

// namedTool is a tool with any name, answering "ok".
type namedTool string

func (n namedTool) Name() string                { return string(n) }
func (n namedTool) Description() string         { return "test tool" }
func (n namedTool) Parameters() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (n namedTool) Call(context.Context, json.RawMessage) (any, error) {
	return "ok from " + string(n), nil
}

// TestUsageAndFunctionNames: usage is asked for (stream_options) and summed
// over the run's requests; tool names the API refuses as function names
// ("srv.read") are offered under valid ones and mapped back on the call.
func TestUsageAndFunctionNames(t *testing.T) {
	t.Parallel()
	usage := func(in, out int) string {
		return fmt.Sprintf(`{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`, in, out, in+out)
	}
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){
		stream(toolDelta(0, "call_1", "srv_read", `{}`), finish("tool_calls"), usage(100, 7), done),
		stream(content("read it"), finish("stop"), usage(130, 3), done),
	}}
	a, _ := newAgent(t, f, func(c *openai.Config) { c.Tools = tools.New(namedTool("srv.read"), namedTool("srv_read")) })
	rec := run(t, a, userRun("read"))
	rec.Completed(t)
	if u := rec.Usage(); u != (protocol.Usage{InputTokens: 230, OutputTokens: 10}) {
		t.Errorf("usage %+v", u)
	}
	reqs := f.requests()
	if so, _ := reqs[0]["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Errorf("stream_options %v", reqs[0]["stream_options"])
	}
	var names []string
	for _, tl := range reqs[0]["tools"].([]any) {
		names = append(names, tl.(map[string]any)["function"].(map[string]any)["name"].(string))
	}
	if got := strings.Join(names, " "); got != "srv_read_2 srv_read" {
		t.Errorf("function names %q", got)
	}
	// The model called srv_read: the tool of that very name, not srv.read.
	if ex := rec.Of(protocol.TypeToolExecuting); len(ex) != 1 || ex[0].Tool != "srv_read" {
		t.Errorf("tool_executing %+v", ex)
	}
}

func TestRequireApproval(t *testing.T) {
	t.Parallel()
	for _, approve := range []bool{true, false} {
		f := &fake{scripts: []func(http.ResponseWriter, *http.Request){
			stream(role(), toolDelta(0, "call_1", "calculator", `{"expression":"6*7"}`), finish("tool_calls"), done),
			stream(content("Done."), finish("stop"), done),
		}}
		a, _ := newAgent(t, f, func(c *openai.Config) { c.RequireApproval = []string{"calculator"} })
		var asked []agent.InputRequest
		rec := &agenttest.Recorder{Answer: func(r agent.InputRequest) protocol.InputAnswer {
			asked = append(asked, r)
			return protocol.InputAnswer{Approved: &approve}
		}}
		if err := a.Run(context.Background(), userRun("6*7?"), rec); err != nil {
			t.Fatal(err)
		}
		rec.AssertValid(t)
		if len(asked) != 1 || asked[0].Kind != protocol.InputApproval || asked[0].ToolCallID != "call_1" || !strings.Contains(asked[0].Prompt, "calculator") {
			t.Fatalf("asked %+v", asked)
		}
		co := rec.Of(protocol.TypeToolCompleted)[0]
		tool := f.requests()[1]["messages"].([]any)[3].(map[string]any)
		if approve {
			if !co.OK || tool["content"] != "42" {
				t.Errorf("approved: tool_completed %+v, tool message %v", co, tool)
			}
		} else if co.OK || co.Error == "" || !strings.Contains(tool["content"].(string), "denied") {
			t.Errorf("denied: tool_completed %+v, tool message %v", co, tool)
		}
	}
	// Tools not named run without asking.
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){
		stream(role(), toolDelta(0, "call_1", "calculator", `{"expression":"1+1"}`), finish("tool_calls"), done),
		stream(content("2."), finish("stop"), done),
	}}
	a, _ := newAgent(t, f, func(c *openai.Config) { c.RequireApproval = []string{"current_time"} })
	rec := run(t, a, userRun("1+1?"))
	if n := len(rec.Of(protocol.TypeInputRequired)); n != 0 {
		t.Errorf("%d questions for a tool that needs no approval", n)
	}
}

// TestRequireApprovalToolName: --require-approval names a tool as the
// registry does ("srv.read", an MCP server's tool), not as the function
// name the model was offered ("srv_read"); the question and the timeline
// name it so too.
func TestRequireApprovalToolName(t *testing.T) {
	t.Parallel()
	f := &fake{scripts: []func(http.ResponseWriter, *http.Request){
		stream(role(), toolDelta(0, "call_1", "srv_read", `{}`), finish("tool_calls"), done),
		stream(content("Done."), finish("stop"), done),
	}}
	a, _ := newAgent(t, f, func(c *openai.Config) {
		c.Tools = tools.New(namedTool("srv.read"))
		c.RequireApproval = []string{"srv.read"}
	})
	var asked []agent.InputRequest
	rec := &agenttest.Recorder{Answer: func(r agent.InputRequest) protocol.InputAnswer {
		asked = append(asked, r)
		no := false
		return protocol.InputAnswer{Approved: &no}
	}}
	if err := a.Run(context.Background(), userRun("read"), rec); err != nil {
		t.Fatal(err)
	}
	rec.Completed(t)
	if len(asked) != 1 || asked[0].ToolCallID != "call_1" || !strings.Contains(asked[0].Prompt, "srv.read") {
		t.Fatalf("asked %+v", asked)
	}
	if co := rec.Of(protocol.TypeToolCompleted); len(co) != 1 || co[0].Tool != "srv.read" || co[0].OK {
		t.Errorf("tool_completed %+v", co)
	}
}
