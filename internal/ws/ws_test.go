package ws

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/leantcp"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/protocol"
)

const testSecret = "ws-test-secret-0123456789abcdef-0123"

// testServer is the /ws endpoint over a hub and a memory stream, on a real
// loopback listener.
type testServer struct {
	t      *testing.T
	srv    *Server
	addr   string
	signer *auth.Signer
}

type nopHandler struct{}

func (nopHandler) UserMessage(context.Context, string, *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	return protocol.AckFrame{}, &protocol.Error{Code: protocol.CodeNotFound, Message: "no"}
}

func (nopHandler) UserInput(context.Context, string, *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	return protocol.AckFrame{}, &protocol.Error{Code: protocol.CodeNotFound, Message: "no"}
}

func (nopHandler) StopAgent(context.Context, string, *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	return protocol.AckFrame{}, &protocol.Error{Code: protocol.CodeNotFound, Message: "no"}
}

func newTestServer(t *testing.T, loops bool, mod func(*Config)) *testServer {
	t.Helper()
	st := memory.New(memory.Options{})
	t.Cleanup(func() { st.Close() })
	v, err := auth.NewVerifier(context.Background(), auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	cfg := Config{
		Hub:       hub.New(hub.Config{Stream: st, MaxConnsPerUser: 100}),
		Verifier:  v,
		Handler:   nopHandler{},
		RateLimit: 10000,
		RateBurst: 10000,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv := New(cfg)
	srv.readLoops = loops
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})
	return &testServer{t: t, srv: srv, addr: hs.Listener.Addr().String(), signer: auth.NewSigner([]byte(testSecret))}
}

