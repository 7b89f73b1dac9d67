package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/redisx/redisxtest"
	"github.com/agentwire/agentwire/internal/testproc"
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
	// topologyEnv runs the suite on another Redis deployment: "cluster"
	// or "sentinel" (the URLs scripts/redis-topologies prints); unset or
	// "standalone" is AGENTWIRE_TEST_REDIS_URL. scripts/test runs the
	// TestCluster suite once per topology.
	topologyEnv = "AGENTWIRE_TEST_REDIS_TOPOLOGY"
)

// topology is the Redis deployment the suite runs on and the variable
// holding its URL.
func topology(t *testing.T) (name, urlEnv string) {
	t.Helper()
	name = os.Getenv(topologyEnv)
	if name == "" {
		name = "standalone"
	}
	for _, top := range redisxtest.Topologies {
		if top.Name == name {
			return name, top.Env
		}
	}
	t.Fatalf("%s=%q: want standalone, cluster or sentinel", topologyEnv, name)
	return "", ""
}

// standaloneOnly skips a test that needs the standalone Redis (it starts
// and restarts one of its own) when the suite runs on another topology.
func standaloneOnly(t *testing.T) {
	t.Helper()
	if name, _ := topology(t); name != "standalone" {
		t.Skipf("runs on its own standalone redis-server: covered by the standalone run, not the %s one", name)
	}
}

// bin is the agentwire binary, built once per test binary (with -race
// when this test binary has it).
var bin = testproc.Binary{Race: raceEnabled}

// TestMain removes the binary built for the process suites.
func TestMain(m *testing.M) {
	code := m.Run()
	bin.Remove()
	os.Exit(code)
}

// clusterEnv is what one cluster test shares between its nodes.
type clusterEnv struct {
	t        *testing.T
	id       string // unique per test: user names, schema, application_name
	redisURL string
	pg       *testproc.PGSchema
}

// newClusterEnv skips (loudly) without the test services, else makes a
// fresh PostgreSQL schema dropped at cleanup.
func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("multi-node suite: builds and starts the binary")
	}
	_, urlEnv := topology(t)
	rurl, durl := os.Getenv(urlEnv), os.Getenv(databaseURLEnv)
	if rurl == "" || durl == "" {
		t.Skipf("!!! %s and %s must both be set: the MULTI-NODE suite (Redis + PostgreSQL) is NOT TESTED !!!", urlEnv, databaseURLEnv)
	}
	id := randID()
	return &clusterEnv{t: t, id: id, redisURL: rurl, pg: testproc.NewPGSchema(t, durl, "awtest", id)}
}

// user is a user name unique to this test.
func (e *clusterEnv) user(name string) string { return name + "-" + e.id }

// cutPostgres terminates every PostgreSQL backend of this test's nodes and
// returns how many there were.
func (e *clusterEnv) cutPostgres() int {
	e.t.Helper()
	n, err := e.pg.Terminate()
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
	c, err := pgx.Connect(ctx, e.pg.AdminURL)
	if err != nil {
		e.t.Fatalf("admin connection: %v", err)
	}
	defer c.Close(ctx)
	schema := pgx.Identifier{e.pg.Schema}.Sanitize()
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
	if !testproc.WaitFor(30*time.Second, reaped) {
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
	name string
	*testproc.Serve
}

// startNode runs `agentwire serve` against the env's PostgreSQL schema and
// redisURL (the shared one when ""), with the test key and secret plus args
// (later flags win). The process is killed at cleanup.
func (e *clusterEnv) startNode(name, redisURL string, args ...string) *node {
	t := e.t
	t.Helper()
	if redisURL == "" {
		redisURL = e.redisURL
	}
	base := []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--dev",
		"--jwt-secret", testSecret, "--api-keys", testAPIKey, "--log-level", "warn",
		"--redis-url", redisURL, "--database-url", e.pg.URL, "--database-schema", e.pg.Schema}
	return startServe(t, name, testproc.Env(), append(base, args...))
}

// startServe runs the agentwire binary with args and env, returns it once
// it listens and kills it at cleanup.
func startServe(t *testing.T, name string, env, args []string) *node {
	t.Helper()
	n := &node{name: name, Serve: &testproc.Serve{Bin: bin.Path(t), Args: args, Env: env}}
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			t.Logf("node %s stderr:\n%s", n.name, n.Stderr.String())
		}
	})
	if err := n.Start(); err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	addr := n.Addr()
	n.server = &server{t: t, URL: "http://" + addr, WSURL: "ws://" + addr + "/ws",
		signer: auth.NewSigner([]byte(testSecret))}
	return n
}

// exited waits up to d for the process to end and returns its exit code
// (-1 when it did not end or was killed by a signal).
func (n *node) exited(d time.Duration) (int, bool) { return n.Proc().Exited(d) }

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

// startRedis starts a private redis-server (no persistence) on a free
// loopback port, which a test may kill and restart on the same port.
func startRedis(t *testing.T) *testproc.Redis {
	standaloneOnly(t)
	return testproc.StartRedis(t, false, "!!! no redis-server binary: the Redis restart test is NOT RUN !!!")
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
