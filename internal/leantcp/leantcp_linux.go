//go:build linux

// Package leantcp accepts TCP connections that cost the heap half what
// net's do.
package leantcp

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The lean listener. A TCP connection accepted by net costs the heap a netFD
// (128 bytes) and, for its local and remote *net.TCPAddr, two TCPAddrs and
// the two sockaddrs their IPs point into (160 bytes): 288 bytes a connection
// keeps for its life, which at 250,000 idle WebSocket connections is 70 MB
// of live heap, twice that in RSS at GOGC=100. leanListener accepts with
// accept4 (on a duplicate of the listener's descriptor) and wraps the socket
// in an *os.File (pollable: the runtime's netpoller serves its reads, writes and
// deadlines as for a net.Conn) plus the remote address in 32 bytes:
// 136 bytes in all. The local address is asked of the kernel when wanted.
//
// A leanConn behaves as a *net.TCPConn for the server: TCP_NODELAY and the
// keep-alive net sets by default (15 s idle and interval, 9 probes), errors
// as *net.OpError (net.ErrClosed once closed, timeouts that are
// net.Errors), CloseWrite, SyscallConn, and writev for net.Buffers through
// WriteBuffers (package ws uses it for a batch of frames).

// leanListener is a *net.TCPListener whose Accept returns leanConns. It
// accepts on a duplicate of the listener's descriptor, as an *os.File: the
// RawConn of a *net.TCPListener cannot wait for the socket to be readable
// (its Read is EINVAL), an *os.File's can.
type leanListener struct {
	*net.TCPListener
	f  *os.File
	rc syscall.RawConn // f's
}

// Wrap wraps ln, a TCP listener, in a listener whose Accept returns lean
// connections; any other listener, or one whose descriptor cannot be had, is
// returned as is.
func Wrap(ln net.Listener) net.Listener {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return ln
	}
	f, err := tl.File() // a non-blocking duplicate, in the runtime's poller
	if err != nil {
		return ln
	}
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return ln
	}
	return &leanListener{TCPListener: tl, f: f, rc: rc}
}

// Close closes the listener: both descriptors, so that the socket stops
// listening, and an Accept in progress returns net.ErrClosed.
func (l *leanListener) Close() error {
	ferr := l.f.Close()
	if err := l.TCPListener.Close(); err != nil {
		return err
	}
	if ferr != nil {
		return &net.OpError{Op: "close", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
	return nil
}

// SetDeadline sets the deadline of Accept.
func (l *leanListener) SetDeadline(t time.Time) error {
	if err := l.f.SetDeadline(t); err != nil {
		return &net.OpError{Op: "set", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
	return nil
}

// Accept waits for and returns the next connection. Its errors are those of
// a *net.TCPListener: a *net.OpError, temporary for EMFILE and ENFILE (out
// of descriptors), which net/http's Serve retries with backoff, net.ErrClosed
// once the listener is closed; EINTR and ECONNABORTED are retried here, as
// net does.
func (l *leanListener) Accept() (net.Conn, error) {
	for {
		var (
			nfd  int
			sa   unix.Sockaddr
			aerr error
		)
		err := l.rc.Read(func(fd uintptr) bool {
			nfd, sa, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			return aerr != unix.EAGAIN // EAGAIN: wait until readable
		})
		switch {
		case err == nil && aerr == nil:
		case err == nil && (aerr == unix.EINTR || aerr == unix.ECONNABORTED):
			continue
		case err == nil:
			err = os.NewSyscallError("accept4", aerr)
		case errors.Is(err, errFileClosing):
			err = net.ErrClosed
		}
		if err != nil {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: err}
		}
		return newLeanConn(nfd, sa), nil
	}
}

// leanConn is an accepted TCP connection: the socket as a pollable
// *os.File, and the peer's address.
type leanConn struct {
	f    *os.File
	ip   [16]byte // the peer's IP, in its first 4 bytes when v4
	zone uint32   // IPv6 zone (interface index), 0 if none
	port uint16
	v4   bool
}

// newLeanConn sets up the accepted, non-blocking socket fd from sa as net
// sets up an accepted TCP connection (no delay, keep-alive; like net, it
// ignores a failure there) and wraps it.
func newLeanConn(fd int, sa unix.Sockaddr) *leanConn {
	c := &leanConn{}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		copy(c.ip[:], sa.Addr[:])
		c.port, c.v4 = uint16(sa.Port), true
	case *unix.SockaddrInet6:
		c.ip, c.zone, c.port = sa.Addr, sa.ZoneId, uint16(sa.Port)
	}
	for _, o := range [...]struct{ level, opt, v int }{
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
	} {
		_ = unix.SetsockoptInt(fd, o.level, o.opt, o.v)
	}
	// A non-blocking descriptor makes a pollable *os.File.
	c.f = os.NewFile(uintptr(aboveStdio(fd)), "")
	return c
}

// aboveStdio returns fd, or a duplicate of it numbered 3 or more, closing fd,
// when fd is 0, 1 or 2 (the process runs with stdin, stdout or stderr
// closed): an *os.File on descriptor 1 or 2 is taken for stdout or stderr, and
// a write to it that fails with EPIPE, a client gone, would kill the process
// with SIGPIPE. If no duplicate can be made, fd is kept.
func aboveStdio(fd int) int {
	if fd > 2 {
		return fd
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return fd
	}
	_ = unix.Close(fd)
	return nfd
}

// errFileClosing is the error of the RawConn of a closed *os.File (poll's
// ErrFileClosing, which package os maps to os.ErrClosed only in the errors
// of its own methods).
var errFileClosing = func() error {
	r, w, err := os.Pipe()
	if err != nil {
		return os.ErrClosed
	}
	_ = w.Close()
	rc, err := r.SyscallConn()
	_ = r.Close()
	if err != nil {
		return os.ErrClosed
	}
	if err := rc.Control(func(uintptr) {}); err != nil {
		return err
	}
	return os.ErrClosed
}()

// opError wraps an error of the *os.File as net wraps its own: io.EOF as
// is, the closed file as net.ErrClosed, the rest (a deadline's
// os.ErrDeadlineExceeded, a syscall error) inside a *net.OpError, so that
// what checks for a net.Error or net.ErrClosed finds one. Its Addr is the
// peer's, a peerAddr: a timeout, which net/http provokes once a request
// (it aborts its background read with a deadline in the past), costs one
// allocation here, as in net.
func (c *leanConn) opError(op string, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	if pe, ok := err.(*os.PathError); ok {
		err = pe.Err
	}
	if errors.Is(err, os.ErrClosed) || errors.Is(err, errFileClosing) {
		err = net.ErrClosed
	} else if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, errno)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: nil, Addr: peerAddr{c}, Err: err}
}

