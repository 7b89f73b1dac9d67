package ws

import (
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// writeWait bounds one batch write and a close handshake write. A client
// that cannot take a batch within it is gone or hopelessly slow.
const (
	writeWait = 10 * time.Second
	closeWait = time.Second
)

// transport implements hub.Transport over a gorilla/websocket connection.
// It is created before the upgrade (the hub must count the connection before
// answering 101), so the socket is attached later and a close that comes
// first is remembered and applied on attach.
type transport struct {
	mu     sync.Mutex
	conn   *websocket.Conn
	closed bool
	code   int
	reason string
}

func (t *transport) attach(c *websocket.Conn) (ok bool) {
	t.mu.Lock()
	t.conn = c
	closed, code, reason := t.closed, t.code, t.reason
	t.mu.Unlock()
	if closed {
		closeConn(c, code, reason)
		return false
	}
	return true
}

// WriteBatch writes frames as text messages. Only the hub's single flush
// goroutine calls it, which is the one writer gorilla allows.
func (t *transport) WriteBatch(frames [][]byte) error {
	t.mu.Lock()
	c := t.conn
	t.mu.Unlock()
	if c == nil {
		return websocket.ErrCloseSent
	}
	if err := c.SetWriteDeadline(time.Now().Add(writeWait)); err != nil {
		return err
	}
	for _, f := range frames {
		if err := c.WriteMessage(websocket.TextMessage, f); err != nil {
			return err
		}
	}
	return nil
}

// Close sends a close frame and closes the socket; the read loop then ends
// and unregisters the connection. Only the first call has an effect.
func (t *transport) Close(code int, reason string) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed, t.code, t.reason = true, code, reason
	c := t.conn
	t.mu.Unlock()
	if c != nil {
		closeConn(c, code, reason)
	}
}

func (t *transport) closeCode() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.code
}

func closeConn(c *websocket.Conn, code int, reason string) {
	_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(closeWait))
	_ = c.Close()
}
