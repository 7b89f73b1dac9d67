//go:build linux

package leantcp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// listen returns a lean listener on network's loopback, or skips.
func listen(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	l := Wrap(ln)
	if _, ok := l.(*leanListener); !ok {
		t.Fatalf("Wrap gave %T", l)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// pair returns an accepted lean connection and the client's end.
func pair(t *testing.T, l net.Listener) (*leanConn, net.Conn) {
	t.Helper()
	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Close() })
	return sc.(*leanConn), cc
}

func TestLeanConnStructSize(t *testing.T) {
	if n := unsafe.Sizeof(leanConn{}); n > 32 {
		t.Fatalf("leanConn is %d bytes, over the 32-byte size class", n)
	}
}

// Addresses are those net gives, read and write carry the bytes, the socket
// options are those net sets on an accepted connection.
func TestLeanConnAsNet(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}, {"tcp", ":0"}} {
		t.Run(tc.network, func(t *testing.T) {
			l := listen(t, tc.network, tc.addr)
			sc, cc := pair(t, l)
			if got, want := sc.RemoteAddr().String(), cc.LocalAddr().String(); got != want {
				t.Fatalf("RemoteAddr %s, want %s", got, want)
			}
			if got, want := sc.LocalAddr().String(), cc.RemoteAddr().String(); got != want {
				t.Fatalf("LocalAddr %s, want %s", got, want)
			}
			if _, ok := sc.RemoteAddr().(*net.TCPAddr); !ok {
				t.Fatalf("RemoteAddr is a %T", sc.RemoteAddr())
			}

			if _, err := cc.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("read %q %v", buf, err)
			}
			if _, err := sc.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(cc, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("client read %q %v", buf, err)
			}

			rc, err := sc.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range []struct {
				name       string
				level, opt int
				want       int
			}{
				{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
				{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
				{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
				{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15},
				{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9},
			} {
				var v int
				var gerr error
				if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), o.level, o.opt) }); err != nil || gerr != nil {
					t.Fatal(err, gerr)
				}
				if v != o.want {
					t.Errorf("%s = %d, want %d (as net sets it)", o.name, v, o.want)
				}
			}
		})
	}
}

// A descriptor numbered 0, 1 or 2 is moved above them (an *os.File on 1 or 2
// would raise SIGPIPE on a client gone); others are kept.
func TestAboveStdio(t *testing.T) {
	if fd := aboveStdio(7); fd != 7 {
		t.Fatalf("aboveStdio(7) = %d", fd)
	}
	// Put a socket on descriptor 0 (stdin, which the test does not read),
	// as accept4 would in a process started with stdin closed.
	saved, err := unix.Dup(0)
	if err != nil {
		t.Skip(err)
	}
	defer func() {
		_ = unix.Dup2(saved, 0)
		_ = unix.Close(saved)
	}()
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Dup2(s, 0); err != nil {
		t.Fatal(err)
	}
	_ = unix.Close(s)
	fd := aboveStdio(0)
	if fd <= 2 {
		t.Fatalf("aboveStdio(0) = %d", fd)
	}
	defer unix.Close(fd)
	if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_STREAM {
		t.Fatalf("the duplicate is not the socket: %d %v", typ, err)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("the duplicate is not close-on-exec: %x %v", flags, err)
	}
	if _, err := unix.FcntlInt(0, unix.F_GETFD, 0); err == nil {
		t.Fatal("descriptor 0 was not closed")
	}
}

// A deadline gives a timeout that is a net.Error; a closed connection gives
// net.ErrClosed; CloseWrite gives the peer EOF.
func TestLeanConnErrors(t *testing.T) {
	l := listen(t, "tcp4", "127.0.0.1:0")
	sc, cc := pair(t, l)

	_ = sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := sc.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout net.Error", err)
	}
	if _, ok := err.(net.Error); !ok {
		t.Fatalf("read past the deadline: %T, want a net.Error itself (net/http type-asserts it)", err)
	}
	_ = sc.SetReadDeadline(time.Time{})

	if err := sc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := cc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("client read after CloseWrite: %d %v, want EOF", n, err)
	}

	_ = cc.Close()
	if n, err := sc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d %v, want EOF", n, err)
	}

	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"close":        sc.Close(),
		"read":         func() error { _, err := sc.Read(make([]byte, 1)); return err }(),
		"write":        func() error { _, err := sc.Write([]byte("x")); return err }(),
		"writebuffers": func() error { _, err := sc.WriteBuffers(&net.Buffers{[]byte("x"), []byte("y")}); return err }(),
		"closewrite":   sc.CloseWrite(),
	} {
		var oe *net.OpError
		if !errors.Is(err, net.ErrClosed) || !errors.As(err, &oe) {
			t.Errorf("%s after close: %v, want a *net.OpError with net.ErrClosed", name, err)
		}
	}
	if a := sc.LocalAddr(); a != nil {
		t.Errorf("LocalAddr after close: %v", a)
	}
	if got, want := sc.RemoteAddr().String(), cc.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr after close %s, want %s", got, want)
	}
}

