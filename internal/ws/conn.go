package ws

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentwire/agentwire/protocol"
	"github.com/gobwas/ws"
)

const (
	// writeWait bounds one batch write. A client that cannot take a batch
	// within it is gone or hopelessly slow.
	writeWait = 10 * time.Second
	// closeWait bounds writing a close frame.
	closeWait = time.Second
	// readChunk is the most a message buffer grows ahead of the bytes that
	// actually arrived: a peer declaring 64 KiB and sending 1 byte costs 4 KiB.
	readChunk = 4 << 10
	// readBufSize is the buffered reader lent to a connection while it has
	// bytes to read (pooled: idle connections hold none).
	readBufSize = 4 << 10
	// loopBufSize is the buffered reader of a connection read by its own
	// goroutine (readLoop), which it keeps.
	loopBufSize = 512
)

var (
	errClosed = errors.New("ws: connection closed")
	errDone   = errors.New("ws: connection closed by a frame")
)

// conn is one upgraded connection: the hub's Transport (WriteBatch, Close),
// the frame reader and the session state. It is created before the upgrade
// (the hub must count the connection before answering 101), so the socket is
// attached later; a close that comes first is applied on attach.
//
// Life cycle: the first terminate (Close from the hub, a close frame, a read
// error, a protocol error, the heartbeat) writes a close frame, closes the
// socket and finishes: unregisters from the hub and releases Shutdown's wait.
type conn struct {
	session
	exp      int64 // token expiry on the wheel's clock, 0 if none
	nextPing int64 // wheel's clock; touched by setup, then only by the wheel goroutine
	pingOut  atomic.Int64

	smu       sync.Mutex // guards nc (set once) and closed's transition
	nc        net.Conn
	closed    atomic.Bool // the first terminate, or finish, sets it
	closeBody []byte      // close frame payload of the first terminate, for attach
	done      atomic.Bool // finish ran
	limited   bool        // holds a place in the cluster-wide limit (set before the conn is shared)

	wmu     sync.Mutex // one writer at a time: the hub's batches, pongs, pings, close
	wbroken bool       // a write failed: the byte stream may end inside a frame

	// Read side: owned by the goroutine holding rmu. Between two readable
	// events nothing here holds memory unless a fragmented message is open.
	rmu        sync.Mutex
	pre        []byte  // bytes read past the handshake, consumed first
	msg        *msgBuf // message being reassembled, nil between messages
	msgOp      ws.OpCode
	fragmented bool
	ps         pollState // platform: the epoll registration

	// The wheel's slot list, under wheel.mu.
	wnext, wprev *conn
	wdue         int64 // the tick c is due at
	won          bool  // c is on the wheel
}

type msgBuf struct{ b []byte }

func newMsgBuf() any { return &msgBuf{b: make([]byte, 0, 512)} }

// readBuf is what a goroutine reading frames needs: lent from a pool for one
// readable event on the epoll path.
type readBuf struct {
	br  *bufio.Reader
	sr  sockReader
	hdr [ws.MaxHeaderSize]byte
	ctl [ws.MaxControlFramePayloadSize]byte
}

func newReadBuf() any {
	rb := &readBuf{}
	rb.br = bufio.NewReaderSize(&rb.sr, readBufSize)
	return rb
}

// sockReader reads the socket for the buffered reader: first the bytes left
// over from the handshake, then the socket. With bound set (epoll path: the
// first read returns at once since the socket is readable), every read after
// the first runs under a read deadline, so a frame that has begun to arrive
// cannot hold the goroutine forever.
type sockReader struct {
	c        *conn
	bound    bool
	reads    int
	deadline bool
}

func (r *sockReader) Read(p []byte) (int, error) {
	c := r.c
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		if len(c.pre) == 0 {
			c.pre = nil
		}
		r.reads++
		return n, nil
	}
	if r.bound && r.reads > 0 && !r.deadline {
		_ = c.nc.SetReadDeadline(time.Now().Add(c.srv.frameWait))
		r.deadline = true
	}
	r.reads++
	return c.nc.Read(p)
}

// attach gives c its socket. It reports false (and has closed the socket)
// when c was closed meanwhile.
func (c *conn) attach(nc net.Conn) bool {
	c.smu.Lock()
	c.nc = nc
	closed, body := c.closed.Load(), c.closeBody
	c.smu.Unlock()
	if closed {
		c.shut(nc, body)
		return false
	}
	return true
}

// setup joins the stream and puts the connection on the heartbeat wheel.
func (c *conn) setup(cur protocol.Cursor) bool {
	if !c.join(cur) {
		return false
	}
	w := c.srv.wheel
	c.nextPing = w.now() + int64(c.srv.cfg.PingInterval)
	w.schedule(c, c.nextWake())
	return true
}

