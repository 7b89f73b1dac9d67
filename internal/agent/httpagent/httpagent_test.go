package httpagent_test

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
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/agenttest"
	"github.com/agentwire/agentwire/internal/agent/httpagent"
	"github.com/agentwire/agentwire/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// service answers with body as contentType, flushing after each line, and
// sends what it received on got (buffered).
func service(t *testing.T, contentType string, lines []string, got chan<- map[string]any) *httpagent.Agent {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("request: %v", err)
		}
		if got != nil {
			got <- body
		}
		w.Header().Set("Content-Type", contentType)
		for _, l := range lines {
			io.WriteString(w, l)
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	a, err := httpagent.New(httpagent.Config{URL: srv.URL + "/agent", HTTPClient: srv.Client(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ndjson(events ...string) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e + "\n"
	}
	return out
}

func theRun() agent.Run {
	return agent.Run{ID: "run1", ThreadID: "th1", UserID: "alice", Messages: []agent.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "hello"}, {Role: "user", Content: "12*(3+4)?"}}}
}

func runIt(t *testing.T, a *httpagent.Agent) *agenttest.Recorder {
	t.Helper()
	rec := &agenttest.Recorder{}
	if err := a.Run(context.Background(), theRun(), rec); err != nil {
		t.Fatalf("Run: %v%s", err, rec)
	}
	return rec
}

var fullTypes = []string{"agent_thinking", "tool_executing", "tool_completed", "agent_message_delta", "agent_message_delta", "agent_completed"}

func checkFull(t *testing.T, rec *agenttest.Recorder) {
	t.Helper()
	rec.AssertTypes(t, fullTypes...)
	if got := rec.Completed(t); got != "It is 84." {
		t.Errorf("final = %q", got)
	}
	ex, co := rec.Of(protocol.TypeToolExecuting)[0], rec.Of(protocol.TypeToolCompleted)[0]
	if ex.ToolCallID != "c1" || ex.Tool != "calculator" || string(ex.Args) != `{"expression":"12*(3+4)"}` {
		t.Errorf("tool_executing = %+v", ex)
	}
	if co.ToolCallID != "c1" || !co.OK || string(co.Result) != "84" || co.Duration != 3*time.Millisecond {
		t.Errorf("tool_completed = %+v", co)
	}
}

func TestNDJSON(t *testing.T) {
	t.Parallel()
	got := make(chan map[string]any, 1)
	a := service(t, "application/x-ndjson", ndjson(
		`{"type":"agent_started","data":{"agent":"py"}}`,
		`{"type":"agent_thinking","data":{"text":"hmm"}}`,
		``,
		`{"type":"tool_executing","data":{"tool_call_id":"c1","tool":"calculator","args":{"expression":"12*(3+4)"}}}`,
		`{"type":"tool_completed","data":{"tool_call_id":"c1","tool":"calculator","ok":true,"result":84,"duration_ms":3}}`,
		`{"type":"agent_message_delta","data":{"delta":"It is "}}`,
		`{"type":"agent_message_delta","data":{"delta":"84."}}`,
		`{"type":"agent_completed","data":{"final_response":"It is 84.","usage":{"input_tokens":12,"output_tokens":4}}}`,
		`{"type":"agent_thinking","data":{"text":"after the end: never read"}}`,
	), got)
	rec := runIt(t, a)
	checkFull(t, rec)
	if u := rec.Usage(); u != (protocol.Usage{InputTokens: 12, OutputTokens: 4}) {
		t.Errorf("usage %+v", u)
	}
	body := <-got
	b, _ := json.Marshal(body)
	want := `{"messages":[{"content":"hi","role":"user"},{"content":"hello","role":"assistant"},{"content":"12*(3+4)?","role":"user"}],"run_id":"run1","thread_id":"th1","user_id":"alice"}`
	if string(b) != want {
		t.Errorf("request = %s\nwant %s", b, want)
	}
}

