// Package testproc runs real processes for the test suites that need them:
// the agentwire binary (built once per test binary), agentwire serve nodes
// that can be killed and restarted, and private redis-server instances.
// It is test support only: no production code imports it.
package testproc

import (
	"bufio"
	"context"
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

// Binary builds ./cmd/agentwire once, the first time Path is called, into a
// temporary directory that Remove deletes (call it from TestMain).
type Binary struct {
	// Race builds with -race; a test binary built with -race then reuses
	// the packages it already compiled.
	Race bool

	once sync.Once
	dir  string
	path string
	err  error
}

// Path returns the binary, building it on first use; it fails t if the
// build fails.
func (b *Binary) Path(t testing.TB) string {
	t.Helper()
	b.once.Do(b.build)
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

func (b *Binary) build() {
	goBin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			b.err = errors.New("no go command")
			return
		}
	}
	root, err := moduleRoot()
	if err != nil {
		b.err = err
		return
	}
	if b.dir, err = os.MkdirTemp("", "agentwire-test-bin-"); err != nil {
		b.err = err
		return
	}
	out := filepath.Join(b.dir, "agentwire")
	args := []string{"build", "-o", out}
	if b.Race {
		args = append(args, "-race")
	}
	// A cold build with -race on a loaded 2-core machine takes minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, append(args, "./cmd/agentwire")...)
	cmd.Dir = root
	if o, err := cmd.CombinedOutput(); err != nil {
		b.err = fmt.Errorf("go build: %v\n%s", err, o)
		return
	}
	b.path = out
}

// Remove deletes what Path built.
func (b *Binary) Remove() {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WaitFor polls ok every 20 ms until it holds or d passes, and reports
// whether it held. d bounds a hang; it is not a measurement.
func WaitFor(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SyncBuffer collects a process's output from its goroutine while a test
// reads it. It keeps the first 4 MiB: a long soak logs a lot.
type SyncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 4<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Proc is one run of a child process that dies with the test process
// (Pdeathsig) and that a test may kill or signal.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's result, set before done is closed
}

// start starts cmd; wait, when not nil, runs on the waiting goroutine
// before cmd.Wait (to drain a pipe, say).
func start(cmd *exec.Cmd, wait func()) (*Proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		if wait != nil {
			wait()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Alive reports whether the process is still running.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited waits up to d for the process to end and returns its exit code
// (-1 when killed by a signal) and whether it ended.
func (p *Proc) Exited(d time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	default:
	}
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return -1, false
	}
}

// Serve is an `agentwire serve` process: Bin run with Args (which should
// hold --addr; a fixed port keeps the address across restarts) and Env.
type Serve struct {
	Bin    string
	Args   []string
	Env    []string
	Stderr *SyncBuffer

	mu   sync.Mutex
	proc *Proc
	addr string
}

// Env returns the test process's environment without any AGENTWIRE_
// variable, so a node is configured by its flags alone.
func Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTWIRE_") {
			env = append(env, kv)
		}
	}
	return env
}

// Start runs the process and returns once it printed its
// "listening on http://HOST:PORT" line (or failed to).
func (s *Serve) Start() error {
	if s.Stderr == nil {
		s.Stderr = &SyncBuffer{}
	}
	cmd := exec.Command(s.Bin, s.Args...)
	cmd.Env = s.Env
	cmd.Stderr = s.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	lines := make(chan string, 1)
	p, err := start(cmd, func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, br)
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	select {
	case line := <-lines:
		addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on http://")
		if !ok {
			<-p.done
			return fmt.Errorf("first line %q, want 'listening on http://HOST:PORT'; stderr tail:\n%s", line, Tail(s.Stderr.String(), 2000))
		}
		s.mu.Lock()
		s.addr = addr
		s.mu.Unlock()
		return nil
	case <-time.After(60 * time.Second):
		p.Kill()
		return fmt.Errorf("no 'listening on' line within 60 s; stderr tail:\n%s", Tail(s.Stderr.String(), 2000))
	}
}

