// Package browsertest drives the chat page in a headless Chromium (chromedp)
// against the real program, started through cli.Run on a free port. The
// browser reaches the server through a WebSocket-aware TCP proxy that can
// drop every socket with a close code at a frame boundary, as a failing
// server would, without any test hook in the server.
//
// Chromium is /usr/bin/chromium (Debian's `chromium` package) or
// $AGENTWIRE_CHROMIUM. Without it the tests skip loudly, unless CI=true:
// then they fail. Screenshots go to $AGENTWIRE_ARTIFACTS (default: a
// temporary directory of the test).
package browsertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/agentwire/agentwire/internal/testserver"
)

// testTimeout bounds each browser test.
const testTimeout = 60 * time.Second

// ---------------------------------------------------------------- server

type server struct {
	URL string
}

// startServer runs `agentwire serve --dev` on a free port until the test ends.
func startServer(t *testing.T) *server {
	t.Helper()
	return &server{URL: testserver.Start(t, "--dev", "--log-level", "warn").URL}
}

// devToken logs user in through POST /auth/dev-login.
func (s *server) devToken(t *testing.T, user string) string {
	t.Helper()
	resp, err := http.Post(s.URL+"/auth/dev-login", "application/json", strings.NewReader(`{"user_id":"`+user+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Token == "" {
		t.Fatalf("dev-login: status %d, %v", resp.StatusCode, err)
	}
	return out.Token
}

// event is a stream event as GET /api/v1/events returns it.
type event struct {
	Type  string          `json:"type"`
	Seq   uint64          `json:"seq"`
	RunID string          `json:"run_id"`
	Data  json.RawMessage `json:"data"`
}

// events returns every retained event of the token's user.
func (s *server) events(t *testing.T, token string) []event {
	t.Helper()
	var out struct{ Events []event }
	s.getJSON(t, token, "/api/v1/events?since=0&limit=1000", &out)
	return out.Events
}

// publish appends an event of type typ to user's stream through POST
// /api/v1/publish (into run runID when it is set), failing the test unless
// it is accepted.
func (s *server) publish(t *testing.T, apiKey, user, typ, runID string, data map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"user_id": user, "type": typ, "run_id": runID, "data": data})
	req, _ := http.NewRequest("POST", s.URL+"/api/v1/publish", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("publish %s: %d %s", typ, resp.StatusCode, msg)
	}
}

// getJSON GETs path as the token's user and decodes the answer into v.
func (s *server) getJSON(t *testing.T, token, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", s.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// ---------------------------------------------------------------- proxy

// proxy forwards TCP connections to a server. On a connection the server
// upgraded to WebSocket it forwards server frames whole, so drop can put a
// close frame between two frames and cut both sides: the browser sees the
// server close with that code, the server sees the peer vanish.
type proxy struct {
	URL    string
	target string
	ln     net.Listener

	mu    sync.Mutex
	conns map[*proxyConn]struct{}
}

type proxyConn struct {
	client, upstream net.Conn
	mu               sync.Mutex // serializes writes to client
	ws, dropped      bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{URL: "http://" + ln.Addr().String(), target: strings.TrimPrefix(target, "http://"), ln: ln, conns: map[*proxyConn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.client.Close()
			c.upstream.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxyConn{client: c, upstream: up}
		p.mu.Lock()
		p.conns[pc] = struct{}{}
		p.mu.Unlock()
		go func() {
			_, _ = io.Copy(up, c)
			up.Close()
		}()
		go func() {
			pc.down()
			c.Close()
			up.Close()
			p.mu.Lock()
			delete(p.conns, pc)
			p.mu.Unlock()
		}()
	}
}

// down forwards server to client: the first response head as is, then
// WebSocket frames one by one if it was a 101, or raw bytes otherwise.
func (pc *proxyConn) down() {
	br := bufio.NewReader(pc.upstream)
	var head []byte
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		line, err := br.ReadBytes('\n')
		head = append(head, line...)
		if err != nil {
			pc.write(head)
			return
		}
	}
	upgraded := bytes.HasPrefix(head, []byte("HTTP/1.1 101"))
	pc.mu.Lock()
	pc.ws = upgraded
	pc.mu.Unlock()
	if !pc.write(head) {
		return
	}
	if !upgraded {
		_, _ = io.Copy(writerFunc(func(b []byte) (int, error) {
			if !pc.write(b) {
				return 0, io.ErrClosedPipe
			}
			return len(b), nil
		}), br)
		return
	}
	for {
		frame, err := readFrame(br)
		if err != nil || !pc.write(frame) {
			return
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func (pc *proxyConn) write(b []byte) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.dropped {
		return false
	}
	_, err := pc.client.Write(b)
	return err == nil
}

// readFrame reads one whole WebSocket frame (RFC 6455 section 5.2).
func readFrame(r *bufio.Reader) ([]byte, error) {
	hdr := make([]byte, 2, 14)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		ext := make([]byte, 2)
		if _, err := io.ReadFull(r, ext); err != nil {
			return nil, err
		}
		hdr = append(hdr, ext...)
		n = uint64(binary.BigEndian.Uint16(ext))
	case 127:
		ext := make([]byte, 8)
		if _, err := io.ReadFull(r, ext); err != nil {
			return nil, err
		}
		hdr = append(hdr, ext...)
		n = binary.BigEndian.Uint64(ext)
	}
	if hdr[1]&0x80 != 0 {
		n += 4 // masking key
	}
	if n > 16<<20 {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return append(hdr, body...), nil
}

// snapshot returns the proxied connections open now.
func (p *proxy) snapshot() []*proxyConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	return conns
}

// dropWebSockets sends a close frame with code to every proxied WebSocket,
// between two frames, and cuts both sides. It returns how many it dropped.
func (p *proxy) dropWebSockets(code uint16, reason string) int {
	payload := binary.BigEndian.AppendUint16(nil, code)
	payload = append(payload, reason...)
	return p.cut(true, append([]byte{0x88, byte(len(payload))}, payload...))
}

// cut cuts both sides of every proxied connection that is a WebSocket (ws)
// or not, after writing last to the client. It returns how many it cut.
func (p *proxy) cut(ws bool, last []byte) int {
	n := 0
	for _, c := range p.snapshot() {
		c.mu.Lock()
		if c.ws == ws && !c.dropped {
			if last != nil {
				_, _ = c.client.Write(last)
			}
			c.dropped = true
			c.client.Close()
			c.upstream.Close()
			n++
		}
		c.mu.Unlock()
	}
	return n
}

// ---------------------------------------------------------------- browser

// chromiumPath finds Chromium or skips (fails under CI=true).
func chromiumPath(t *testing.T) string {
	t.Helper()
	path := os.Getenv("AGENTWIRE_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := os.Stat(path); err != nil {
		msg := fmt.Sprintf("\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"+
			"!!! BROWSER TESTS NOT RUN: no Chromium at %s\n"+
			"!!! install it (Debian: apt-get install -y chromium) or set AGENTWIRE_CHROMIUM\n"+
			"!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n", path)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "CI=true: the browser tests must run in CI")
		}
		fmt.Fprint(os.Stderr, msg)
		t.Skip(msg)
	}
	return path
}