// WriteBatch writes frames as text messages with one writev. Only the hub's
// single flush goroutine calls it; control frames written meanwhile wait for
// the batch (wmu), so they never land inside a data frame.
func (c *conn) WriteBatch(frames [][]byte) error {
	bb := c.srv.batchBufs.Get().(*batchBuf)
	need := len(frames) * maxServerHeader
	if cap(bb.hdr) < need {
		bb.hdr = make([]byte, 0, need)
	}
	hdr, bufs := bb.hdr[:0], bb.bufs[:0]
	for _, f := range frames {
		s := len(hdr)
		hdr = appendHeader(hdr, ws.OpText, len(f)) // never reallocates: cap is enough for all
		bufs = append(bufs, hdr[s:len(hdr):len(hdr)], f)
	}

	var err error
	c.wmu.Lock()
	nc := c.nc
	switch {
	case nc == nil || c.wbroken:
		err = errClosed
	default:
		// Deadline first, then the closed check: a terminate after the check
		// shortens this deadline for the write in flight.
		_ = nc.SetWriteDeadline(time.Now().Add(writeWait))
		if c.closed.Load() {
			err = errClosed
			break
		}
		v := bufs // WriteTo consumes its receiver
		if _, err = v.WriteTo(nc); err != nil {
			c.wbroken = true
		}
	}
	c.wmu.Unlock()

	clear(bufs) // drop the frames
	if cap(bufs) > 1024 {
		bufs, hdr = nil, nil // give a burst's memory back
	}
	bb.hdr, bb.bufs = hdr[:0], bufs[:0]
	c.srv.batchBufs.Put(bb)
	return err
}

// batchBuf is one batch's headers and iovecs.
type batchBuf struct {
	hdr  []byte
	bufs net.Buffers
}

func newBatchBuf() any { return &batchBuf{} }

// maxServerHeader is the largest header of an unmasked frame.
const maxServerHeader = 10

// appendHeader appends the header of a final, unmasked frame of n payload
// bytes (what ws.WriteHeader writes for such a frame, without its
// allocation and io.Writer).
func appendHeader(b []byte, op ws.OpCode, n int) []byte {
	b0 := 0x80 | byte(op)
	switch {
	case n <= 125:
		return append(b, b0, byte(n))
	case n <= 0xffff:
		return append(b, b0, 126, byte(n>>8), byte(n))
	default:
		u := uint64(n)
		return append(b, b0, 127, byte(u>>56), byte(u>>48), byte(u>>40), byte(u>>32),
			byte(u>>24), byte(u>>16), byte(u>>8), byte(u))
	}
}

// writeControl writes a ping or pong (not after the connection closed).
func (c *conn) writeControl(op ws.OpCode, p []byte) error {
	var buf [2 + ws.MaxControlFramePayloadSize]byte
	frame := append(appendHeader(buf[:0], op, len(p)), p...)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	nc := c.nc
	if nc == nil || c.wbroken || c.closed.Load() {
		return errClosed
	}
	_ = nc.SetWriteDeadline(time.Now().Add(closeWait))
	_, err := nc.Write(frame)
	if err != nil {
		c.wbroken = true
	}
	return err
}

func (c *conn) ping() { _ = c.writeControl(ws.OpPing, nil) }

// Close sends a close frame with code and reason, then closes the socket and
// finishes the connection. Only the first close (of any kind) has an effect.
func (c *conn) Close(code protocol.CloseCode, reason string) { c.terminate(closeBody(code, reason)) }

// closeBody is a close frame payload; code 0 means none.
func closeBody(code protocol.CloseCode, reason string) []byte {
	if code == 0 {
		return nil
	}
	if len(reason) > ws.MaxControlFramePayloadSize-2 {
		reason = reason[:ws.MaxControlFramePayloadSize-2]
	}
	return ws.NewCloseFrameBody(ws.StatusCode(code), reason)
}

// terminate closes the connection with a close frame carrying body: the first
// call wins. Before the socket is attached it only records the close.
func (c *conn) terminate(body []byte) {
	c.smu.Lock()
	if c.closed.Load() {
		c.smu.Unlock()
		return
	}
	c.closed.Store(true)
	c.closeBody = body
	nc := c.nc
	c.smu.Unlock()
	if nc == nil {
		return // attach applies it; ServeHTTP finishes
	}
	c.shut(nc, body)
	c.finish()
}

