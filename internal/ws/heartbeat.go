package ws

import (
	"sync/atomic"
	"time"
)

// heartbeat is a connection's timers, on the wheel's clock: the next ping,
// the pong deadline of the ping in flight and the token expiry. The wheel
// calls due at the earliest of them (next).
type heartbeat struct {
	exp      int64        // token expiry, 0 if none
	nextPing int64        // touched by setup, then only by the wheel goroutine
	pingOut  atomic.Int64 // pong deadline of the ping in flight, 0 if none
}

// beat is what a heartbeat has due.
type beat uint8

const (
	beatNone    beat = iota
	beatExpired      // the token expired: close with 4001
	beatNoPong       // no pong by the deadline: close with 4000
	beatPing         // send a ping (its pong deadline is set)
)

// start schedules the first ping an interval after now.
func (h *heartbeat) start(now int64, interval time.Duration) {
	h.nextPing = now + int64(interval)
}

// due reports what is due at now. For a ping it moves the next ping an
// interval on and sets the pong deadline, unless one is already running.
func (h *heartbeat) due(now int64, interval, pongTimeout time.Duration) beat {
	if h.exp != 0 && now >= h.exp {
		return beatExpired
	}
	if d := h.pingOut.Load(); d != 0 && now >= d {
		return beatNoPong
	}
	if now >= h.nextPing {
		h.pingOut.CompareAndSwap(0, now+int64(pongTimeout))
		h.nextPing = now + int64(interval)
		return beatPing
	}
	return beatNone
}

// ponged clears the pong deadline: the client answered.
func (h *heartbeat) ponged() { h.pingOut.Store(0) }

// next is when something is due.
func (h *heartbeat) next() int64 {
	next := h.nextPing
	if d := h.pingOut.Load(); d != 0 && d < next {
		next = d
	}
	if h.exp != 0 && h.exp < next {
		next = h.exp
	}
	return next
}