func (s *testServer) token(t *testing.T, user string, ttl time.Duration) string {
	tok, _, err := s.signer.Sign(user, ttl, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawClient speaks WebSocket frame by frame over a plain TCP connection.
type rawClient struct {
	t    *testing.T
	nc   net.Conn
	br   *bufio.Reader
	resp *http.Response
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

func handshake(host, user, tok string, extra string) string {
	return "GET /ws HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Version: 13\r\n" +
		"Authorization: Bearer " + tok + "\r\n" + extra + "\r\n"
}

// dial connects and upgrades; behind, if set, is written in the same write as
// the handshake request. It reads connection_established.
func (s *testServer) dial(t *testing.T, user string, extra string, behind []byte) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := append([]byte(handshake(s.addr, user, s.token(t, user, time.Hour), extra)), behind...)
	if _, err := nc.Write(req); err != nil {
		t.Fatal(err)
	}
	c := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.resp = resp
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if typ := c.readJSON()["type"]; typ != "connection_established" {
		t.Fatalf("first frame %v", typ)
	}
	return c
}

// frame builds a client frame: masked unless unmasked is set.
func frame(op ws.OpCode, fin bool, p []byte) []byte {
	return buildFrame(op, fin, 0, true, p)
}

func buildFrame(op ws.OpCode, fin bool, rsv byte, masked bool, p []byte) []byte {
	var buf bytes.Buffer
	h := ws.Header{Fin: fin, Rsv: rsv, OpCode: op, Length: int64(len(p)), Masked: masked}
	q := append([]byte(nil), p...)
	if masked {
		h.Mask = [4]byte{0x11, 0x22, 0x33, 0x44}
		ws.Cipher(q, h.Mask, 0)
	}
	if err := ws.WriteHeader(&buf, h); err != nil {
		panic(err)
	}
	buf.Write(q)
	return buf.Bytes()
}

func (c *rawClient) write(frames ...[]byte) {
	c.t.Helper()
	if _, err := c.nc.Write(bytes.Join(frames, nil)); err != nil {
		c.t.Fatal(err)
	}
}

// next reads the next server frame, checking it is unmasked and final.
func (c *rawClient) next() ws.Frame {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		c.t.Fatalf("read header: %v", err)
	}
	if h.Masked || !h.Fin || h.Rsv != 0 {
		c.t.Fatalf("server frame header %+v", h)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		c.t.Fatal(err)
	}
	return ws.Frame{Header: h, Payload: p}
}

// nextData skips server pings and returns the next other frame.
func (c *rawClient) nextData() ws.Frame {
	c.t.Helper()
	for {
		f := c.next()
		if f.Header.OpCode != ws.OpPing {
			return f
		}
	}
}

func (c *rawClient) readJSON() map[string]any {
	c.t.Helper()
	f := c.nextData()
	if f.Header.OpCode != ws.OpText {
		c.t.Fatalf("want text, got opcode %v payload %q", f.Header.OpCode, f.Payload)
	}
	var m map[string]any
	if err := json.Unmarshal(f.Payload, &m); err != nil {
		c.t.Fatalf("bad json %q: %v", f.Payload, err)
	}
	return m
}

// expectClose reads until a close frame and returns its code, then checks the
// server closes the TCP connection.
func (c *rawClient) expectClose() protocol.CloseCode {
	c.t.Helper()
	f := c.nextData()
	if f.Header.OpCode != ws.OpClose {
		c.t.Fatalf("want close, got opcode %v payload %q", f.Header.OpCode, f.Payload)
	}
	code := protocol.CloseCode(1005) // no status received (RFC 6455 7.1.5)
	if len(f.Payload) >= 2 {
		code = protocol.CloseCode(binary.BigEndian.Uint16(f.Payload))
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.br.ReadByte(); err == nil {
		c.t.Fatalf("bytes after the close frame")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatalf("server did not close the socket after its close frame")
	}
	return code
}

func (c *rawClient) expectPong(ref string) {
	c.t.Helper()
	m := c.readJSON()
	if m["type"] != "pong" || m["ref"] != ref {
		c.t.Fatalf("want pong %q, got %v", ref, m)
	}
}

func pingJSON(id string) []byte { return []byte(`{"type":"ping","id":"` + id + `"}`) }

// both runs f against the epoll path and the portable goroutine path.
func both(t *testing.T, f func(t *testing.T, loops bool)) {
	t.Run("epoll", func(t *testing.T) { t.Parallel(); f(t, false) })
	t.Run("goroutine", func(t *testing.T) { t.Parallel(); f(t, true) })
}

func TestFrames(t *testing.T) {
	both(t, func(t *testing.T, loops bool) {
		s := newTestServer(t, loops, nil)
		tests := []struct {
			name string
			run  func(t *testing.T, c *rawClient)
		}{
			{
				name: "single text frame",
				run: func(t *testing.T, c *rawClient) {
					c.write(frame(ws.OpText, true, pingJSON("a")))
					c.expectPong("a")
				},
			},
			{
				name: "fragmented message",
				run: func(t *testing.T, c *rawClient) {
					m := pingJSON("frag")
					c.write(frame(ws.OpText, false, m[:3]), frame(ws.OpContinuation, false, m[3:10]),
						frame(ws.OpContinuation, false, nil), frame(ws.OpContinuation, true, m[10:]))
					c.expectPong("frag")
				},
			},
			{
				name: "fragments across writes",
				run: func(t *testing.T, c *rawClient) {
					m := pingJSON("slow")
					c.write(frame(ws.OpText, false, m[:5]))
					time.Sleep(20 * time.Millisecond)
					c.write(frame(ws.OpContinuation, true, m[5:]))
					c.expectPong("slow")
				},
			},
			{
				name: "ping between fragments",
				run: func(t *testing.T, c *rawClient) {
					m := pingJSON("mid")
					c.write(frame(ws.OpText, false, m[:4]), frame(ws.OpPing, true, []byte("hb")), frame(ws.OpContinuation, true, m[4:]))
					f := c.next()
					if f.Header.OpCode != ws.OpPong || string(f.Payload) != "hb" {
						t.Fatalf("want pong hb, got %v %q", f.Header.OpCode, f.Payload)
					}
					c.expectPong("mid")
				},
			},
			{
				name: "frame trickled byte by byte",
				run: func(t *testing.T, c *rawClient) {
					b := frame(ws.OpText, true, pingJSON("trickle"))
					for i := range b {
						c.write(b[i : i+1])
						time.Sleep(time.Millisecond)
					}
					c.expectPong("trickle")
				},
			},
			{
				name: "many frames in one write",
				run: func(t *testing.T, c *rawClient) {
					var fs [][]byte
					for i := range 200 {
						fs = append(fs, frame(ws.OpText, true, pingJSON(fmt.Sprint(i))))
					}
					c.write(fs...)
					for i := range 200 {
						c.expectPong(fmt.Sprint(i))
					}
				},
			},
			{
				name: "message of exactly the limit",
				run: func(t *testing.T, c *rawClient) {
					head := `{"type":"ping","id":"max","pad":"`
					pad := strings.Repeat("x", DefaultMaxMessageBytes-len(head)-2)
					m := head + pad + `"}`
					c.write(frame(ws.OpText, false, []byte(m[:40000])), frame(ws.OpContinuation, true, []byte(m[40000:])))
					c.expectPong("max")
				},
			},
			{
				name: "invalid UTF-8 gets bad_json and stays open",
				run: func(t *testing.T, c *rawClient) {
					c.write(frame(ws.OpText, true, []byte("{\"type\":\"ping\",\"id\":\"\xff\xfe\"}")))
					if m := c.readJSON(); m["type"] != "error" || m["code"] != "bad_json" {
						t.Fatalf("got %v", m)
					}
					c.write(frame(ws.OpText, true, pingJSON("after")))
					c.expectPong("after")
				},
			},
			{
				name: "invalid UTF-8 split across fragments",
				run: func(t *testing.T, c *rawClient) {
					m := []byte("{\"type\":\"ping\",\"id\":\"\xe2\x82\"}") // truncated rune
					c.write(frame(ws.OpText, false, m[:20]), frame(ws.OpContinuation, true, m[20:]))
					if m := c.readJSON(); m["code"] != "bad_json" {
						t.Fatalf("got %v", m)
					}
				},
			},
			{
				name: "valid UTF-8 rune split across fragments",
				run: func(t *testing.T, c *rawClient) {
					m := []byte(`{"type":"ping","id":"€uro"}`)
					i := bytes.IndexByte(m, 0xe2) + 1
					c.write(frame(ws.OpText, false, m[:i]), frame(ws.OpContinuation, true, m[i:]))
					c.expectPong("€uro")
				},
			},
			{
				name: "binary gets bad_json",
				run: func(t *testing.T, c *rawClient) {
					c.write(frame(ws.OpBinary, true, []byte("{}")))
					if m := c.readJSON(); m["code"] != "bad_json" {
						t.Fatalf("got %v", m)
					}
					c.write(frame(ws.OpText, true, pingJSON("b")))
					c.expectPong("b")
				},
			},
			{
				name: "ping with a 125-byte payload is echoed",
				run: func(t *testing.T, c *rawClient) {
					p := bytes.Repeat([]byte{0xfe}, 125)
					c.write(frame(ws.OpPing, true, p))
					if f := c.next(); f.Header.OpCode != ws.OpPong || !bytes.Equal(f.Payload, p) {
						t.Fatalf("got %v %d bytes", f.Header.OpCode, len(f.Payload))
					}
				},
			},
			{
				name: "16-bit and 64-bit length encodings",
				run: func(t *testing.T, c *rawClient) {
					for _, n := range []int{126, 127, 65535} {
						head := `{"type":"ping","id":"n","pad":"`
						m := head + strings.Repeat("y", n-len(head)-2) + `"}`
						c.write(frame(ws.OpText, true, []byte(m)))
						c.expectPong("n")
					}
					// A 64-bit length field for a small frame is legal.
					m := pingJSON("long")
					mask := [4]byte{1, 2, 3, 4}
					p := append([]byte(nil), m...)
					ws.Cipher(p, mask, 0)
					hdr := []byte{0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, byte(len(m)), 1, 2, 3, 4}
					c.write(hdr, p)
					c.expectPong("long")
				},
			},
			{
				name: "unsolicited pong is ignored",
				run: func(t *testing.T, c *rawClient) {
					c.write(frame(ws.OpPong, true, []byte("x")), frame(ws.OpText, true, pingJSON("p")))
					c.expectPong("p")
				},
			},
		}
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				c := s.dial(t, fmt.Sprintf("user-%d", i), "", nil)
				tc.run(t, c)
			})
		}
	})
}

