package ws

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/agentwire/agentwire/protocol"
)

const (
	// writeWait bounds one batch write. A client that cannot take a batch
	// within it is gone or hopelessly slow.
	writeWait = 10 * time.Second
	// closeWait bounds writing a ping or pong.
	closeWait = time.Second
	// closeFrameWait bounds writing the close frame: a client that stopped
	// reading (a slow consumer closed with 4008) gets this long to drain what
	// its socket holds and still learn why it was closed, on a busy machine
	// too; a socket that takes nothing by then is dropped (1006).
	closeFrameWait = 5 * time.Second
)

// writer writes a connection's frames to its socket: the hub's batches (one
// write each), pings, pongs and the close frame, one at a time, each under
// a write deadline. A control frame written while a batch is in flight waits
// for it, so it never lands inside a data frame. After a failed write the
// byte stream may end inside a frame: nothing more is written.
//
// closed is the connection's close flag (closer.closed): no data, ping or
// pong goes out once the connection is closing.
type writer struct {
	mu     sync.Mutex
	broken bool // a write failed, or the close frame was the last one
	// until is a lower bound of the batch write deadline on the socket, in
	// whole seconds of the server's clock (wheel.now); 0 when the last
	// deadline set was another one (a control frame's, the close frame's).
	// A batch sets a fresh deadline only when fewer than writeWait/2 are
	// left: setting one costs a timer update per write, a tenth of the
	// write itself.
	until uint32
}

// refreshWait is the least time a batch write is given: a batch reuses the
// deadline on the socket while at least this much of it is left.
const refreshWait = writeWait / 2

// smallFrame is the largest lone frame batch copies behind its header for
// one write instead of a writev: the copy costs less than nothing next to
// the syscall, and a socket's first writev makes the runtime keep an iovec
// slice (56 bytes) on its poll.FD for the connection's life, which an idle
// connection, that only ever gets connection_established, need not pay.
const smallFrame = 4 << 10

// batch writes frames as text messages with one write on nc (nil: not
// attached): a writev, or a plain write of a single frame of at most
// smallFrame bytes copied behind its header. bufs lends the headers and
// iovecs (batchBuf).
func (w *writer) batch(nc net.Conn, frames [][]byte, bufs *sync.Pool, closed *atomic.Bool, clk *wheel) error {
	bb := bufs.Get().(*batchBuf)
	lone := len(frames) == 1 && len(frames[0]) <= smallFrame
	need := len(frames) * maxServerHeader
	if lone {
		need += len(frames[0])
	}
	if cap(bb.hdr) < need {
		// Room for what comes next too: a lone frame's size varies from
		// one event to the next, and an exact fit would be outgrown again.
		bb.hdr = make([]byte, 0, max(need, 2*cap(bb.hdr), minBatchHdr))
	}
	hdr, iov := bb.hdr[:0], bb.bufs[:0]
	if lone {
		hdr = append(appendHeader(hdr, ws.OpText, len(frames[0])), frames[0]...)
	} else {
		for _, f := range frames {
			s := len(hdr)
			hdr = appendHeader(hdr, ws.OpText, len(f)) // never reallocates: cap is enough for all
			iov = append(iov, hdr[s:len(hdr):len(hdr)], f)
		}
	}

	var err error
	w.mu.Lock()
	switch {
	case nc == nil || w.broken:
		err = errClosed
	default:
		// Deadline first, then the closed check: a close after the check
		// shortens this deadline for the write in flight.
		w.deadline(nc, clk)
		if closed.Load() {
			err = errClosed
			break
		}
		v := iov // WriteTo and WriteBuffers consume their buffers
		if lone {
			_, err = nc.Write(hdr)
		} else if bw, ok := nc.(buffersWriter); ok {
			_, err = bw.WriteBuffers(&v)
		} else {
			_, err = v.WriteTo(nc)
		}
		if err != nil {
			w.broken = true
		}
	}
	w.mu.Unlock()

	clear(iov) // drop the frames
	if cap(iov) > 1024 {
		iov, hdr = nil, nil // give a burst's memory back
	}
	bb.hdr, bb.bufs = hdr[:0], iov[:0]
	bufs.Put(bb)
	return err
}

// deadline gives the batch write about to start at least refreshWait:
// the deadline already on nc when enough of it is left, else a fresh one of
// writeWait. Called with w.mu held.
func (w *writer) deadline(nc net.Conn, clk *wheel) {
	now := time.Now()
	at := clk.at(now)
	if int64(w.until)*int64(time.Second)-at >= int64(refreshWait) {
		return
	}
	_ = nc.SetWriteDeadline(now.Add(writeWait))
	w.until = uint32((at + int64(writeWait)) / int64(time.Second))
}

// control writes a ping or pong (not once the connection is closing).
func (w *writer) control(nc net.Conn, op ws.OpCode, p []byte, closed *atomic.Bool) error {
	var buf [2 + ws.MaxControlFramePayloadSize]byte
	frame := append(appendHeader(buf[:0], op, len(p)), p...)
	w.mu.Lock()
	defer w.mu.Unlock()
	if nc == nil || w.broken || closed.Load() {
		return errClosed
	}
	_ = nc.SetWriteDeadline(time.Now().Add(closeWait))
	w.until = 0
	_, err := nc.Write(frame)
	if err != nil {
		w.broken = true
	}
	return err
}

// close writes the close frame carrying body, best effort, within
// closeFrameWait, after a batch in flight (whose deadline it shortens). With last
// set nothing is written after it, even by a caller that has not seen the
// connection closed yet.
func (w *writer) close(nc net.Conn, body []byte, last bool) {
	_ = nc.SetWriteDeadline(time.Now().Add(closeFrameWait))
	w.mu.Lock()
	w.until = 0
	if !w.broken {
		var buf [2 + ws.MaxControlFramePayloadSize]byte
		frame := append(appendHeader(buf[:0], ws.OpClose, len(body)), body...)
		if _, err := nc.Write(frame); err != nil {
			w.broken = true
		}
	}
	if last {
		w.broken = true
	}
	w.mu.Unlock()
}

// buffersWriter is a connection that writes net.Buffers with writev itself,
// as the app's lean TCP connections do: net.Buffers.WriteTo uses writev only
// for net's own connection types, and one write per buffer otherwise.
type buffersWriter interface {
	WriteBuffers(v *net.Buffers) (int64, error)
}

// batchBuf is one batch's headers and iovecs.
type batchBuf struct {
	hdr  []byte
	bufs net.Buffers
}

func newBatchBuf() any { return &batchBuf{} }

// minBatchHdr is the least a batchBuf's header buffer is made with: a lone
// frame of a typical event fits.
const minBatchHdr = 1 << 10

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