// shut writes the close frame (best effort, within closeWait, after a batch
// in flight) and closes the socket, which also ends any read in progress and
// removes the socket from the epoll set.
func (c *conn) shut(nc net.Conn, body []byte) {
	_ = nc.SetWriteDeadline(time.Now().Add(closeWait))
	c.wmu.Lock()
	if !c.wbroken {
		var buf [2 + ws.MaxControlFramePayloadSize]byte
		frame := append(appendHeader(buf[:0], ws.OpClose, len(body)), body...)
		if _, err := nc.Write(frame); err != nil {
			c.wbroken = true
		}
	}
	c.wmu.Unlock()
	_ = nc.Close()
}

// finish releases the connection once: the poller, the hub, Shutdown's wait.
func (c *conn) finish() {
	c.smu.Lock()
	c.closed.Store(true)
	c.smu.Unlock()
	if !c.done.CompareAndSwap(false, true) {
		return
	}
	c.untrack()
	c.srv.wheel.remove(c)
	c.srv.cfg.Hub.Unregister(c.hc)
	c.hc.Close(protocol.CloseNormal, "")
	c.release()
	c.srv.wg.Done()
}

// release gives the connection's place in the cluster-wide limit back. A
// Redis that does not answer costs the entry's TTL, not the caller's time.
func (c *conn) release() {
	if !c.limited {
		return
	}
	c.limited = false
	l, user, id := c.srv.cfg.Limiter, c.user, c.hc.ID
	c.srv.wg.Add(1)
	go func() {
		defer c.srv.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := l.Release(ctx, user, id); err != nil {
			c.srv.log.Warn("release cluster connection", "user", user, "conn", id, "err", err)
		}
	}()
}

// readLoop reads the connection on its own goroutine: the portable path.
func (c *conn) readLoop() {
	rb := &readBuf{}
	rb.sr.c = c
	rb.br = bufio.NewReaderSize(&rb.sr, loopBufSize)
	for {
		c.rmu.Lock()
		err := c.readFrames(rb)
		c.rmu.Unlock()
		if err != nil {
			c.readFailed(err)
			return
		}
	}
}

// readFailed ends the connection after a read error.
func (c *conn) readFailed(err error) {
	if errors.Is(err, errDone) || c.closed.Load() {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// A frame begun and not finished within ping interval + pong timeout.
		c.srv.cfg.Metrics.Closes.WithLabelValues(protocol.CloseNoPong.String()).Inc()
		c.terminate(closeBody(protocol.CloseNoPong, "no pong within heartbeat timeout"))
		return
	}
	c.terminate(closeBody(protocol.CloseNormal, ""))
}

// readFrames reads and handles frames until what was read ends at a frame
// boundary: nil means the socket has nothing more for now. An error means the
// connection is over (errDone: already terminated by a frame).
func (c *conn) readFrames(rb *readBuf) error {
	for {
		if err := c.readFrame(rb); err != nil {
			return err
		}
		if c.closed.Load() {
			return errClosed
		}
		if rb.br.Buffered() == 0 && len(c.pre) == 0 {
			return nil
		}
	}
}

// readFrame reads one frame and acts on it: a complete data message goes to
// the session, control frames are answered here.
func (c *conn) readFrame(rb *readBuf) error {
	h, err := ws.ReadHeaderBuffer(rb.br, rb.hdr[:])
	if err != nil {
		if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
			return c.protocolError()
		}
		return err
	}
	state := ws.StateServerSide
	if c.fragmented {
		state |= ws.StateFragmented
	}
	if ws.CheckHeader(h, state) != nil {
		return c.protocolError() // reserved opcode or RSV bits, unmasked, bad fragmentation, long or fragmented control frame
	}
	if h.OpCode.IsControl() {
		return c.readControl(rb, h)
	}

	have := 0
	if c.msg != nil {
		have = len(c.msg.b)
	}
	if h.Length > int64(c.srv.cfg.MaxMessageBytes-have) {
		c.terminateLingering(protocol.CloseTooLarge, "message too big")
		return errDone
	}
	if h.OpCode != ws.OpContinuation {
		c.msgOp = h.OpCode
	}
	if c.msg == nil {
		c.msg = c.srv.msgBufs.Get().(*msgBuf)
	}
	start := len(c.msg.b)
	c.msg.b, err = readPayload(rb.br, c.msg.b, h.Length)
	if err != nil {
		return err
	}
	ws.Cipher(c.msg.b[start:], h.Mask, 0)
	if !h.Fin {
		c.fragmented = true
		return nil
	}
	c.fragmented = false
	mb := c.msg
	c.msg = nil
	ctx, cancel := c.srv.opContext()
	c.message(ctx, c.msgOp == ws.OpBinary, mb.b)
	cancel()
	if cap(mb.b) <= 2*c.srv.cfg.MaxMessageBytes {
		mb.b = mb.b[:0]
		c.srv.msgBufs.Put(mb)
	}
	return nil
}