func TestFramesThatClose(t *testing.T) {
	both(t, func(t *testing.T, loops bool) {
		s := newTestServer(t, loops, nil)
		big := []byte(`{"type":"ping","pad":"` + strings.Repeat("x", DefaultMaxMessageBytes) + `"}`)
		tests := []struct {
			name   string
			frames [][]byte
			code   protocol.CloseCode
		}{
			{
				name:   "oversized frame",
				frames: [][]byte{frame(ws.OpText, true, big)},
				code:   1009,
			},
			{
				name:   "oversized header only",
				frames: [][]byte{{0x81, 0xff, 0, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4}}, // declares 16 MiB
				code:   1009,
			},
			{
				name:   "oversized over fragments",
				frames: [][]byte{frame(ws.OpText, false, big[:40000]), frame(ws.OpContinuation, true, big[40000:])},
				code:   1009,
			},
			{
				name:   "unmasked client frame",
				frames: [][]byte{buildFrame(ws.OpText, true, 0, false, pingJSON("u"))},
				code:   1002,
			},
			{
				name:   "rsv bit without extension",
				frames: [][]byte{buildFrame(ws.OpText, true, 4, true, pingJSON("r"))},
				code:   1002,
			},
			{
				name:   "reserved opcode",
				frames: [][]byte{frame(ws.OpCode(3), true, nil)},
				code:   1002,
			},
			{
				name:   "continuation without start",
				frames: [][]byte{frame(ws.OpContinuation, true, pingJSON("c"))},
				code:   1002,
			},
			{
				name:   "new message inside a fragmented one",
				frames: [][]byte{frame(ws.OpText, false, []byte("{")), frame(ws.OpText, true, []byte("}"))},
				code:   1002,
			},
			{
				name:   "fragmented control frame",
				frames: [][]byte{frame(ws.OpPing, false, nil)},
				code:   1002,
			},
			{
				name:   "control frame over 125 bytes",
				frames: [][]byte{frame(ws.OpPing, true, bytes.Repeat([]byte("p"), 126))},
				code:   1002,
			},
			{
				name:   "close handshake echoes the code",
				frames: [][]byte{frame(ws.OpClose, true, ws.NewCloseFrameBody(4321, "bye"))},
				code:   4321,
			},
			{
				name:   "close 1000",
				frames: [][]byte{frame(ws.OpClose, true, ws.NewCloseFrameBody(1000, ""))},
				code:   1000,
			},
			{
				name:   "close without code",
				frames: [][]byte{frame(ws.OpClose, true, nil)},
				code:   1005, // empty close frame back
			},
			{
				name:   "close with a one-byte payload",
				frames: [][]byte{frame(ws.OpClose, true, []byte{3})},
				code:   1002,
			},
			{
				name:   "close with a reserved code",
				frames: [][]byte{frame(ws.OpClose, true, ws.NewCloseFrameBody(1005, ""))},
				code:   1002,
			},
			{
				name:   "close with a bad UTF-8 reason",
				frames: [][]byte{frame(ws.OpClose, true, append([]byte{3, 232}, 0xff))},
				code:   1002,
			},
			{
				name:   "close between fragments",
				frames: [][]byte{frame(ws.OpText, false, []byte("{")), frame(ws.OpClose, true, ws.NewCloseFrameBody(1001, ""))},
				code:   1001,
			},
		}
		for i, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				c := s.dial(t, fmt.Sprintf("user-%d", i), "", nil)
				closes := s.srv.cfg.Metrics.Closes.WithLabelValues(strconv.Itoa(int(tc.code)))
				before := counterValue(closes)
				c.write(tc.frames...)
				if code := c.expectClose(); code != tc.code {
					t.Fatalf("close code %d, want %d", code, tc.code)
				}
				// Closes the server decides are counted (before the close frame
				// is written); echoes of the client's close are not.
				if server := tc.code == 1002 || tc.code == 1009; server {
					if got := counterValue(closes) - before; got != 1 {
						t.Errorf("agentwire_closes_total{code=%q} rose by %v, want 1", strconv.Itoa(int(tc.code)), got)
					}
				}
				waitCount(t, s.srv, fmt.Sprintf("user-%d", i), 0)
			})
		}
	})
}

