package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agentwire/agentwire/internal/loadgen"
	"github.com/agentwire/agentwire/protocol"
)

// The bare and epoll relays answer the publishes the benchmark sends, on one
// keep-alive connection, and deliver each to every socket of its user and
// no other, framed the way the readers parse; a wrong key is refused with
// the contract's error body and delivers nothing.
func TestBareRelay(t *testing.T) {
	for _, s := range []struct {
		name  string
		serve func(net.Listener) error
	}{{"bare", serveBare}, {"epoll", serveEpoll}} {
		t.Run(s.name, func(t *testing.T) { testRelay(t, s.serve) })
	}
}

// startRelay serves a relay on a loopback port until the test ends, and
// returns its address.
func startRelay(t *testing.T, serve func(net.Listener) error) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serve(ln)
	return ln.Addr().String()
}

// dialRelay opens a relay's WebSocket for user, closed when the test ends,
// and reads its connection_established.
func dialRelay(t *testing.T, addr, user string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?user="+user, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, msg, err := c.ReadMessage(); err != nil || !bytes.Contains(msg, []byte("connection_established")) {
		t.Fatalf("first frame %q, %v", msg, err)
	}
	return c
}

func testRelay(t *testing.T, serve func(net.Listener) error) {
	addr := startRelay(t, serve)
	a, b1, b2 := dialRelay(t, addr, "user-a"), dialRelay(t, addr, "user-b"), dialRelay(t, addr, "user-b")

	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	publish := func(key, user string, tick int64) (int, []byte) {
		req, err := http.NewRequest("POST", "http://"+addr+"/api/v1/publish",
			bytes.NewReader(loadgen.AppendPublish(nil, user, "bench.tick", tick, 0, "xx")))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		return resp.StatusCode, body.Bytes()
	}

	if code, body := publish("wrong", "user-a", 1); code != http.StatusUnauthorized || !bytes.Contains(body, []byte(protocol.CodeUnauthorized)) {
		t.Errorf("wrong key: %d %s", code, body)
	}
	// user-b's publish first: user-a's socket must then see its own event
	// as its first, proving it got nothing of user-b's.
	for i, p := range []struct {
		user string
		tick int64
	}{{"user-b", 20}, {"user-a", 10}} {
		code, body := publish(apiKey, p.user, p.tick)
		var r protocol.PublishResponse
		if err := json.Unmarshal(body, &r); code != http.StatusOK || err != nil || r.Seq != uint64(i+1) {
			t.Fatalf("publish %d: %d %s", i, code, body)
		}
	}
	for _, c := range []struct {
		conn *websocket.Conn
		tick int64
	}{{a, 10}, {b1, 20}, {b2, 20}} {
		_, msg, err := c.conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if sent, _, ok := loadgen.ParseTick(msg); !ok || sent != c.tick {
			t.Errorf("frame %s: want tick %d", msg, c.tick)
		}
	}
}