func (c *conn) readControl(rb *readBuf, h ws.Header) error {
	p := rb.ctl[:h.Length] // CheckHeader bounded it to 125
	if _, err := io.ReadFull(rb.br, p); err != nil {
		return err
	}
	ws.Cipher(p, h.Mask, 0)
	switch h.OpCode {
	case ws.OpPing:
		_ = c.writeControl(ws.OpPong, p) // a failed write ends the connection elsewhere
	case ws.OpPong:
		c.pingOut.Store(0)
	case ws.OpClose:
		// Echo the code (RFC 6455 5.5.1), then close the socket.
		switch len(p) {
		case 0:
			c.terminate(nil)
		case 1:
			return c.protocolError()
		default:
			code, reason := ws.ParseCloseFrameData(p)
			if ws.CheckCloseFrameData(code, reason) != nil {
				return c.protocolError()
			}
			c.terminate(closeBody(protocol.CloseCode(code), ""))
		}
		return errDone
	}
	return nil
}

func (c *conn) protocolError() error {
	c.terminateLingering(protocol.CloseProtocolError, "protocol error")
	return errDone
}

// terminateLingering closes for something the client sent, from the reading
// goroutine, while the rest of what it sent may still be arriving. Closing
// a socket with unread input makes the kernel answer with a reset, which can
// destroy the close frame before the client reads it; so the write side is
// shut after the close frame and the input discarded until the client
// closes too, for closeWait at most.
// The close is counted in agentwire_closes_total when it is the first.
func (c *conn) terminateLingering(code protocol.CloseCode, reason string) {
	body := closeBody(code, reason)
	c.smu.Lock()
	nc := c.nc
	c.smu.Unlock()
	hc, ok := nc.(interface{ CloseWrite() error })
	if !ok {
		if !c.closed.Load() {
			c.srv.cfg.Metrics.Closes.WithLabelValues(code.String()).Inc()
		}
		c.terminate(body)
		return
	}
	c.smu.Lock()
	if c.closed.Load() {
		c.smu.Unlock()
		return
	}
	c.closed.Store(true)
	c.closeBody = body
	c.smu.Unlock()
	c.srv.cfg.Metrics.Closes.WithLabelValues(code.String()).Inc()
	_ = nc.SetWriteDeadline(time.Now().Add(closeWait))
	c.wmu.Lock()
	if !c.wbroken {
		var buf [2 + ws.MaxControlFramePayloadSize]byte
		frame := append(appendHeader(buf[:0], ws.OpClose, len(body)), body...)
		if _, err := nc.Write(frame); err != nil {
			c.wbroken = true
		}
	}
	c.wbroken = true // nothing more may be written after the close frame
	c.wmu.Unlock()
	_ = hc.CloseWrite()
	_ = nc.SetReadDeadline(time.Now().Add(closeWait))
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 4<<20))
	_ = nc.Close()
	c.finish()
}

// readPayload appends n bytes from br to b, growing b as bytes arrive rather
// than by the length the peer declared.
func readPayload(br *bufio.Reader, b []byte, n int64) ([]byte, error) {
	for n > 0 {
		k := int(min(n, readChunk))
		b = slices.Grow(b, k)
		m, err := io.ReadFull(br, b[len(b):len(b)+k])
		b = b[:len(b)+m]
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return b, err
		}
		n -= int64(k)
	}
	return b, nil
}

// onTimer is the wheel's call when c is due: token expiry, pong deadline,
// next ping. It never blocks: socket writes run on their own goroutine.
func (c *conn) onTimer(now int64) {
	if c.closed.Load() {
		return // off the wheel for good
	}
	s := c.srv
	if c.exp != 0 && now >= c.exp {
		c.hc.Close(protocol.CloseTokenExpired, "token expired") // after the frames already queued
		return
	}
	if d := c.pingOut.Load(); d != 0 && now >= d {
		s.cfg.Metrics.Closes.WithLabelValues(protocol.CloseNoPong.String()).Inc()
		go c.terminate(closeBody(protocol.CloseNoPong, "no pong within heartbeat timeout"))
		return
	}
	if now >= c.nextPing {
		c.pingOut.CompareAndSwap(0, now+int64(s.cfg.PongTimeout))
		c.nextPing = now + int64(s.cfg.PingInterval)
		go c.ping()
	}
	s.wheel.schedule(c, c.nextWake())
}

func (c *conn) nextWake() int64 {
	next := c.nextPing
	if d := c.pingOut.Load(); d != 0 && d < next {
		next = d
	}
	if c.exp != 0 && c.exp < next {
		next = c.exp
	}
	return next
}
