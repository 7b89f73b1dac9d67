// Package sse carries a hub connection over a Server-Sent Events response:
// Conn is a hub.Transport whose frames go through a per-connection Mapper
// (Plain, the identity, for GET /api/v1/stream; the AG-UI endpoints map
// frames to AG-UI events) and are written by an internal/sse Writer, with
// heartbeat comments and token expiry. It is a subpackage of the concept it
// serves, as hub/redis is; the event-stream format itself is internal/sse,
// imported here under its own name (sse.Event, sse.Writer).
package sse

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/protocol"
)

// DefaultHeartbeat is the interval of a Conn's heartbeat comments when
// Options give none.
const DefaultHeartbeat = 15 * time.Second

// closeWriteTimeout bounds the comment that says why a response ends.
const closeWriteTimeout = time.Second

var errClosed = errors.New("sse: response ended")

// Mapper turns one hub frame into the events written for it, appended to
// dst; end reports that the response ends after them (say, the AG-UI run's
// terminal event): the rest of the batch is not written. A connection calls
// its Mapper from one goroutine at a time, so a Mapper may keep state (an
// open text message, the run it filters on). frame is only valid during the
// call: an Event must not keep it past the next call unless copied (Plain
// keeps it, and the events are written before the next call).
type Mapper func(dst []sse.Event, frame []byte) (events []sse.Event, end bool)

// Plain is the identity Mapper of GET /api/v1/stream: every frame is one
// event whose data is the frame, with id <epoch>:<seq> on stream events
// (protocol.EventID) and no id on the other frames.
func Plain(dst []sse.Event, frame []byte) ([]sse.Event, bool) {
	ev := sse.Event{Data: frame}
	if cur, ok := protocol.FrameCursor(frame); ok {
		ev.ID = protocol.EventID(cur.Epoch, cur.Seq)
	}
	return append(dst, ev), false
}

// Options configure a Conn. Zero values take the defaults.
type Options struct {
	// Mapper maps each hub frame to events (nil: Plain).
	Mapper Mapper
	// Heartbeat is the interval of the comment lines that keep proxies and
	// clients from timing the response out (0: DefaultHeartbeat).
	Heartbeat time.Duration
	// WriteTimeout bounds each flush to the client (0: sse.DefaultWriteTimeout).
	WriteTimeout time.Duration
	// Expires, when set, ends the response with 4001 (token expired) at
	// that time, after the frames already queued.
	Expires time.Time
}

// Conn is a hub connection carried by an SSE response: the hub.Transport
// of its hub.Conn (HC). The endpoint's handler makes it with NewConn,
// registers HC with the hub, joins it (HC.Join), then calls Serve, which
// holds the response open until the connection ends.
type Conn struct {
	// HC is the hub's side of the connection: Register it, Join it, Send
	// on it, Close it (the response ends after its queued frames).
	HC *hub.Conn

	hub       *hub.Hub
	w         *sse.Writer
	mapper    Mapper
	heartbeat time.Duration
	expires   time.Time

	wmu    sync.Mutex  // serialises writes: batches, heartbeats, the last comment
	events []sse.Event // the mapper's scratch, under wmu
	over   bool        // nothing more is written (a write failed, or Serve ended); under wmu

	mu     sync.Mutex
	closed bool
	ended  bool // Serve returned: the ResponseWriter is no longer ours
	code   protocol.CloseCode
	reason string
	done   chan struct{} // closed by the first Close
}

