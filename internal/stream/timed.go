package stream

import (
	"context"
	"time"
)

// Observer takes one measurement in seconds (a prometheus.Observer is one).
type Observer interface {
	Observe(seconds float64)
}

// Timed returns s with the duration of every Append and AppendBatch (one
// observation for the batch), failed ones included,
// given to o; the other methods are s's own.
func Timed(s Stream, o Observer) Stream {
	return timed{Stream: s, o: o}
}

type timed struct {
	Stream
	o Observer
}

func (t timed) Append(ctx context.Context, user string, rec Record) (Event, error) {
	start := time.Now()
	ev, err := t.Stream.Append(ctx, user, rec)
	t.o.Observe(time.Since(start).Seconds())
	return ev, err
}

func (t timed) AppendBatch(ctx context.Context, user string, recs []Record) ([]Event, error) {
	start := time.Now()
	evs, err := t.Stream.AppendBatch(ctx, user, recs)
	t.o.Observe(time.Since(start).Seconds())
	return evs, err
}
