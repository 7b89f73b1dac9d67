// Package memory is the in-process stream.Stream: the default backend of a
// single agentwire node. History lives in this process only; a restart loses
// it, and the new process uses a new epoch so that every resuming client is
// told resync_required instead of being served someone else's seq numbers.
//
// # Layout and locking
//
// Users are spread over 64 shards by an FNV-1a hash of the user id. A shard's
// mutex guards only its map of user records; each record has its own mutex,
// under which Append assigns the seq, encodes the frame once, stores it in a
// ring buffer bounded by Retention.MaxEvents (and its frames' bytes by
// Retention.MaxBytes, oldest dropped first) and calls the user's live
// handlers, so live order is seq order and two users never wait on each
// other. Handlers must not block and must not call back into the Stream for
// the same user, except for the cancel func of a subscription, which is safe
// to call from anywhere, including from inside a handler.
//
// # Epochs
//
// A Stream draws one random ULID when it is made. A user's epoch is that ULID,
// suffixed with a small generation counter once history has been lost (see
// eviction). The epoch a user gets is fixed when its record is made and never
// changes while the record exists.
//
// Head and Since on a user without a record create nothing; they report
// head 0 and the epoch the user's first Append would get. So a client that
// connects before the first event, sees head 0 and epoch E, resumes with E
// after events are appended. This is guaranteed while the client holds a
// subscription (which keeps the record alive). Without one it holds unless
// a user with history that hashes to the same of 4096 generation slots was
// evicted in between; the client is then told resync_required although none
// of its user's history was lost.
//
// # Eviction
//
// Memory does not grow with the number of users ever seen. A user record is
// evicted when it has no subscribers, no idempotency key younger than
// stream.IdempotencyWindow, and either never had an event or its newest event
// is older than Retention.MaxAge (so nothing of its history would be served
// any more). Eviction is lazy: Append and Subscribe sweep their shard at most
// once per sweep interval (MaxAge/2, capped to a minute); there is no
// background goroutine. An evicted user that comes back starts again at seq 1
// in a NEW epoch if it had events (its slot's generation is bumped), so an
// old client resuming with the old epoch gets resync_required with reason
// epoch_changed; a user that never had events keeps the epoch it was shown
// (subject to the slot caveat above).
//
// Every method returns ctx.Err() for a context that is already done, as a
// networked backend would.
//
// # Idempotency keys
//
// A user keeps the keys of its keyed appends for stream.IdempotencyWindow,
// each with its first event, but at most 4×MaxEvents of them: past that the
// oldest keys are forgotten early, so a flood of keyed appends cannot pin
// memory for the whole window.
package memory

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

const (
	shardBits     = 6
	numShards     = 1 << shardBits
	slotBits      = 6
	slotsPerShard = 1 << slotBits

	minRing       = 8
	maxSweepEvery = time.Minute
)

// Options configure a Stream.
type Options struct {
	// Retention bounds each user's history; zero fields take
	// stream.DefaultMaxEvents, stream.DefaultMaxAge and stream.DefaultMaxBytes.
	Retention stream.Retention
	// Now is the clock; nil means time.Now. Tests pass a fake one.
	Now func() time.Time
}

// Stream is an in-memory stream.Stream. It is safe for concurrent use.
type Stream struct {
	maxEvents  int
	maxAge     time.Duration
	maxBytes   int
	sweepEvery time.Duration
	now        func() time.Time
	base       string // epoch prefix, a ULID drawn by New
	closed     atomic.Bool
	shards     [numShards]shard
}

var _ stream.Stream = (*Stream)(nil)

type shard struct {
	mu    sync.Mutex
	users map[string]*user // nil once the Stream is closed
	// gens[slot] counts evictions of users with history in that slot; it is
	// part of the epoch of every record made afterwards in the slot.
	gens      [slotsPerShard]uint64
	nextSweep atomic.Int64 // unix nanos
	_         [64]byte     // keep neighbouring shards' locks off one cache line
}

type user struct {
	mu    sync.Mutex // guards everything below but subs
	epoch string
	slot  uint8
	dead  bool // evicted; written with mu and subMu held, read with either
	head  uint64

	// *history is made by the first append and dropped by a sweep once
	// nothing is retained: a user that is only subscribed (an idle
	// connection's) carries one nil pointer, not the ring and the keys.
	*history

	subMu sync.Mutex // serialises changes of subs
	subs  atomic.Pointer[[]*subscription]
}

// history is a user's retained events and idempotency keys.
type history struct {
	// ring holds the retained events, oldest at ring[start], n of them.
	ring  []stream.Event
	start int
	n     int
	bytes int // frame bytes of the retained events

	keys  map[string]stream.Event // idempotency key → first event
	keyQ  []keyEntry              // keys in append order, for expiry
	keyQ0 int                     // index of the oldest live entry in keyQ
}

