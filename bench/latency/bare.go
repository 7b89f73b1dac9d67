package main

// The bare relay: the relay baseline without net/http or gorilla. One
// goroutine per connection reads keep-alive HTTP/1.1 requests with a bufio
// reader and answers with one write; WebSocket upgrades and frames go through
// gobwas/ws on the raw connection. It makes the same syscalls per publish as
// the relay (read the request, write each delivery, write the response), so
// relay − bare is what the HTTP and WebSocket libraries cost, and bare itself
// is the floor of this design on this box: mostly the kernel's loopback TCP
// work, which a server cannot code away.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/agentwire/agentwire/protocol"
)

const bareMaxBody = 1 << 20

type bareConn struct {
	mu  sync.Mutex
	c   net.Conn
	buf bytes.Buffer // the frame being written: header and payload in one write
}

// writeText writes one unmasked text frame in one write, as the relay's
// gorilla connection does.
func (bc *bareConn) writeText(p []byte) error {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	bc.buf.Reset()
	if err := ws.WriteHeader(&bc.buf, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(p))}); err != nil {
		return err
	}
	bc.buf.Write(p)
	_ = bc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := bc.c.Write(bc.buf.Bytes())
	return err
}

type bare struct {
	mu    sync.RWMutex
	users map[string][]*bareConn
	seq   atomic.Uint64
}

func runBare(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	return serveBare(ln)
}

// serveBare serves the bare relay on ln until it is closed.
func serveBare(ln net.Listener) error {
	b := &bare{users: map[string][]*bareConn{}}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go b.serve(c)
	}
}

// bufConn reads through the connection's bufio.Reader and writes straight to
// it, for gobwas/ws, which reads the upgrade request itself.
type bufConn struct {
	*bufio.Reader
	net.Conn
}

func (c bufConn) Read(p []byte) (int, error) { return c.Reader.Read(p) }

func (b *bare) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 4096)
	head, err := br.Peek(4)
	if err != nil {
		return
	}
	if string(head) == "GET " {
		b.ws(bufConn{br, c})
		return
	}
	b.publishes(c, br)
}

// upgradeUser makes the WebSocket handshake on c and returns the user the
// query names (the relays take it from there, with no token).
func upgradeUser(c bufConn) (string, error) {
	var user string
	u := ws.Upgrader{OnRequest: func(uri []byte) error {
		if _, v, ok := bytes.Cut(uri, []byte("user=")); ok {
			user = string(v)
		}
		return nil
	}}
	_, err := u.Upgrade(c)
	return user, err
}

// readUntilClosed reads and drops the client's frames until the connection
// closes or fails.
func readUntilClosed(c bufConn) {
	for {
		if _, _, err := wsutil.ReadClientData(c); err != nil {
			return
		}
	}
}

func (b *bare) ws(c bufConn) {
	user, err := upgradeUser(c)
	if err != nil {
		return
	}
	bc := &bareConn{c: c.Conn}
	if err := bc.writeText([]byte(`{"type":"connection_established"}`)); err != nil {
		return
	}
	b.mu.Lock()
	b.users[user] = append(b.users[user], bc)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.users[user] = without(b.users[user], bc)
		b.mu.Unlock()
	}()
	readUntilClosed(c)
}

// without returns s without its first x, in a new array when x is there:
// a publish may still be ranging over the old one.
func without[T comparable](s []T, x T) []T {
	for i, y := range s {
		if y == x {
			return append(s[:i:i], s[i+1:]...)
		}
	}
	return s
}

// publishes answers POST /api/v1/publish requests on one keep-alive
// connection until it closes or sends something this loop does not parse.
func (b *bare) publishes(c net.Conn, br *bufio.Reader) {
	body := make([]byte, 0, 1024)
	out := make([]byte, 0, 512)
	for {
		n, authorized, err := readRequestHead(br)
		if err != nil {
			return
		}
		body = body[:n]
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		status, resp := b.publish(authorized, body)
		out = appendAnswer(out[:0], status, resp)
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// appendAnswer appends a keep-alive HTTP/1.1 answer with status (the status
// line's tail) and the JSON body.
func appendAnswer(dst []byte, status string, body []byte) []byte {
	dst = fmt.Appendf(dst, "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", status, len(body))
	return append(dst, body...)
}

// readRequestHead reads a request line and headers, and returns the body's
// length and whether the request carries the benchmark's API key.
func readRequestHead(br *bufio.Reader) (n int, authorized bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	if !bytes.HasPrefix(line, []byte("POST /api/v1/publish ")) {
		return 0, false, errors.New("not a publish")
	}
	n = -1
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		if err := headerField(h, &n, &authorized); err != nil {
			return 0, false, err
		}
	}
	if n < 0 || n > bareMaxBody {
		return 0, false, fmt.Errorf("content length %d", n)
	}
	return n, authorized, nil
}

// headerField reads the one header line h (no line end) into the body's
// length n and whether the request carries the benchmark's API key; other
// fields are ignored.
func headerField(h []byte, n *int, authorized *bool) error {
	k, v, _ := bytes.Cut(h, []byte(":"))
	v = bytes.TrimSpace(v)
	switch {
	case bytes.EqualFold(k, []byte("Content-Length")):
		l, err := strconv.Atoi(string(v))
		if err != nil {
			return err
		}
		*n = l
	case bytes.EqualFold(k, []byte("Authorization")):
		*authorized = string(v) == "Bearer "+apiKey
	}
	return nil
}

// publish does what the relay's handler does, and returns the status line's
// tail and the JSON body to answer.
func (b *bare) publish(authorized bool, body []byte) (string, []byte) {
	return relayPublish(authorized, body, b.seq.Add, "bare", func(user string, frame []byte) {
		b.mu.RLock()
		conns := b.users[user]
		b.mu.RUnlock()
		for _, bc := range conns {
			_ = bc.writeText(frame)
		}
	})
}

// relayPublish is the relay's handler without its transport: it checks the
// key, decodes the publish, numbers it with next(1), encodes the frame once
// and hands it to deliver with its user, and returns the status line's tail
// and the JSON body to answer.
func relayPublish(authorized bool, body []byte, next func(uint64) uint64, epoch string, deliver func(user string, frame []byte)) (string, []byte) {
	if !authorized {
		resp, _ := json.Marshal(protocol.ErrorBody{Error: protocol.ErrorDetail{Code: protocol.CodeUnauthorized, Message: "bad key"}})
		return "401 Unauthorized", resp
	}
	var req protocol.PublishRequest
	if err := json.Unmarshal(body, &req); err != nil || req.UserID == "" {
		resp, _ := json.Marshal(protocol.ErrorBody{Error: protocol.ErrorDetail{Code: protocol.CodeInvalidRequest, Message: "bad body"}})
		return "400 Bad Request", resp
	}
	seq := next(1)
	deliver(req.UserID, protocol.EncodeEvent(protocol.Event{Type: req.Type, Seq: seq, Epoch: epoch, TS: time.Now(),
		ThreadID: req.ThreadID, RunID: req.RunID, Data: req.Data}))
	resp, _ := json.Marshal(protocol.PublishResponse{Seq: seq, Epoch: epoch})
	return "200 OK", resp
}
