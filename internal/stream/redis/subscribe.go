package redis

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	rueidis "github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// maxPending bounds the live messages a user buffers while its gap is being
// filled from the log; past it they are dropped and the fill runs again
// (the log has them).
const maxPending = 4096

// userSub is one user's live subscription on this node, shared by all local
// handlers of that user.
type userSub struct {
	s       *Stream
	user    string
	channel string
	refs    int // guarded by s.mu

	ctx       context.Context // ends when the last handler is gone or the Stream closes
	cancel    context.CancelFunc
	confirmed chan error // the first SSUBSCRIBE's outcome (receiveLoop)
	restartMu sync.Mutex
	restart   context.CancelFunc // ends the current Receive (watchdog)

	handlers atomic.Pointer[[]*handler]
	hmu      sync.Mutex // serialises changes of handlers

	ready   chan struct{} // closed once the first subscriber finished init
	initErr error         // read after ready is closed
	dead    atomic.Bool   // last handler gone

	mu       sync.Mutex // guards below; held while calling handlers
	inited   bool       // last/epoch known
	epoch    string
	last     uint64
	recv     uint64 // messages received, numbering pending entries
	filling  bool   // a fill goroutine owns the delivery
	refill   bool   // fill again once the current one is done
	needFill bool   // fill once inited (a reconnect happened before)
	overflow bool   // pending dropped messages: fill again
	pending  []pendingEv

	wasBehind   bool   // behind Redis's head at the last watchdog check
	recvAtCheck uint64 // recv at the last watchdog check
}

func (u *userSub) setRestart(f context.CancelFunc) {
	u.restartMu.Lock()
	u.restart = f
	u.restartMu.Unlock()
}

// restartReceive ends the current Receive; receiveLoop subscribes again.
func (u *userSub) restartReceive() {
	u.restartMu.Lock()
	f := u.restart
	u.restartMu.Unlock()
	if f != nil {
		f()
	}
}

type pendingEv struct {
	ev  stream.Event
	idx uint64
}

type handler struct {
	h    stream.Handler
	done atomic.Bool
}

// Subscribe implements stream.Stream. It returns once the user's channel is
// subscribed on this node (SSUBSCRIBE confirmed), so every event appended
// afterwards reaches h, in seq order, exactly once (gaps in pub/sub delivery
// are filled from the log).
func (s *Stream) Subscribe(ctx context.Context, user string, h stream.Handler) (func(), error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	ch := s.channel(user)
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, stream.ErrClosed
	}
	u := s.subs[ch]
	first := u == nil
	if first {
		u = &userSub{s: s, user: user, channel: ch, ready: make(chan struct{}), confirmed: make(chan error, 1)}
		u.ctx, u.cancel = context.WithCancel(s.ctx)
		s.subs[ch] = u
		if !s.spawn(func() { s.receiveLoop(u) }) {
			delete(s.subs, ch)
			s.mu.Unlock()
			return nil, stream.ErrClosed
		}
	}
	u.refs++
	s.mu.Unlock()

	if first {
		u.initErr = s.initSub(ctx, u)
		close(u.ready)
	} else {
		select {
		case <-u.ready:
		case <-ctx.Done():
			s.release(u)
			return nil, ctx.Err()
		}
	}
	if u.initErr != nil {
		s.release(u)
		return nil, u.initErr
	}
	hd := &handler{h: h}
	u.hmu.Lock()
	var hs []*handler
	if old := u.handlers.Load(); old != nil {
		hs = append(hs, *old...)
	}
	hs = append(hs, hd)
	u.handlers.Store(&hs)
	u.hmu.Unlock()

	var once sync.Once
	return func() {
		once.Do(func() {
			hd.done.Store(true)
			u.hmu.Lock()
			old := *u.handlers.Load()
			hs := make([]*handler, 0, len(old))
			for _, o := range old {
				if o != hd {
					hs = append(hs, o)
				}
			}
			u.handlers.Store(&hs)
			u.hmu.Unlock()
			s.release(u)
		})
	}, nil
}

// initSub waits for the SSUBSCRIBE to be confirmed, then reads the user's
// head: live messages up to it are older than the subscription.
func (s *Stream) initSub(ctx context.Context, u *userSub) error {
	select {
	case err := <-u.confirmed:
		if err != nil {
			return s.wrap(ctx, "subscribe", err)
		}
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return stream.ErrClosed
	}
	u.mu.Lock()
	start := u.recv
	u.mu.Unlock()
	pos, err := s.Head(ctx, u.user)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.inited = true
	u.epoch, u.last = pos.Epoch, pos.Head
	if u.drainLocked(start, u.needFill) {
		s.startFillLocked(u)
	}
	return nil
}

// release drops one reference; the last one unsubscribes the channel.
func (s *Stream) release(u *userSub) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u.refs--
	if u.refs > 0 {
		return
	}
	u.dead.Store(true)
	u.cancel() // receiveLoop unsubscribes and ends
	if s.subs[u.channel] == u {
		delete(s.subs, u.channel)
	}
}

