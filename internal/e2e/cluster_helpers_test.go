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
	"sync/atomic"
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

// reapRound returns once the nodes have run a whole reap round after the
// call: it inserts a run of a fresh tracer user whose lease expired long
// ago (as a node that died would leave it) and waits, through via, for the
// node_lost a reaper appends for it. Two calls in a row prove that at
// least one round started and ended in between: the deterministic form of
// "wait a few reap intervals".
func (e *clusterEnv) reapRound(via *node) {
	e.t.Helper()
	user := e.user("tracer-" + randID())
	runID, threadID := "tracer-run-"+randID(), "tracer-thread-"+randID()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.adminURL)
	if err != nil {
		e.t.Fatalf("admin connection: %v", err)
	}
	defer c.Close(ctx)
	schema := pgx.Identifier{e.schema}.Sanitize()
	now := time.Now()
	if _, err := c.Exec(ctx, `INSERT INTO `+schema+`.threads (id, user_id, title, created_at, updated_at) VALUES ($1, $2, 'tracer', $3, $3)`,
		threadID, user, now); err != nil {
		e.t.Fatalf("tracer thread: %v", err)
	}
	if _, err := c.Exec(ctx, `INSERT INTO `+schema+`.runs (id, thread_id, user_id, agent, status, started_at, node, lease_until)
		VALUES ($1, $2, $3, 'tracer', 'running', $4, 'tracer-node', 'epoch')`, runID, threadID, user, now); err != nil {
		e.t.Fatalf("tracer run: %v", err)
	}
	tok := via.token(user)
	reaped := func() bool {
		for _, f := range via.eventsOf(tok) {
			if f.RunID == runID && f.Type == "agent_error" {
				return true
			}
		}
		return false
	}
	// Reaping is timer driven and nothing else moves meanwhile: the bound is
	// plain time, far above the reap interval of the cluster tests.
	if !waitFor(30*time.Second, reaped) {
		e.t.Fatalf("no reaper took the tracer run %s", runID)
	}
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

// readUntilFn reads frames until ok holds for one and returns every frame
// read (the matching one last). It fails when no frame comes for idle.
func (c *client) readUntilFn(idle time.Duration, what string, ok func(frame) bool) []frame {
	c.t.Helper()
	p := newProgressDeadline(idle)
	var out []frame
	for {
		f := c.readBy(p.next(), what)
		p.progress()
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
	c      *client // for sending; its reads belong to the pump
	frames chan frame
	err    error // the error that ended the pump, once frames is closed
}

func (c *client) pump() *pumped {
	p := &pumped{t: c.t, c: c, frames: make(chan frame, 1024)}
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

// until returns the frames that arrive before the first one ok holds for.
// It fails the test when the connection ends first or when no frame comes
// for 5 s.
func (p *pumped) until(what string, ok func(frame) bool) []frame {
	p.t.Helper()
	var out []frame
	for {
		f, open := p.next(5 * time.Second)
		if !open {
			p.t.Fatalf("waiting for %s: connection ended (%v) after %s", what, p.err, dump(out))
		}
		if ok(f) {
			return out
		}
		out = append(out, f)
	}
}

var pingN atomic.Int64

// pingBarrier sends a ping and returns the frames that arrive before its
// pong: what the server had queued for this socket when it read the ping.
// It needs nothing but the node this socket is on (not Redis), and fails
// the test if the connection ends instead.
func (p *pumped) pingBarrier() []frame {
	p.t.Helper()
	id := fmt.Sprintf("barrier-%d", pingN.Add(1))
	p.c.send(map[string]string{"type": "ping", "id": id})
	return p.until("pong "+id, func(f frame) bool { return f.Type == "pong" && f.Ref == id })
}

// probe publishes one marker for user through n and reads each of ps
// until it, returning the frames that arrived before it on any of them:
// everything appended for user before the marker.
func (n *node) probePumped(user string, ps ...*pumped) []frame {
	n.t.Helper()
	nonce := fmt.Sprintf("probe-%d", probeN.Add(1))
	n.publish(user, "test.probe", map[string]string{"nonce": nonce})
	var before []frame
	for _, p := range ps {
		before = append(before, p.until("probe "+nonce, func(f frame) bool {
			return f.Type == "test.probe" && strings.Contains(string(f.Data), nonce)
		})...)
	}
	return before
}