// waitCount waits until user has n connections on the hub.
func waitCount(t *testing.T, s *Server, user string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.cfg.Hub.Count(user) != n {
		if time.Now().After(deadline) {
			t.Fatalf("user %s has %d connections, want %d", user, s.cfg.Hub.Count(user), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFramesBehindHandshake(t *testing.T) {
	both(t, func(t *testing.T, loops bool) {
		s := newTestServer(t, loops, nil)
		m := pingJSON("early")
		c := s.dial(t, "early", "", frame(ws.OpText, false, m[:6]))
		c.write(frame(ws.OpContinuation, true, m[6:]))
		c.expectPong("early")
		c2 := s.dial(t, "early2", "", bytes.Join([][]byte{frame(ws.OpText, true, pingJSON("1")), frame(ws.OpText, true, pingJSON("2"))}, nil))
		c2.expectPong("1")
		c2.expectPong("2")
	})
}

func TestSubprotocol(t *testing.T) {
	s := newTestServer(t, false, nil)
	c := s.dial(t, "sub", "Sec-WebSocket-Protocol: agentwire.v1, bearer.whatever\r\n", nil)
	if got := c.resp.Header.Values("Sec-Websocket-Protocol"); len(got) != 1 || got[0] != "agentwire.v1" {
		t.Fatalf("subprotocol answer %q", got)
	}
	c2 := s.dial(t, "sub2", "", nil)
	if got := c2.resp.Header.Get("Sec-Websocket-Protocol"); got != "" {
		t.Fatalf("subprotocol answered without an offer: %q", got)
	}
}

func TestBadHandshakeIsJSON(t *testing.T) {
	s := newTestServer(t, false, nil)
	req, _ := http.NewRequest("GET", "http://"+s.addr+"/ws", nil)
	req.Header.Set("Authorization", "Bearer "+s.token(t, "plain", time.Hour))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 400 || body.Error.Code != "bad_request" {
		t.Fatalf("status %d, body %+v, err %v", resp.StatusCode, body, err)
	}
	waitCount(t, s.srv, "plain", 0)
}

// newPipeServer is the /ws endpoint over a hub and a memory stream, without
// a listener, for tests in a synctest bubble: pipeDial connects to it over
// net.Pipe (real sockets do not work in a bubble), read by the portable
// goroutine path. Call it inside the bubble.
func newPipeServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	st := memory.New(memory.Options{})
	v, err := auth.NewVerifier(context.Background(), auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Hub:       hub.New(hub.Config{Stream: st, MaxConnsPerUser: 100}),
		Verifier:  v,
		Handler:   nopHandler{},
		RateLimit: 10000,
		RateBurst: 10000,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv := New(cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		v.Close()
		st.Close()
	})
	return &testServer{t: t, srv: srv, signer: auth.NewSigner([]byte(testSecret))}
}

// pipeResponse is the upgrade's ResponseWriter over one end of a net.Pipe.
type pipeResponse struct {
	h  http.Header
	nc net.Conn
}

func (p *pipeResponse) Header() http.Header { return p.h }

func (p *pipeResponse) Write(b []byte) (int, error) {
	return 0, errors.New("pipeResponse: write before the upgrade")
}

func (p *pipeResponse) WriteHeader(int) {}

func (p *pipeResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return p.nc, bufio.NewReadWriter(bufio.NewReader(p.nc), bufio.NewWriter(p.nc)), nil
}

// pipeDial upgrades a connection of user (token valid for ttl) through
// ServeHTTP over net.Pipe and reads connection_established.
func (s *testServer) pipeDial(t *testing.T, user string, ttl time.Duration) *rawClient {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { client.Close() })
	r := httptest.NewRequest(http.MethodGet, "/ws", nil)
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Sec-WebSocket-Key", testKey)
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Authorization", "Bearer "+s.token(t, user, ttl))
	go s.srv.ServeHTTP(&pipeResponse{h: http.Header{}, nc: server}, r)
	c := &rawClient{t: t, nc: client, br: bufio.NewReader(client)}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", resp.StatusCode)
	}
	c.resp = resp
	if typ := c.readJSON()["type"]; typ != "connection_established" {
		t.Fatalf("first frame %v", typ)
	}
	return c
}

// TestHeartbeat runs in a synctest bubble: the wheel ticks on the bubble's
// clock, so the count of pings and the moment of the 4000 are exact.
func TestHeartbeat(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const interval, timeout = 50 * time.Millisecond, 50 * time.Millisecond
		tick := wheelTick(interval, timeout)
		s := newPipeServer(t, func(c *Config) {
			c.PingInterval = interval
			c.PongTimeout = timeout
		})
		// Answering pings keeps the connection.
		c := s.pipeDial(t, "alive", time.Hour)
		start := time.Now()
		pings := 0
		for time.Since(start) < 400*time.Millisecond {
			f := c.next()
			if f.Header.OpCode != ws.OpPing {
				t.Fatalf("unexpected frame %v %q", f.Header.OpCode, f.Payload)
			}
			pings++
			c.write(frame(ws.OpPong, true, f.Payload))
		}
		if pings < 7 {
			t.Fatalf("%d pings in 400 ms at a 50 ms interval", pings)
		}
		c.write(frame(ws.OpText, true, pingJSON("still")))
		c.expectPong("still")

		// Not answering closes with 4000, one ping interval and one pong
		// timeout after the connect, within a tick or two of the wheel.
		c2 := s.pipeDial(t, "sleepy", time.Hour)
		start = time.Now()
		if f := c2.next(); f.Header.OpCode != ws.OpPing {
			t.Fatalf("want a ping, got %v", f.Header.OpCode)
		}
		if code := c2.expectClose(); code != protocol.CloseNoPong {
			t.Fatalf("close %d, want 4000", code)
		}
		if d := time.Since(start); d < interval+timeout || d > interval+timeout+2*tick {
			t.Fatalf("4000 after %v, want %v plus at most two ticks of %v", d, interval+timeout, tick)
		}
	})
}

