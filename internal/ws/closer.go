package ws

import (
	"sync"
	"sync/atomic"
)

// closer is a connection's close lifecycle. The first close of any kind (the
// hub's Close, a close frame, a read error, a protocol error, the heartbeat)
// wins: its close frame is the one written. A close may come before the
// socket is attached (the connection exists before the upgrade, so the hub
// can count it before answering 101); attach then applies it. The
// connection is released (end) exactly once.
type closer struct {
	mu       sync.Mutex // orders the first close against attach
	closed   atomic.Bool
	done     atomic.Bool // end ran
	attached bool        // the socket is set (conn.nc)
	limited  bool        // holds a place in the cluster-wide limit (set before the conn is shared)
	body     *[]byte     // close frame payload of the first close before attach, for it (a pointer: 8 bytes of the conn struct, not 24)
}

// attach records that the socket is set. When a close came first it
// returns that close's frame payload and closed.
func (l *closer) attach() (body []byte, closed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attached = true
	if l.body != nil {
		body = *l.body
	}
	return body, l.closed.Load()
}

// begin makes body the connection's close if none came before: first reports
// that, attached whether the socket is there to write it on (if not, attach
// applies it).
func (l *closer) begin(body []byte) (first, attached bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed.Load() {
		return false, false
	}
	l.closed.Store(true)
	if !l.attached {
		b := body // escapes only here, not on every close
		l.body = &b
	}
	return true, l.attached
}

// end marks the connection closed and reports whether this is its one
// release.
func (l *closer) end() bool {
	l.mu.Lock()
	l.closed.Store(true)
	l.mu.Unlock()
	return l.done.CompareAndSwap(false, true)
}
