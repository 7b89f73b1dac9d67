package ws

import (
	"context"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentwire/agentwire/internal/tracing"
	"github.com/agentwire/agentwire/protocol"
)

// spanHandler records the span context each frame reaches the handler in.
type spanHandler struct {
	nopHandler
	got chan trace.SpanContext
}

func (h spanHandler) StopAgent(ctx context.Context, _ string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	h.got <- trace.SpanContextFromContext(ctx)
	return protocol.AckFrame{Ref: f.ID, RunID: f.RunID}, nil
}

// TestTracingSessionAndFrames: a WebSocket session is one span from the
// upgrade to the close; each client frame but ping is a span of its own
// trace, linked to the session's, and the handler runs inside it.
func TestTracingSessionAndFrames(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.New(context.Background(), tracing.Settings{Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	h := spanHandler{got: make(chan trace.SpanContext, 1)}
	s := newTestServer(t, false, func(c *Config) { c.Tracer, c.Handler = tr, h })
	c := s.dial(t, "alice", "", nil)
	c.write(frame(ws.OpText, true, []byte(`{"type":"ping","id":"p"}`)))
	if typ := c.readJSON()["type"]; typ != "pong" {
		t.Fatalf("got %v, want pong", typ)
	}
	c.write(frame(ws.OpText, true, []byte(`{"type":"stop_agent","id":"s1","run_id":"r1"}`)))
	if typ := c.readJSON()["type"]; typ != "ack" {
		t.Fatalf("got %v, want ack", typ)
	}
	inHandler := <-h.got
	c.write(frame(ws.OpClose, true, []byte{0x03, 0xe8}))
	c.expectClose()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	var session, stop *tracetest.SpanStub
	for i, sp := range spans {
		switch sp.Name {
		case "websocket session":
			session = &spans[i]
		case "frame stop_agent":
			stop = &spans[i]
		case "frame ping":
			t.Error("a ping frame was traced")
		}
	}
	if session == nil || stop == nil {
		t.Fatalf("spans %v: want a websocket session and a frame stop_agent", spans)
	}
	if stop.Parent.IsValid() || stop.SpanContext.TraceID() == session.SpanContext.TraceID() {
		t.Error("the frame's span is not the root of its own trace")
	}
	if len(stop.Links) != 1 || stop.Links[0].SpanContext.SpanID() != session.SpanContext.SpanID() {
		t.Errorf("the frame's span links %v, want the session's span", stop.Links)
	}
	if inHandler.SpanID() != stop.SpanContext.SpanID() {
		t.Error("the handler did not run in the frame's span")
	}
}