// TestHeartbeatEpoll: a pong read by the epoll path keeps the connection,
// silence closes it with 4000 (real sockets: TestHeartbeat has the timing).
func TestHeartbeatEpoll(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, false, func(c *Config) {
		c.PingInterval = 50 * time.Millisecond
		c.PongTimeout = 50 * time.Millisecond
	})
	c := s.dial(t, "alive", "", nil)
	// Three pings answered: without the pongs read, the second ping
	// would have been a 4000 instead.
	for range 3 {
		f := c.next()
		if f.Header.OpCode != ws.OpPing {
			t.Fatalf("unexpected frame %v %q", f.Header.OpCode, f.Payload)
		}
		c.write(frame(ws.OpPong, true, f.Payload))
	}
	c.write(frame(ws.OpText, true, pingJSON("still")))
	c.expectPong("still")
	c2 := s.dial(t, "sleepy", "", nil)
	if code := c2.expectClose(); code != protocol.CloseNoPong {
		t.Fatalf("close %d, want 4000", code)
	}
}

// TestTokenExpiry runs in a synctest bubble: the close comes at the token's
// exp on the bubble's clock.
func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := newPipeServer(t, nil)
		_, exp, err := s.signer.Sign("brief", 1200*time.Millisecond, "", "")
		if err != nil {
			t.Fatal(err)
		}
		c := s.pipeDial(t, "brief", 1200*time.Millisecond)
		if code := c.expectClose(); code != protocol.CloseTokenExpired {
			t.Fatalf("close %d, want 4001", code)
		}
		tick := wheelTick(DefaultPingInterval, DefaultPongTimeout)
		if now := time.Now(); now.Before(exp) || now.After(exp.Add(2*tick)) {
			t.Fatalf("4001 at %v, token expires at %v", now, exp)
		}
	})
}

