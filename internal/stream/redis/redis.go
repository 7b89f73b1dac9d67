package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oklog/ulid/v2"
	rueidis "github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/redisx"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// Defaults.
const (
	DefaultPrefix = redisx.DefaultPrefix
	// keyMargin is how much longer than MaxAge an idle user's keys live.
	keyMargin = time.Minute
	opTimeout = 5 * time.Second
	// DefaultCheckEvery is the watchdog's default period.
	DefaultCheckEvery = 5 * time.Second
)

// Options configure a Stream.
type Options struct {
	// Client is the node's Redis client (redisx.Dial), shared with the
	// other Redis backends; it stays its owner's to close, after the Stream.
	Client rueidis.Client
	// Retention bounds each user's history; zero fields take the stream
	// package defaults.
	Retention stream.Retention
	// Prefix starts every key and channel name; default "aw". It must not
	// contain '{' or '}'.
	Prefix string
	// Logger gets connection trouble and unrecoverable live gaps; nil
	// discards.
	Logger *slog.Logger
	// CheckEvery is how often the watchdog compares subscribed users' heads
	// with what was delivered (see watchdog); default DefaultCheckEvery.
	CheckEvery time.Duration
}

// Stream is a stream.Stream on Redis. It is safe for concurrent use.
type Stream struct {
	client    rueidis.Client
	appends   appendPipe // Append's scripts, sent together
	log       *slog.Logger
	prefix    string
	maxEvents int
	maxAge    time.Duration
	keyTTL    string // ms, as a script argument
	maxAgeUS  string
	maxEvStr  string
	maxBStr   string

	closed    atomic.Bool
	closeOnce sync.Once
	done      chan struct{}
	ctx       context.Context // cancelled by Close; bounds background work
	cancel    context.CancelFunc
	spawnMu   sync.RWMutex // held for reading while adding to wg
	wg        sync.WaitGroup

	fills  atomic.Int64 // gap fills from the log (tests)
	stalls atomic.Int64 // subscriptions the watchdog restarted (tests)
	sends  atomic.Int64 // batches of appends sent (tests)

	checkEvery time.Duration // watchdog period

	// live subscriptions, see subscribe.go
	mu   sync.Mutex
	subs map[string]*userSub // by channel
}

var _ stream.Stream = (*Stream)(nil)