// NewConn returns the connection of user with id over the response w, and
// its hub.Conn (not registered). Nothing is written before Serve (or the
// first batch after a Join).
func NewConn(h *hub.Hub, w http.ResponseWriter, id, user string, o Options) *Conn {
	if o.Mapper == nil {
		o.Mapper = Plain
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	c := &Conn{
		hub:       h,
		w:         sse.NewWriter(w, o.WriteTimeout),
		mapper:    o.Mapper,
		heartbeat: o.Heartbeat,
		expires:   o.Expires,
		done:      make(chan struct{}),
	}
	c.w.SetAbort(c.closing)
	c.HC = h.NewConn(id, user, c)
	return c
}

// WriteBatch maps each frame and writes the events with one flush. It is the
// hub.Transport method: only the hub connection's writer calls it.
func (c *Conn) WriteBatch(frames [][]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.over {
		return errClosed
	}
	end := false
	for _, f := range frames {
		c.events, end = c.mapper(c.events[:0], f)
		for _, ev := range c.events {
			c.w.Event(ev)
		}
		if end {
			break
		}
	}
	clear(c.events)
	err := c.w.Flush()
	if err != nil {
		c.over = true
		return err
	}
	if end {
		c.over = true
		c.Close(protocol.CloseNormal, "")
	}
	return nil
}

// Close ends the response: the handler's Serve writes a comment naming code
// and reason (best effort) and returns. A write in flight is interrupted.
// Only the first call has an effect; any goroutine may call it.
func (c *Conn) Close(code protocol.CloseCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed, c.code, c.reason = true, code, reason
	close(c.done)
	if !c.ended {
		c.w.Interrupt()
	}
}

func (c *Conn) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Done is closed once the connection is closing.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Serve writes the response's headers at once, then a heartbeat comment
// every interval, until the connection closes (the hub's Close, the
// Mapper's end, a failed write, token expiry) or ctx ends (the client went
// away: pass the request's context). It then unregisters HC from the hub
// and returns the close's code and reason (CloseNormal when the client
// left). Call it once HC is registered, on the handler's goroutine, whether
// the Join succeeded or not: nothing writes to the response after it
// returns.
func (c *Conn) Serve(ctx context.Context) (protocol.CloseCode, string) {
	// The headers go out at once, even when the connection is closing
	// already (its last comment follows them).
	c.wmu.Lock()
	if !c.over {
		c.w.SetAbort(nil)
		if err := c.w.Flush(); err != nil {
			c.over = true
			c.Close(protocol.CloseInternalError, "write failed")
		}
		c.w.SetAbort(c.closing)
	}
	c.wmu.Unlock()
	tick := time.NewTicker(c.heartbeat)
	defer tick.Stop()
	var expiry <-chan time.Time
	if !c.expires.IsZero() {
		t := time.NewTimer(time.Until(c.expires))
		defer t.Stop()
		expiry = t.C
	}
loop:
	for {
		select {
		case <-c.done:
			break loop
		case <-ctx.Done():
			c.Close(protocol.CloseNormal, "")
		case <-expiry:
			c.HC.Close(protocol.CloseTokenExpired, "token expired") // after the frames already queued
		case <-tick.C:
			c.write(func(w *sse.Writer) { w.Comment("") })
		}
	}
	c.mu.Lock()
	code, reason := c.code, c.reason
	c.mu.Unlock()
	c.finish(ctx, code, reason)
	return code, reason
}

// Discard ends a registered Conn whose Serve will not run, because a check
// after Register refused the connect: it unregisters HC and makes the
// response the caller's again (nothing more is written to it), for the
// caller's error answer.
func (c *Conn) Discard() {
	c.mu.Lock()
	c.closed, c.ended = true, true
	c.mu.Unlock()
	c.wmu.Lock()
	c.over = true
	c.wmu.Unlock()
	c.hub.Unregister(c.HC)
	c.HC.Close(protocol.CloseNormal, "")
}

// finish writes why the response ends (unless the client left, or it ends
// normally) and gives the connection up.
func (c *Conn) finish(ctx context.Context, code protocol.CloseCode, reason string) {
	c.hub.Unregister(c.HC) // first: the last comment may wait on a slow client
	c.wmu.Lock()
	// Close set the write deadline to now (to interrupt a write in flight):
	// the last comment and the response's end get a short one instead.
	c.w.SetAbort(nil)
	c.w.SetTimeout(closeWriteTimeout)
	if !c.over && ctx.Err() == nil && code != protocol.CloseNormal {
		c.w.Comment("close " + strconv.Itoa(int(code)) + " " + reason)
		_ = c.w.Flush()
	}
	c.over = true
	c.wmu.Unlock()
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
	c.HC.Close(protocol.CloseNormal, "") // drops whatever is still queued
}

// write runs fill on the writer and flushes, unless the response is over;
// a failed write closes the connection.
func (c *Conn) write(fill func(*sse.Writer)) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.over {
		return
	}
	fill(c.w)
	if err := c.w.Flush(); err != nil {
		c.over = true
		c.Close(protocol.CloseInternalError, "write failed")
	}
}
