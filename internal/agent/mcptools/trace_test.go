package mcptools_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentwire/agentwire/internal/agent/agenttest"
	"github.com/agentwire/agentwire/internal/agent/mcptools"
	"github.com/agentwire/agentwire/internal/agent/tools"
	"github.com/agentwire/agentwire/internal/tracing"
)

// TestTraceparentToMCPServer: with the tracer's client, a tool call to an
// MCP server over HTTP carries the caller's trace in traceparent.
func TestTraceparentToMCPServer(t *testing.T) {
	tr, err := tracing.New(context.Background(), tracing.Settings{Exporter: tracetest.NewInMemoryExporter()})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	srv := newMCPServer(func() {}, nil)
	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
	calls := make(chan string, 16)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			if bytes.Contains(body, []byte(`"tools/call"`)) {
				select {
				case calls <- r.Header.Get("traceparent"):
				default:
				}
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		mcpHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { // after the Set's end (cleanups run last first): its stream is open until then
		ts.CloseClientConnections()
		ts.Close()
	})
	set := start(t, mcptools.Config{Servers: []mcptools.Server{{Name: "remote", URL: ts.URL}}, Builtin: tools.Default(), HTTPClient: tr.Client(nil)}, 6)

	ctx, span := tr.Start(context.Background(), "invoke_agent test", trace.SpanKindInternal)
	var rec agenttest.Recorder
	if _, err := tools.CallTool(ctx, &rec, set.Registry(), "c1", "remote.add", json.RawMessage(`{"a":2,"b":40}`)); err != nil {
		t.Fatal(err)
	}
	span.End()
	tp := <-calls
	if parts := strings.Split(tp, "-"); len(parts) != 4 || parts[1] != span.SpanContext().TraceID().String() {
		t.Errorf("tools/call traceparent %q, want trace %s", tp, span.SpanContext().TraceID())
	}
}
