package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/agentwire/agentwire/internal/app"
	"github.com/agentwire/agentwire/internal/config"
	"github.com/agentwire/agentwire/internal/tracing"
)

// fakeAgent is an HTTP agent service that calls one tool and answers,
// recording the traceparent header of each run request.
func fakeAgent(t *testing.T) (url string, traceparents <-chan string) {
	t.Helper()
	got := make(chan string, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent")
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, l := range []string{
			`{"type":"tool_executing","data":{"tool_call_id":"c1","tool":"calculator","args":{"expression":"6*7"}}}`,
			`{"type":"tool_completed","data":{"tool_call_id":"c1","tool":"calculator","ok":true,"result":42}}`,
			`{"type":"agent_completed","data":{"final_response":"42"}}`,
		} {
			io.WriteString(w, l+"\n")
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL, got
}

// tracedApp runs an app with the http agent at agentURL and, unless exp
// is nil, tracing into exp.
func tracedApp(t *testing.T, agentURL string, exp *tracetest.InMemoryExporter) (*app.App, string) {
	t.Helper()
	cfg := testConfig(t)
	cfg.Agent, cfg.AgentURL = config.AgentHTTP, agentURL
	cfg.APIKeys = []string{"publish-key-0123456789abcdef"}
	if exp != nil {
		cfg.Tracing = tracing.Settings{Exporter: keptSpans{exp}}
	}
	return runApp(t, cfg)
}

// runApp runs an app of cfg until the test ends.
func runApp(t *testing.T, cfg config.Config) (*app.App, string) {
	t.Helper()
	a, err := app.New(context.Background(), cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		a.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return a, "http://" + a.Addr()
}

func post(t *testing.T, url, auth string, body any, hdr http.Header) map[string]any {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d %v %v", url, resp.StatusCode, out, err)
	}
	return out
}

// runEvents sends a message as user over HTTP and returns the run id and
// the data of its events by type, once its agent_completed is in the
// stream (progress-based: within a generous deadline).
func runEvents(t *testing.T, base, user string) (string, map[string]map[string]any) {
	t.Helper()
	token := post(t, base+"/auth/dev-login", "", map[string]string{"user_id": user}, nil)["token"].(string)
	runID := post(t, base+"/api/v1/messages", token, map[string]string{"content": "6*7?"}, nil)["run_id"].(string)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		req, _ := http.NewRequest("GET", base+"/api/v1/events?since=0", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Events []struct {
				Type  string         `json:"type"`
				RunID string         `json:"run_id"`
				Data  map[string]any `json:"data"`
			} `json:"events"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		byType := map[string]map[string]any{}
		for _, e := range page.Events {
			if e.RunID == runID {
				byType[e.Type] = e.Data
			}
		}
		if byType["agent_completed"] != nil {
			return runID, byType
		}
		if byType["agent_error"] != nil {
			t.Fatalf("run failed: %v", byType["agent_error"])
		}
	}
	t.Fatal("the run did not complete within 30 s")
	return "", nil
}

func spanNamed(t *testing.T, spans tracetest.SpanStubs, name string) tracetest.SpanStub {
	t.Helper()
	var names []string
	for _, s := range spans {
		if s.Name == name {
			return s
		}
		names = append(names, s.Name)
	}
	t.Fatalf("no span %q among %q", name, names)
	return tracetest.SpanStub{}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}

// TestTracingRunSpanTree: one run through the HTTP agent is one trace —
// the request, its invoke_agent span, the execute_tool span under it —
// whose id the agent service receives in traceparent and the user sees in
// agent_started.
func TestTracingRunSpanTree(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	agentURL, traceparents := fakeAgent(t)
	a, base := tracedApp(t, agentURL, exp)
	_, events := runEvents(t, base, "trace-user")
	a.Shutdown(context.Background()) // flushes: every span has ended and is exported

	spans := exp.GetSpans()
	req := spanNamed(t, spans, "POST /api/v1/messages")
	run := spanNamed(t, spans, "invoke_agent http")
	tool := spanNamed(t, spans, "execute_tool calculator")
	if req.SpanKind != trace.SpanKindServer || attr(req, "http.route") != "/api/v1/messages" {
		t.Errorf("request span: kind %v, http.route %q", req.SpanKind, attr(req, "http.route"))
	}
	if run.Parent.SpanID() != req.SpanContext.SpanID() || run.SpanContext.TraceID() != req.SpanContext.TraceID() {
		t.Errorf("invoke_agent's parent is %v, want the request span %v", run.Parent.SpanID(), req.SpanContext.SpanID())
	}
	if tool.Parent.SpanID() != run.SpanContext.SpanID() {
		t.Errorf("execute_tool's parent is %v, want invoke_agent %v", tool.Parent.SpanID(), run.SpanContext.SpanID())
	}
	for k, want := range map[string]string{"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "http", "agentwire.run.status": "completed"} {
		if got := attr(run, k); got != want {
			t.Errorf("invoke_agent %s = %q, want %q", k, got, want)
		}
	}
	if attr(run, "gen_ai.conversation.id") == "" {
		t.Error("invoke_agent has no gen_ai.conversation.id")
	}
	for k, want := range map[string]string{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "calculator", "gen_ai.tool.call.id": "c1"} {
		if got := attr(tool, k); got != want {
			t.Errorf("execute_tool %s = %q, want %q", k, got, want)
		}
	}
	traceID := req.SpanContext.TraceID().String()
	if got := events["agent_started"]["trace_id"]; got != traceID {
		t.Errorf("agent_started trace_id = %v, want %s", got, traceID)
	}
	select {
	case tp := <-traceparents:
		// version-traceid-spanid-flags; the span is the agent request's
		// client span, a child of invoke_agent.
		parts := strings.Split(tp, "-")
		if len(parts) != 4 || parts[1] != traceID {
			t.Fatalf("agent got traceparent %q, want trace %s", tp, traceID)
		}
		client := spanByID(t, spans, parts[2])
		if client.SpanKind != trace.SpanKindClient || client.Parent.SpanID() != run.SpanContext.SpanID() {
			t.Errorf("the agent request's span %q (kind %v) is not a client span under invoke_agent", client.Name, client.SpanKind)
		}
	default:
		t.Fatal("the agent service was not called")
	}
	for _, s := range spans {
		for _, a := range s.Attributes {
			if v := a.Value.String(); strings.Contains(v, "6*7") || strings.Contains(v, "trace-user") {
				t.Errorf("span %q attribute %s carries a message body or user id: %q", s.Name, a.Key, v)
			}
		}
	}
	// The store's operations are spans of the request and of the run.
	start := spanNamed(t, spans, "store.start_run")
	if start.Parent.SpanID() != req.SpanContext.SpanID() || attr(start, "db.system.name") != "sqlite" {
		t.Errorf("store.start_run: parent %v (want the request span), db.system.name %q", start.Parent.SpanID(), attr(start, "db.system.name"))
	}
	if fin := spanNamed(t, spans, "store.finish_run"); fin.Parent.SpanID() != run.SpanContext.SpanID() {
		t.Errorf("store.finish_run's parent is %v, want invoke_agent", fin.Parent.SpanID())
	}
	// The stream's appends are spans of the same trace.
	var appends int
	for _, s := range spans {
		if s.Name == "stream.append" && s.SpanContext.TraceID() == req.SpanContext.TraceID() {
			appends++
			if attr(s, "agentwire.stream.backend") != "memory" {
				t.Errorf("stream.append backend = %q", attr(s, "agentwire.stream.backend"))
			}
		}
	}
	if appends < 2 {
		t.Errorf("%d stream.append spans in the run's trace, want the echo and agent_started at least", appends)
	}
}

func spanByID(t *testing.T, spans tracetest.SpanStubs, id string) tracetest.SpanStub {
	t.Helper()
	for _, s := range spans {
		if s.SpanContext.SpanID().String() == id {
			return s
		}
	}
	t.Fatalf("no span %s", id)
	return tracetest.SpanStub{}
}

// TestTracingPublishJoinsCallerTrace: a publish carrying the caller's
// traceparent is a span of the caller's trace, child of the caller's span.
func TestTracingPublishJoinsCallerTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	agentURL, _ := fakeAgent(t)
	a, base := tracedApp(t, agentURL, exp)
	const (
		callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		callerSpan  = "00f067aa0ba902b7"
	)
	hdr := http.Header{"Traceparent": {fmt.Sprintf("00-%s-%s-01", callerTrace, callerSpan)}}
	post(t, base+"/api/v1/publish", "publish-key-0123456789abcdef",
		map[string]any{"user_id": "pub-user", "type": "note", "data": map[string]string{"text": "hello"}}, hdr)
	a.Shutdown(context.Background())

	spans := exp.GetSpans()
	req := spanNamed(t, spans, "POST /api/v1/publish")
	if req.SpanContext.TraceID().String() != callerTrace || req.Parent.SpanID().String() != callerSpan {
		t.Errorf("publish span in trace %s under %s, want %s under %s",
			req.SpanContext.TraceID(), req.Parent.SpanID(), callerTrace, callerSpan)
	}
	app := spanNamed(t, spans, "stream.append")
	if app.Parent.SpanID() != req.SpanContext.SpanID() {
		t.Errorf("stream.append's parent is %v, want the publish span", app.Parent.SpanID())
	}
	if attr(app, "agentwire.event.type") != "note" {
		t.Errorf("stream.append event type = %q", attr(app, "agentwire.event.type"))
	}
}

// TestTracingOff: without tracing, agent requests carry no traceparent
// (not even the one a caller sent) and agent_started no trace_id.
func TestTracingOff(t *testing.T) {
	agentURL, traceparents := fakeAgent(t)
	_, base := tracedApp(t, agentURL, nil)
	_, events := runEvents(t, base, "untraced-user")
	if tid, ok := events["agent_started"]["trace_id"]; ok {
		t.Errorf("agent_started has trace_id %v with tracing off", tid)
	}
	if tp := <-traceparents; tp != "" {
		t.Errorf("agent got traceparent %q with tracing off", tp)
	}
}

// keptSpans is an in-memory exporter that keeps its spans past the
// provider's shutdown (tracetest's forgets them), so a test reads them
// after Shutdown flushed.
type keptSpans struct{ *tracetest.InMemoryExporter }

func (keptSpans) Shutdown(context.Context) error { return nil }

var _ sdktrace.SpanExporter = keptSpans{}

// TestTracingOTLPExportAtShutdown: with OTEL_EXPORTER_OTLP_ENDPOINT set,
// spans go to the collector over OTLP/HTTP (protobuf), and Shutdown sends
// those still batched: the run's spans arrive although the batch delay has
// not passed.
func TestTracingOTLPExportAtShutdown(t *testing.T) {
	var mu sync.Mutex
	var names []string
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" || proto.Unmarshal(body, &req) != nil {
			t.Errorf("collector got %s %s (%s), not OTLP/HTTP protobuf", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					names = append(names, s.Name)
				}
			}
		}
	}))
	defer collector.Close()
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL, "OTEL_BSP_SCHEDULE_DELAY": "600000"}
	for k, v := range env {
		t.Setenv(k, v) // the batcher reads the process's environment (the exporter, FromEnv's getenv)
	}
	settings, err := tracing.FromEnv(func(k string) string { return env[k] })
	if err != nil || !settings.On {
		t.Fatalf("FromEnv: %+v, %v", settings, err)
	}
	agentURL, _ := fakeAgent(t)
	cfg := testConfig(t)
	cfg.Agent, cfg.AgentURL, cfg.Tracing = config.AgentHTTP, agentURL, settings
	a, base := runApp(t, cfg)
	runEvents(t, base, "otlp-user")
	a.Shutdown(context.Background())
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(names, "invoke_agent http") || !slices.Contains(names, "execute_tool calculator") {
		t.Errorf("collector got spans %q, want the run's", names)
	}
}
