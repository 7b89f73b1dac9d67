package hub

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// ErrReplayBusy is returned by Join while the connection's previous replay
// is not fully written yet: a client cannot stack replays.
var ErrReplayBusy = errors.New("hub: a replay is still in progress")

// pageTimeout bounds one read of a replay page from the stream.
const pageTimeout = 10 * time.Second

// Transport is what a connection needs of its socket. The WebSocket
// implementation lives in package ws (an epoll event loop on Linux: an idle
// connection has no reading goroutine).
type Transport interface {
	// WriteBatch writes each frame as one text message, in order. Only the
	// connection's single flush goroutine calls it, holding no hub lock; the
	// transport serialises it with its own control frames (ping, pong,
	// close), which never land inside a data frame.
	WriteBatch(frames [][]byte) error
	// Close sends a close frame with code and reason, best effort within a
	// short deadline (it interrupts a batch write in flight), then closes the
	// socket. The transport then unregisters the connection from the hub
	// itself. Only the first call has an effect; it may be called from any
	// goroutine.
	Close(code protocol.CloseCode, reason string)
}

// Conn is one client connection as the hub sees it: an outbound queue bounded
// in bytes, the position of the user's stream it has reached, and at most one
// writer goroutine, started only while there is something to write. An idle
// connection owns no goroutine and no buffer here.
type Conn struct {
	ID   string
	User string
	// Since (unix ns) and IssuedAt (the token's iat, unix ms; 0 when none)
	// describe the connection to the admin API, which lists a user's
	// connections and closes those of revoked tokens, with its transport
	// (see Describe). Set them before Register.
	Since    int64
	IssuedAt int64

	hub     *Hub
	t       Transport
	flushFn func() // c.flush bound once: `go c.flush()` would allocate per start

	queue         [][]byte
	spare         [][]byte
	queued        int   // bounded bytes in queue and pending
	queuedBounded int   // bounded bytes in queue
	oldestTS      int64 // append time (unix ns) of the oldest queued event, 0 if none
	lastSeq       uint64
	epoch         string
	rare          *connRare // pending, onResync, reason; nil when none is set

	registered atomic.Bool
	mu         sync.Mutex
	joining    bool // live events go to pending until Join places the replay
	// replay is set while pages of a replay remain to be read: the writer
	// reads the next one after lastSeq once the queue is empty, so a replay
	// never holds more than a queue's worth. Live events wait in pending
	// meanwhile.
	replay        bool
	replayQueued  bool // frames of a replay are in queue
	replayWriting bool // frames of a replay are being written
	resuming      bool // the replay is a client's resume: counted when it ends
	writing       bool
	closing       bool   // a close is queued or done: accept nothing more
	code          uint16 // the close code (a protocol.CloseCode, 0: none)
	transport     uint8  // Describe's transport name, interned (transportName)
}

// connRare is the state a connection holds only while it joins, replays or
// closes with a reason: an idle connection carries one nil pointer instead
// (bench/README.md section 2). c.mu guards it.
type connRare struct {
	pending  []stream.Event // live events received while joining or replaying
	onResync func(*stream.ResyncError) []byte
	reason   string
}

// pendingLocked returns the live events held while joining or replaying.
func (c *Conn) pendingLocked() []stream.Event {
	if c.rare == nil {
		return nil
	}
	return c.rare.pending
}

// setPendingLocked sets the held live events.
func (c *Conn) setPendingLocked(p []stream.Event) {
	if r := c.rareLocked(p != nil); r != nil {
		r.pending = p
		c.shedLocked()
	}
}

// setOnResyncLocked sets the resync frame builder of a replay in progress.
func (c *Conn) setOnResyncLocked(f func(*stream.ResyncError) []byte) {
	if r := c.rareLocked(f != nil); r != nil {
		r.onResync = f
		c.shedLocked()
	}
}

// setCloseLocked sets the close code and reason.
func (c *Conn) setCloseLocked(code protocol.CloseCode, reason string) {
	c.code = uint16(code)
	if r := c.rareLocked(reason != ""); r != nil {
		r.reason = reason
		c.shedLocked()
	}
}

// rareLocked returns c.rare, made first when set is true (a value is about
// to be set in it); nil when there is none and nothing is to be set.
func (c *Conn) rareLocked(set bool) *connRare {
	if c.rare == nil && set {
		c.rare = &connRare{}
	}
	return c.rare
}

