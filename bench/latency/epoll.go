package main

// The epoll relay: the bare relay with no goroutine on the publish path. One
// goroutine waits in epoll_wait on every publishing connection, reads what is
// ready, answers each complete request and writes each delivery with a
// non-blocking write from that same goroutine: no netpoller, no goroutine
// switch, no futex wake per publish. It makes the same I/O syscalls per
// publish as the relay and the bare relay (read the request, write each
// delivery, write the response) plus its share of one epoll_wait, so it is
// the least any Go server that answers these publishes one request at a
// time can spend on this box. Connections are accepted, and WebSocket
// handshakes made, the usual way (gobwas/ws); the loop then works on a
// duplicate of each socket's descriptor.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// epollConn is a publishing connection the loop owns: its duplicated
// descriptor, the bytes read and not yet answered, and the connection it
// came from (kept so that its descriptor stays open and unread).
type epollConn struct {
	fd int
	in []byte
	nc net.Conn
}

type epollRelay struct {
	epfd int
	mu   sync.RWMutex
	// users holds each user's WebSocket descriptors. The loop writes to them
	// under the read lock; a socket that closes leaves under the write lock
	// before its descriptor is closed, so a number reused by a new socket
	// never gets another user's frame.
	users map[string][]int
	pubs  map[int]*epollConn
	seq   uint64 // only the loop numbers events
}

func runEpoll(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	return serveEpoll(ln)
}

// serveEpoll serves the epoll relay on ln until it is closed.
func serveEpoll(ln net.Listener) error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	r := &epollRelay{epfd: epfd, users: map[string][]int{}, pubs: map[int]*epollConn{}}
	go r.loop()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go r.accept(c)
	}
}

func rawConn(c net.Conn) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	return sc.SyscallConn()
}

// dupFD duplicates c's descriptor. The duplicate shares the socket's
// O_NONBLOCK, which Go sets on every socket it makes.
func dupFD(c net.Conn) (int, error) {
	rc, err := rawConn(c)
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.Dup(int(s)) }); err != nil {
		return -1, err
	}
	return fd, derr
}

func (r *epollRelay) accept(c net.Conn) {
	first, err := peekByte(c)
	if err != nil {
		c.Close()
		return
	}
	if first == 'G' {
		r.ws(bufConn{bufio.NewReaderSize(c, 4096), c})
		return
	}
	fd, err := dupFD(c)
	if err != nil {
		c.Close()
		return
	}
	ec := &epollConn{fd: fd, in: make([]byte, 0, 4096), nc: c}
	r.mu.Lock()
	r.pubs[fd] = ec
	r.mu.Unlock()
	// Level-triggered, and the peek left the request in the socket: epoll
	// reports it at once, and one read per wakeup is enough.
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		r.drop(ec)
	}
}

// peekByte waits for c's first byte and returns it, leaving it unread.
func peekByte(c net.Conn) (byte, error) {
	rc, err := rawConn(c)
	if err != nil {
		return 0, err
	}
	var b [1]byte
	var n int
	var perr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK)
		return perr != unix.EAGAIN
	}); err != nil {
		return 0, err
	}
	if perr == nil && n == 0 {
		perr = errors.New("closed before its first byte")
	}
	return b[0], perr
}

func (r *epollRelay) ws(c bufConn) {
	defer c.Conn.Close()
	user, err := upgradeUser(c)
	if err != nil {
		return
	}
	fd, err := dupFD(c.Conn)
	if err != nil {
		return
	}
	if _, err := unix.Write(fd, appendText(nil, []byte(`{"type":"connection_established"}`))); err != nil {
		unix.Close(fd)
		return
	}
	r.mu.Lock()
	r.users[user] = append(r.users[user], fd)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.users[user] = without(r.users[user], fd)
		r.mu.Unlock()
		unix.Close(fd)
	}()
	readUntilClosed(c)
}

func (r *epollRelay) drop(ec *epollConn) {
	r.mu.Lock()
	delete(r.pubs, ec.fd)
	r.mu.Unlock()
	_ = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, ec.fd, nil)
	unix.Close(ec.fd)
	ec.nc.Close()
}

func (r *epollRelay) loop() {
	events := make([]unix.EpollEvent, 256)
	out := make([]byte, 0, 512)
	frame := make([]byte, 0, 1024)
	for {
		n, err := unix.EpollWait(r.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			panic(err) // the benchmark sees the server exit
		}
		for _, ev := range events[:n] {
			r.mu.RLock()
			ec := r.pubs[int(ev.Fd)]
			r.mu.RUnlock()
			if ec == nil {
				continue
			}
			if !r.serve(ec, &out, &frame) {
				r.drop(ec)
			}
		}
	}
}

// serve reads what ec's socket holds and answers every complete request in
// it, in order. It reports false when the connection is to be dropped: closed,
// failed, or sending what the relay does not parse.
func (r *epollRelay) serve(ec *epollConn, out, frame *[]byte) bool {
	if len(ec.in) == cap(ec.in) {
		if cap(ec.in) >= 2*bareMaxBody {
			return false
		}
		ec.in = append(ec.in, make([]byte, cap(ec.in))...)[:len(ec.in)]
	}
	nr, err := unix.Read(ec.fd, ec.in[len(ec.in):cap(ec.in)])
	if err == unix.EAGAIN {
		return true
	}
	if err != nil || nr == 0 {
		return false
	}
	ec.in = ec.in[:len(ec.in)+nr]
	done := 0
	for {
		headLen, n, authorized, ok, err := parseRequest(ec.in[done:])
		if err != nil {
			return false
		}
		if !ok || len(ec.in)-done < headLen+n {
			break // the rest of this request is yet to come
		}
		body := ec.in[done+headLen : done+headLen+n]
		status, resp := relayPublish(authorized, body, r.next, "epoll", func(user string, f []byte) {
			*frame = appendText((*frame)[:0], f)
			r.mu.RLock()
			for _, fd := range r.users[user] {
				// Non-blocking: a reader too slow to take a frame loses
				// it, and the benchmark counts it lost.
				_, _ = unix.Write(fd, *frame)
			}
			r.mu.RUnlock()
		})
		*out = appendAnswer((*out)[:0], status, resp)
		if nw, err := unix.Write(ec.fd, *out); err != nil || nw != len(*out) {
			return false
		}
		done += headLen + n
	}
	ec.in = ec.in[:copy(ec.in, ec.in[done:])]
	return true
}

func (r *epollRelay) next(d uint64) uint64 { r.seq += d; return r.seq }

// parseRequest parses the head of the request at the start of b: its
// length with the blank line, the body's length and whether it carries the
// benchmark's API key. ok is false while the head is incomplete.
func parseRequest(b []byte) (headLen, n int, authorized, ok bool, err error) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) > 8<<10 {
			return 0, 0, false, false, errors.New("request head over 8 KiB")
		}
		return 0, 0, false, false, nil
	}
	line, rest, _ := bytes.Cut(b[:end], []byte("\r\n"))
	if !bytes.HasPrefix(line, []byte("POST /api/v1/publish ")) {
		return 0, 0, false, false, errors.New("not a publish")
	}
	n = -1
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if err := headerField(h, &n, &authorized); err != nil {
			return 0, 0, false, false, err
		}
	}
	if n < 0 || n > bareMaxBody {
		return 0, 0, false, false, fmt.Errorf("content length %d", n)
	}
	return end + 4, n, authorized, true, nil
}

// appendText appends p as one unmasked text frame.
func appendText(dst, p []byte) []byte {
	switch n := len(p); {
	case n <= 125:
		dst = append(dst, 0x81, byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x81, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x81, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(dst, p...)
}
