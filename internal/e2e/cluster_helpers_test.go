package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentwire/agentwire/internal/auth"
)

// Helpers for the multi-node suite (cluster_test.go): several real agentwire
// processes (the binary built from ./cmd/agentwire) sharing one Redis and one
// PostgreSQL, as in production behind a load balancer.
//
// Isolation: other packages' tests use the same Redis and PostgreSQL at the
// same time. Every cluster test therefore uses its own user names (Redis keys
// are per user), its own PostgreSQL schema (--database-schema, dropped at
// cleanup; the run reaper only sees runs of its schema) and its own
// application_name (so a connection cut hits only its nodes). A test that
// restarts Redis starts its own redis-server.

const (
	redisURLEnv    = "AGENTWIRE_TEST_REDIS_URL"
	databaseURLEnv = "AGENTWIRE_TEST_DATABASE_URL"
)

// clusterBin is the agentwire binary, built once per test binary.
var clusterBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// TestMain removes the binary built for the cluster suite.
func TestMain(m *testing.M) {
	code := m.Run()
	if clusterBin.dir != "" {
		_ = os.RemoveAll(clusterBin.dir)
	}
	os.Exit(code)
}

// agentwireBinary builds ./cmd/agentwire (with -race when this test binary
// has it, which reuses the packages already compiled) once and returns its
// path.
func agentwireBinary(t testing.TB) string {
	t.Helper()
	clusterBin.once.Do(func() {
		goBin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			if goBin, err = exec.LookPath("go"); err != nil {
				clusterBin.err = errors.New("no go command")
				return
			}
		}
		dir, err := os.MkdirTemp("", "agentwire-cluster-bin-")
		if err != nil {
			clusterBin.err = err
			return
		}
		clusterBin.dir = dir
		bin := filepath.Join(dir, "agentwire")
		args := []string{"build", "-o", bin}
		if raceEnabled {
			args = append(args, "-race")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		build := exec.CommandContext(ctx, goBin, append(args, "./cmd/agentwire")...)
		build.Dir = "../.." // the module root, from internal/e2e
		if out, err := build.CombinedOutput(); err != nil {
			clusterBin.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		clusterBin.path = bin
	})
	if clusterBin.err != nil {
		t.Fatal(clusterBin.err)
	}
	return clusterBin.path
}

// clusterEnv is what one cluster test shares between its nodes.
type clusterEnv struct {
	t        *testing.T
	id       string // unique per test: user names, schema, application_name
	redisURL string
	dbURL    string // with this test's application_name
	schema   string
	adminURL string // the database, for schema drop and backend cuts
}

// newClusterEnv skips (loudly) without the test services, else makes a
// fresh PostgreSQL schema dropped at cleanup.
func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-node suite: builds and starts the binary")
	}
	rurl, durl := os.Getenv(redisURLEnv), os.Getenv(databaseURLEnv)
	if rurl == "" || durl == "" {
		t.Skipf("!!! %s and %s must both be set: the MULTI-NODE suite (Redis + PostgreSQL) is NOT TESTED !!!", redisURLEnv, databaseURLEnv)
	}
	id := randID()
	e := &clusterEnv{t: t, id: id, redisURL: rurl, schema: "awtest_" + id, adminURL: durl}
	u, err := url.Parse(durl)
	if err != nil {
		t.Fatalf("%s: %v", databaseURLEnv, err)
	}
	q := u.Query()
	q.Set("application_name", e.appName())
	u.RawQuery = q.Encode()
	e.dbURL = u.String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, e.adminURL)
		if err != nil {
			t.Logf("drop schema %s: %v", e.schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{e.schema}.Sanitize()+` CASCADE`); err != nil {
			t.Logf("drop schema %s: %v", e.schema, err)
		}
	})
	return e
}

func (e *clusterEnv) appName() string { return "awtest-" + e.id }

// user is a user name unique to this test.
func (e *clusterEnv) user(name string) string { return name + "-" + e.id }

