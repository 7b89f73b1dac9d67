// Package e2e holds agentwire's end-to-end suites: they start the real
// program through cli.Run on a free port and talk to it over real sockets and
// HTTP, as a client written from the contract alone would.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/testserver"
)

const (
	testSecret = "e2e-secret-0123456789abcdef-0123456789"
	testAPIKey = "e2e-api-key"
)

// server is one running agentwire process (in this test process).
type server struct {
	t      testing.TB
	URL    string // http://127.0.0.1:port
	WSURL  string // ws://127.0.0.1:port/ws
	signer *auth.Signer
	stopFn func() error // stops it as SIGTERM does; nil for a process stopped by other means
}

// startServer runs `agentwire serve` with test defaults plus args (later
// flags win) and stops it when the test ends.
func startServer(t testing.TB, args ...string) *server {
	t.Helper()
	base := []string{"--dev", "--jwt-secret", testSecret, "--api-keys", testAPIKey, "--log-level", "warn"}
	ts := testserver.Start(t, append(base, args...)...)
	return &server{t: t, URL: ts.URL, WSURL: "ws://" + strings.TrimPrefix(ts.URL, "http://") + "/ws",
		signer: auth.NewSigner([]byte(testSecret)), stopFn: ts.Stop}
}

// stop cancels the server as SIGTERM does and waits for it to return.
func (s *server) stop() error {
	if s.stopFn == nil {
		return nil
	}
	return s.stopFn()
}

func (s *server) token(user string) string {
	s.t.Helper()
	tok, _, err := s.signer.Sign(user, time.Hour, "", "")
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// do sends an HTTP request with an optional bearer and JSON body and decodes
// the JSON answer into out (when non-nil).
func (s *server) do(method, path, bearer string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			buf, _ := json.Marshal(b)
			rd = bytes.NewReader(buf)
		}
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			s.t.Fatalf("%s %s: answer %q is not JSON: %v", method, path, data, err)
		}
	}
	return resp.StatusCode
}

// publish appends an event for user through the server API.
func (s *server) publish(user, typ string, data any) (seq uint64, epoch string) {
	s.t.Helper()
	var out struct {
		Seq   uint64 `json:"seq"`
		Epoch string `json:"epoch"`
	}
	if code := s.do("POST", "/api/v1/publish", testAPIKey, map[string]any{"user_id": user, "type": typ, "data": data}, &out); code != 200 {
		s.t.Fatalf("publish: status %d", code)
	}
	return out.Seq, out.Epoch
}

// frame is any server frame, decoded loosely.
type frame struct {
	Type     string          `json:"type"`
	Seq      uint64          `json:"seq"`
	Epoch    string          `json:"epoch"`
	TS       string          `json:"ts"`
	ThreadID string          `json:"thread_id"`
	RunID    string          `json:"run_id"`
	Data     json.RawMessage `json:"data"`
	Ref      string          `json:"ref"`
	Code     string          `json:"code"`
	Message  string          `json:"message"`
	HeadSeq  uint64          `json:"head_seq"`
	Reason   string          `json:"reason"`
	UserID   string          `json:"user_id"`
	ConnID   string          `json:"connection_id"`
	Protocol string          `json:"protocol"`
	Alias    string          `json:"alias"`
	Repl     string          `json:"replacement"`
	MsgID    string          `json:"message_id"`
	HBms     int             `json:"heartbeat_interval_ms"`
	MaxBytes int             `json:"max_message_bytes"`
	raw      []byte
}

// client is a test WebSocket client.
type client struct {
	t    testing.TB
	c    *websocket.Conn
	resp *http.Response
}

type dialOpt func(*websocket.Dialer, http.Header, *string)

func withBearer(tok string) dialOpt {
	return func(_ *websocket.Dialer, h http.Header, _ *string) { h.Set("Authorization", "Bearer "+tok) }
}

func withSubprotocolToken(tok string) dialOpt {
	return func(d *websocket.Dialer, _ http.Header, _ *string) {
		d.Subprotocols = []string{"agentwire.v1", "bearer." + tok}
	}
}

func withQuery(q string) dialOpt {
	return func(_ *websocket.Dialer, _ http.Header, u *string) {
		sep := "?"
		if strings.Contains(*u, "?") {
			sep = "&"
		}
		*u += sep + q
	}
}

