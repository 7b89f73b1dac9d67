package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Helpers for the load suites (isolation, loss, slow consumer, tickets, leak).
// Unlike the harness's methods they never call t.Fatal, so they can be used
// from any goroutine: they return errors instead.

// apiClient publishes through POST /api/v1/publish over keep-alive
// connections, so thousands of publishes do not use thousands of ports.
type apiClient struct {
	base string
	tr   *http.Transport
	hc   *http.Client
}

func newAPIClient(t testing.TB, s *server) *apiClient {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
	}
	a := &apiClient{base: s.URL, tr: tr, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
	t.Cleanup(tr.CloseIdleConnections)
	return a
}

// publish appends an event of type typ with data for user.
func (a *apiClient) publish(user, typ string, data any) (seq uint64, epoch string, err error) {
	body, err := json.Marshal(map[string]any{"user_id": user, "type": typ, "data": data})
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequest("POST", a.base+"/api/v1/publish", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return 0, "", fmt.Errorf("publish for %s: status %d: %s", user, resp.StatusCode, b)
	}
	var out struct {
		Seq   uint64 `json:"seq"`
		Epoch string `json:"epoch"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, "", fmt.Errorf("publish answer %q: %w", b, err)
	}
	return out.Seq, out.Epoch, nil
}

// get returns the body of GET path.
func (a *apiClient) get(path string) (string, error) {
	resp, err := a.hc.Get(a.base + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// metric returns the sum of the samples of the Prometheus metric name (any
// labels) in a /metrics body, and whether there was one.
func metric(body, name string) (float64, bool) {
	var sum float64
	found := false
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue // a longer name with the same prefix
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return sum, found
}

// wsDialer returns a dialer; when rcvbuf > 0 the client's TCP receive buffer
// is set to it before the handshake, so the kernel fills sooner.
func wsDialer(rcvbuf int) *websocket.Dialer {
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	if rcvbuf > 0 {
		nd := &net.Dialer{Timeout: 5 * time.Second}
		d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(rcvbuf)
			}
			return c, nil
		}
	}
	return d
}

// errStatus is a handshake refused with an HTTP status.
type errStatus struct {
	code int
	body string
}

func (e *errStatus) Error() string { return fmt.Sprintf("handshake refused: %d %s", e.code, e.body) }

// dialWS connects with token (Authorization: Bearer) and optional raw query,
// reads connection_established and returns it. On a refused handshake the
// error is an *errStatus.
func dialWS(d *websocket.Dialer, s *server, token, query string) (*websocket.Conn, frame, error) {
	if d == nil {
		d = wsDialer(0)
	}
	u := s.WSURL
	if query != "" {
		u += "?" + query
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	c, resp, err := d.Dial(u, h)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			return nil, frame{}, &errStatus{code: resp.StatusCode, body: string(b)}
		}
		return nil, frame{}, err
	}
	f, err := readFrame(c, 5*time.Second)
	if err != nil {
		c.Close()
		return nil, frame{}, fmt.Errorf("reading connection_established: %w", err)
	}
	if f.Type != "connection_established" {
		c.Close()
		return nil, frame{}, fmt.Errorf("first frame %s, want connection_established", f.raw)
	}
	// No deadline left behind: a caller that reads without one (the
	// isolation readers) got i/o timeouts 5 s after connecting on a loaded
	// machine.
	_ = c.SetReadDeadline(time.Time{})
	return c, f, nil
}

// readFrame reads one frame within d (no deadline when d is 0).
func readFrame(c *websocket.Conn, d time.Duration) (frame, error) {
	var dl time.Time
	if d > 0 {
		dl = time.Now().Add(d)
	}
	_ = c.SetReadDeadline(dl)
	_, b, err := c.ReadMessage()
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

// closeCode is the close code in err, or 0 when err is not a close frame.
func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}
