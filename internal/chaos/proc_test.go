package chaos

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
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
)

// Processes the suite runs: the agentwire binary (built once), private
// redis-servers with an append-only file, and TCP proxies that can cut a
// node off from Redis. Copied in spirit from internal/e2e's cluster helpers
// (test files cannot be imported), with what chaos needs on top: restart on
// the same port and data, SIGSTOP, a cuttable proxy.

const (
	redisURLEnv    = "AGENTWIRE_TEST_REDIS_URL"
	databaseURLEnv = "AGENTWIRE_TEST_DATABASE_URL"
	testSecret     = "chaos-secret-0123456789abcdef-0123456789"
	testAPIKey     = "chaos-api-key"
)

var bin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bin.dir != "" {
		_ = os.RemoveAll(bin.dir)
	}
	os.Exit(code)
}

// agentwireBinary builds ./cmd/agentwire once (with -race when this test
// binary has it, reusing the packages already compiled).
func agentwireBinary(t testing.TB) string {
	t.Helper()
	bin.once.Do(func() {
		goBin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			if goBin, err = exec.LookPath("go"); err != nil {
				bin.err = errors.New("no go command")
				return
			}
		}
		dir, err := os.MkdirTemp("", "agentwire-chaos-bin-")
		if err != nil {
			bin.err = err
			return
		}
		bin.dir = dir
		out := filepath.Join(dir, "agentwire")
		args := []string{"build", "-o", out}
		if raceEnabled {
			args = append(args, "-race")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		build := exec.CommandContext(ctx, goBin, append(args, "./cmd/agentwire")...)
		build.Dir = "../.."
		if b, err := build.CombinedOutput(); err != nil {
			bin.err = fmt.Errorf("go build: %v\n%s", err, b)
			return
		}
		bin.path = out
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.path
}

func randID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor polls ok every 50 ms until it holds or d passes.
func waitFor(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 4<<20 { // a soak logs a lot; keep the start
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// pgEnv is a fresh PostgreSQL schema with its own application_name, so
// cutting backends hits only this test's nodes.
type pgEnv struct {
	t        *testing.T
	id       string
	schema   string
	dbURL    string // with application_name
	adminURL string
}

func newPGEnv(t *testing.T, durl string) *pgEnv {
	id := randID()
	e := &pgEnv{t: t, id: id, schema: "awchaos_" + id, adminURL: durl}
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

func (e *pgEnv) appName() string { return "awchaos-" + e.id }

// terminate ends every backend of this test's nodes; it returns how many.
func (e *pgEnv) terminate() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.adminURL)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var n int
	err = c.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()) t`, e.appName()).Scan(&n)
	return n, err
}

// storedRun is a row of the runs table.
type storedRun struct {
	ID, User, Status, ErrorCode string
}

// runs reads every run row of the schema.
func (e *pgEnv) runs() ([]storedRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.adminURL)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT id, user_id, status, error_code FROM `+pgx.Identifier{e.schema, "runs"}.Sanitize())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []storedRun
	for rows.Next() {
		var r storedRun
		if err := rows.Scan(&r.ID, &r.User, &r.Status, &r.ErrorCode); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// node is one `agentwire serve` process, restartable on the same address.
type node struct {
	t      *testing.T
	name   string
	args   []string
	addr   string // 127.0.0.1:port, fixed across restarts
	stderr *syncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// startNode runs agentwire serve with the suite's key and secret plus args
// on a fixed free port; it is killed at cleanup.
func startNode(t *testing.T, name string, args ...string) *node {
	t.Helper()
	n := &node{t: t, name: name, args: args, stderr: &syncBuffer{},
		addr: "127.0.0.1:" + strconv.Itoa(freePort(t))}
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			s := n.stderr.String()
			if len(s) > 20000 {
				s = s[:20000] + "\n…(cut)"
			}
			t.Logf("node %s stderr:\n%s", n.name, s)
		}
	})
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) url() string   { return "http://" + n.addr }
func (n *node) wsURL() string { return "ws://" + n.addr + "/ws" }

func (n *node) start() error {
	base := []string{"serve", "--addr", n.addr, "--dev", "--jwt-secret", testSecret,
		"--api-keys", testAPIKey, "--log-level", "warn"}
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTWIRE_") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(agentwireBinary(n.t), append(base, n.args...)...)
	cmd.Env = env
	cmd.Stderr = n.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	lines := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, br)
		_ = cmd.Wait()
		close(done)
	}()
	n.mu.Lock()
	n.cmd, n.done = cmd, done
	n.mu.Unlock()
	// A restart right after a kill may find the port still held for a
	// moment; the node then exits and we try again.
	select {
	case line := <-lines:
		if !strings.HasPrefix(line, "listening on http://") {
			<-done
			return fmt.Errorf("node %s: first line %q; stderr tail:\n%s", n.name, line, tail(n.stderr.String(), 2000))
		}
		return nil
	case <-time.After(60 * time.Second):
		return fmt.Errorf("node %s: no 'listening on' line within 60 s; stderr tail:\n%s", n.name, tail(n.stderr.String(), 2000))
	}
}

// restart starts the node again after a kill, retrying while its port is
// not yet free.
func (n *node) restart() error {
	var err error
	for range 20 {
		if err = n.start(); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

// alive says the process is running.
func (n *node) alive() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *node) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// redisProc is a private redis-server persisting to an append-only file
// (fsync always) in its own directory, so a kill -9 loses nothing acked.
type redisProc struct {
	t    *testing.T
	port int
	dir  string
	bin  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedis(t *testing.T) *redisProc {
	t.Helper()
	b, err := exec.LookPath("redis-server")
	if err != nil {
		b = "/usr/bin/redis-server"
		if _, err := os.Stat(b); err != nil {
			t.Skip("!!! no redis-server binary: the CHAOS suite is NOT RUN !!!")
		}
	}
	r := &redisProc{t: t, port: freePort(t), dir: t.TempDir(), bin: b}
	if err := r.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.kill)
	return r
}

func (r *redisProc) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *redisProc) start() error {
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--dir", r.dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
		"--daemonize", "no", "--logfile", "")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	done := make(chan struct{})
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait(); close(done) }()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	if !waitFor(20*time.Second, func() bool { return redisPing(r.port) }) {
		return fmt.Errorf("redis-server on port %d does not answer PING", r.port)
	}
	return nil
}

// restart starts redis-server again on the same port and files.
func (r *redisProc) restart() error {
	var err error
	for range 20 {
		if err = r.start(); err == nil {
			return nil
		}
		r.kill()
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

func (r *redisProc) kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

func (r *redisProc) signal(s syscall.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd.Process.Signal(s)
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

// proxy forwards TCP connections to target. cut closes every open
// connection and black-holes new ones (accepted, never answered) until
// heal: a node partitioned from Redis, as a dead switch makes it.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	held  []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.setCut(true); p.setCut(false) })
	return p
}

func (p *proxy) url() string { return "redis://" + p.ln.Addr().String() + "/0" }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.held = append(p.held, c)
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		go p.forward(c)
	}
}

func (p *proxy) forward(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	c.Close()
	up.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// setCut cuts (true) or heals (false) the link.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		return
	}
	for _, c := range p.held {
		c.Close()
	}
	p.held = nil
}
