package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentwire/agentwire/internal/testproc"
)

// Processes the suite runs, through internal/testproc: the agentwire binary
// (built once), nodes restarted on the same port, private redis-servers with
// an append-only file; and, its own, TCP proxies that can cut a node off
// from Redis.

const (
	redisURLEnv    = "AGENTWIRE_TEST_REDIS_URL"
	databaseURLEnv = "AGENTWIRE_TEST_DATABASE_URL"
	testSecret     = "chaos-secret-0123456789abcdef-0123456789"
	testAPIKey     = "chaos-api-key"
)

// bin is the agentwire binary the nodes run, built on first use.
var bin = testproc.Binary{Race: raceEnabled}

func TestMain(m *testing.M) {
	code := m.Run()
	bin.Remove()
	os.Exit(code)
}

func randID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pgEnv is a fresh PostgreSQL schema with its own application_name, so
// cutting backends hits only this test's nodes.
type pgEnv struct{ *testproc.PGSchema }

func newPGEnv(t *testing.T, durl string) *pgEnv {
	return &pgEnv{testproc.NewPGSchema(t, durl, "awchaos", randID())}
}

// storedRun is a row of the runs table.
type storedRun struct {
	ID, User, Status, ErrorCode string
}

// runs reads every run row of the schema.
func (e *pgEnv) runs() ([]storedRun, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.AdminURL)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT id, user_id, status, error_code FROM `+pgx.Identifier{e.Schema, "runs"}.Sanitize())
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

// node is one `agentwire serve` process on a fixed free port, so that it
// keeps its address across kills and restarts.
type node struct {
	name string
	*testproc.Serve
}

// startNode runs agentwire serve with the suite's key and secret plus args;
// it is killed at cleanup.
func startNode(t *testing.T, name string, args ...string) *node {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(testproc.FreePort(t))
	base := []string{"serve", "--addr", addr, "--dev", "--jwt-secret", testSecret,
		"--api-keys", testAPIKey, "--log-level", "warn"}
	n := &node{name: name, Serve: &testproc.Serve{Bin: bin.Path(t), Args: append(base, args...), Env: testproc.Env()}}
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			s := n.Stderr.String()
			// The whole log goes to the artifacts, to follow a violation's
			// run through every node; the test log gets its start.
			if dir := os.Getenv("AGENTWIRE_ARTIFACTS"); dir != "" {
				p := filepath.Join(dir, "chaos-"+strings.ReplaceAll(t.Name(), "/", "_")+"-"+n.name+".log")
				if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
					t.Logf("node %s log: %v", n.name, err)
				}
			}
			if len(s) > 20000 {
				s = s[:20000] + "\n…(cut)"
			}
			t.Logf("node %s stderr:\n%s", n.name, s)
		}
	})
	if err := n.Start(); err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	return n
}

func (n *node) url() string   { return "http://" + n.Addr() }
func (n *node) wsURL() string { return "ws://" + n.Addr() + "/ws" }

// startRedis starts a private redis-server persisting to an append-only
// file (fsync always), so a kill -9 loses nothing acked.
func startRedis(t *testing.T) *testproc.Redis {
	return testproc.StartRedis(t, true, "!!! no redis-server binary: the CHAOS suite is NOT RUN !!!")
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
