package aguiagent_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/agenttest"
	"github.com/agentwire/agentwire/internal/agent/aguiagent"
	"github.com/agentwire/agentwire/internal/agui"
	"github.com/agentwire/agentwire/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func theRun() agent.Run {
	return agent.Run{ID: "run1", ThreadID: "th1", UserID: "alice", Messages: []agent.Message{
		{ID: "m1", Role: "user", Content: "hi"}, {ID: "m2", Role: "assistant", Content: "hello"}, {Role: "user", Content: "12*(3+4)?"}}}
}

// server answers every request with status, contentType and the SSE
// events, flushing after each; what it received goes to got (buffered).
func server(t *testing.T, status int, contentType string, events []string, got chan<- *http.Request) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got != nil {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			got <- r
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		for _, e := range events {
			io.WriteString(w, e)
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func newAgent(t *testing.T, srv *httptest.Server, cfg aguiagent.Config) *aguiagent.Agent {
	t.Helper()
	cfg.URL, cfg.HTTPClient = srv.URL+"/agui", srv.Client()
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	a, err := aguiagent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// data frames each event as one SSE data event.
func data(events ...string) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = "data: " + e + "\n\n"
	}
	return out
}

func run(t *testing.T, events []string, cfg aguiagent.Config) *agenttest.Recorder {
	t.Helper()
	a := newAgent(t, server(t, http.StatusOK, "text/event-stream", events, nil), cfg)
	rec := &agenttest.Recorder{}
	if err := a.Run(context.Background(), theRun(), rec); err != nil {
		t.Fatalf("Run: %v%s", err, rec)
	}
	return rec
}

func failed(t *testing.T, rec *agenttest.Recorder, want string) {
	t.Helper()
	code, msg := rec.Failed(t)
	if code != protocol.CodeAgentFailed || !strings.Contains(msg, want) {
		t.Errorf("agent_error %s %q, want agent_failed containing %q", code, msg, want)
	}
}

const (
	started  = `{"type":"RUN_STARTED","threadId":"th1","runId":"run1"}`
	finished = `{"type":"RUN_FINISHED","threadId":"th1","runId":"run1"}`
)

func TestRequestIsRunAgentInput(t *testing.T) {
	t.Parallel()
	got := make(chan *http.Request, 1)
	srv := server(t, http.StatusOK, "text/event-stream; charset=utf-8", data(started, finished), got)
	rec := &agenttest.Recorder{}
	if err := newAgent(t, srv, aguiagent.Config{}).Run(context.Background(), theRun(), rec); err != nil {
		t.Fatal(err)
	}
	rec.Completed(t)
	r := <-got
	if r.Method != http.MethodPost || r.URL.Path != "/agui" || r.Header.Get("Accept") != "text/event-stream" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("request %s %s Accept %q Content-Type %q", r.Method, r.URL.Path, r.Header.Get("Accept"), r.Header.Get("Content-Type"))
	}
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"threadId": `"th1"`, "runId": `"run1"`, "tools": `[]`, "context": `[]`, "state": `{}`, "forwardedProps": `{}`,
		"messages": `[{"id":"m1","role":"user","content":"hi"},{"id":"m2","role":"assistant","content":"hello"},{"id":"run1-2","role":"user","content":"12*(3+4)?"}]`} {
		if string(raw[k]) != want {
			t.Errorf("%s = %s, want %s", k, raw[k], want)
		}
	}
}

func TestUnknownAndSkippedTypesAreIgnored(t *testing.T) {
	t.Parallel()
	rec := run(t, data(started,
		`{"type":"FUTURE_EVENT","whatever":[1,2]}`,
		`{"type":"MESSAGES_SNAPSHOT","messages":[]}`,
		`{"type":"SUBAGENT_STARTED","subagentRunId":"s1"}`,
		`{"type":"REASONING_ENCRYPTED_VALUE","subtype":"message","entityId":"x","encryptedValue":"…"}`,
		`{"type":"TEXT_MESSAGE_START","messageId":"a","role":"assistant"}`,
		`{"type":"TEXT_MESSAGE_CONTENT","messageId":"a","delta":"ok"}`,
		`{"type":"TEXT_MESSAGE_END","messageId":"a"}`,
		finished,
		`{"type":"TEXT_MESSAGE_CONTENT","messageId":"a","delta":"after the end"}`), aguiagent.Config{})
	rec.AssertTypes(t, protocol.TypeAgentMessageDelta, protocol.TypeAgentCompleted)
	if got := rec.Completed(t); got != "ok" {
		t.Errorf("final %q", got)
	}
}