// WriteBuffers writes more buffers than one writev takes and more bytes than
// the socket holds (it waits for a slow reader), in order, and stops at the
// write deadline for a reader that reads nothing.
func TestLeanConnWriteBuffers(t *testing.T) {
	l := listen(t, "tcp4", "127.0.0.1:0")
	sc, cc := pair(t, l)
	var v net.Buffers
	var want bytes.Buffer
	for i := range 3000 {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, i*37%5000)
		v = append(v, b)
		want.Write(b)
	}
	// Small socket buffers on both ends: the 7.5 MB fill them many times
	// over whenever the reader runs, so the writer waits for room (EAGAIN,
	// then the poller) again and again.
	if err := cc.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	setSndBuf(t, sc, 64<<10)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(bufio.NewReaderSize(cc, 100))
		got <- b
	}()
	_ = sc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	n, err := sc.WriteBuffers(&v)
	if err != nil || n != int64(want.Len()) || len(v) != 0 {
		t.Fatalf("WriteBuffers: %d %v (%d buffers left), want %d", n, err, len(v), want.Len())
	}
	_ = sc.Close()
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("client read %d bytes, want %d (or they differ)", len(b), want.Len())
	}

	sc2, _ := pair(t, l) // its client never reads
	big := net.Buffers{make([]byte, 64<<20), []byte("x")}
	_ = sc2.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err = sc2.WriteBuffers(&big)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || n == 0 || n >= 64<<20 {
		t.Fatalf("WriteBuffers to a reader that reads nothing: %d %v, want part and a timeout", n, err)
	}
}

// A closed listener's Accept gives net.ErrClosed, and one in progress
// returns with it.
func TestLeanListenerClose(t *testing.T) {
	l := listen(t, "tcp4", "127.0.0.1:0")
	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	waitParked(t, "leanListener).Accept")
	_ = l.Close()
	select {
	case err := <-errc:
		var oe *net.OpError
		if !errors.Is(err, net.ErrClosed) || !errors.As(err, &oe) {
			t.Fatalf("Accept on a closed listener: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}

// A temporary accept error (out of file descriptors) is a temporary
// net.Error, which net/http's Serve retries with backoff, and the listener
// accepts again once descriptors are back.
func TestLeanListenerEMFILE(t *testing.T) {
	l := listen(t, "tcp4", "127.0.0.1:0")
	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skip(err)
	}
	// Lower the limit to a little above the descriptors in use and take the
	// rest of them.
	low := lim
	low.Cur = 512
	if low.Cur > lim.Cur {
		t.Skipf("NOFILE limit %d", lim.Cur)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip(err)
	}
	defer func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) }()
	var held []int
	for {
		fd, err := syscall.Dup(0)
		if err != nil {
			break
		}
		held = append(held, fd)
	}
	if len(held) == 0 {
		t.Skip("more than 512 descriptors in use")
	}
	_, aerr := l.Accept()
	for _, fd := range held {
		_ = syscall.Close(fd)
	}
	var ne net.Error
	if !errors.As(aerr, &ne) || !errors.Is(aerr, syscall.EMFILE) {
		t.Fatalf("Accept without a descriptor: %v, want EMFILE", aerr)
	}
	if te, ok := aerr.(interface{ Temporary() bool }); !ok || !te.Temporary() {
		t.Fatalf("Accept without a descriptor: %v is not temporary", aerr)
	}
	sc, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept once descriptors are back: %v", err)
	}
	_ = sc.Close()
}

// net/http serves over the lean listener: requests, r.RemoteAddr and a
// hijack (as a WebSocket upgrade does).
func TestLeanListenerHTTP(t *testing.T) {
	l := listen(t, "tcp4", "127.0.0.1:0")
	var (
		mu     sync.Mutex
		remote string
	)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		remote = r.RemoteAddr
		mu.Unlock()
		if r.URL.Path == "/hijack" {
			nc, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer nc.Close()
			if _, ok := nc.(*leanConn); !ok {
				t.Errorf("hijacked a %T", nc)
			}
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n\r\nhello")
			_ = brw.Flush()
			return
		}
		_, _ = io.WriteString(w, "ok")
	})}
	go hs.Serve(l)
	defer hs.Close()

	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	br := bufio.NewReader(cc)
	_, _ = io.WriteString(cc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	mu.Lock()
	if remote != cc.LocalAddr().String() {
		t.Errorf("r.RemoteAddr %q, want %q", remote, cc.LocalAddr())
	}
	mu.Unlock()
	_, _ = io.WriteString(cc, "GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatal(resp, err)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "hello" {
		t.Fatalf("after the hijack: %q", rest)
	}
}

// setSndBuf sets SO_SNDBUF of c's socket.
func setSndBuf(t *testing.T, c net.Conn, n int) {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, n)
	}); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
}

// waitParked returns once a goroutine whose stack holds fn is parked waiting
// for the network (its state "IO wait"), so that what the test does next
// happens while that call is in progress.
func waitParked(t *testing.T, fn string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		st := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(st, "\n\n") {
			if strings.Contains(g, "[IO wait") && strings.Contains(g, fn) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine parked in %s", fn)
		}
		runtime.Gosched()
	}
}