func TestShutdown(t *testing.T) {
	both(t, func(t *testing.T, loops bool) {
		s := newTestServer(t, loops, nil)
		var cs []*rawClient
		for i := range 20 {
			cs = append(cs, s.dial(t, fmt.Sprint("u", i), "", nil))
		}
		// One with a frame half sent, one with a message half sent: Shutdown
		// must not wait for them.
		cs[0].write(frame(ws.OpText, true, pingJSON("half"))[:7])
		cs[1].write(frame(ws.OpText, false, []byte("{")))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- s.srv.Shutdown(ctx) }()
		for _, c := range cs {
			if code := c.expectClose(); code != protocol.CloseGoingAway {
				t.Fatalf("close %d, want 1001", code)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestWriteBatch checks the batch bytes: headers as ws.WriteHeader writes
// them, frames in order, with a control frame from another goroutine never
// inside a data frame.
func TestWriteBatch(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		var want bytes.Buffer
		if err := ws.WriteHeader(&want, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(n)}); err != nil {
			t.Fatal(err)
		}
		if got := appendHeader(nil, ws.OpText, n); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("header of %d: %x, want %x", n, got, want.Bytes())
		}
	}

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c, frames := writerConn(a)
	errc := make(chan error, 2)
	go func() {
		for range 3 {
			if err := c.WriteBatch(frames); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	go func() {
		for range 50 {
			_ = c.out.control(c.nc, ws.OpPing, []byte("x"), &c.life.closed)
		}
		errc <- nil
	}()
	br := bufio.NewReader(b)
	data, pings := 0, 0
	for data < 3*len(frames) || pings < 50 {
		_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
		h, err := ws.ReadHeader(br)
		if err != nil {
			t.Fatal(err)
		}
		if h.Length > 1<<20 {
			t.Fatalf("frame of %d bytes", h.Length)
		}
		f := ws.Frame{Header: h, Payload: make([]byte, h.Length)}
		if _, err := io.ReadFull(br, f.Payload); err != nil {
			t.Fatal(err)
		}
		switch f.Header.OpCode {
		case ws.OpPing:
			pings++
		case ws.OpText:
			if want := frames[data%len(frames)]; !bytes.Equal(f.Payload, want) {
				t.Fatalf("frame %d: %d bytes, want %d", data, len(f.Payload), len(want))
			}
			data++
		default:
			t.Fatalf("opcode %v", f.Header.OpCode)
		}
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

func TestWheel(t *testing.T) {
	if got := wheelTick(25*time.Second, 10*time.Second); got != 250*time.Millisecond {
		t.Fatalf("tick %v", got)
	}
	if got := wheelTick(200*time.Millisecond, 200*time.Millisecond); got != 25*time.Millisecond {
		t.Fatalf("tick %v", got)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// hungHandler stands for a store that never answers: it returns only when
// the frame's context ends, reporting whether that context had a deadline.
type hungHandler struct {
	nopHandler
	deadline chan bool
}

func (h hungHandler) UserMessage(ctx context.Context, _ string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	_, ok := ctx.Deadline()
	h.deadline <- ok
	<-ctx.Done()
	return protocol.AckFrame{}, &protocol.Error{Code: protocol.CodeInternal, Message: "store unavailable, retry", Ref: f.ID}
}

// TestHungStoreCallIsBounded: a client frame whose store call hangs gets its
// answer after OpTimeout, and the connection's reader is free again.
func TestHungStoreCallIsBounded(t *testing.T) {
	both(t, func(t *testing.T, loops bool) {
		h := hungHandler{deadline: make(chan bool, 1)}
		s := newTestServer(t, loops, func(c *Config) {
			c.Handler = h
			c.OpTimeout = 200 * time.Millisecond
		})
		c := s.dial(t, "hung", "", nil)
		c.write(frame(ws.OpText, true, []byte(`{"type":"user_message","id":"m1","content":"hi"}`)))
		select {
		case ok := <-h.deadline:
			if !ok {
				t.Fatal("the frame's context has no deadline")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the frame never reached the handler")
		}
		if m := c.readJSON(); m["type"] != "error" || m["code"] != "internal_error" || m["ref"] != "m1" {
			t.Fatalf("answer %v", m)
		}
		c.write(frame(ws.OpText, true, pingJSON("after")))
		c.expectPong("after")
	})
}

// writeCounter is a net.Conn that records its writes.
type writeCounter struct {
	net.Conn
	writes [][]byte
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (w *writeCounter) SetWriteDeadline(time.Time) error { return nil }

// TestWriteBatchLone checks that a lone frame of at most smallFrame bytes
// goes out in one write, header and payload together (no writev: the socket
// keeps no iovecs for it), and a larger one or several frames as before.
func TestWriteBatchLone(t *testing.T) {
	srv := &Server{wheel: newWheel(time.Second)}
	srv.batchBufs.New = newBatchBuf
	for _, n := range []int{0, 1, 125, 126, smallFrame, smallFrame + 1, 70000} {
		wc := &writeCounter{}
		c := &conn{session: session{srv: srv}, nc: wc}
		f := bytes.Repeat([]byte{'x'}, n)
		if err := c.WriteBatch([][]byte{f}); err != nil {
			t.Fatal(err)
		}
		want := append(appendHeader(nil, ws.OpText, n), f...)
		if got := bytes.Join(wc.writes, nil); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: wrote %d bytes, want %d", n, len(got), len(want))
		}
		if wantWrites := 1 + btoi(n > smallFrame); len(wc.writes) != wantWrites {
			t.Fatalf("%d bytes: %d writes, want %d", n, len(wc.writes), wantWrites)
		}
	}
	wc := &writeCounter{}
	c := &conn{session: session{srv: srv}, nc: wc}
	if err := c.WriteBatch([][]byte{[]byte("a"), []byte("bc")}); err != nil {
		t.Fatal(err)
	}
	if got, want := bytes.Join(wc.writes, nil), []byte("\x81\x01a\x81\x02bc"); !bytes.Equal(got, want) {
		t.Fatalf("two frames: %q, want %q", got, want)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestWriteBatchLean writes batches over a connection of the app's lean
// listener, which writes net.Buffers with its own writev: the bytes are
// those of TestWriteBatch.
func TestWriteBatchLean(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = leantcp.Wrap(ln)
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, ok := nc.(buffersWriter); !ok {
		t.Fatalf("a lean connection (%T) does not write buffers", nc)
	}
	c, frames := writerConn(nc)
	batches := [][][]byte{frames, {[]byte("lone")}, frames[:2]}
	errc := make(chan error, 1)
	go func() {
		for _, b := range batches {
			if err := c.WriteBatch(b); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	br := bufio.NewReader(cc)
	for _, b := range batches {
		for i, want := range b {
			_ = cc.SetReadDeadline(time.Now().Add(5 * time.Second))
			h, err := ws.ReadHeader(br)
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(br, p); err != nil {
				t.Fatal(err)
			}
			if h.OpCode != ws.OpText || !h.Fin || !bytes.Equal(p, want) {
				t.Fatalf("frame %d: %v, %d bytes, want %d", i, h.OpCode, len(p), len(want))
			}
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// writerConn is a conn writing to nc with a server's batch buffers, and 300
// frames of 0 to 70,000 bytes to write through it.
func writerConn(nc net.Conn) (*conn, [][]byte) {
	srv := &Server{wheel: newWheel(time.Second)}
	srv.batchBufs.New = newBatchBuf
	var frames [][]byte
	for i := range 300 {
		frames = append(frames, bytes.Repeat([]byte{byte('a' + i%26)}, i*97%70000))
	}
	return &conn{session: session{srv: srv}, nc: nc}, frames
}

// deadlineConn records the write deadlines set on it and, at each write,
// how long the deadline in force leaves.
type deadlineConn struct {
	net.Conn
	sets int
	dl   time.Time
	left []time.Duration
}

func (d *deadlineConn) SetWriteDeadline(t time.Time) error {
	d.sets++
	d.dl = t
	return d.Conn.SetWriteDeadline(t)
}

func (d *deadlineConn) Write(p []byte) (int, error) {
	d.left = append(d.left, time.Until(d.dl))
	return d.Conn.Write(p)
}

// TestBatchDeadlineReuse: a batch reuses the write deadline on the socket
// while at least refreshWait of it is left, sets a fresh writeWait one
// otherwise, and after a ping (which sets its own, short one) always.
func TestBatchDeadlineReuse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		go func() { _, _ = io.Copy(io.Discard, b) }()
		dc := &deadlineConn{Conn: a}
		c, _ := writerConn(dc)
		frame := [][]byte{[]byte("event")}
		step := func(name string, wait time.Duration, write func() error, sets int, left time.Duration) {
			t.Helper()
			time.Sleep(wait)
			if err := write(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if dc.sets != sets {
				t.Fatalf("%s: %d deadlines set, want %d", name, dc.sets, sets)
			}
			if got := dc.left[len(dc.left)-1]; got != left {
				t.Fatalf("%s: the write had %v left, want %v", name, got, left)
			}
		}
		batch := func() error { return c.WriteBatch(frame) }
		ping := func() error { return c.out.control(c.nc, ws.OpPing, nil, &c.life.closed) }
		step("first batch", 0, batch, 1, writeWait)
		step("batch 4s later", 4*time.Second, batch, 1, writeWait-4*time.Second)
		step("batch 5s later", time.Second, batch, 1, refreshWait)
		step("batch 5.5s later", 500*time.Millisecond, batch, 2, writeWait)
		step("ping", time.Second, ping, 3, closeWait)
		step("batch after the ping", 0, batch, 4, writeWait)
		step("batch 100ms later", 100*time.Millisecond, batch, 4, writeWait-100*time.Millisecond)
		for _, l := range dc.left {
			if l < closeWait {
				t.Fatalf("a write had %v left", l)
			}
		}
	})
}