func TestChunksAndOpenReasoningEndAtTheirBoundaries(t *testing.T) {
	t.Parallel()
	rec := run(t, data(started,
		`{"type":"REASONING_MESSAGE_CHUNK","messageId":"r1","delta":"a"}`,
		`{"type":"REASONING_MESSAGE_CHUNK","delta":"b"}`,
		`{"type":"REASONING_MESSAGE_CHUNK","messageId":"r2","delta":"c"}`,
		`{"type":"TOOL_CALL_CHUNK","toolCallId":"c1","toolCallName":"calc","delta":"{\"x\":"}`,
		`{"type":"TOOL_CALL_CHUNK","delta":"1}"}`,
		`{"type":"TOOL_CALL_CHUNK","toolCallId":"c2","toolCallName":"calc"}`,
		`{"type":"TOOL_CALL_RESULT","messageId":"t","toolCallId":"c1","content":[{"type":"text","text":"{\"y\":2}"}]}`,
		`{"type":"REASONING_MESSAGE_CONTENT","messageId":"r3","delta":"unended"}`,
		finished), aguiagent.Config{})
	rec.AssertTypes(t, protocol.TypeAgentThinking, protocol.TypeAgentThinking, protocol.TypeToolExecuting, protocol.TypeToolExecuting,
		protocol.TypeToolCompleted, protocol.TypeAgentThinking, protocol.TypeAgentCompleted)
	ev := rec.Events()
	if ev[0].Text != "ab" || ev[1].Text != "c" || ev[5].Text != "unended" {
		t.Errorf("thinking %q %q %q", ev[0].Text, ev[1].Text, ev[5].Text)
	}
	if ev[2].ToolCallID != "c1" || string(ev[2].Args) != `{"x":1}` || ev[3].ToolCallID != "c2" || string(ev[3].Args) != `{}` {
		t.Errorf("tool calls %+v %+v", ev[2], ev[3])
	}
	if ev[4].ToolCallID != "c1" || ev[4].Tool != "calc" || !ev[4].OK || string(ev[4].Result) != `{"y":2}` {
		t.Errorf("tool result %+v", ev[4])
	}
}

func TestInvalidUTF8IsRepaired(t *testing.T) {
	t.Parallel()
	rec := run(t, data(started, "{\"type\":\"TEXT_MESSAGE_CHUNK\",\"delta\":\"a\xffb\"}", "{\"type\":\"CUSTOM\",\"name\":\"n\",\"value\":\"\xfe\"}", finished), aguiagent.Config{})
	if got := rec.Completed(t); got != "a\uFFFDb" {
		t.Errorf("final %q", got)
	}
	if c := rec.Of(protocol.TypeCustom); len(c) != 1 || string(c[0].Data) != "{\"name\":\"n\",\"value\":\"\uFFFD\"}" {
		t.Errorf("custom %+v", c)
	}
}

func TestBadStreamsFail(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 1<<20) // over the 1 MiB event bound
	cases := map[string]struct {
		events []string
		cfg    aguiagent.Config
		want   string
	}{
		"bad JSON":            {data(started, `{"type":`), aguiagent.Config{}, "malformed event (#2)"},
		"oversized event":     {data(started, `{"type":"TEXT_MESSAGE_CHUNK","delta":"`+big+`"}`), aguiagent.Config{}, "sent an event over"},
		"oversized answer":    {data(started, `{"type":"TEXT_MESSAGE_CHUNK","delta":"`+strings.Repeat("y", 600)+`"}`, finished), aguiagent.Config{MaxBytes: 512}, "more than 512 bytes"},
		"no RUN_FINISHED":     {data(started, `{"type":"TEXT_MESSAGE_CHUNK","delta":"half"}`), aguiagent.Config{}, "ended without RUN_FINISHED"},
		"RUN_ERROR":           {data(started, `{"type":"RUN_ERROR","message":"boom","code":"X"}`), aguiagent.Config{}, "boom"},
		"args not an object":  {data(started, `{"type":"TOOL_CALL_START","toolCallId":"c","toolCallName":"t"}`, `{"type":"TOOL_CALL_ARGS","toolCallId":"c","delta":"[1]"}`, `{"type":"TOOL_CALL_END","toolCallId":"c"}`), aguiagent.Config{}, "not a JSON object"},
		"result before end":   {data(started, `{"type":"TOOL_CALL_START","toolCallId":"c","toolCallName":"t"}`, `{"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"c","content":"1"}`), aguiagent.Config{}, "before its TOOL_CALL_END"},
		"args of no call":     {data(started, `{"type":"TOOL_CALL_ARGS","toolCallId":"c","delta":"{}"}`), aguiagent.Config{}, "not started"},
		"call started twice":  {data(started, `{"type":"TOOL_CALL_START","toolCallId":"c","toolCallName":"t"}`, `{"type":"TOOL_CALL_START","toolCallId":"c","toolCallName":"t"}`), aguiagent.Config{}, "twice"},
		"custom without name": {data(started, `{"type":"CUSTOM","value":1}`), aguiagent.Config{}, "CUSTOM without name"},
		"state delta object":  {data(started, `{"type":"STATE_DELTA","delta":{"op":"add"}}`), aguiagent.Config{}, "STATE_DELTA without delta"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			failed(t, run(t, c.events, c.cfg), c.want)
		})
	}
}

