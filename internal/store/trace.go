package store

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentwire/agentwire/internal/tracing"
)

// Traced returns s with a span per operation (store.get_run,
// store.start_run, …) with the attribute db.system.name (system:
// "sqlite", "postgresql"), a child of the span in the call's context. A
// call whose context holds no span (the lease loop's renewals and reaps)
// starts none: the store's background work is not a trace of its own
// every few seconds. With t nil it returns s itself: tracing off costs
// nothing.
func Traced(s Store, t *tracing.Tracer, system string) Store {
	if t == nil {
		return s
	}
	return &traced{Store: s, t: t, system: attribute.String("db.system.name", system)}
}

type traced struct {
	Store
	t      *tracing.Tracer
	system attribute.KeyValue
}

// do runs f in a span named op when ctx is traced.
func do[T any](s *traced, ctx context.Context, op string, f func(context.Context) (T, error)) (T, error) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return f(ctx)
	}
	ctx, span := s.t.Start(ctx, op, trace.SpanKindClient, s.system, attribute.String("db.operation.name", op[len("store."):]))
	v, err := f(ctx)
	if err != nil {
		tracing.Fail(span, errorType(err))
	}
	span.End()
	return v, err
}

// page is a list's answer through do.
type page[T any] struct {
	items []T
	more  bool
}

func list[T any](s *traced, ctx context.Context, op string, f func(context.Context) ([]T, bool, error)) ([]T, bool, error) {
	p, err := do(s, ctx, op, func(ctx context.Context) (page[T], error) {
		items, more, err := f(ctx)
		return page[T]{items, more}, err
	})
	return p.items, p.more, err
}

func errOnly(s *traced, ctx context.Context, op string, f func(context.Context) error) error {
	_, err := do(s, ctx, op, func(ctx context.Context) (struct{}, error) { return struct{}{}, f(ctx) })
	return err
}

func errorType(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrRunInProgress):
		return "run_in_progress"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

func (s *traced) ListThreads(ctx context.Context, userID string, q ThreadQuery) ([]Thread, bool, error) {
	return list(s, ctx, "store.list_threads", func(ctx context.Context) ([]Thread, bool, error) { return s.Store.ListThreads(ctx, userID, q) })
}

func (s *traced) RenameThread(ctx context.Context, userID, threadID, title string) (Thread, error) {
	return do(s, ctx, "store.rename_thread", func(ctx context.Context) (Thread, error) { return s.Store.RenameThread(ctx, userID, threadID, title) })
}

func (s *traced) DeleteThread(ctx context.Context, userID, threadID string) error {
	return errOnly(s, ctx, "store.delete_thread", func(ctx context.Context) error { return s.Store.DeleteThread(ctx, userID, threadID) })
}

func (s *traced) AddMessage(ctx context.Context, m Message) error {
	return errOnly(s, ctx, "store.add_message", func(ctx context.Context) error { return s.Store.AddMessage(ctx, m) })
}

func (s *traced) ListMessages(ctx context.Context, userID, threadID string, q MessageQuery) ([]Message, bool, error) {
	return list(s, ctx, "store.list_messages", func(ctx context.Context) ([]Message, bool, error) {
		return s.Store.ListMessages(ctx, userID, threadID, q)
	})
}

func (s *traced) StartRun(ctx context.Context, newThread *Thread, m Message, r Run, historyLimit int) ([]Message, error) {
	return do(s, ctx, "store.start_run", func(ctx context.Context) ([]Message, error) {
		return s.Store.StartRun(ctx, newThread, m, r, historyLimit)
	})
}

func (s *traced) DiscardRun(ctx context.Context, userID, runID string, withThread bool) error {
	return errOnly(s, ctx, "store.discard_run", func(ctx context.Context) error { return s.Store.DiscardRun(ctx, userID, runID, withThread) })
}

func (s *traced) RenewLeases(ctx context.Context, node string, runIDs []string, until time.Time) ([]string, error) {
	return do(s, ctx, "store.renew_leases", func(ctx context.Context) ([]string, error) { return s.Store.RenewLeases(ctx, node, runIDs, until) })
}

func (s *traced) ReapExpired(ctx context.Context, r Reap) ([]Run, error) {
	return do(s, ctx, "store.reap_expired", func(ctx context.Context) ([]Run, error) { return s.Store.ReapExpired(ctx, r) })
}

