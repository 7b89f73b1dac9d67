package runs

import (
	"context"
	"encoding/json"
	"testing"
	"testing/synctest"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/tools"
	"github.com/agentwire/agentwire/internal/tracing"
	"github.com/agentwire/agentwire/protocol"
)

// probe is a tool that records the span it runs in.
type probe struct{ in chan trace.SpanContext }

func (probe) Name() string                { return "probe" }
func (probe) Description() string         { return "records its span" }
func (probe) Parameters() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (p probe) Call(ctx context.Context, _ json.RawMessage) (any, error) {
	p.in <- trace.SpanContextFromContext(ctx)
	return "ok", nil
}

// TestTracingRunAndToolSpans: a run is an invoke_agent span under the
// span that started it, the agent runs in it, each tool call is an
// execute_tool span under it that the tool runs in, and agent_started
// carries the trace id.
func TestTracingRunAndToolSpans(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		exp := tracetest.NewInMemoryExporter()
		tr, err := tracing.New(context.Background(), tracing.Settings{Exporter: exp})
		if err != nil {
			t.Fatal(err)
		}
		p := probe{in: make(chan trace.SpanContext, 1)}
		inAgent := make(chan trace.SpanContext, 1)
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			inAgent <- trace.SpanContextFromContext(ctx)
			if _, err := tools.CallTool(ctx, em, tools.New(p), "c1", "probe", nil); err != nil {
				return err
			}
			return em.Complete("done")
		}), Config{Tracer: tr})
		ctx, parent := tr.Start(context.Background(), "frame user_message", trace.SpanKindServer)
		ack, perr := f.m.UserMessage(ctx, "ann", &protocol.Frame{Type: protocol.TypeUserMessage, ID: "x", Content: "go"})
		if perr != nil {
			t.Fatal(perr)
		}
		evs := f.waitTerminal(t, "ann", ack.RunID)
		parent.End()
		if evs[1].Type != protocol.TypeAgentStarted || evs[1].Data["trace_id"] != parent.SpanContext().TraceID().String() {
			t.Errorf("second event %s %v, want agent_started with trace_id %s", evs[1].Type, evs[1].Data, parent.SpanContext().TraceID())
		}
		var run, call tracetest.SpanStub
		for _, s := range exp.GetSpans() {
			switch s.Name {
			case "invoke_agent fake":
				run = s
			case "execute_tool probe":
				call = s
			}
		}
		if run.Parent.SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("invoke_agent's parent %v, want the frame's span", run.Parent.SpanID())
		}
		if call.Parent.SpanID() != run.SpanContext.SpanID() || !call.SpanContext.IsValid() {
			t.Errorf("execute_tool's parent %v, want invoke_agent", call.Parent.SpanID())
		}
		if got := (<-inAgent).SpanID(); got != run.SpanContext.SpanID() {
			t.Errorf("the agent ran in span %v, want invoke_agent", got)
		}
		if got := (<-p.in).SpanID(); got != call.SpanContext.SpanID() {
			t.Errorf("the tool ran in span %v, want execute_tool", got)
		}
	})
}