// cutPostgres terminates every PostgreSQL backend of this test's nodes and
// returns how many there were.
func (e *clusterEnv) cutPostgres() int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.adminURL)
	if err != nil {
		e.t.Fatalf("admin connection: %v", err)
	}
	defer c.Close(ctx)
	var n int
	err = c.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()) t`, e.appName()).Scan(&n)
	if err != nil {
		e.t.Fatalf("pg_terminate_backend: %v", err)
	}
	return n
}

func randID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// node is one agentwire process.
type node struct {
	*server
	name   string
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // its Wait result, once done is closed
}

// startNode runs `agentwire serve` against the env's PostgreSQL schema and
// redisURL (the shared one when ""), with the test key and secret plus args
// (later flags win). The process is killed at cleanup.
func (e *clusterEnv) startNode(name, redisURL string, args ...string) *node {
	t := e.t
	t.Helper()
	bin := agentwireBinary(t)
	if redisURL == "" {
		redisURL = e.redisURL
	}
	base := []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--dev",
		"--jwt-secret", testSecret, "--api-keys", testAPIKey, "--log-level", "warn",
		"--redis-url", redisURL, "--database-url", e.dbURL, "--database-schema", e.schema}
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTWIRE_") {
			env = append(env, kv)
		}
	}
	n := &node{name: name, stderr: &syncBuffer{}, done: make(chan struct{})}
	n.cmd = exec.Command(bin, append(base, args...)...)
	n.cmd.Env = env
	n.cmd.Stderr = n.stderr
	// The node dies with this test process, whatever happens to it.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, br)
		n.err = n.cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			t.Logf("node %s stderr:\n%s", n.name, n.stderr.String())
		}
	})
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s: no 'listening on' line within 30 s; stderr:\n%s", name, n.stderr.String())
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on http://")
	if !ok {
		t.Fatalf("node %s: first line %q, want 'listening on http://HOST:PORT'; stderr:\n%s", name, line, n.stderr.String())
	}
	n.server = &server{t: t, URL: "http://" + addr, WSURL: "ws://" + addr + "/ws",
		signer: auth.NewSigner([]byte(testSecret))}
	return n
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *node) kill() {
	_ = n.cmd.Process.Kill()
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
	}
}

// exited waits up to d for the process to end and returns its exit code
// (-1 when it did not end or was killed by a signal).
func (n *node) exited(d time.Duration) (int, bool) {
	select {
	case <-n.done:
		return n.cmd.ProcessState.ExitCode(), true
	default:
	}
	select {
	case <-n.done:
		return n.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return -1, false
	}
}

// status does method path with an optional bearer and JSON body, without
// failing the test: it returns the status (0 when the request itself
// failed) and the body.
func (n *node) status(method, path, bearer string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, n.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// publishStatus publishes body through the node and returns the status,
// the seq of a 200 and the body.
func (n *node) publishStatus(body map[string]any) (int, uint64, []byte) {
	code, b, err := n.status("POST", "/api/v1/publish", testAPIKey, body)
	if err != nil {
		return 0, 0, []byte(err.Error())
	}
	var out struct {
		Seq uint64 `json:"seq"`
	}
	if code == 200 {
		_ = json.Unmarshal(b, &out)
	}
	return code, out.Seq, b
}

// readyz returns the status of GET /readyz.
func (n *node) readyz() int {
	code, _, _ := n.status("GET", "/readyz", "", nil)
	return code
}

// errorCode is error.code of an error answer.
func errorCode(b []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil || e.Error.Message == "" {
		return ""
	}
	return e.Error.Code
}

// redisProc is a redis-server of the test's own (no persistence), which a
// test may kill and restart on the same port.
type redisProc struct {
	t    *testing.T
	port int
	bin  string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts a private redis-server on a free loopback port.
func startRedis(t *testing.T) *redisProc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		bin = "/usr/bin/redis-server"
		if _, err := os.Stat(bin); err != nil {
			t.Skip("!!! no redis-server binary: the Redis restart test is NOT RUN !!!")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &redisProc{t: t, port: l.Addr().(*net.TCPAddr).Port, bin: bin}
	l.Close()
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *redisProc) url() string { return "redis://127.0.0.1:" + strconv.Itoa(r.port) + "/0" }

// start runs redis-server on r.port and waits until it answers PING.
func (r *redisProc) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "")
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	r.done = make(chan struct{})
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	done := r.done
	cmd := r.cmd
	go func() { _ = cmd.Wait(); close(done) }()
	if !waitFor(10*time.Second, func() bool { return redisPing(r.port) }) {
		r.t.Fatalf("redis-server on port %d does not answer PING", r.port)
	}
}

// stop kills redis-server and waits for it to be gone.
func (r *redisProc) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
	}
	r.cmd = nil
}

func redisPing(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// streamFrames keeps the frames that are stream events (they have a seq).
func streamFrames(fs []frame) []frame {
	var out []frame
	for _, f := range fs {
		if f.Seq > 0 {
			out = append(out, f)
		}
	}
	return out
}

// collect reads frames from c for d (no failure when nothing comes) and
// returns them with the error that ended the read (nil at the deadline).
func (c *client) collect(d time.Duration) ([]frame, error) {
	deadline := time.Now().Add(d)
	var out []frame
	for {
		f, err := c.readWithin(time.Until(deadline))
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return out, nil
			}
			return out, err
		}
		out = append(out, f)
	}
}

// readUntilFn reads frames until ok holds for one, within d, and returns
// every frame read (the matching one last).
func (c *client) readUntilFn(d time.Duration, what string, ok func(frame) bool) []frame {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var out []frame
	for {
		f := c.readBy(deadline, what)
		out = append(out, f)
		if ok(f) {
			return out
		}
	}
}

// pumped is a client whose frames a goroutine reads into a channel, so a
// test can wait for "nothing" with a timeout without breaking the
// connection (gorilla/websocket connections are unusable after a read
// deadline passes).
type pumped struct {
	t      testing.TB
	frames chan frame
	err    error // the error that ended the pump, once frames is closed
}

func (c *client) pump() *pumped {
	p := &pumped{t: c.t, frames: make(chan frame, 1024)}
	_ = c.c.SetReadDeadline(time.Time{})
	go func() {
		defer close(p.frames)
		for {
			f, err := readFrame(c.c, 0)
			if err != nil {
				p.err = err
				return
			}
			p.frames <- f
		}
	}()
	return p
}

// next returns the next frame within d; ok is false on timeout or when the
// connection ended (then p.err says why).
func (p *pumped) next(d time.Duration) (frame, bool) {
	select {
	case f, ok := <-p.frames:
		return f, ok
	case <-time.After(d):
		return frame{}, false
	}
}

// read returns the next frame or fails the test after 5 s.
func (p *pumped) read() frame {
	p.t.Helper()
	f, ok := p.next(5 * time.Second)
	if !ok {
		p.t.Fatalf("no frame within 5 s (connection error: %v)", p.err)
	}
	return f
}

// quiet returns every frame that arrives within d, and whether the
// connection is still open at the end.
func (p *pumped) quiet(d time.Duration) ([]frame, bool) {
	deadline := time.After(d)
	var out []frame
	for {
		select {
		case f, ok := <-p.frames:
			if !ok {
				return out, false
			}
			out = append(out, f)
		case <-deadline:
			return out, true
		}
	}
}
