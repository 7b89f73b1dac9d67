//go:build linux

package ws

import (
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentwire/agentwire/protocol"
	"golang.org/x/sys/unix"
)

// The epoll path. Each connection's socket is in one epoll set with
// EPOLLIN|EPOLLRDHUP|EPOLLONESHOT; a poller goroutine per set waits in
// epoll_wait and starts a goroutine for each readable connection, which reads
// and handles every complete frame available (conn.readFrames, the socket is
// read through net.Conn) and re-arms the socket (EPOLL_CTL_MOD). An idle
// connection thus owns no goroutine and no read buffer. EPOLLONESHOT makes
// sure a single goroutine reads a connection at a time.
//
// Closing the socket (conn.shut) removes it from the epoll set; an event
// already taken from epoll_wait for it finds the connection gone from the
// poller's table, or its net.Conn closed. Events carry a connection id that
// is never reused, not the file descriptor, which can be.

// pollState is a connection's registration: its socket's fd, its poller
// and its id there. rc and id are set before p is published, so untrack (on
// any goroutine) sees them once it sees p.
type pollState struct {
	rc    syscall.RawConn
	p     atomic.Pointer[poller]
	id    uint64
	added bool // EPOLL_CTL_ADD done; owned by the reading goroutine
}

// pollSet is a Server's pollers, started with its first connection.
type pollSet struct {
	mu      sync.Mutex
	ps      []*poller
	started bool
	stopped bool
	next    atomic.Uint32
}

type poller struct {
	epfd, evfd int
	mu         sync.Mutex
	conns      map[uint64]*conn
}

const armEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// pollersPerProc: one epoll set per this many Ps (at least one). Dispatch is
// a map lookup and a go statement, so one poller keeps up with far more
// readable events than the frames behind them can be handled.
const pollersPerProc = 4

// get returns the poller for a new connection, or nil when epoll cannot be
// used (then the connection gets a reading goroutine).
func (ps *pollSet) get(s *Server) *poller {
	ps.mu.Lock()
	if !ps.started && !ps.stopped {
		ps.started = true
		n := max(1, (runtime.GOMAXPROCS(0)+pollersPerProc-1)/pollersPerProc)
		for range n {
			p, err := newPoller()
			if err != nil {
				s.log.Warn("epoll unavailable: one reading goroutine per connection", "err", err)
				break
			}
			ps.ps = append(ps.ps, p)
			go p.run(s)
		}
	}
	all := ps.ps
	ps.mu.Unlock()
	if len(all) == 0 {
		return nil
	}
	return all[int(ps.next.Add(1))%len(all)]
}

// stop ends the pollers (all connections are closed).
func (ps *pollSet) stop() {
	ps.mu.Lock()
	all := ps.ps
	ps.ps, ps.stopped = nil, true
	ps.mu.Unlock()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	for _, p := range all {
		_, _ = unix.Write(p.evfd, one[:])
	}
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // id 0
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	return &poller{epfd: epfd, evfd: evfd, conns: make(map[uint64]*conn)}, nil
}

func (p *poller) run(s *Server) {
	defer unix.Close(p.evfd)
	defer unix.Close(p.epfd)
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			// Not expected; the connections of this set would hang, so
			// close them (clients reconnect and resume).
			s.log.Error("epoll_wait failed: closing its connections", "err", err)
			p.mu.Lock()
			all := make([]*conn, 0, len(p.conns))
			for _, c := range p.conns {
				all = append(all, c)
			}
			p.mu.Unlock()
			for _, c := range all {
				c.srv.cfg.Metrics.Closes.WithLabelValues(protocol.CloseInternalError.String()).Inc()
				go c.Close(protocol.CloseInternalError, "internal error")
			}
			time.Sleep(10 * time.Millisecond)
			return
		}
		for i := range events[:n] {
			ev := &events[i]
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				return // stop
			}
			p.mu.Lock()
			c := p.conns[id]
			p.mu.Unlock()
			if c != nil {
				go c.serveReadable()
			}
		}
	}
}

// startReading puts c's socket in an epoll set, or starts its reading
// goroutine when that is not possible (no file descriptor, e.g. TLS).
func (s *Server) startReading(c *conn) {
	if sc, ok := c.nc.(syscall.Conn); ok && !s.readLoops {
		if rc, err := sc.SyscallConn(); err == nil {
			if p := s.poll.get(s); p != nil {
				c.ps.rc, c.ps.id = rc, s.connIDs.Add(1)
				c.ps.p.Store(p) // untrack may read it from another goroutine
				p.mu.Lock()
				p.conns[c.ps.id] = c
				p.mu.Unlock()
				if c.life.closed.Load() {
					c.untrack() // finish may have run before the entry was added
					return
				}
				c.in.mu.Lock()
				defer c.in.mu.Unlock()
				if c.in.pre != nil {
					go c.serveReadable() // bytes behind the handshake: the socket may have none
					return
				}
				c.arm()
				return
			}
		}
	}
	go c.readLoop()
}

// serveReadable handles a readable event: every complete frame available,
// then re-arms the socket.
func (c *conn) serveReadable() {
	c.in.mu.Lock()
	rb := c.srv.readBufs.Get().(*readBuf)
	rb.sr = sockReader{fr: &c.in, nc: c.nc, wait: c.srv.frameWait, bound: true}
	rb.br.Reset(&rb.sr)
	err := c.readFrames(rb)
	if rb.sr.deadline {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	rb.br.Reset(nil)
	rb.sr = sockReader{}
	c.srv.readBufs.Put(rb)
	if err == nil {
		c.arm() // under in.mu: the next event's goroutine sees this one's writes
	}
	c.in.mu.Unlock()
	if err != nil {
		c.readFailed(err)
	}
}

// arm adds the socket to its epoll set, or re-arms it, for one event.
func (c *conn) arm() {
	op := unix.EPOLL_CTL_MOD
	if !c.ps.added {
		op = unix.EPOLL_CTL_ADD
		c.ps.added = true
	}
	epfd, id := c.ps.p.Load().epfd, c.ps.id
	var cerr error
	err := c.ps.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: armEvents, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
		cerr = unix.EpollCtl(epfd, op, int(fd), &ev)
	})
	if err != nil {
		return // the socket is closed: the close path finishes c
	}
	if cerr != nil {
		c.srv.log.Error("epoll_ctl", "conn", c.hc.ID, "err", cerr)
		c.srv.cfg.Metrics.Closes.WithLabelValues(protocol.CloseInternalError.String()).Inc()
		go c.Close(protocol.CloseInternalError, "internal error")
	}
}

// untrack removes c from its poller's table.
func (c *conn) untrack() {
	if p := c.ps.p.Load(); p != nil {
		p.mu.Lock()
		delete(p.conns, c.ps.id)
		p.mu.Unlock()
	}
}