func TestBadAnswersFail(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		status      int
		contentType string
		events      []string
		want        string
	}{
		"status":       {http.StatusBadGateway, "application/json", []string{`{"error":"model overloaded"}`}, "returned 502: model overloaded"},
		"content type": {http.StatusOK, "application/json", []string{`{}`}, `"application/json", not text/event-stream`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			a := newAgent(t, server(t, c.status, c.contentType, c.events, nil), aguiagent.Config{})
			rec := &agenttest.Recorder{}
			if err := a.Run(context.Background(), theRun(), rec); err != nil {
				t.Fatal(err)
			}
			failed(t, rec, c.want)
		})
	}
}

func TestTimeoutFailsAndStopCancels(t *testing.T) {
	t.Parallel()
	closed := make(chan struct{}, 2)
	streaming := make(chan struct{}, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: "+started+"\n\n")
		w.(http.Flusher).Flush()
		streaming <- struct{}{}
		<-r.Context().Done()
		closed <- struct{}{}
	}))
	t.Cleanup(srv.Close)

	a := newAgent(t, srv, aguiagent.Config{Timeout: 200 * time.Millisecond})
	rec := &agenttest.Recorder{}
	if err := a.Run(context.Background(), theRun(), rec); err != nil {
		t.Fatal(err)
	}
	failed(t, rec, "did not finish within 200ms")
	<-closed

	a = newAgent(t, srv, aguiagent.Config{Timeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	rec = &agenttest.Recorder{}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, theRun(), rec) }()
	<-streaming // the first run's
	<-streaming
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run after stop = %v, want context.Canceled", err)
	}
	<-closed // the server saw the request end
	if len(rec.Events()) != 0 {
		t.Errorf("events after stop: %s", rec)
	}
}

func TestNewRefusesBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "ftp://x", "http://", "::"} {
		if _, err := aguiagent.New(aguiagent.Config{URL: u}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func TestInputFallsBackToRunScopedIDs(t *testing.T) {
	t.Parallel()
	in := aguiagent.Input(agent.Run{ID: "r", ThreadID: "t", Messages: []agent.Message{{Role: "user", Content: "x"}}})
	if len(in.Messages) != 1 || in.Messages[0].ID != "r-0" || agui.Text(in.Messages[0].Content) != "x" {
		t.Errorf("input %+v", in)
	}
}

// Earlier tool calls go as an assistant message with toolCalls and a tool
// message with toolCallId, with ids stable across runs.
func TestInputCarriesToolCalls(t *testing.T) {
	t.Parallel()
	in := aguiagent.Input(agent.Run{ID: "r", ThreadID: "t", Messages: []agent.Message{
		{ID: "m1", Role: agent.RoleUser, Content: "6*7?"},
		{Role: agent.RoleAssistant, ToolCalls: []agent.ToolCall{{ID: "c1", Name: "calculator", Args: json.RawMessage(`{"expression":"6*7"}`)}}},
		{Role: agent.RoleTool, ToolCallID: "c1", Content: "42"},
	}})
	b, _ := json.Marshal(in.Messages)
	want := `[{"id":"m1","role":"user","content":"6*7?"},` +
		`{"id":"c1-calls","role":"assistant","toolCalls":[{"id":"c1","type":"function","function":{"name":"calculator","arguments":"{\"expression\":\"6*7\"}"}}]},` +
		`{"id":"c1-result","role":"tool","content":"42","toolCallId":"c1"}]`
	if string(b) != want {
		t.Errorf("messages %s\nwant %s", b, want)
	}
}