func withOrigin(o string) dialOpt {
	return func(_ *websocket.Dialer, h http.Header, _ *string) { h.Set("Origin", o) }
}

// dial connects; it returns the HTTP answer on failure.
func (s *server) dial(opts ...dialOpt) (*client, *http.Response, error) {
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	h := http.Header{}
	u := s.WSURL
	for _, o := range opts {
		o(d, h, &u)
	}
	c, resp, err := d.Dial(u, h)
	if err != nil {
		return nil, resp, err
	}
	return &client{t: s.t, c: c, resp: resp}, resp, nil
}

// connect dials as user and reads connection_established.
func (s *server) connect(user string, opts ...dialOpt) (*client, frame) {
	s.t.Helper()
	c, resp, err := s.dial(append([]dialOpt{withBearer(s.token(user))}, opts...)...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		s.t.Fatalf("dial as %s: %v (status %d)", user, err, status)
	}
	s.t.Cleanup(func() { c.c.Close() })
	f := c.read()
	if f.Type != "connection_established" {
		s.t.Fatalf("first frame is %s, want connection_established", f.raw)
	}
	return c, f
}

func (c *client) send(v any) {
	c.t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		b, _ = json.Marshal(x)
	}
	if err := c.c.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// read returns the next frame or fails the test after 5 s.
func (c *client) read() frame {
	c.t.Helper()
	f, err := c.readWithin(5 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *client) readWithin(d time.Duration) (frame, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	_, b, err := c.c.ReadMessage()
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		return frame{}, fmt.Errorf("frame %q is not JSON: %w", b, err)
	}
	f.raw = b
	return f, nil
}

// readUntil reads frames until one has type typ, returning it.
func (c *client) readUntil(typ string) frame {
	c.t.Helper()
	for {
		f := c.read()
		if f.Type == typ {
			return f
		}
	}
}

// expectClose reads until the server closes and returns the close code.
func (c *client) expectClose(within time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		_ = c.c.SetReadDeadline(deadline)
		_, _, err := c.c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if ok := asCloseError(err, &ce); ok {
			return ce.Code
		}
		c.t.Fatalf("expected a close frame, got %v", err)
		return 0
	}
}

func asCloseError(err error, target **websocket.CloseError) bool {
	ce, ok := err.(*websocket.CloseError)
	if ok {
		*target = ce
	}
	return ok
}

// signRaw signs arbitrary claims with the test secret (HS256).
func signRaw(claims map[string]any) (string, error) {
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims)).SignedString([]byte(testSecret))
}

// hangGuard bounds every progress-based wait: it only stops a test that
// livelocks (progress reported forever, the goal never reached), so it is
// far beyond what any loaded machine needs.
const hangGuard = 3 * time.Minute

// progressDeadline is the deadline of a wait whose length depends on the
// machine's speed (a publish flood, a run of many steps): it expires only
// when nothing moved for idle, or at hangGuard. Safe for concurrent use.
type progressDeadline struct {
	idle time.Duration
	hard time.Time
	last atomic.Int64 // UnixNano of the last progress
}

func newProgressDeadline(idle time.Duration) *progressDeadline {
	p := &progressDeadline{idle: idle, hard: time.Now().Add(hangGuard)}
	p.progress()
	return p
}

// progress records that something moved: the deadline restarts.
func (p *progressDeadline) progress() { p.last.Store(time.Now().UnixNano()) }

// expired reports whether nothing moved for idle (or the hang guard passed).
func (p *progressDeadline) expired() bool {
	now := time.Now()
	return now.After(p.hard) || now.Sub(time.Unix(0, p.last.Load())) > p.idle
}

// next is when the deadline expires if nothing moves before then.
func (p *progressDeadline) next() time.Time {
	t := time.Unix(0, p.last.Load()).Add(p.idle)
	if t.After(p.hard) {
		return p.hard
	}
	return t
}

// waitProgress polls cond every 10 ms until it holds. It gives up when
// mark (a measure of progress, e.g. frames received so far) has not changed
// for idle: a slow machine gets as long as it keeps moving.
func waitProgress(idle time.Duration, mark func() int64, cond func() bool) bool {
	p := newProgressDeadline(idle)
	seen := mark()
	for !cond() {
		if m := mark(); m != seen {
			seen = m
			p.progress()
		}
		if p.expired() {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