// closeLocked returns the close code and reason.
func (c *Conn) closeLocked() (protocol.CloseCode, string) {
	if c.rare == nil {
		return protocol.CloseCode(c.code), ""
	}
	return protocol.CloseCode(c.code), c.rare.reason
}

// shedLocked drops c.rare once nothing is set in it.
func (c *Conn) shedLocked() {
	if r := c.rare; r != nil && r.pending == nil && r.onResync == nil && r.reason == "" {
		c.rare = nil
	}
}

// Join places the user's stream position on c: it writes prefix(pos) first
// (connection_established, say; nil writes nothing), then either the retained
// events after cur or a resync frame, then every live event that arrived
// meanwhile, with no gap and no duplicate. With cur.None the connection
// continues live from the current head.
// onResync builds the resync_required frame for a *stream.ResyncError.
//
// The replay is read page by page, each counted against the queue bound:
// Join queues the first page, the connection's writer reads the next one
// each time the queue has been written out, so a client that does not read
// holds at most a queue's worth of it, and one that reads gets all of it
// however large. Join fails with ErrReplayBusy, changing nothing, while the
// connection's previous replay is not written yet.
func (c *Conn) Join(ctx context.Context, cur protocol.Cursor,
	prefix func(stream.Position) []byte, onResync func(*stream.ResyncError) []byte) (stream.Position, error) {
	return c.join(ctx, cur, prefix, onResync, false)
}

// Resume is Join for a client resuming from cur (a WebSocket connect with
// since or a resume frame, an SSE stream with Last-Event-ID or since): it
// also counts the resume in agentwire_resumes_total, once, as replayed when
// every retained event after cur was placed (however many pages) or as
// resync when resync_required was. A None cursor is no resume: Join.
func (c *Conn) Resume(ctx context.Context, cur protocol.Cursor,
	prefix func(stream.Position) []byte, onResync func(*stream.ResyncError) []byte) (stream.Position, error) {
	return c.join(ctx, cur, prefix, onResync, !cur.None)
}

func (c *Conn) join(ctx context.Context, cur protocol.Cursor,
	prefix func(stream.Position) []byte, onResync func(*stream.ResyncError) []byte, resuming bool) (stream.Position, error) {
	c.mu.Lock()
	if c.replay || c.replayQueued || c.replayWriting {
		c.mu.Unlock()
		return stream.Position{}, ErrReplayBusy
	}
	c.joining = true
	lim := c.pageLimitLocked()
	c.mu.Unlock()

	var (
		events []stream.Event
		pos    stream.Position
		err    error
		resync *stream.ResyncError
	)
	events, pos, err = c.hub.stream.Since(ctx, c.User, cur, lim) // None: no events, the head
	if errors.As(err, &resync) {
		pos, err = resync.Position, nil
	}
	if err != nil {
		c.mu.Lock()
		c.joining = false
		c.mu.Unlock()
		return pos, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	c.joining = false
	if c.closing {
		c.setPendingLocked(nil)
		return pos, nil
	}
	if prefix != nil {
		if f := prefix(pos); f != nil {
			c.enqueueLocked(f, 0, false)
		}
	}
	c.epoch = pos.Epoch
	switch {
	case resync != nil:
		c.enqueueLocked(onResync(resync), 0, false)
		c.lastSeq = pos.Head
		if resuming {
			c.hub.metrics.ResumeResync.Inc()
		}
	case !cur.None:
		c.lastSeq = cur.Seq
		c.placePageLocked(events)
		if stream.More(events, pos) && !c.closing {
			// A resume is counted by nextPage, once the replay ends one
			// way or the other.
			c.replay, c.resuming = true, resuming
			c.setOnResyncLocked(onResync)
			if !c.writing { // the writer reads on and releases pending
				c.writing = true
				go c.flushFn()
			}
			return pos, nil
		}
		if resuming {
			c.hub.metrics.ResumeReplayed.Inc()
		}
		if c.lastSeq < pos.Head {
			c.lastSeq = pos.Head
		}
	default:
		c.lastSeq = pos.Head
	}
	c.releasePendingLocked()
	return pos, nil
}

// pageLimitLocked bounds the next replay page by half the room left in the
// queue (pending live events count), so that the live events arriving while
// a page waits for the writer have room too; the stream returns at least one
// event.
func (c *Conn) pageLimitLocked() stream.Limit {
	return stream.Limit{MaxBytes: max((c.hub.maxQueue-c.queued)/2, 1)}
}

// placePageLocked queues a replay page, counted against the bound, and
// forgets the held live events it covers.
func (c *Conn) placePageLocked(events []stream.Event) {
	for i := range events {
		c.offerLocked(&events[i], true)
		if c.closing {
			return
		}
	}
	c.replayQueued = c.replayQueued || len(c.queue) > 0
	pending := c.pendingLocked()
	keep := pending[:0]
	for _, ev := range pending {
		if ev.Epoch == c.epoch && ev.Seq <= c.lastSeq {
			c.queued -= len(ev.Frame)
			continue
		}
		keep = append(keep, ev)
	}
	clear(pending[len(keep):])
	c.setPendingLocked(keep)
}

// nextPage reads the replay page after lastSeq and queues it; on the last
// page it releases the live events held meanwhile. Only the writer calls it,
// with the queue empty.
func (c *Conn) nextPage() {
	c.mu.Lock()
	since, epoch, lim := c.lastSeq, c.epoch, c.pageLimitLocked()
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), pageTimeout)
	events, pos, err := c.hub.stream.Since(ctx, c.User, protocol.Cursor{Seq: since, Epoch: epoch}, lim)
	cancel()

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		c.replay = false
		return
	}
	var resync *stream.ResyncError
	switch {
	case errors.As(err, &resync):
		// Trimmed (or reset) while the client was reading: tell it, then
		// go on live from the head, as a join would have.
		frame := protocol.EncodeResync(resync.Position.Epoch, resync.Position.Head, resync.Reason)
		if c.rare != nil && c.rare.onResync != nil {
			frame = c.rare.onResync(resync)
		}
		c.enqueueLocked(frame, 0, false)
		c.epoch, c.lastSeq = resync.Position.Epoch, resync.Position.Head
		if c.resuming {
			c.hub.metrics.ResumeResync.Inc()
		}
	case err != nil:
		c.hub.log.Error("replay page", "user", c.User, "conn", c.ID, "err", err)
		c.replay = false
		c.closing = true
		c.setPendingLocked(nil)
		c.setCloseLocked(protocol.CloseInternalError, "stream unavailable")
		return
	default:
		c.placePageLocked(events)
		if c.closing {
			c.replay = false
			return
		}
		if stream.More(events, pos) {
			return
		}
		if c.resuming {
			c.hub.metrics.ResumeReplayed.Inc()
		}
		if c.lastSeq < pos.Head {
			c.lastSeq = pos.Head
		}
	}
	c.replay, c.resuming = false, false
	c.setOnResyncLocked(nil)
	if !c.joining {
		c.releasePendingLocked()
	}
}

