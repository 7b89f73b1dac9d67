package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/testserver"
)

// trickle sends a request announcing a 100000-byte body, then one byte per
// tick, and returns when the server answers or closes the connection, with
// how long that took and how many body bytes it sent. It fails the test if
// the server still holds on after 30 s.
func trickle(t *testing.T, addr, head string, tick time.Duration) (took time.Duration, sent int) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, head+"Content-Length: 100000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		// Any answer or the end of the connection: the server let go.
		_, _ = conn.Read(make([]byte, 1))
	}()
	tk := time.NewTicker(tick)
	defer tk.Stop()
	limit := time.After(30 * time.Second)
	for {
		select {
		case <-ended:
			return time.Since(start), sent
		case <-limit:
			t.Fatalf("%q: the server still waits for the body after 30 s (%d bytes sent)", strings.SplitN(head, "\r\n", 2)[0], sent)
		case <-tk.C:
			if _, err := conn.Write([]byte("{")); err == nil {
				sent++
			}
		}
	}
}

func TestSlowBodyIsCut(t *testing.T) {
	const timeout = time.Second
	srv := testserver.Start(t, "--dev", "--jwt-secret", testSecret, "--api-keys", "k", "--log-level", "warn",
		"--read-timeout", timeout.String(), "--write-timeout", timeout.String())
	addr := strings.TrimPrefix(srv.URL, "http://")
	tok, _, err := auth.NewSigner([]byte(testSecret)).Sign("alice", time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	// A route that reads its body, one that ignores it, an unknown path
	// and the WebSocket path: each lets go after the read timeout, not
	// after 100000 s.
	for _, head := range []string{
		"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n",
		"POST /auth/dev-login HTTP/1.1\r\nHost: x\r\n",
		"POST /api/v1/tickets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + tok + "\r\n",
		"POST /nowhere HTTP/1.1\r\nHost: x\r\n",
		"GET /ws HTTP/1.1\r\nHost: x\r\n",
	} {
		took, sent := trickle(t, addr, head, 100*time.Millisecond)
		if sent >= 100000 || took < timeout/2 {
			t.Errorf("%q: let go after %v and %d bytes", strings.SplitN(head, "\r\n", 2)[0], took, sent)
		}
		t.Logf("%q: cut after %v, %d body bytes", strings.SplitN(head, "\r\n", 2)[0], took.Round(time.Millisecond), sent)
	}
	// Slow headers are cut too.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("half a request head: %v; want the server to close the connection", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// A WebSocket lives past the HTTP read and write timeouts, also when it
// was upgraded on a keep-alive connection that served a request before.
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	const timeout = 500 * time.Millisecond
	srv := testserver.Start(t, "--dev", "--jwt-secret", testSecret, "--log-level", "warn",
		"--read-timeout", timeout.String(), "--write-timeout", timeout.String())
	addr := strings.TrimPrefix(srv.URL, "http://")
	tok, _, err := auth.NewSigner([]byte(testSecret)).Sign("alice", time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	var reused net.Conn
	d := websocket.Dialer{NetDial: func(network, a string) (net.Conn, error) {
		c, err := net.Dial(network, a)
		if err != nil {
			return nil, err
		}
		// A request with a body first, on the same connection: it leaves
		// its deadlines behind.
		body := `{"user_id":"alice"}`
		fmt.Fprintf(c, "POST /auth/dev-login HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("dev-login: %d", resp.StatusCode)
		}
		reused = c
		return c, nil
	}}
	ws, _, err := d.Dial("ws://"+addr+"/ws", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if reused == nil {
		t.Fatal("the WebSocket did not reuse the connection")
	}
	if _, _, err := ws.ReadMessage(); err != nil { // connection_established
		t.Fatal(err)
	}
	// Wait until every deadline set before the upgrade has passed: a slow
	// body on another connection is cut only a read timeout after it began.
	took, _ := trickle(t, addr, "POST /auth/dev-login HTTP/1.1\r\nHost: x\r\n", 50*time.Millisecond)
	if took < timeout {
		t.Fatalf("the slow body was cut after %v, before the timeout", took)
	}
	for i := range 3 {
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		if err := ws.WriteJSON(map[string]string{"type": "ping", "id": fmt.Sprint("p", i)}); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		for {
			var f map[string]any
			if err := ws.ReadJSON(&f); err != nil {
				t.Fatalf("the WebSocket was cut after the HTTP timeouts: %v", err)
			}
			if f["type"] == "pong" {
				break
			}
		}
	}
}