// artifactsDir is where screenshots go.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("AGENTWIRE_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

type browser struct {
	t         *testing.T
	ctx       context.Context // bounded by testTimeout
	artifacts string

	mu         sync.Mutex
	exceptions []string
}

// newBrowser starts a headless Chromium with a fresh profile; it is closed
// when the test ends. Uncaught page exceptions fail the test.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromiumPath(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	// The first Run starts the browser and must not carry a timeout (it
	// would stop the browser): a watchdog bounds it instead.
	watchdog := time.AfterFunc(30*time.Second, cancelBrowser)
	err := chromedp.Do(bctx)
	watchdog.Stop()
	if err != nil {
		cancelBrowser()
		cancelAlloc()
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	ctx, cancelTimeout := context.WithTimeout(bctx, testTimeout)
	b := &browser{t: t, ctx: ctx, artifacts: artifactsDir(t)}
	msgs := chromedp.Console(ctx)
	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() {
				b.mu.Lock()
				b.exceptions = append(b.exceptions, m.String())
				b.mu.Unlock()
			}
			t.Logf("browser %s", m.String())
		}
	}()
	t.Cleanup(func() {
		cancelTimeout()
		<-consoleDone
		b.mu.Lock()
		for _, e := range b.exceptions {
			t.Errorf("uncaught exception in the page: %s", e)
		}
		b.mu.Unlock()
		cancelBrowser()
		cancelAlloc()
	})
	return b
}

// do runs chromedp actions, failing the test with what on error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression into a T.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS polls a JavaScript boolean expression until it is true.
func (b *browser) waitJS(what, expr string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](expr))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) || b.ctx.Err() != nil {
			b.screenshot("timeout-" + strings.ReplaceAll(what, " ", "-"))
			b.t.Fatalf("timed out after %v waiting for %s (%s): %v", timeout, what, expr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// screenshot writes the full page as <test>-<name>.png into the artifacts.
func (b *browser) screenshot(name string) {
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	file := filepath.Join(b.artifacts, strings.NewReplacer("/", "_", " ", "_").Replace(b.t.Name())+"-"+name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	b.t.Logf("screenshot: %s", file)
}

// login opens the page at url and signs in as user with the dev form.
func (b *browser) login(url, user string) {
	b.t.Helper()
	b.do("open the page and log in",
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID("dev-user")),
		chromedp.SetValue(chromedp.ID("dev-user"), user),
		chromedp.Click(chromedp.CSS(`#dev-login button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("composer-input")),
	)
	b.waitJS("connected", `document.getElementById("conn").dataset.state === "connected"`, 10*time.Second)
}

// ask types content into the message box and presses Enter.
func (b *browser) ask(content string) {
	b.t.Helper()
	b.do("ask "+content,
		chromedp.Focus(chromedp.ID("composer-input")),
		chromedp.SendKeys(chromedp.ID("composer-input"), content+"\r"),
	)
}

// dropHTTP cuts every proxied connection that is not a WebSocket (an SSE
// response, say) at once, as a server that dies does. It returns how many
// it cut.
func (p *proxy) dropHTTP() int { return p.cut(false, nil) }
