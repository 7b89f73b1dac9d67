package main

// The lean client: what holds the idle connections of the sharded mode. One
// socket costs it a file descriptor and nothing else — no goroutine, no
// net.Conn, no buffers: the WebSocket handshake is written by hand over a raw
// blocking socket, connection_established is read, and the descriptor is then
// parked in one epoll set whose loop answers pings and reports published
// events. It runs as a subprocess of this program (-lean-client), as many as
// the open-files limit requires, and talks to the parent over stdin/stdout:
//
//	parent → client: "connect\n"  open the connections, then print
//	                              "ready <opened> <failed> <nanoseconds> <first error>"
//	parent → client: "stat\n"     print "stat <open> <closed by the server> <pongs sent>"
//	client → parent: "recv <n> <latency ns>" for each published tick received
//	stdin closed:                 close everything and exit

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/loadgen"
)

// connsPerSource is how many connections share one source address: well
// under the ~28k ephemeral ports one source address has per destination.
const connsPerSource = 10000

// sourceAddr is the loopback source address of global connection g:
// 127.10.x.y, a new one every connsPerSource connections.
func sourceAddr(g int) [4]byte {
	b := g / connsPerSource
	return [4]byte{127, 10, byte(b / 200), byte(b%200 + 1)}
}

type leanOpts struct {
	servers     []string // host:port of each shard; user u connects to servers[u % len]
	from, to    int      // global user indices [from, to)
	tokens      bool     // agentwire: send a JWT and wait for connection_established
	concurrency int
	handshake   time.Duration
}

type leanClient struct {
	o    leanOpts
	epfd int
	out  *bufio.Writer
	omu  sync.Mutex

	open, closed, pongs atomic.Int64

	// partial holds the unread tail of a frame, only for the few sockets
	// that have one; only loop touches it.
	partial map[int32][]byte
}

func runLeanClient(o leanOpts) error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	c := &leanClient{o: o, epfd: epfd, out: bufio.NewWriter(os.Stdout), partial: map[int32][]byte{}}
	var tokens []string
	if o.tokens {
		signer := auth.NewSigner([]byte(secret))
		tokens = make([]string, o.to-o.from)
		for i := range tokens {
			if tokens[i], _, err = signer.Sign("user-"+strconv.Itoa(o.from+i), time.Hour, "", ""); err != nil {
				return err
			}
		}
	}
	dests := make([][4]byte, len(o.servers))
	ports := make([]int, len(o.servers))
	for i, s := range o.servers {
		if dests[i], ports[i], err = parseAddr(s); err != nil {
			return err
		}
	}
	go c.loop()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "connect":
			start := time.Now()
			opened, failed, first := c.connectAll(dests, ports, tokens)
			msg := "-"
			if first != nil {
				msg = strings.ReplaceAll(first.Error(), "\n", " ")
			}
			c.printf("ready %d %d %d %s\n", opened, failed, time.Since(start).Nanoseconds(), msg)
		case "stat":
			c.printf("stat %d %d %d\n", c.open.Load(), c.closed.Load(), c.pongs.Load())
		}
	}
	return nil // stdin closed: exiting closes every socket
}

func (c *leanClient) printf(format string, args ...any) {
	c.omu.Lock()
	fmt.Fprintf(c.out, format, args...)
	_ = c.out.Flush()
	c.omu.Unlock()
}

func parseAddr(s string) (ip [4]byte, port int, err error) {
	host, p, ok := strings.Cut(s, ":")
	if !ok {
		return ip, 0, fmt.Errorf("address %q: no port", s)
	}
	parts := strings.Split(host, ".")
	if len(parts) != 4 {
		return ip, 0, fmt.Errorf("address %q: not IPv4", s)
	}
	for i, x := range parts {
		v, err := strconv.Atoi(x)
		if err != nil || v < 0 || v > 255 {
			return ip, 0, fmt.Errorf("address %q: not IPv4", s)
		}
		ip[i] = byte(v)
	}
	if port, err = strconv.Atoi(p); err != nil {
		return ip, 0, fmt.Errorf("address %q: bad port", s)
	}
	return ip, port, nil
}