// Reply runs handle while holding back the live events that arrive meanwhile,
// queues the frame handle returns, then the held events. A reply to a client
// frame thus comes before the events the frame caused (the ack of a
// user_message before its echo), whatever the timing of the stream.
func (c *Conn) Reply(handle func() []byte) {
	c.mu.Lock()
	held := c.joining
	c.joining = true
	c.mu.Unlock()

	frame := handle()

	c.mu.Lock()
	defer c.mu.Unlock()
	if held { // inside a Join: it releases the events
		if frame != nil && !c.closing {
			c.enqueueLocked(frame, 0, true)
		}
		return
	}
	c.joining = false
	if c.closing {
		c.setPendingLocked(nil)
		return
	}
	if frame != nil {
		c.enqueueLocked(frame, 0, true)
	}
	if !c.replay { // else the replay's last page releases them
		c.releasePendingLocked()
	}
}

// releasePendingLocked queues the events held while joining.
func (c *Conn) releasePendingLocked() {
	pending := c.pendingLocked()
	if pending == nil {
		return
	}
	for i := range pending {
		c.queued -= len(pending[i].Frame) // counted on arrival, counted again if queued
	}
	for i := range pending {
		c.offerLocked(&pending[i], true)
	}
	clear(pending)
	c.setPendingLocked(nil)
}

// deliver is the hub's live path for one event.
func (c *Conn) deliver(ev stream.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	if c.joining || c.replay {
		c.setPendingLocked(append(c.pendingLocked(), ev))
		c.queued += len(ev.Frame)
		if c.queued > c.hub.maxQueue {
			c.overflowLocked()
		}
		return
	}
	c.offerLocked(&ev, true)
}