// onMessage runs in u's receiveLoop, fed by the connection's reader; it
// never blocks on the network.
func (s *Stream) onMessage(u *userSub, m rueidis.PubSubMessage) {
	if m.Channel != u.channel || u.dead.Load() {
		return
	}
	ev, err := decodeFrame([]byte(m.Message))
	if err != nil {
		s.log.Error("redis stream: bad live frame", "channel", m.Channel, "err", err)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.recv++
	if !u.inited || u.filling {
		u.addPendingLocked(pendingEv{ev: ev, idx: u.recv})
		return
	}
	if u.handleLocked(ev, false) {
		u.addPendingLocked(pendingEv{ev: ev, idx: u.recv})
		s.startFillLocked(u)
	}
}

func (u *userSub) addPendingLocked(p pendingEv) {
	if len(u.pending) >= maxPending {
		u.overflow = true
		return
	}
	u.pending = append(u.pending, p)
}

// handleLocked delivers ev when it is the next one, drops it when it is old,
// and reports true when a fill from the log is needed first: a seq gap, or
// an epoch other than the one known (history reset). stale says ev was
// received before the state was last read from Redis, so an epoch mismatch
// means ev is from an epoch already left behind.
func (u *userSub) handleLocked(ev stream.Event, stale bool) bool {
	if ev.Epoch != u.epoch {
		return !stale
	}
	switch {
	case ev.Seq <= u.last:
		return false
	case ev.Seq == u.last+1:
		u.deliverLocked(ev)
		return false
	}
	return true
}

func (u *userSub) deliverLocked(ev stream.Event) {
	u.last = ev.Seq
	if hs := u.handlers.Load(); hs != nil {
		for _, h := range *hs {
			if !h.done.Load() {
				h.h(ev)
			}
		}
	}
}

// drainLocked replays the pending messages after the state was read from
// Redis at recv count start; it reports whether a fill is (still) needed.
func (u *userSub) drainLocked(start uint64, need bool) bool {
	pend := u.pending
	u.pending = nil
	for i, p := range pend {
		if u.handleLocked(p.ev, p.idx <= start) {
			u.pending = append(pend[i:len(pend):len(pend)], u.pending...)
			need = true
			break
		}
	}
	if u.overflow {
		u.overflow, need = false, true
	}
	return need
}

func (s *Stream) startFillLocked(u *userSub) {
	if u.filling {
		u.refill = true
		return
	}
	u.filling = true
	if !s.spawn(func() { s.fillLoop(u) }) {
		u.filling = false
	}
}

// kick makes u catch up from the log (after a resubscription, or when the
// watchdog found it behind).
func (s *Stream) kick(u *userSub) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.inited {
		u.needFill = true
		return
	}
	s.startFillLocked(u)
}

// fillLoop reads the events after u.last from the log and delivers them,
// then the pending live messages, until no gap is left. It retries while
// Redis is unreachable, until the subscription or the Stream ends.
func (s *Stream) fillLoop(u *userSub) {
	backoff := 20 * time.Millisecond
	for {
		if u.dead.Load() {
			u.mu.Lock()
			u.filling, u.pending = false, nil
			u.mu.Unlock()
			return
		}
		u.mu.Lock()
		last, epoch, start := u.last, u.epoch, u.recv
		u.refill = false
		u.mu.Unlock()

		s.fills.Add(1)
		ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
		evs, pos, err := s.Since(ctx, u.user, protocol.Cursor{Seq: last, Epoch: epoch}, stream.Limit{})
		cancel()
		var re *stream.ResyncError
		switch {
		case err == nil:
		case errors.As(err, &re) && re.Reason == protocol.ReasonEpochChanged:
			// History was reset: the new epoch's events all follow.
			u.mu.Lock()
			u.epoch, u.last = re.Position.Epoch, 0
			u.mu.Unlock()
			continue
		case errors.As(err, &re):
			// Events were trimmed before we could read them (or the head
			// moved back): they are lost for live delivery; carry on from
			// the head. Clients see the seq jump and resume (resync).
			s.log.Warn("redis stream: live gap cannot be filled", "user", u.user, "from", last, "reason", re.Reason, "head", re.Position.Head)
			evs, pos = nil, re.Position
			u.mu.Lock()
			u.epoch, u.last = pos.Epoch, pos.Head
			u.mu.Unlock()
		default:
			if s.closed.Load() {
				return
			}
			s.log.Warn("redis stream: live gap fill failed, retrying", "user", u.user, "err", err)
			select {
			case <-s.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		u.mu.Lock()
		for _, ev := range evs {
			if ev.Epoch == u.epoch && ev.Seq == u.last+1 {
				u.deliverLocked(ev)
			}
		}
		if stream.More(evs, pos) {
			// One page at a time: read on from where this one ended.
			u.mu.Unlock()
			continue
		}
		more := u.drainLocked(start, u.refill)
		if !more {
			u.filling = false
		}
		u.mu.Unlock()
		if !more {
			return
		}
	}
}