func (c *leanClient) connectAll(dests [][4]byte, ports []int, tokens []string) (opened, failed int64, first error) {
	var (
		next     atomic.Int64
		ok, bad  atomic.Int64
		firstErr atomic.Value
		wg       sync.WaitGroup
	)
	next.Store(int64(c.o.from))
	for w := 0; w < c.o.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				u := int(next.Add(1) - 1)
				if u >= c.o.to {
					return
				}
				tok := ""
				if tokens != nil {
					tok = tokens[u-c.o.from]
				}
				s := u % len(dests)
				if err := c.connect(u, dests[s], ports[s], tok); err != nil {
					if bad.Add(1) == 1 {
						firstErr.Store(fmt.Errorf("user %d: %w", u, err))
					}
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if e, _ := firstErr.Load().(error); e != nil {
		first = e
	}
	return ok.Load(), bad.Load(), first
}

// connect opens one WebSocket to dst:port from the source address of user u,
// completes the handshake (and reads connection_established when tok is
// set) with blocking I/O bounded by SO_RCVTIMEO/SO_SNDTIMEO, then makes the
// socket non-blocking and adds it to the epoll set.
func (c *leanClient) connect(u int, dst [4]byte, port int, tok string) (err error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer func() {
		if err != nil {
			_ = unix.Close(fd)
		}
	}()
	// The port is chosen at connect, per destination, not at bind: one
	// source address then serves every shard.
	if err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
		return fmt.Errorf("IP_BIND_ADDRESS_NO_PORT: %w", err)
	}
	if err = unix.Bind(fd, &unix.SockaddrInet4{Addr: sourceAddr(u)}); err != nil {
		return fmt.Errorf("bind %v: %w", sourceAddr(u), err)
	}
	tv := unix.NsecToTimeval(c.o.handshake.Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err = connectFD(fd, &unix.SockaddrInet4{Addr: dst, Port: port}, c.o.handshake); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	var key [16]byte
	_, _ = rand.Read(key[:])
	req := "GET /ws HTTP/1.1\r\nHost: " + fmt.Sprintf("%d.%d.%d.%d:%d", dst[0], dst[1], dst[2], dst[3], port) +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key[:]) + "\r\n"
	if tok != "" {
		req += "Authorization: Bearer " + tok + "\r\n"
	}
	req += "\r\n"
	if err = writeAll(fd, []byte(req)); err != nil {
		return fmt.Errorf("write handshake: %w", err)
	}
	var buf [4096]byte
	n := 0
	end := -1
	for end < 0 {
		if n == len(buf) {
			return errors.New("handshake response over 4 KiB")
		}
		m, err := readFD(fd, buf[n:])
		if err != nil {
			return fmt.Errorf("read handshake: %w", err)
		}
		if m == 0 {
			return fmt.Errorf("closed during handshake: %.200q", buf[:n])
		}
		n += m
		end = bytes.Index(buf[:n], []byte("\r\n\r\n"))
	}
	if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 101 ")) {
		line, _, _ := bytes.Cut(buf[:n], []byte("\r\n"))
		return fmt.Errorf("handshake answered %q", line)
	}
	rest := buf[end+4 : n]
	if tok != "" {
		// connection_established: one unmasked text frame; its header and
		// payload may arrive in several reads.
		for {
			payload, _, complete := frame(rest)
			if complete {
				if !bytes.Contains(payload, []byte(`"type":"connection_established"`)) {
					return fmt.Errorf("first frame is not connection_established: %.200s", payload)
				}
				break
			}
			if end+4+len(rest) == len(buf) {
				return errors.New("connection_established over 4 KiB")
			}
			m, err := readFD(fd, buf[end+4+len(rest):])
			if err != nil {
				return fmt.Errorf("read connection_established: %w", err)
			}
			if m == 0 {
				return errors.New("closed before connection_established")
			}
			rest = buf[end+4 : end+4+len(rest)+m]
		}
	}
	if err = unix.SetNonblock(fd, true); err != nil {
		return err
	}
	if err = unix.EpollCtl(c.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}); err != nil {
		return fmt.Errorf("epoll add: %w", err)
	}
	c.open.Add(1)
	return nil
}

// The Go runtime's signals (goroutine preemption) interrupt blocking
// system calls: these retry on EINTR.

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func readFD(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// connectFD connects the blocking socket fd; an interrupted connect goes on
// in the kernel, so it then waits for the socket to be writable and reads
// the outcome from SO_ERROR.
func connectFD(fd int, sa unix.Sockaddr, timeout time.Duration) error {
	err := unix.Connect(fd, sa)
	if err != unix.EINTR {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if err == unix.EINTR || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return err
		}
		soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soerr != 0 {
			return unix.Errno(soerr)
		}
		return nil
	}
}

// frame parses one server frame (unmasked) at the start of b: its payload,
// opcode, and whether it is complete in b.
func frame(b []byte) (payload []byte, op byte, complete bool) {
	if len(b) < 2 {
		return nil, 0, false
	}
	op = b[0] & 0x0f
	n, h := uint64(b[1]&0x7f), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return nil, op, false
		}
		n, h = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return nil, op, false
		}
		n, h = binary.BigEndian.Uint64(b[2:]), 10
	}
	if uint64(len(b)-h) < n {
		return nil, op, false
	}
	return b[h : h+int(n)], op, true
}

// loop waits on the epoll set: it answers pings with pongs, reports published
// ticks, and counts sockets the server closed.
func (c *leanClient) loop() {
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.EpollWait(c.epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			fmt.Fprintln(os.Stderr, "lean client: epoll_wait:", err)
			os.Exit(1)
		}
		for _, ev := range events[:n] {
			c.readable(int(ev.Fd), buf)
		}
	}
}

func (c *leanClient) readable(fd int, buf []byte) {
	pre := c.partial[int32(fd)]
	delete(c.partial, int32(fd))
	data := append([]byte(nil), pre...)
	for {
		m, err := readFD(fd, buf)
		if err == unix.EAGAIN {
			break
		}
		if err != nil || m == 0 {
			c.drop(fd)
			return
		}
		data = append(data, buf[:m]...)
		if m < len(buf) {
			break
		}
	}
	for len(data) > 0 {
		payload, op, complete := frame(data)
		if !complete {
			c.partial[int32(fd)] = data
			return
		}
		switch op {
		case 0x9: // ping: answer a masked pong with the same payload
			pong := make([]byte, 0, 6+len(payload))
			pong = append(pong, 0x8a, 0x80|byte(len(payload)), 0, 0, 0, 0) // mask key 0: payload unchanged
			pong = append(pong, payload...)
			if writeAll(fd, pong) == nil {
				c.pongs.Add(1)
			}
		case 0x8: // close
			c.drop(fd)
			return
		case 0x1:
			if sent, u, ok := loadgen.ParseTick(payload); ok && bytes.Contains(payload, []byte(`"type":"`+tickType+`"`)) {
				c.printf("recv %d %d\n", u, time.Now().UnixNano()-sent)
			}
		}
		data = data[len(payload)+headerLen(data):]
	}
}

func headerLen(b []byte) int {
	switch b[1] & 0x7f {
	case 126:
		return 4
	case 127:
		return 10
	}
	return 2
}

func (c *leanClient) drop(fd int) {
	_ = unix.Close(fd) // also leaves the epoll set
	c.open.Add(-1)
	c.closed.Add(1)
}
