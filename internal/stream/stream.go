// Package stream defines the per-user ordered event log that every delivery,
// replay and resume in agentwire is built on.
//
// A Stream assigns each appended event the next sequence number of its user
// (1, 2, 3 … strictly +1, no gaps) within an epoch, an opaque string that
// changes only when the user's history was lost. Live subscribers see a user's
// events in seq order, and each event is encoded to its wire frame
// (protocol.EncodeEvent) exactly once, at append time, so the same bytes go to
// every connection and every replay.
package stream

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/agentwire/agentwire/protocol"
)

// Sentinel errors callers branch on.
var (
	// ErrResync means the requested position cannot be served: the epoch
	// differs from the stream's, or events after since are no longer retained.
	// The caller should tell the client resync_required and continue from head.
	ErrResync = errors.New("stream: resync required")
	// ErrUnavailable means the backend cannot be reached right now.
	ErrUnavailable = errors.New("stream: backend unavailable")
	// ErrClosed means the stream was closed.
	ErrClosed = errors.New("stream: closed")
	// ErrMaybeAppended marks a failed Append whose record may yet be in the
	// stream: it reached the backend, which did not confirm it (the
	// connection broke or the reply timed out; a paused Redis runs it when
	// it resumes). An Append error without it took nothing.
	ErrMaybeAppended = errors.New("stream: append may have been taken")
)

// Record is what a producer appends: everything of a stream event but the
// fields the stream assigns (seq, epoch, ts).
type Record struct {
	Type     string          // frame type, e.g. "agent_started" or a published type
	ThreadID string          // optional
	RunID    string          // optional
	Data     json.RawMessage // optional JSON object; nil encodes as {}
	// IdempotencyKey, when set, makes Append return the event first appended
	// with the same key for the same user within IdempotencyWindow instead of
	// appending again.
	IdempotencyKey string
}

// Event is an appended record with its position in the user's stream and its
// encoded wire frame.
type Event struct {
	Seq   uint64
	Epoch string
	TS    time.Time
	Record
	// Frame is the complete JSON frame sent to clients, encoded once at append
	// (protocol.EncodeEvent of Wire). It must not be modified.
	Frame []byte
}

// Wire returns ev as the protocol's stream event, the form it is encoded
// from.
func (ev *Event) Wire() protocol.Event {
	return protocol.Event{Type: ev.Type, Seq: ev.Seq, Epoch: ev.Epoch, TS: ev.TS, ThreadID: ev.ThreadID, RunID: ev.RunID, Data: ev.Data}
}

// Position is the state of a user's stream.
type Position struct {
	Epoch string
	Head  uint64 // seq of the newest event, 0 when none was ever appended
}

// ResyncError carries the reason of an ErrResync and the stream position the
// client continues from. errors.Is(err, ErrResync) holds for it.
type ResyncError struct {
	Reason   protocol.ResyncReason
	Position Position
}

func (e *ResyncError) Error() string { return "stream: resync required: " + string(e.Reason) }

// Is makes errors.Is(err, ErrResync) true.
func (e *ResyncError) Is(target error) bool { return target == ErrResync }

// Handler receives live events of one user, in seq order, one call at a time.
// It must not block: it runs on the stream's delivery path.
type Handler func(Event)