// New returns the Stream on opts.Client; Start starts the node's pub/sub
// connection. An unreachable Redis is not an error: the client keeps trying
// to connect and the methods return errors wrapping stream.ErrUnavailable
// meanwhile.
func New(ctx context.Context, opts Options) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.Client == nil {
		return nil, errors.New("redis stream: no client")
	}
	prefix := opts.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := redisx.CheckPrefix(prefix); err != nil {
		return nil, fmt.Errorf("redis stream: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Stream{
		client:     opts.Client,
		log:        log,
		prefix:     prefix,
		maxEvents:  opts.Retention.MaxEvents,
		maxAge:     opts.Retention.MaxAge,
		done:       make(chan struct{}),
		subs:       make(map[string]*userSub),
		checkEvery: opts.CheckEvery,
	}
	s.appends.s = s
	if s.checkEvery <= 0 {
		s.checkEvery = DefaultCheckEvery
	}
	if s.maxEvents <= 0 {
		s.maxEvents = stream.DefaultMaxEvents
	}
	if s.maxAge <= 0 {
		s.maxAge = stream.DefaultMaxAge
	}
	s.keyTTL = strconv.FormatInt((s.maxAge + keyMargin).Milliseconds(), 10)
	s.maxAgeUS = strconv.FormatInt(s.maxAge.Microseconds(), 10)
	s.maxEvStr = strconv.Itoa(s.maxEvents)
	maxBytes := opts.Retention.MaxBytes
	if maxBytes <= 0 {
		maxBytes = stream.DefaultMaxBytes
	}
	s.maxBStr = strconv.Itoa(maxBytes)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Start starts the node's maintenance loop (keys of subscribed users kept
// alive, the watchdog of live delivery), which Close ends. New starts no
// goroutine of its own. Call it once.
func (s *Stream) Start() { s.spawn(s.maintain) }

// userTag starts the keys of one user (redisx.UserTag).
func (s *Stream) userTag(user string) string { return redisx.UserTag(s.prefix, user) }

func (s *Stream) channel(user string) string { return s.userTag(user) + "live" }

func newEpoch() string { return ulid.Make().String() }

// appendArgs are one append's keys and its appendArgc arguments of
// appendScript (scriptArgs adds the common ones).
func (s *Stream) appendArgs(user, idem string, tpl []byte, pre, post int, now time.Time) (keys, args []string) {
	tag := s.userTag(user)
	keys = make([]string, 3, 4)
	keys[0], keys[1], keys[2] = tag+"meta", tag+"log", tag+"live"
	if idem != "" {
		keys = append(keys, tag+"idem:"+idem)
	}
	args = []string{
		newEpoch(),
		rueidis.BinaryString(tpl),
		strconv.Itoa(pre),
		strconv.Itoa(post),
		strconv.FormatInt(now.UnixMicro(), 10),
		strconv.Itoa(len(keys)),
	}
	return keys, args
}

// Append implements stream.Stream.
func (s *Stream) Append(ctx context.Context, user string, rec stream.Record) (stream.Event, error) {
	if err := s.check(ctx); err != nil {
		return stream.Event{}, err
	}
	now := time.Now().UTC()
	ev := stream.Event{TS: now, Record: rec}
	tpl, pre, post, err := template(&ev)
	if err != nil {
		return stream.Event{}, err
	}
	keys, args := s.appendArgs(user, rec.IdempotencyKey, tpl, pre, post, now)
	r, sent, err := s.appends.exec(ctx, keys, args)
	if err != nil && !sent {
		return stream.Event{}, s.wrap(ctx, "append", err) // never sent: not appended
	}
	var res []rueidis.RedisMessage
	if err == nil {
		res, err = r.ToArray()
	}
	if err != nil {
		if maybeSent(err) {
			return stream.Event{}, fmt.Errorf("%w: %w", stream.ErrMaybeAppended, s.wrap(ctx, "append", err))
		}
		return stream.Event{}, s.wrap(ctx, "append", err)
	}
	if len(res) < 2 {
		return stream.Event{}, errors.New("redis stream: bad append reply")
	}
	seqStr, err1 := res[0].ToString()
	epoch, err2 := res[1].ToString()
	seq, err3 := strconv.ParseUint(seqStr, 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return stream.Event{}, fmt.Errorf("redis stream: bad append reply: %w", err)
	}
	if len(res) == 3 { // idempotent repeat: the first event
		f, err := res[2].AsBytes()
		if err != nil {
			return stream.Event{}, fmt.Errorf("redis stream: bad append reply: %w", err)
		}
		first, err := decodeFrame(f)
		if err != nil {
			return stream.Event{}, err
		}
		first.IdempotencyKey = rec.IdempotencyKey
		return first, nil
	}
	ev.Seq, ev.Epoch = seq, epoch
	ev.Frame = fill(tpl, pre, post, seq, epoch)
	if n := len(rec.Data); n > 0 {
		end := len(ev.Frame) - 1
		ev.Data = ev.Frame[end-n : end : end]
	}
	return ev, nil
}

// AppendBatch implements stream.Stream: one script (batchScript) appends
// every record, so the batch is one round trip and atomic for the user.
func (s *Stream) AppendBatch(ctx context.Context, user string, recs []stream.Record) ([]stream.Event, error) {
	if len(recs) > stream.MaxBatch {
		return nil, stream.ErrBatchTooLarge
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return []stream.Event{}, nil
	}
	now := time.Now().UTC()
	tag := s.userTag(user)
	keys := []string{tag + "meta", tag + "log", tag + "live"}
	args := make([]string, 8, 8+4*len(recs))
	args[0] = newEpoch()
	args[1] = strconv.FormatInt(now.UnixMicro(), 10)
	args[2], args[3], args[4] = s.maxEvStr, s.maxAgeUS, s.keyTTL
	args[5] = strconv.FormatInt(stream.IdempotencyWindow.Milliseconds(), 10)
	args[6] = s.maxBStr
	args[7] = strconv.Itoa(len(recs))
	type tmpl struct {
		tpl       []byte
		pre, post int
	}
	tpls := make([]tmpl, len(recs))
	out := make([]stream.Event, len(recs))
	for i, rec := range recs {
		out[i] = stream.Event{TS: now, Record: rec}
		tpl, pre, post, err := template(&out[i])
		if err != nil {
			return nil, err
		}
		tpls[i] = tmpl{tpl, pre, post}
		k := "0"
		if rec.IdempotencyKey != "" {
			keys = append(keys, tag+"idem:"+rec.IdempotencyKey)
			k = strconv.Itoa(len(keys))
		}
		args = append(args, rueidis.BinaryString(tpl), strconv.Itoa(pre), strconv.Itoa(post), k)
	}
	res, err := batchScript.Exec(ctx, s.client, keys, args).ToArray()
	if err != nil {
		if maybeSent(err) {
			return nil, fmt.Errorf("%w: %w", stream.ErrMaybeAppended, s.wrap(ctx, "append batch", err))
		}
		return nil, s.wrap(ctx, "append batch", err)
	}
	if len(res) != 1+2*len(recs) {
		return nil, errors.New("redis stream: bad append batch reply")
	}
	epoch, err := res[0].ToString()
	if err != nil {
		return nil, fmt.Errorf("redis stream: bad append batch reply: %w", err)
	}
	for i, rec := range recs {
		seqStr, err1 := res[1+2*i].ToString()
		f, err2 := res[2+2*i].AsBytes()
		seq, err3 := strconv.ParseUint(seqStr, 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("redis stream: bad append batch reply: %w", err)
		}
		if len(f) > 0 { // idempotent repeat: the first event
			first, err := decodeFrame(f)
			if err != nil {
				return nil, err
			}
			first.IdempotencyKey = rec.IdempotencyKey
			out[i] = first
			continue
		}
		ev := &out[i]
		ev.Seq, ev.Epoch = seq, epoch
		ev.Frame = fill(tpls[i].tpl, tpls[i].pre, tpls[i].post, seq, epoch)
		if n := len(rec.Data); n > 0 {
			end := len(ev.Frame) - 1
			ev.Data = ev.Frame[end-n : end : end]
		}
	}
	return out, nil
}

// Since implements stream.Stream.
func (s *Stream) Since(ctx context.Context, user string, from protocol.Cursor, lim stream.Limit) ([]stream.Event, stream.Position, error) {
	if err := s.check(ctx); err != nil {
		return nil, stream.Position{}, err
	}
	if from.None {
		pos, err := s.Head(ctx, user)
		return nil, pos, err
	}
	pos, frames, err := s.read(ctx, user, strconv.FormatUint(from.Seq, 10), from.Epoch, lim.Norm())
	if err != nil {
		return nil, pos, err
	}
	oldest := pos.Head + 1
	evs := make([]stream.Event, 0, len(frames))
	for i, f := range frames {
		ev, err := decodeFrame(f)
		if err != nil {
			return nil, pos, err
		}
		if i == 0 {
			oldest = ev.Seq
		}
		if ev.Seq > pos.Head { // appended after the meta was read: not possible in one script, but cheap to guard
			break
		}
		evs = append(evs, ev)
	}
	if err := stream.CheckResume(pos, from, oldest); err != nil {
		return nil, pos, err
	}
	return evs, pos, nil
}

// Head implements stream.Stream. For a user without history it records the
// epoch the first Append will use (with the idle TTL), so both agree.
func (s *Stream) Head(ctx context.Context, user string) (stream.Position, error) {
	if err := s.check(ctx); err != nil {
		return stream.Position{}, err
	}
	pos, _, err := s.read(ctx, user, "-1", "", stream.Limit{}.Norm())
	return pos, err
}

func (s *Stream) read(ctx context.Context, user, since, epoch string, lim stream.Limit) (stream.Position, [][]byte, error) {
	tag := s.userTag(user)
	cutoff := time.Now().Add(-s.maxAge).UnixMicro()
	res, err := readScript.Exec(ctx, s.client,
		[]string{tag + "meta", tag + "log"},
		[]string{newEpoch(), s.keyTTL, since, epoch, strconv.FormatInt(cutoff, 10),
			strconv.Itoa(lim.MaxEvents), strconv.Itoa(lim.MaxBytes)},
	).ToArray()
	if err != nil {
		return stream.Position{}, nil, s.wrap(ctx, "read", err)
	}
	if len(res) < 2 {
		return stream.Position{}, nil, errors.New("redis stream: bad read reply")
	}
	e, err1 := res[0].ToString()
	h, err2 := res[1].ToString()
	head, err3 := strconv.ParseUint(h, 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return stream.Position{}, nil, fmt.Errorf("redis stream: bad read reply: %w", err)
	}
	pos := stream.Position{Epoch: e, Head: head}
	frames := make([][]byte, 0, len(res)-2)
	for _, m := range res[2:] {
		f, err := m.AsBytes()
		if err != nil {
			return pos, nil, fmt.Errorf("redis stream: bad read reply: %w", err)
		}
		frames = append(frames, f)
	}
	return pos, frames, nil
}

// Ping implements stream.Stream.
func (s *Stream) Ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	err := s.client.Do(ctx, s.client.B().Ping().Build()).Error()
	return s.wrap(ctx, "ping", err)
}

