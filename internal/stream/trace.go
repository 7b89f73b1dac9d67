package stream

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentwire/agentwire/internal/tracing"
	"github.com/agentwire/agentwire/protocol"
)

// Traced returns s with a span per operation (stream.append,
// stream.append_batch, stream.since,
// stream.head, stream.subscribe, stream.ping), a child of the span in the
// call's context (a call outside any span starts none), with the attribute
// agentwire.stream.backend (backend: "memory", "redis") and, for an
// append, the event type and seq. With t nil it returns s itself: tracing
// off costs nothing.
func Traced(s Stream, t *tracing.Tracer, backend string) Stream {
	if t == nil {
		return s
	}
	return &traced{Stream: s, t: t, backend: attribute.String("agentwire.stream.backend", backend)}
}

type traced struct {
	Stream
	t       *tracing.Tracer
	backend attribute.KeyValue
}

// start starts op's span, or none when ctx holds no span: a stream call
// outside a traced request, frame or run (a join's reads, the hub's
// subscriptions) is not a trace of its own.
func (s *traced) start(ctx context.Context, op string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanFromContext(ctx)
	}
	return s.t.Start(ctx, op, trace.SpanKindClient, append(attrs, s.backend)...)
}

func (s *traced) end(span trace.Span, err error) {
	if err != nil {
		tracing.Fail(span, errorType(err))
	}
	span.End()
}

func errorType(err error) string {
	switch {
	case errors.Is(err, ErrResync):
		return "resync"
	case errors.Is(err, ErrMaybeAppended):
		return "maybe_appended"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

func (s *traced) Append(ctx context.Context, user string, rec Record) (Event, error) {
	ctx, span := s.start(ctx, "stream.append", attribute.String("agentwire.event.type", rec.Type))
	ev, err := s.Stream.Append(ctx, user, rec)
	if err == nil {
		span.SetAttributes(attribute.Int64("agentwire.seq", int64(ev.Seq)))
	}
	s.end(span, err)
	return ev, err
}

func (s *traced) AppendBatch(ctx context.Context, user string, recs []Record) ([]Event, error) {
	ctx, span := s.start(ctx, "stream.append_batch", attribute.Int("agentwire.batch.size", len(recs)))
	evs, err := s.Stream.AppendBatch(ctx, user, recs)
	s.end(span, err)
	return evs, err
}

func (s *traced) Since(ctx context.Context, user string, from protocol.Cursor, lim Limit) ([]Event, Position, error) {
	ctx, span := s.start(ctx, "stream.since")
	evs, pos, err := s.Stream.Since(ctx, user, from, lim)
	span.SetAttributes(attribute.Int("agentwire.events", len(evs)))
	s.end(span, err)
	return evs, pos, err
}

func (s *traced) Head(ctx context.Context, user string) (Position, error) {
	ctx, span := s.start(ctx, "stream.head")
	pos, err := s.Stream.Head(ctx, user)
	s.end(span, err)
	return pos, err
}

func (s *traced) Subscribe(ctx context.Context, user string, h Handler) (func(), error) {
	ctx, span := s.start(ctx, "stream.subscribe")
	cancel, err := s.Stream.Subscribe(ctx, user, h)
	s.end(span, err)
	return cancel, err
}

func (s *traced) Ping(ctx context.Context) error {
	ctx, span := s.start(ctx, "stream.ping")
	err := s.Stream.Ping(ctx)
	s.end(span, err)
	return err
}
