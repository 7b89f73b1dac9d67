package ws

import (
	"bufio"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

const (
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
	// errProtocol: the client broke RFC 6455 framing (1002).
	errProtocol = errors.New("ws: protocol error")
	// errTooBig: the message under way exceeds max_message_bytes (1009).
	errTooBig = errors.New("ws: message too big")
)

// frameReader turns a connection's bytes into frames: it checks the framing
// of RFC 6455 and reassembles fragmented messages. Its fields belong to the
// goroutine holding mu (one reader at a time: the epoll path's goroutine of
// the moment, or readLoop). Between two readable events it holds memory only
// while a fragmented message is open.
type frameReader struct {
	mu         sync.Mutex
	pre        *[]byte // bytes read past the handshake, consumed first; nil when none (a pointer: 8 bytes of the conn struct, not 24)
	msg        *msgBuf // message being reassembled, nil between messages
	op         ws.OpCode
	fragmented bool
}

// inFrame is what the reader hands its connection: a complete data message
// (op OpText or OpBinary, in msg, which the connection gives back with
// putMsgBuf) or a control frame (its unmasked payload in ctl, valid until the
// next read).
type inFrame struct {
	op  ws.OpCode
	msg *msgBuf
	ctl []byte
}

// next reads one frame from rb. ok is false when the frame only continued a
// fragmented message. errProtocol and errTooBig name what the client did
// wrong; any other error is the socket's. maxBytes bounds a message, and bufs
// lends message buffers (msgBuf).
func (r *frameReader) next(rb *readBuf, maxBytes int, bufs *sync.Pool) (f inFrame, ok bool, err error) {
	h, err := ws.ReadHeaderBuffer(rb.br, rb.hdr[:])
	if err != nil {
		if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
			return inFrame{}, false, errProtocol
		}
		return inFrame{}, false, err
	}
	state := ws.StateServerSide
	if r.fragmented {
		state |= ws.StateFragmented
	}
	if ws.CheckHeader(h, state) != nil {
		return inFrame{}, false, errProtocol // reserved opcode or RSV bits, unmasked, bad fragmentation, long or fragmented control frame
	}
	if h.OpCode.IsControl() {
		p := rb.ctl[:h.Length] // CheckHeader bounded it to 125
		if _, err := io.ReadFull(rb.br, p); err != nil {
			return inFrame{}, false, err
		}
		ws.Cipher(p, h.Mask, 0)
		return inFrame{op: h.OpCode, ctl: p}, true, nil
	}

	have := 0
	if r.msg != nil {
		have = len(r.msg.b)
	}
	if h.Length > int64(maxBytes-have) {
		return inFrame{}, false, errTooBig
	}
	if h.OpCode != ws.OpContinuation {
		r.op = h.OpCode
	}
	if r.msg == nil {
		r.msg = bufs.Get().(*msgBuf)
	}
	start := len(r.msg.b)
	r.msg.b, err = readPayload(rb.br, r.msg.b, h.Length)
	if err != nil {
		return inFrame{}, false, err
	}
	ws.Cipher(r.msg.b[start:], h.Mask, 0)
	if !h.Fin {
		r.fragmented = true
		return inFrame{}, false, nil
	}
	r.fragmented = false
	mb := r.msg
	r.msg = nil
	return inFrame{op: r.op, msg: mb}, true, nil
}

// drained reports whether what was read ends at a frame boundary: nothing
// is buffered and no handshake bytes are left.
func (r *frameReader) drained(rb *readBuf) bool {
	return rb.br.Buffered() == 0 && r.pre == nil
}

type msgBuf struct{ b []byte }

func newMsgBuf() any { return &msgBuf{b: make([]byte, 0, 512)} }

// putMsgBuf gives a handled message's buffer back to bufs, unless it grew
// past twice maxBytes.
func putMsgBuf(bufs *sync.Pool, mb *msgBuf, maxBytes int) {
	if cap(mb.b) <= 2*maxBytes {
		mb.b = mb.b[:0]
		bufs.Put(mb)
	}
}

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
// over from the handshake (fr.pre), then nc. With bound set (epoll path: the
// first read returns at once since the socket is readable), every read after
// the first runs under a read deadline of wait, so a frame that has begun to
// arrive cannot hold the goroutine forever.
type sockReader struct {
	fr       *frameReader
	nc       net.Conn
	wait     time.Duration
	bound    bool
	reads    int
	deadline bool
}

func (r *sockReader) Read(p []byte) (int, error) {
	fr := r.fr
	if fr.pre != nil {
		n := copy(p, *fr.pre)
		*fr.pre = (*fr.pre)[n:]
		if len(*fr.pre) == 0 {
			fr.pre = nil
		}
		r.reads++
		return n, nil
	}
	if r.bound && r.reads > 0 && !r.deadline {
		_ = r.nc.SetReadDeadline(time.Now().Add(r.wait))
		r.deadline = true
	}
	r.reads++
	return r.nc.Read(p)
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