// Close ends every subscription and background goroutine; the
// client is left to its owner. Later calls return stream.ErrClosed.
// Idempotent.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		s.spawnMu.Lock()
		s.closed.Store(true)
		close(s.done)
		s.cancel()
		s.spawnMu.Unlock()
		s.wg.Wait()
	})
	return nil
}

// spawn runs fn in a goroutine Close waits for; false once closed.
func (s *Stream) spawn(fn func()) bool {
	s.spawnMu.RLock()
	defer s.spawnMu.RUnlock()
	if s.closed.Load() {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
	return true
}

func (s *Stream) check(ctx context.Context) error {
	if s.closed.Load() {
		return stream.ErrClosed
	}
	return ctx.Err()
}

// wrap classifies a client error: ErrClosed after Close, the context's error
// when it ended, a Redis error reply as such (but the transient ones as
// ErrUnavailable), anything else (network) as ErrUnavailable.
func (s *Stream) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() || errors.Is(err, rueidis.ErrClosing) {
		return stream.ErrClosed
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("redis stream %s: %w", op, cerr)
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		if re.IsLoading() || re.IsTryAgain() || re.IsClusterDown() || strings.HasPrefix(re.Error(), "MASTERDOWN") || strings.HasPrefix(re.Error(), "BUSY") {
			return fmt.Errorf("%w: redis %s: %v", stream.ErrUnavailable, op, err)
		}
		return fmt.Errorf("redis stream %s: %w", op, err)
	}
	return fmt.Errorf("%w: redis %s: %v", stream.ErrUnavailable, op, err)
}

// maybeSent reports whether a command that failed with err may have run:
// not when it was never written (no connection could be dialled, the
// client was closing) or Redis answered it with an error; otherwise (the
// connection broke after the write, the reply timed out) it may have.
func maybeSent(err error) bool {
	if _, ok := rueidis.IsRedisErr(err); ok {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	return !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, rueidis.ErrClosing)
}
