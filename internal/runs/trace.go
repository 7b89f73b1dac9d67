package runs

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/tracing"
	"github.com/agentwire/agentwire/protocol"
)

// A run's spans, per the OpenTelemetry GenAI semantic conventions: the run
// is an invoke_agent span, a child of what started it (the client frame,
// the HTTP request), and each tool call an execute_tool span under it.
// Attributes carry names and ids, never contents (no message, argument or
// result). All of it is a no-op when Manager.tracer is nil.

// traceStart starts the run's span under ctx's and keeps it, with its
// trace id for agent_started. Call before start.
func (e *emitter) traceStart(ctx context.Context, agentName string) {
	if e.m.tracer == nil {
		return
	}
	_, e.span = e.m.tracer.Start(ctx, "invoke_agent "+agentName, trace.SpanKindInternal,
		attribute.String("gen_ai.operation.name", "invoke_agent"),
		attribute.String("gen_ai.agent.name", agentName),
		attribute.String("gen_ai.conversation.id", e.threadID),
		attribute.String("agentwire.run.id", e.runID))
	e.traceID = tracing.TraceID(trace.ContextWithSpan(ctx, e.span))
}

// traceContext is ctx carrying the run's span: the agent's requests
// (HTTP agents, model calls, MCP servers) become its children.
func (e *emitter) traceContext(ctx context.Context) context.Context {
	if e.span == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, e.span)
}

// traceToolLocked starts the execute_tool span of a call the run just
// announced (tool_executing).
func (e *emitter) traceToolLocked(callID, tool string) {
	if e.span == nil {
		return
	}
	if e.tools == nil {
		e.tools = make(map[string]trace.Span)
	}
	_, e.tools[callID] = e.m.tracer.Start(trace.ContextWithSpan(context.Background(), e.span), "execute_tool "+tool, trace.SpanKindInternal,
		attribute.String("gen_ai.operation.name", "execute_tool"),
		attribute.String("gen_ai.tool.name", tool),
		attribute.String("gen_ai.tool.call.id", callID))
}

// ToolContext is ctx carrying the execute_tool span of callID, so the
// tool's own requests (an MCP server's) are its children
// (agent.ToolContexter, used by tools.CallTool).
func (e *emitter) ToolContext(ctx context.Context, callID string) context.Context {
	e.mu.Lock()
	s := e.tools[callID]
	e.mu.Unlock()
	if s == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, s)
}

// traceToolEndLocked ends the span of a call whose tool_completed the run
// just appended.
func (e *emitter) traceToolEndLocked(callID string, ok bool) {
	s := e.tools[callID]
	if s == nil {
		return
	}
	delete(e.tools, callID)
	if !ok {
		s.SetAttributes(attribute.String("error.type", "tool_error"))
		s.SetStatus(codes.Error, "tool failed")
	}
	s.End()
}

// traceEndLocked ends the run's span, and the spans of tool calls still
// executing, with the run's outcome.
func (e *emitter) traceEndLocked(status store.RunStatus, code protocol.ErrorCode) {
	if e.span == nil {
		return
	}
	for id, s := range e.tools {
		s.SetStatus(codes.Error, "run ended")
		s.End()
		delete(e.tools, id)
	}
	e.span.SetAttributes(attribute.String("agentwire.run.status", string(status)))
	if e.usage != (protocol.Usage{}) {
		e.span.SetAttributes(attribute.Int64("gen_ai.usage.input_tokens", e.usage.InputTokens),
			attribute.Int64("gen_ai.usage.output_tokens", e.usage.OutputTokens))
	}
	if status != store.RunCompleted {
		e.span.SetAttributes(attribute.String("error.type", string(code)))
		e.span.SetStatus(codes.Error, string(code))
	}
	// e.span stays: it is written once, before the run starts, and read
	// without the lock (traceContext); an ended span is still a parent.
	e.span.End()
}