func (s *traced) GetRun(ctx context.Context, userID, runID string) (Run, error) {
	return do(s, ctx, "store.get_run", func(ctx context.Context) (Run, error) { return s.Store.GetRun(ctx, userID, runID) })
}

func (s *traced) FindRun(ctx context.Context, runID string) (Run, error) {
	return do(s, ctx, "store.find_run", func(ctx context.Context) (Run, error) { return s.Store.FindRun(ctx, runID) })
}

func (s *traced) ListActiveRuns(ctx context.Context, q ActiveRunQuery) ([]Run, bool, error) {
	return list(s, ctx, "store.list_active_runs", func(ctx context.Context) ([]Run, bool, error) { return s.Store.ListActiveRuns(ctx, q) })
}

func (s *traced) FinishRun(ctx context.Context, o Outcome) error {
	return errOnly(s, ctx, "store.finish_run", func(ctx context.Context) error { return s.Store.FinishRun(ctx, o) })
}

func (s *traced) SetRunWaiting(ctx context.Context, userID, runID string, waiting bool) error {
	return errOnly(s, ctx, "store.set_run_waiting", func(ctx context.Context) error { return s.Store.SetRunWaiting(ctx, userID, runID, waiting) })
}

func (s *traced) ConfirmEnds(ctx context.Context, runIDs []string) error {
	return errOnly(s, ctx, "store.confirm_ends", func(ctx context.Context) error { return s.Store.ConfirmEnds(ctx, runIDs) })
}

func (s *traced) TokensUsed(ctx context.Context, userID string, since time.Time) (int64, error) {
	return do(s, ctx, "store.tokens_used", func(ctx context.Context) (int64, error) { return s.Store.TokensUsed(ctx, userID, since) })
}

func (s *traced) ClaimEnds(ctx context.Context, c EndClaim) ([]Run, error) {
	return do(s, ctx, "store.claim_ends", func(ctx context.Context) ([]Run, error) { return s.Store.ClaimEnds(ctx, c) })
}

func (s *traced) AppendRunEvents(ctx context.Context, userID, runID string, evs []RunEvent) error {
	return errOnly(s, ctx, "store.append_run_events", func(ctx context.Context) error { return s.Store.AppendRunEvents(ctx, userID, runID, evs) })
}

func (s *traced) ListRunEvents(ctx context.Context, userID, runID string, q RunEventQuery) ([]RunEvent, bool, error) {
	return list(s, ctx, "store.list_run_events", func(ctx context.Context) ([]RunEvent, bool, error) {
		return s.Store.ListRunEvents(ctx, userID, runID, q)
	})
}

func (s *traced) RunTranscripts(ctx context.Context, userID string, runIDs []string, maxBytes int) (map[string]*Transcript, error) {
	return do(s, ctx, "store.run_transcripts", func(ctx context.Context) (map[string]*Transcript, error) {
		return s.Store.RunTranscripts(ctx, userID, runIDs, maxBytes)
	})
}

// claimed is ClaimIdempotencyKey's answer through do.
type claimed struct {
	existing []byte
	ok       bool
}

func (s *traced) ClaimIdempotencyKey(ctx context.Context, c Claim) ([]byte, bool, error) {
	r, err := do(s, ctx, "store.claim_idempotency_key", func(ctx context.Context) (claimed, error) {
		existing, ok, err := s.Store.ClaimIdempotencyKey(ctx, c)
		return claimed{existing, ok}, err
	})
	return r.existing, r.ok, err
}

func (s *traced) ReleaseIdempotencyKey(ctx context.Context, userID, key string) error {
	return errOnly(s, ctx, "store.release_idempotency_key", func(ctx context.Context) error { return s.Store.ReleaseIdempotencyKey(ctx, userID, key) })
}

func (s *traced) ConfirmIdempotencyKey(ctx context.Context, userID, key string, value []byte) error {
	return errOnly(s, ctx, "store.confirm_idempotency_key", func(ctx context.Context) error {
		return s.Store.ConfirmIdempotencyKey(ctx, userID, key, value)
	})
}

func (s *traced) Ping(ctx context.Context) error {
	return errOnly(s, ctx, "store.ping", s.Store.Ping)
}