// peerAddr is a leanConn's peer address as a net.Addr made without
// allocating (a pointer in an interface); RemoteAddr gives a *net.TCPAddr.
type peerAddr struct{ c *leanConn }

func (a peerAddr) Network() string { return "tcp" }
func (a peerAddr) String() string  { return a.c.RemoteAddr().String() }

func (c *leanConn) Read(b []byte) (int, error) {
	n, err := c.f.Read(b)
	return n, c.opError("read", err)
}

func (c *leanConn) Write(b []byte) (int, error) {
	n, err := c.f.Write(b)
	return n, c.opError("write", err)
}

func (c *leanConn) Close() error { return c.opError("close", c.f.Close()) }

func (c *leanConn) SetDeadline(t time.Time) error {
	return c.opError("set", c.f.SetDeadline(t))
}

func (c *leanConn) SetReadDeadline(t time.Time) error {
	return c.opError("set", c.f.SetReadDeadline(t))
}

func (c *leanConn) SetWriteDeadline(t time.Time) error {
	return c.opError("set", c.f.SetWriteDeadline(t))
}

// SyscallConn gives the socket's descriptor (package ws puts it in its
// epoll set).
func (c *leanConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }

// RemoteAddr is the peer's address, as accept4 gave it.
func (c *leanConn) RemoteAddr() net.Addr {
	a := &net.TCPAddr{Port: int(c.port)}
	if c.v4 {
		a.IP = append(net.IP(nil), c.ip[:4]...)
	} else {
		a.IP = append(net.IP(nil), c.ip[:]...)
		a.Zone = zoneName(c.zone)
	}
	return a
}

// LocalAddr is the socket's address, asked of the kernel (nil once closed).
func (c *leanConn) LocalAddr() net.Addr {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return nil
	}
	var sa unix.Sockaddr
	if rc.Control(func(fd uintptr) { sa, err = unix.Getsockname(int(fd)) }) != nil || err != nil {
		return nil
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: append(net.IP(nil), sa.Addr[:]...), Port: sa.Port, Zone: zoneName(sa.ZoneId)}
	}
	return nil
}

// CloseWrite shuts down the writing side (net/http and package ws use it to
// close gracefully).
func (c *leanConn) CloseWrite() error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return c.opError("close", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return c.opError("close", err)
	}
	if serr != nil {
		return c.opError("shutdown", serr)
	}
	return nil
}

// iovecs lends WriteBuffers its iovec array, so that no connection keeps one.
var iovecs = sync.Pool{New: func() any { return new([maxIovecs]unix.Iovec) }}

// maxIovecs is IOV_MAX on Linux: the most buffers one writev takes.
const maxIovecs = 1024

// WriteBuffers writes v with writev, as a *net.TCPConn writes net.Buffers,
// waiting for the socket (under the write deadline) whenever it is full, and
// consumes v. It returns the bytes written.
func (c *leanConn) WriteBuffers(v *net.Buffers) (int64, error) {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return 0, c.opError("writev", err)
	}
	iov := iovecs.Get().(*[maxIovecs]unix.Iovec)
	defer iovecs.Put(iov)
	var (
		total int64
		werr  error
	)
	err = rc.Write(func(fd uintptr) bool {
		for len(*v) > 0 {
			n := 0
			for _, b := range *v {
				if len(b) == 0 {
					continue
				}
				iov[n].Base = &b[0]
				iov[n].SetLen(len(b))
				if n++; n == maxIovecs {
					break
				}
			}
			if n == 0 {
				*v = (*v)[:0]
				break
			}
			w, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
			clear(iov[:n]) // drop the frames
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN:
				return false // full: wait until writable, then go on
			case e != 0:
				werr = os.NewSyscallError("writev", e)
				return true
			}
			total += int64(w)
			consume(v, int64(w))
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return total, c.opError("writev", err)
}

// consume drops the first n bytes of v, as net.Buffers' own WriteTo does.
func consume(v *net.Buffers, n int64) {
	for len(*v) > 0 {
		l := int64(len((*v)[0]))
		if l > n {
			(*v)[0] = (*v)[0][n:]
			return
		}
		n -= l
		(*v)[0] = nil
		*v = (*v)[1:]
	}
}

// zoneName is an IPv6 zone as net writes it: the interface's name, or its
// index when it has none; "" for no zone.
func zoneName(id uint32) string {
	if id == 0 {
		return ""
	}
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(id), 10)
}