// Restart starts the process again after a kill, retrying while its port
// is still held by the previous one.
func (s *Serve) Restart() error {
	var err error
	for range 20 {
		if err = s.Start(); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

// Addr is the HOST:PORT the last start listens on.
func (s *Serve) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Proc is the current run of the process (nil before Start).
func (s *Serve) Proc() *Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// Kill kills the current run, if any, and waits for it to be gone.
func (s *Serve) Kill() {
	if p := s.Proc(); p != nil {
		p.Kill()
	}
}

// Alive reports whether the current run is running.
func (s *Serve) Alive() bool {
	p := s.Proc()
	return p != nil && p.Alive()
}

// Tail is the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Redis is a private redis-server on a free loopback port, which a test
// may kill, pause and restart on the same port (and files).
type Redis struct {
	Port int
	dir  string // with AOF: its append-only file
	aof  bool
	bin  string

	mu   sync.Mutex
	proc *Proc
}

// StartRedis starts a redis-server and kills it at cleanup. With aof it
// persists to an append-only file with fsync always, so a kill -9 loses
// nothing acknowledged; without, it keeps nothing. Without a redis-server
// binary the test skips with skipWhy.
func StartRedis(t testing.TB, aof bool, skipWhy string) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		bin = "/usr/bin/redis-server"
		if _, err := os.Stat(bin); err != nil {
			t.Skip(skipWhy)
		}
	}
	r := &Redis{Port: FreePort(t), dir: t.TempDir(), aof: aof, bin: bin}
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Kill)
	return r
}

// Addr is 127.0.0.1:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// URL is its redis:// URL.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Start runs redis-server on r.Port and waits until it answers PING.
func (r *Redis) Start() error {
	args := []string{"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--daemonize", "no", "--logfile", ""}
	if r.aof {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	p, err := start(exec.Command(r.bin, args...), nil)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.proc = p
	r.mu.Unlock()
	if !WaitFor(20*time.Second, func() bool { return RedisPing(r.Port) }) {
		p.Kill()
		return fmt.Errorf("redis-server on port %d does not answer PING", r.Port)
	}
	return nil
}

// Restart starts redis-server again on the same port and files, retrying
// while the port is still held.
func (r *Redis) Restart() error {
	var err error
	for range 20 {
		if err = r.Start(); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return err
}

// Kill sends SIGKILL and waits for redis-server to be gone.
func (r *Redis) Kill() {
	r.mu.Lock()
	p := r.proc
	r.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// Signal sends sig (SIGSTOP, SIGCONT) to redis-server.
func (r *Redis) Signal(sig os.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc == nil {
		return errors.New("redis-server not started")
	}
	return r.proc.Signal(sig)
}

// RedisPing reports whether a Redis on port answers PING within a second.
func RedisPing(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	b := make([]byte, 7)
	n, _ := io.ReadFull(c, b)
	return string(b[:n]) == "+PONG\r\n"
}

// PGSchema is a fresh PostgreSQL schema for one test, dropped at cleanup,
// with its own application_name so that cutting backends hits only the
// nodes of that test.
type PGSchema struct {
	ID       string // unique per test
	Schema   string
	URL      string // the database URL with this test's application_name
	AdminURL string // the database URL as given, for schema drops and cuts
	prefix   string
}

// NewPGSchema names a schema prefix+"_"+id on the database at adminURL (it
// is created by the first node that opens it) and drops it at cleanup.
func NewPGSchema(t testing.TB, adminURL, prefix, id string) *PGSchema {
	t.Helper()
	e := &PGSchema{ID: id, Schema: prefix + "_" + id, AdminURL: adminURL, prefix: prefix}
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("database URL: %v", err)
	}
	q := u.Query()
	q.Set("application_name", e.AppName())
	u.RawQuery = q.Encode()
	e.URL = u.String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, e.AdminURL)
		if err != nil {
			t.Logf("drop schema %s: %v", e.Schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{e.Schema}.Sanitize()+` CASCADE`); err != nil {
			t.Logf("drop schema %s: %v", e.Schema, err)
		}
	})
	return e
}

// AppName is the application_name of this test's connections.
func (e *PGSchema) AppName() string { return e.prefix + "-" + e.ID }

// Terminate ends every PostgreSQL backend of this test's nodes and returns
// how many there were.
func (e *PGSchema) Terminate() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.AdminURL)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var n int
	err = c.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND pid <> pg_backend_pid()) t`, e.AppName()).Scan(&n)
	return n, err
}