func TestSSEFlat(t *testing.T) {
	t.Parallel()
	a := service(t, "text/event-stream; charset=utf-8", []string{
		": keep-alive\n\n",
		"data: {\"type\":\"agent_thinking\",\"text\":\"hmm\"}\n\n",
		"event: tool_executing\ndata: {\"tool_call_id\":\"c1\",\"tool\":\"calculator\",\"args\":{\"expression\":\"12*(3+4)\"}}\n\n",
		"data: {\"type\":\"tool_completed\",\"tool_call_id\":\"c1\",\"ok\":true,\"result\":84,\"duration_ms\":3}\n\n",
		"data: {\"type\":\"agent_message_delta\",\"delta\":\"It is \"}\n\n",
		"data: {\"type\":\"agent_message_delta\",\"delta\":\"84.\"}\n\n",
		"data: {\"type\":\"agent_completed\"}\n\n",
	}, nil)
	checkFull(t, runIt(t, a))
}

func TestJSONLinesAndIgnoredAddressing(t *testing.T) {
	t.Parallel()
	a := service(t, "application/json", ndjson(
		`{"type":"agent_started","user_id":"mallory","run_id":"other","data":{"agent":"x"}}`,
		`{"type":"agent_thinking","user_id":"mallory","run_id":"other","thread_id":"t9","data":{"text":"hmm","user_id":"mallory"}}`,
		`{"type":"tool_executing","user_id":"mallory","tool_call_id":"c1","tool":"calculator","args":{"expression":"12*(3+4)"}}`,
		`{"type":"tool_completed","run_id":"other","tool_call_id":"c1","result":84,"duration_ms":3}`,
		`{"type":"agent_message_delta","delta":"It is ","user_id":"mallory"}`,
		`{"type":"agent_message_delta","delta":"84."}`,
		`{"type":"agent_completed","final_response":"It is 84.","user_id":"mallory","run_id":"other"}`,
	), nil)
	rec := runIt(t, a)
	checkFull(t, rec)
	if strings.Contains(rec.String(), "mallory") || strings.Contains(rec.String(), "other") {
		t.Errorf("addressing leaked into events:%s", rec)
	}
}

func TestServiceError(t *testing.T) {
	t.Parallel()
	a := service(t, "application/x-ndjson", ndjson(
		`{"type":"agent_thinking","data":{"text":"hmm"}}`,
		`{"type":"tool_executing","data":{"tool_call_id":"c1","tool":"search"}}`,
		`{"type":"tool_completed","data":{"tool_call_id":"c1","error":"index offline"}}`,
		`{"type":"agent_error","data":{"code":"rate_limited","message":"upstream model is overloaded"}}`,
	), nil)
	rec := runIt(t, a)
	code, msg := rec.Failed(t)
	if code != protocol.CodeAgentFailed || msg != "upstream model is overloaded" {
		t.Errorf("agent_error %s %q", code, msg)
	}
	co := rec.Of(protocol.TypeToolCompleted)[0]
	if co.OK || co.Error != "index offline" || co.Tool != "search" || string(co.Result) != "null" {
		t.Errorf("tool_completed = %+v", co)
	}
	if ex := rec.Of(protocol.TypeToolExecuting)[0]; string(ex.Args) != "{}" {
		t.Errorf("args = %s", ex.Args)
	}
}

func TestFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		ct    string
		lines []string
		want  string
	}{
		{"no terminal", "application/x-ndjson", ndjson(`{"type":"agent_thinking","data":{"text":"hmm"}}`, `{"type":"agent_message_delta","data":{"delta":"It"}}`), "agent service ended without agent_completed"},
		{"empty body", "application/x-ndjson", nil, "agent service ended without agent_completed"},
		{"sse done without terminal", "text/event-stream", []string{"data: {\"type\":\"agent_thinking\",\"text\":\"x\"}\n\n", "data: [DONE]\n\n"}, "ended without agent_completed"},
		{"unknown type", "application/x-ndjson", ndjson(`{"type":"agent_dreaming","data":{}}`), `unknown event type "agent_dreaming"`},
		{"bad json", "application/x-ndjson", ndjson(`{"type":"agent_thinking","data":{"text":"hm"`), "malformed event (#1)"},
		{"no type", "application/x-ndjson", ndjson(`{"text":"hm"}`), `malformed event (#1): no "type"`},
		{"wrong field type", "application/x-ndjson", ndjson(`{"type":"agent_thinking"}`, `{"type":"agent_thinking","data":{"text":5}}`), "malformed event (#2)"},
		{"html", "text/html", []string{"<html>oops</html>"}, "malformed event"},
		{"completed without executing", "application/x-ndjson", ndjson(`{"type":"tool_completed","data":{"tool_call_id":"c9","tool":"x","ok":true}}`), `tool_completed for tool_call_id "c9" without its tool_executing`},
		{"args not object", "application/x-ndjson", ndjson(`{"type":"tool_executing","data":{"tool_call_id":"c1","tool":"x","args":[1]}}`), "not a JSON object"},
		{"duplicate call id", "application/x-ndjson", ndjson(
			`{"type":"tool_executing","tool_call_id":"c1","tool":"x"}`, `{"type":"tool_completed","tool_call_id":"c1","ok":true}`,
			`{"type":"tool_executing","tool_call_id":"c1","tool":"x"}`), "announced tool_call_id \"c1\" twice"},
		{"tool mismatch", "application/x-ndjson", ndjson(`{"type":"tool_executing","tool_call_id":"c1","tool":"x"}`, `{"type":"tool_completed","tool_call_id":"c1","tool":"y"}`), `announced as "x"`},
		{"error without message", "application/x-ndjson", ndjson(`{"type":"agent_error"}`), "without a message"},
		{"error as string", "application/x-ndjson", ndjson(`{"type":"agent_error","error":"boom"}`), "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := runIt(t, service(t, tt.ct, tt.lines, nil))
			code, msg := rec.Failed(t)
			if code != protocol.CodeAgentFailed || !strings.Contains(msg, tt.want) {
				t.Errorf("agent_error %s %q, want %q", code, msg, tt.want)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		code       int
		body, want string
	}{
		{502, `{"error":{"message":"bad gateway"}}`, "agent service returned 502: bad gateway"},
		{401, `{"error":"no token"}`, "agent service returned 401: no token"},
		{500, "<html>\n  Internal error\n</html>", "agent service returned 500: <html> Internal error </html>"},
		{404, "", "agent service returned 404"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(tt.code)
			io.WriteString(w, tt.body)
		}))
		a, _ := httpagent.New(httpagent.Config{URL: srv.URL, HTTPClient: srv.Client()})
		rec := runIt(t, a)
		srv.Close()
		if _, msg := rec.Failed(t); msg != tt.want {
			t.Errorf("message %q, want %q", msg, tt.want)
		}
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"type":"agent_thinking","data":{"text":"hmm"}}`+"\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(time.Minute): // far beyond the bound below
		}
	}))
	defer srv.Close()
	a, _ := httpagent.New(httpagent.Config{URL: srv.URL, HTTPClient: srv.Client(), Timeout: 150 * time.Millisecond})
	start := time.Now()
	rec := runIt(t, a)
	if _, msg := rec.Failed(t); msg != "agent service did not finish within 150ms" {
		t.Errorf("message %q", msg)
	}
	// The timeout, not the service's end, ended it: a bound a loaded
	// machine meets, far below the service's minute.
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v", d)
	}
	if len(rec.Of(protocol.TypeAgentThinking)) != 1 {
		t.Errorf("events before the timeout lost:%s", rec)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"type":"agent_thinking","data":{"text":"hmm"}}`+"\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	a, _ := httpagent.New(httpagent.Config{URL: srv.URL, HTTPClient: srv.Client()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &agenttest.Recorder{OnEvent: func(agenttest.Event) { cancel() }}
	if err := a.Run(ctx, theRun(), rec); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if _, ok := rec.Terminal(); ok {
		t.Errorf("terminal on cancel:%s", rec)
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
	a, _ := httpagent.New(httpagent.Config{URL: "http://" + addr + "/agent", HTTPClient: &http.Client{Transport: &http.Transport{}}})
	rec := runIt(t, a)
	if _, msg := rec.Failed(t); !strings.Contains(msg, "cannot reach agent service") || !strings.Contains(msg, "--agent-url") {
		t.Errorf("message %q", msg)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "ftp://x/y", "localhost:9000", "http://"} {
		if _, err := httpagent.New(httpagent.Config{URL: u}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
	a, err := httpagent.New(httpagent.Config{URL: "http://127.0.0.1:9000/run"})
	if err != nil || a.Name() != "http" {
		t.Errorf("New: %v", err)
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		line, name, typ, text string
	}{
		{`{"type":"agent_thinking","data":{"text":"a"}}`, "", "agent_thinking", "a"},
		{`{"type":"agent_thinking","text":"b"}`, "", "agent_thinking", "b"},
		{`{"text":"c"}`, "agent_thinking", "agent_thinking", "c"},
		{`{"type":"agent_thinking","data":null,"text":"d"}`, "", "agent_thinking", "d"},
	} {
		e, err := httpagent.Decode([]byte(tt.line), tt.name)
		if err != nil || e.Type != tt.typ || e.Fields.Text != tt.text {
			t.Errorf("Decode(%s) = %+v, %v", tt.line, e, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"type":"tool_completed","data":{"tool_call_id":"c1","ok":true,"result":{"a":[1]},"duration_ms":3.5}}`), "")
	f.Add([]byte(`{"delta":"x"}`), "agent_message_delta")
	f.Add([]byte(`[]`), "")
	f.Fuzz(func(t *testing.T, line []byte, name string) {
		e, err := httpagent.Decode(line, name)
		if err == nil && e.Type == "" {
			t.Fatalf("Decode(%q) accepted an event without a type", line)
		}
		if err == nil && len(e.Fields.Args) > 0 && !json.Valid(e.Fields.Args) {
			t.Fatalf("args %q not valid JSON", e.Fields.Args)
		}
		_ = fmt.Sprint(e)
	})
}

// Earlier tool calls reach the service as documented (PROTOCOL.md
// section 9): tool_calls on the assistant message, then a tool message.
func TestRequestCarriesToolCalls(t *testing.T) {
	t.Parallel()
	got := make(chan map[string]any, 1)
	a := service(t, "application/x-ndjson", ndjson(`{"type":"agent_completed","data":{"final_response":"84"}}`), got)
	run := agent.Run{ID: "run1", ThreadID: "th1", UserID: "alice", Messages: []agent.Message{
		{Role: agent.RoleUser, Content: "6*7?"},
		{Role: agent.RoleAssistant, ToolCalls: []agent.ToolCall{{ID: "c1", Name: "calculator", Args: json.RawMessage(`{"expression":"6*7"}`)}}},
		{Role: agent.RoleTool, ToolCallID: "c1", Content: "42"},
		{Role: agent.RoleAssistant, Content: "42"},
		{Role: agent.RoleUser, Content: "and times 2?"},
	}}
	rec := &agenttest.Recorder{}
	if err := a.Run(context.Background(), run, rec); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal((<-got)["messages"])
	want := `[{"content":"6*7?","role":"user"},` +
		`{"content":"","role":"assistant","tool_calls":[{"args":{"expression":"6*7"},"id":"c1","tool":"calculator"}]},` +
		`{"content":"42","role":"tool","tool_call_id":"c1"},{"content":"42","role":"assistant"},{"content":"and times 2?","role":"user"}]`
	if string(b) != want {
		t.Errorf("messages %s\nwant %s", b, want)
	}
}