// Stream is the per-user event log. Implementations must be safe for
// concurrent use.
type Stream interface {
	// Append assigns the record the user's next seq and delivers it to the
	// user's live subscribers in seq order.
	Append(ctx context.Context, user string, rec Record) (Event, error)
	// AppendBatch appends recs to user's stream in order, atomically: all
	// of them get consecutive seqs (but for idempotent repeats, which get
	// the first event with their key, as from Append, and take no seq) and
	// no other append of the user comes between them; on error none was
	// appended (unless the error wraps ErrMaybeAppended, when all may
	// have been). It returns one event per record. At most MaxBatch
	// records.
	AppendBatch(ctx context.Context, user string, recs []Record) ([]Event, error)
	// Since returns the retained events after from (seq > from.Seq), in
	// order, at most one page of them as bounded by lim, and the current
	// position; more remain when More(events, pos) holds (ask again from
	// the last seq). An empty from.Epoch matches any epoch. When the epoch
	// differs or events after from are gone it returns a *ResyncError. A
	// None cursor gets no events and the current position, as from Head.
	Since(ctx context.Context, user string, from protocol.Cursor, lim Limit) ([]Event, Position, error)
	// Head returns the user's current position.
	Head(ctx context.Context, user string) (Position, error)
	// Subscribe calls h for every event appended to user's stream from now on,
	// until the returned cancel func is called. Events appended before
	// Subscribe returns may or may not be seen; callers join replay and live
	// by seq (subscribe first, then read Since, drop duplicates).
	Subscribe(ctx context.Context, user string, h Handler) (cancel func(), err error)
	// Ping reports whether the backend is reachable.
	Ping(ctx context.Context) error
	// Close releases the stream's resources.
	Close() error
}

// MaxBatch bounds the records of one AppendBatch.
const MaxBatch = 1000

// ErrBatchTooLarge is AppendBatch's answer to more than MaxBatch records.
var ErrBatchTooLarge = errors.New("stream: batch over MaxBatch records")

// Retention bounds how much history a stream keeps per user. Each bound
// drops the oldest events first; the newest event is always kept.
type Retention struct {
	MaxEvents int           // keep at most this many newest events (default 1000)
	MaxAge    time.Duration // drop events older than this (default 10 min)
	MaxBytes  int           // keep at most this many frame bytes (default 4 MiB)
}

// Retention and idempotency defaults of the contract.
const (
	DefaultMaxEvents  = 1000
	DefaultMaxAge     = 10 * time.Minute
	DefaultMaxBytes   = 4 << 20
	IdempotencyWindow = 10 * time.Minute
)

// Limit bounds one Since call, so that no read holds more than a page of a
// user's history in memory: a reader that wants more asks again from the
// last seq it got. Zero fields take the defaults.
type Limit struct {
	MaxEvents int // at most this many events (default DefaultPageEvents)
	// MaxBytes stops the page before the event whose frame would take it
	// over this many bytes (default DefaultPageBytes). The first event is
	// returned whatever its size, so paging always makes progress.
	MaxBytes int
}

// Page defaults.
const (
	DefaultPageEvents = 1000
	DefaultPageBytes  = 1 << 20
)

// Norm returns l with its zero fields set to the defaults.
func (l Limit) Norm() Limit {
	if l.MaxEvents <= 0 {
		l.MaxEvents = DefaultPageEvents
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultPageBytes
	}
	return l
}

// Fits reports whether a page already holding n events of size bytes may
// take one more event of frame bytes.
func (l Limit) Fits(n, size, frame int) bool {
	return n == 0 || (n < l.MaxEvents && size+frame <= l.MaxBytes)
}

// More reports whether events retained after the page evs that Since
// returned with pos remain to be read.
func More(evs []Event, pos Position) bool {
	return len(evs) > 0 && evs[len(evs)-1].Seq < pos.Head
}

// CheckResume applies the replay rule every backend shares: a client at
// from (not None) can be served by a stream at pos whose oldest retained
// seq is oldest (pos.Head+1 when none is retained) unless the epoch differs
// ("" matches any), from is ahead of the head, or events after from are
// gone. It returns the *ResyncError to answer, or nil.
func CheckResume(pos Position, from protocol.Cursor, oldest uint64) error {
	switch {
	case from.Epoch != "" && from.Epoch != pos.Epoch:
		return &ResyncError{Reason: protocol.ReasonEpochChanged, Position: pos}
	case from.Seq > pos.Head:
		return &ResyncError{Reason: protocol.ReasonAhead, Position: pos}
	case from.Seq+1 < oldest:
		return &ResyncError{Reason: protocol.ReasonTooOld, Position: pos}
	}
	return nil
}
