package ws

import (
	"sync"
	"time"
)

// wheel is a hashed timing wheel: the heartbeat and token-expiry timer of
// every connection of a Server, in place of one or two runtime timers each.
// A connection is on the wheel at most once, linked through its wheelNode
// (no allocation per entry), and taken off when it closes; it is due at its
// heartbeat's next (ping, pong deadline or token expiry, whichever is
// first), rounded up to the tick. The wheel's
// goroutine runs only while a connection is on it.
type wheel struct {
	base time.Time // the wheel's clock: nanoseconds since base (monotonic)
	tick int64

	mu      sync.Mutex
	slots   [wheelSlots]*conn
	cur     int64 // last tick processed
	n       int   // connections on the wheel
	running bool
	due     []*conn // the goroutine's scratch
}

const wheelSlots = 512 // a power of two

// wheelNode is a connection's place on the wheel: a doubly linked slot list,
// under wheel.mu.
type wheelNode struct {
	next, prev *conn
	// due is the tick the connection is due at, at least 1 (schedule puts
	// it after the current tick), and 0 while it is not on the wheel: no
	// separate flag, so the conn struct stays in a smaller size class.
	due int64
}

func newWheel(tick time.Duration) *wheel {
	return &wheel{base: time.Now(), tick: int64(tick)}
}

// wheelTick is a tick fine enough for the heartbeat settings: an eighth of the
// shorter of the two, between 1 ms and 250 ms.
func wheelTick(ping, pong time.Duration) time.Duration {
	return min(max(min(ping, pong)/8, time.Millisecond), 250*time.Millisecond)
}

func (w *wheel) now() int64 { return int64(time.Since(w.base)) }

// at converts a wall-clock time to the wheel's clock (never 0).
func (w *wheel) at(t time.Time) int64 {
	if d := int64(t.Sub(w.base)); d != 0 {
		return d
	}
	return 1
}

// schedule puts c on the wheel, due at (wheel clock), unless c is closed.
// c must not be on it.
func (w *wheel) schedule(c *conn, at int64) {
	t := (at + w.tick - 1) / w.tick
	w.mu.Lock()
	if c.life.closed.Load() {
		w.mu.Unlock() // finish sets closed before it takes c off: c stays off
		return
	}
	if !w.running {
		w.running = true
		w.cur = w.now() / w.tick
		go w.run()
	}
	if t <= w.cur {
		t = w.cur + 1
	}
	n := &c.wn
	n.due = t
	s := &w.slots[t&(wheelSlots-1)]
	n.prev, n.next = nil, *s
	if *s != nil {
		(*s).wn.prev = c
	}
	*s = c
	w.n++
	w.mu.Unlock()
}

// remove takes c off the wheel (a closed connection): the wheel's goroutine
// ends with the last connection, not a ping interval later.
func (w *wheel) remove(c *conn) {
	w.mu.Lock()
	w.unlinkLocked(c)
	w.mu.Unlock()
}

func (w *wheel) unlinkLocked(c *conn) {
	n := &c.wn
	if n.due == 0 { // not on the wheel
		return
	}
	if n.prev != nil {
		n.prev.wn.next = n.next
	} else {
		w.slots[n.due&(wheelSlots-1)] = n.next
	}
	if n.next != nil {
		n.next.wn.prev = n.prev
	}
	*n = wheelNode{}
	w.n--
}

func (w *wheel) run() {
	tk := time.NewTicker(time.Duration(w.tick))
	defer tk.Stop()
	for range tk.C {
		if !w.advance() {
			return
		}
	}
}

// advance processes the ticks up to now; it reports false (and the goroutine
// ends) once no connection is left on the wheel.
func (w *wheel) advance() bool {
	now := w.now()
	target := now / w.tick
	w.mu.Lock()
	due := w.due[:0]
	for w.cur < target {
		w.cur++
		for c := w.slots[w.cur&(wheelSlots-1)]; c != nil; {
			next := c.wn.next
			if c.wn.due <= w.cur {
				w.unlinkLocked(c)
				due = append(due, c)
			}
			c = next
		}
	}
	w.mu.Unlock()
	for _, c := range due {
		c.onTimer(now) // may schedule c again
	}
	clear(due)
	if cap(due) > 4096 {
		due = nil
	}
	w.mu.Lock()
	w.due = due[:0]
	if w.n == 0 {
		w.running = false
		w.mu.Unlock()
		return false
	}
	w.mu.Unlock()
	return true
}