// retained is the number of events u retains.
func (u *user) retained() int {
	if u.history == nil {
		return 0
	}
	return u.n
}

// empty reports whether h retains neither an event nor a key.
func (h *history) empty() bool { return h.n == 0 && len(h.keys) == 0 }

type keyEntry struct {
	key string
	at  time.Time
}

type subscription struct {
	h    stream.Handler
	done atomic.Bool
}

// New returns an empty Stream.
func New(opts Options) *Stream {
	s := &Stream{
		maxEvents: opts.Retention.MaxEvents,
		maxAge:    opts.Retention.MaxAge,
		maxBytes:  opts.Retention.MaxBytes,
		now:       opts.Now,
		base:      ulid.Make().String(),
	}
	if s.maxEvents <= 0 {
		s.maxEvents = stream.DefaultMaxEvents
	}
	if s.maxAge <= 0 {
		s.maxAge = stream.DefaultMaxAge
	}
	if s.maxBytes <= 0 {
		s.maxBytes = stream.DefaultMaxBytes
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.sweepEvery = min(max(s.maxAge/2, time.Millisecond), maxSweepEvery)
	for i := range s.shards {
		s.shards[i].users = make(map[string]*user)
	}
	return s
}

// Append implements stream.Stream.
func (s *Stream) Append(ctx context.Context, userID string, rec stream.Record) (stream.Event, error) {
	if err := s.check(ctx); err != nil {
		return stream.Event{}, err
	}
	sh, slot := s.locate(userID)
	for {
		u := s.getOrCreate(sh, slot, userID)
		if u == nil {
			return stream.Event{}, stream.ErrClosed
		}
		u.mu.Lock()
		if u.dead {
			u.mu.Unlock()
			continue
		}
		now := s.now()
		ev := s.appendLocked(u, rec, now)
		u.mu.Unlock()
		s.maybeSweep(sh, now)
		return ev, nil
	}
}

// AppendBatch implements stream.Stream: the records are appended under one
// hold of the user's lock, so nothing else of the user comes between them.
func (s *Stream) AppendBatch(ctx context.Context, userID string, recs []stream.Record) ([]stream.Event, error) {
	if len(recs) > stream.MaxBatch {
		return nil, stream.ErrBatchTooLarge
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	sh, slot := s.locate(userID)
	out := make([]stream.Event, len(recs))
	for {
		u := s.getOrCreate(sh, slot, userID)
		if u == nil {
			return nil, stream.ErrClosed
		}
		u.mu.Lock()
		if u.dead {
			u.mu.Unlock()
			continue
		}
		now := s.now()
		for i, rec := range recs {
			out[i] = s.appendLocked(u, rec, now)
		}
		u.mu.Unlock()
		s.maybeSweep(sh, now)
		return out, nil
	}
}

func (s *Stream) appendLocked(u *user, rec stream.Record, now time.Time) stream.Event {
	if u.history == nil {
		u.history = &history{}
	}
	if rec.IdempotencyKey != "" {
		u.expireKeys(now)
		if ev, ok := u.keys[rec.IdempotencyKey]; ok {
			return ev
		}
	}
	s.trim(u, now)
	ev := stream.Event{Seq: u.head + 1, Epoch: u.epoch, TS: now.UTC(), Record: rec}
	ev.Frame = protocol.EncodeEvent(ev.Wire())
	if n := len(rec.Data); n > 0 {
		// Keep the copy of data inside the frame rather than the caller's
		// buffer: no second copy in memory, no aliasing of caller memory.
		end := len(ev.Frame) - 1
		ev.Data = ev.Frame[end-n : end : end]
	}
	u.head++
	s.push(u, ev)
	if rec.IdempotencyKey != "" {
		if u.keys == nil {
			u.keys = make(map[string]stream.Event)
		}
		u.keys[rec.IdempotencyKey] = ev
		u.keyQ = append(u.keyQ, keyEntry{key: rec.IdempotencyKey, at: now})
		if len(u.keyQ)-u.keyQ0 > s.maxKeys() {
			u.dropOldestKey()
		}
	}
	if subs := u.subs.Load(); subs != nil {
		for _, sub := range *subs {
			if !sub.done.Load() {
				sub.h(ev)
			}
		}
	}
	return ev
}

// Since implements stream.Stream.
func (s *Stream) Since(ctx context.Context, userID string, from protocol.Cursor, lim stream.Limit) ([]stream.Event, stream.Position, error) {
	if err := s.check(ctx); err != nil {
		return nil, stream.Position{}, err
	}
	if from.None {
		pos, err := s.Head(ctx, userID)
		return nil, pos, err
	}
	sh, slot := s.locate(userID)
	u, gen, ok := s.lookup(sh, slot, userID)
	if !ok {
		return nil, stream.Position{}, stream.ErrClosed
	}
	if u == nil {
		pos := stream.Position{Epoch: s.epoch(gen)}
		if err := stream.CheckResume(pos, from, 1); err != nil {
			return nil, pos, err
		}
		return []stream.Event{}, pos, nil
	}

	// A record evicted since lookup still answers as it stood just before
	// eviction: no subscribers, nothing retained.
	u.mu.Lock()
	defer u.mu.Unlock()
	s.trim(u, s.now())
	pos := stream.Position{Epoch: u.epoch, Head: u.head}
	n := u.retained()
	oldest := u.head - uint64(n) + 1
	if err := stream.CheckResume(pos, from, oldest); err != nil {
		return nil, pos, err
	}
	lim = lim.Norm()
	first := int(from.Seq + 1 - oldest)
	out := make([]stream.Event, 0, min(u.head-from.Seq, uint64(lim.MaxEvents)))
	size := 0
	for i := first; i < n; i++ {
		ev := &u.ring[(u.start+i)%len(u.ring)]
		if !lim.Fits(len(out), size, len(ev.Frame)) {
			break
		}
		size += len(ev.Frame)
		out = append(out, *ev)
	}
	return out, pos, nil
}

// Head implements stream.Stream. It creates no state for an unknown user.
func (s *Stream) Head(ctx context.Context, userID string) (stream.Position, error) {
	if err := s.check(ctx); err != nil {
		return stream.Position{}, err
	}
	sh, slot := s.locate(userID)
	u, gen, ok := s.lookup(sh, slot, userID)
	if !ok {
		return stream.Position{}, stream.ErrClosed
	}
	if u == nil {
		return stream.Position{Epoch: s.epoch(gen)}, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return stream.Position{Epoch: u.epoch, Head: u.head}, nil
}

// Subscribe implements stream.Stream. Handlers of one user are called in
// subscription order, synchronously inside Append, under the user's lock.
// The cancel func is idempotent and may be called from inside a handler;
// once it has returned, no Append that starts afterwards calls h.
func (s *Stream) Subscribe(ctx context.Context, userID string, h stream.Handler) (func(), error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	sub := &subscription{h: h}
	sh, slot := s.locate(userID)
	var u *user
	for {
		u = s.getOrCreate(sh, slot, userID)
		if u == nil {
			return nil, stream.ErrClosed
		}
		u.subMu.Lock()
		if u.dead {
			u.subMu.Unlock()
			continue
		}
		var subs []*subscription
		if old := u.subs.Load(); old != nil {
			subs = append(subs, *old...)
		}
		subs = append(subs, sub)
		u.subs.Store(&subs)
		u.subMu.Unlock()
		break
	}
	s.maybeSweep(sh, s.now())
	return func() {
		if sub.done.Swap(true) {
			return
		}
		u.subMu.Lock()
		defer u.subMu.Unlock()
		old := *u.subs.Load()
		subs := make([]*subscription, 0, len(old)-1)
		for _, o := range old {
			if o != sub {
				subs = append(subs, o)
			}
		}
		u.subs.Store(&subs)
	}, nil
}

// Ping implements stream.Stream: nil unless the Stream is closed.
func (s *Stream) Ping(ctx context.Context) error {
	return s.check(ctx)
}

// Close drops all history; every later call returns stream.ErrClosed.
// Handlers are not called any more. Close is idempotent.
func (s *Stream) Close() error {
	s.closed.Store(true)
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.users = nil
		sh.mu.Unlock()
	}
	return nil
}

func (s *Stream) check(ctx context.Context) error {
	if s.closed.Load() {
		return stream.ErrClosed
	}
	return ctx.Err()
}

// locate returns the user's shard and generation slot.
func (s *Stream) locate(userID string) (*shard, uint8) {
	// FNV-1a, inlined: hash/fnv would need the id as a []byte.
	h := uint64(14695981039346656037)
	for i := 0; i < len(userID); i++ {
		h ^= uint64(userID[i])
		h *= 1099511628211
	}
	return &s.shards[h&(numShards-1)], uint8((h >> shardBits) & (slotsPerShard - 1))
}

// lookup returns the user's record, or nil and the slot's generation when
// there is none. ok is false when the Stream is closed.
func (s *Stream) lookup(sh *shard, slot uint8, userID string) (u *user, gen uint64, ok bool) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.users == nil {
		return nil, 0, false
	}
	return sh.users[userID], sh.gens[slot], true
}

// getOrCreate returns the user's record, making it when missing; nil when the
// Stream is closed.
func (s *Stream) getOrCreate(sh *shard, slot uint8, userID string) *user {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.users == nil {
		return nil
	}
	u := sh.users[userID]
	if u == nil {
		u = &user{epoch: s.epoch(sh.gens[slot]), slot: slot}
		sh.users[userID] = u
	}
	return u
}

func (s *Stream) epoch(gen uint64) string {
	if gen == 0 {
		return s.base
	}
	return s.base + "." + strconv.FormatUint(gen, 10)
}

// push stores ev as the newest event, overwriting the oldest one when the
// ring holds maxEvents, then drops the oldest events while the retained
// frames exceed maxBytes (the newest stays). The ring grows by doubling so
// that users with little history cost little memory.
func (s *Stream) push(u *user, ev stream.Event) {
	defer func() {
		for u.bytes > s.maxBytes && u.n > 1 {
			u.dropOldest()
		}
	}()
	u.bytes += len(ev.Frame)
	if u.n == len(u.ring) {
		if u.n == s.maxEvents {
			u.bytes -= len(u.ring[u.start].Frame)
			u.ring[u.start] = ev
			u.start = (u.start + 1) % len(u.ring)
			return
		}
		ring := make([]stream.Event, min(max(2*len(u.ring), minRing), s.maxEvents))
		for i := 0; i < u.n; i++ {
			ring[i] = u.ring[(u.start+i)%len(u.ring)]
		}
		u.ring, u.start = ring, 0
	}
	u.ring[(u.start+u.n)%len(u.ring)] = ev
	u.n++
}

// trim drops events older than maxAge; it frees the ring once empty.
func (s *Stream) trim(u *user, now time.Time) {
	if u.history == nil {
		return
	}
	cutoff := now.Add(-s.maxAge)
	for u.n > 0 && u.ring[u.start].TS.Before(cutoff) {
		u.dropOldest()
	}
	if u.n == 0 && u.ring != nil {
		u.ring, u.start = nil, 0
	}
}

// dropOldest forgets the oldest retained event.
func (u *history) dropOldest() {
	u.bytes -= len(u.ring[u.start].Frame)
	u.ring[u.start] = stream.Event{}
	u.start = (u.start + 1) % len(u.ring)
	u.n--
}

// maxKeys bounds the idempotency keys a user holds: each keeps its event's
// frame alive, so a flood of keyed appends must not pin memory for the whole
// window. Past it the oldest keys are forgotten early.
func (s *Stream) maxKeys() int { return 4 * s.maxEvents }

// expireKeys forgets idempotency keys older than stream.IdempotencyWindow.
func (u *history) expireKeys(now time.Time) {
	cutoff := now.Add(-stream.IdempotencyWindow)
	for u.keyQ0 < len(u.keyQ) && u.keyQ[u.keyQ0].at.Before(cutoff) {
		u.dropOldestKey()
	}
	u.compactKeys()
}

func (u *history) dropOldestKey() {
	// A key is appended once, so the map entry is this one.
	delete(u.keys, u.keyQ[u.keyQ0].key)
	u.keyQ[u.keyQ0] = keyEntry{}
	u.keyQ0++
	u.compactKeys()
}

func (u *history) compactKeys() {
	switch {
	case u.keyQ0 == len(u.keyQ):
		u.keys, u.keyQ, u.keyQ0 = nil, nil, 0
	case u.keyQ0 > len(u.keyQ)/2 && u.keyQ0 >= 64:
		u.keyQ = append(u.keyQ[:0:0], u.keyQ[u.keyQ0:]...)
		u.keyQ0 = 0
	}
}

// maybeSweep evicts idle users of sh when its sweep is due; at most one
// caller per interval does the work.
func (s *Stream) maybeSweep(sh *shard, now time.Time) {
	t := now.UnixNano()
	next := sh.nextSweep.Load()
	if t < next || !sh.nextSweep.CompareAndSwap(next, t+int64(s.sweepEvery)) {
		return
	}
	s.sweep(sh, now)
}

func (s *Stream) sweep(sh *shard, now time.Time) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for id, u := range sh.users {
		// A user whose lock is taken is busy, hence not idle: skip it, and
		// never wait for a user lock while holding the shard lock.
		if !u.mu.TryLock() {
			continue
		}
		s.trim(u, now)
		if u.history != nil {
			u.expireKeys(now)
			if u.empty() {
				u.history = nil
			}
		}
		// Nothing retained (trim dropped every event older than maxAge, or
		// there never was one) and no idempotency key to honour.
		if u.history == nil {
			u.subMu.Lock()
			if subs := u.subs.Load(); subs == nil || len(*subs) == 0 {
				u.dead = true
				delete(sh.users, id)
				if u.head > 0 {
					sh.gens[u.slot]++
				}
			}
			u.subMu.Unlock()
		}
		u.mu.Unlock()
	}
}
