package ws

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"

	"github.com/gobwas/ws"

	"github.com/agentwire/agentwire/protocol"
)

var (
	errClosed = errors.New("ws: connection closed")
	errDone   = errors.New("ws: connection closed by a frame")
)

// conn is one upgraded connection: the hub's Transport (WriteBatch, Close)
// and the session that answers its client frames, composed of parts with one
// job each, sharing the socket nc:
//
//   - out (writer.go): writes batches, pings, pongs and the close frame;
//   - in (reader.go): reads frames and reassembles messages;
//   - life (closer.go): the first close wins, the connection is released once;
//   - hb and wn (heartbeat.go, wheel.go): pings, pong deadline and token
//     expiry, on the server's timing wheel;
//   - ps (poll_linux.go): the epoll registration.
//
// conn itself routes between them: a frame read goes to the session or is
// answered, a timer due becomes a ping or a close, a close writes its frame,
// closes the socket and finishes (unregisters from the hub, releases
// Shutdown's wait).
type conn struct {
	session
	nc   net.Conn // set once by attach, before life.attached
	life closer
	out  writer
	in   frameReader
	hb   heartbeat
	wn   wheelNode
	ps   pollState
}

// attach gives c its socket. It reports false (and has closed the socket)
// when c was closed meanwhile.
func (c *conn) attach(nc net.Conn) bool {
	c.nc = nc
	if body, closed := c.life.attach(); closed {
		c.shut(body)
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
	c.hb.start(w.now(), c.srv.cfg.PingInterval)
	w.schedule(c, c.hb.next())
	return true
}

// WriteBatch writes frames as text messages with one write. Only the hub's
// single flush goroutine calls it.
func (c *conn) WriteBatch(frames [][]byte) error {
	return c.out.batch(c.nc, frames, &c.srv.batchBufs, &c.life.closed, c.srv.wheel)
}

func (c *conn) ping() { _ = c.out.control(c.nc, ws.OpPing, nil, &c.life.closed) }

// Close sends a close frame with code and reason, then closes the socket and
// finishes the connection. Only the first close (of any kind) has an effect.
func (c *conn) Close(code protocol.CloseCode, reason string) { c.terminate(code, reason, false) }

// terminate closes the connection with a close frame carrying code (0: none)
// and reason: the first close wins. counted closes (the server decided them)
// are counted in agentwire_closes_total before the close frame is written.
// Before the socket is attached it only records the close.
func (c *conn) terminate(code protocol.CloseCode, reason string, counted bool) {
	body := closeBody(code, reason)
	first, attached := c.life.begin(body)
	if !first {
		return
	}
	if counted {
		c.countClose(code)
	}
	if !attached {
		return // attach applies it; ServeHTTP finishes
	}
	c.shut(body)
	c.finish()
}

func (c *conn) countClose(code protocol.CloseCode) {
	c.srv.cfg.Metrics.Closes.WithLabelValues(code.String()).Inc()
}

// shut writes the close frame and closes the socket, which also ends any
// read in progress and removes the socket from the epoll set.
func (c *conn) shut(body []byte) {
	c.out.close(c.nc, body, false)
	_ = c.nc.Close()
}

// terminateLingering closes for something the client sent, from the reading
// goroutine, while the rest of what it sent may still be arriving. Closing
// a socket with unread input makes the kernel answer with a reset, which can
// destroy the close frame before the client reads it; so the write side is
// shut after the close frame and the input discarded until the client
// closes too, for closeWait at most.
func (c *conn) terminateLingering(code protocol.CloseCode, reason string) {
	hc, ok := c.nc.(interface{ CloseWrite() error })
	if !ok {
		c.terminate(code, reason, true)
		return
	}
	body := closeBody(code, reason)
	if first, _ := c.life.begin(body); !first {
		return
	}
	c.countClose(code)
	c.out.close(c.nc, body, true)
	_ = hc.CloseWrite()
	_ = c.nc.SetReadDeadline(time.Now().Add(closeWait))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, 4<<20))
	_ = c.nc.Close()
	c.finish()
}