// offerLocked enqueues ev unless c already has it.
func (c *Conn) offerLocked(ev *stream.Event, bounded bool) {
	if ev.Epoch != c.epoch {
		// The stream's history was lost (say Redis restarted) and seq
		// restarted: tell the client, whose position is void, then follow the
		// new epoch from this event on.
		c.epoch = ev.Epoch
		c.lastSeq = ev.Seq - 1
		c.enqueueLocked(protocol.EncodeResync(ev.Epoch, c.lastSeq, protocol.ReasonEpochChanged), 0, bounded)
	}
	if ev.Seq <= c.lastSeq {
		return
	}
	c.lastSeq = ev.Seq
	c.enqueueLocked(ev.Frame, ev.TS.UnixNano(), bounded)
}

// Send queues a frame that is not a stream event (ack, error, pong …).
// It reports false when the connection is closing.
func (c *Conn) Send(frame []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.enqueueLocked(frame, 0, true)
	return !c.closing
}

// enqueueLocked queues frame. Bounded frames (events, replayed or live, and
// replies) count against the queue's bound; the few frames that open a join
// do not. A replay larger than the bound still gets through (a resume after
// 4008 always misses at least a full queue) because it is queued page by
// page as the queue is written, see Join.
func (c *Conn) enqueueLocked(frame []byte, ts int64, bounded bool) {
	if c.closing && c.code == 0 {
		return // overflowed or failed: nothing more goes out
	}
	if bounded {
		c.queued += len(frame)
		c.queuedBounded += len(frame)
		if c.queued > c.hub.maxQueue {
			c.overflowLocked()
			return
		}
	}
	if ts != 0 && c.oldestTS == 0 {
		c.oldestTS = ts
	}
	c.queue = append(c.queue, frame)
	if !c.writing {
		c.writing = true
		go c.flushFn()
	}
}

// overflowLocked drops the queue and closes the socket at once: the writer
// may be stuck on this very client, so the close cannot wait behind it.
func (c *Conn) overflowLocked() {
	c.closing = true
	clear(c.queue)
	c.queue, c.spare, c.queued, c.queuedBounded = nil, nil, 0, 0
	c.setPendingLocked(nil)
	c.replay, c.replayQueued = false, false
	c.hub.metrics.QueueOverflows.Inc()
	c.hub.metrics.Closes.WithLabelValues(protocol.CloseSlowConsumer.String()).Inc()
	c.hub.log.Info("slow consumer closed", "user", c.User, "conn", c.ID)
	go c.t.Close(protocol.CloseSlowConsumer, "slow consumer")
}

// Close closes the connection with code after the frames already queued are
// written. Later frames are dropped. It is safe to call more than once; the
// first code wins.
func (c *Conn) Close(code protocol.CloseCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	c.closing = true
	c.setCloseLocked(code, reason)
	c.setPendingLocked(nil)
	if !c.writing {
		c.writing = true
		go c.flushFn()
	}
}

// flush writes the queue in batches until it is empty, then exits; it is the
// only goroutine writing frames to the transport.
func (c *Conn) flush() {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 && c.replay && !c.closing {
			c.mu.Unlock()
			c.nextPage()
			continue
		}
		if len(c.queue) == 0 {
			c.writing = false
			code, reason := c.closeLocked()
			if c.queued == 0 && cap(c.spare) > 64 {
				c.spare = nil // give a burst's memory back
			}
			c.mu.Unlock()
			if code != 0 {
				c.hub.metrics.Closes.WithLabelValues(code.String()).Inc()
				c.t.Close(code, reason)
			}
			return
		}
		batch, oldest := c.queue, c.oldestTS
		c.queue, c.spare = c.spare, nil
		c.oldestTS = 0
		n := 0
		for _, f := range batch {
			n += len(f)
		}
		c.queued -= c.queuedBounded
		c.queuedBounded = 0
		c.replayWriting, c.replayQueued = c.replayQueued, false
		c.mu.Unlock()

		err := c.t.WriteBatch(batch)
		m := c.hub.metrics
		if oldest != 0 {
			m.PublishToWrite.Observe(float64(time.Now().UnixNano()-oldest) / 1e9)
		}
		m.BytesOut.Add(float64(n))
		m.FramesOut.Add(float64(len(batch)))

		clear(batch)
		c.mu.Lock()
		if c.spare == nil {
			c.spare = batch[:0]
		}
		c.replayWriting = false
		c.mu.Unlock()
		if err != nil {
			c.mu.Lock()
			c.closing = true
			c.queue, c.queued, c.queuedBounded, c.writing = nil, 0, 0, false
			c.setPendingLocked(nil)
			c.mu.Unlock()
			c.hub.metrics.Closes.WithLabelValues(protocol.CloseInternalError.String()).Inc()
			c.t.Close(protocol.CloseInternalError, "write failed")
			return
		}
	}
}