// finish releases the connection once: the poller, the wheel, the hub,
// Shutdown's wait.
func (c *conn) finish() {
	if !c.life.end() {
		return
	}
	c.untrack()
	c.srv.wheel.remove(c)
	c.srv.cfg.Hub.Unregister(c.hc)
	c.hc.Close(protocol.CloseNormal, "")
	c.release()
	// With tracing on, act was made at connect, before the reader started.
	if c.srv.cfg.Tracer != nil && c.act != nil && c.act.span != nil {
		c.act.span.End()
	}
	c.srv.wg.Done()
}

// release gives the connection's place in the cluster-wide limit back.
func (c *conn) release() {
	if !c.life.limited {
		return
	}
	c.life.limited = false
	c.srv.releaseLimit(c.hc.User, c.hc.ID)
}

// readLoop reads the connection on its own goroutine: the portable path.
func (c *conn) readLoop() {
	rb := &readBuf{}
	rb.sr = sockReader{fr: &c.in, nc: c.nc}
	rb.br = bufio.NewReaderSize(&rb.sr, loopBufSize)
	for {
		c.in.mu.Lock()
		err := c.readFrames(rb)
		c.in.mu.Unlock()
		if err != nil {
			c.readFailed(err)
			return
		}
	}
}

// readFailed ends the connection after a read error.
func (c *conn) readFailed(err error) {
	if errors.Is(err, errDone) || c.life.closed.Load() {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// A frame begun and not finished within ping interval + pong timeout.
		c.terminate(protocol.CloseNoPong, "no pong within heartbeat timeout", true)
		return
	}
	c.terminate(protocol.CloseNormal, "", false)
}

// readFrames reads and handles frames until what was read ends at a frame
// boundary: nil means the socket has nothing more for now. An error means the
// connection is over (errDone: already terminated by a frame). The caller
// holds in.mu.
func (c *conn) readFrames(rb *readBuf) error {
	cfg := &c.srv.cfg
	for {
		f, ok, err := c.in.next(rb, cfg.MaxMessageBytes, &c.srv.msgBufs)
		switch {
		case errors.Is(err, errTooBig):
			c.terminateLingering(protocol.CloseTooLarge, "message too big")
			return errDone
		case errors.Is(err, errProtocol):
			return c.protocolError()
		case err != nil:
			return err
		}
		if ok {
			if err := c.handleFrame(f); err != nil {
				return err
			}
		}
		if c.life.closed.Load() {
			return errClosed
		}
		if c.in.drained(rb) {
			return nil
		}
	}
}

// handleFrame acts on a frame: a complete data message goes to the session,
// control frames are answered here.
func (c *conn) handleFrame(f inFrame) error {
	switch f.op {
	case ws.OpText, ws.OpBinary:
		ctx, cancel := c.srv.opContext()
		c.message(ctx, f.op == ws.OpBinary, f.msg.b)
		cancel()
		putMsgBuf(&c.srv.msgBufs, f.msg, c.srv.cfg.MaxMessageBytes)
	case ws.OpPing:
		_ = c.out.control(c.nc, ws.OpPong, f.ctl, &c.life.closed) // a failed write ends the connection elsewhere
	case ws.OpPong:
		c.hb.ponged()
	case ws.OpClose:
		// Echo the code (RFC 6455 5.5.1), then close the socket.
		switch len(f.ctl) {
		case 0:
			c.terminate(0, "", false)
		case 1:
			return c.protocolError()
		default:
			code, reason := ws.ParseCloseFrameData(f.ctl)
			if ws.CheckCloseFrameData(code, reason) != nil {
				return c.protocolError()
			}
			c.terminate(protocol.CloseCode(code), "", false)
		}
		return errDone
	}
	return nil
}

func (c *conn) protocolError() error {
	c.terminateLingering(protocol.CloseProtocolError, "protocol error")
	return errDone
}

// onTimer is the wheel's call when c is due: token expiry, pong deadline,
// next ping. It never blocks: socket writes run on their own goroutine.
func (c *conn) onTimer(now int64) {
	if c.life.closed.Load() {
		return // off the wheel for good
	}
	s := c.srv
	switch c.hb.due(now, s.cfg.PingInterval, s.cfg.PongTimeout) {
	case beatExpired:
		c.hc.Close(protocol.CloseTokenExpired, "token expired") // after the frames already queued
		return
	case beatNoPong:
		go c.terminate(protocol.CloseNoPong, "no pong within heartbeat timeout", true)
		return
	case beatPing:
		go c.ping()
	}
	s.wheel.schedule(c, c.hb.next())
}
