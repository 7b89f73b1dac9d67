package e2e

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/agentwire/agentwire/internal/testserver"
)

// Regression tests of the hardening issue's edge items: what enters at the
// doors (publish, client frames) and how it fails.

// TestPublishInvalidUTF8 sends raw 0xff bytes inside data: the publish is
// refused and nothing reaches the stream, so no later resume carries a text
// frame compliant clients must fail on (1007).
func TestPublishInvalidUTF8(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for name, body := range map[string]string{
		"in data":    "{\"user_id\":\"utf\",\"type\":\"x.y\",\"data\":{\"s\":\"a\xffb\"}}",
		"in a key":   "{\"user_id\":\"utf\",\"type\":\"x.y\",\"data\":{\"\xc3\":1}}",
		"in user_id": "{\"user_id\":\"u\xfe\",\"type\":\"x.y\",\"data\":{}}",
	} {
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		if code := s.do("POST", "/api/v1/publish", testAPIKey, body, &e); code != 400 || e.Error.Code != "invalid_json" {
			t.Errorf("%s: status %d code %q, want 400 invalid_json", name, code, e.Error.Code)
		}
	}
	var ev struct {
		HeadSeq uint64            `json:"head_seq"`
		Events  []json.RawMessage `json:"events"`
	}
	s.do("GET", "/api/v1/events?since=0", s.token("utf"), nil, &ev)
	if ev.HeadSeq != 0 || len(ev.Events) != 0 {
		t.Fatalf("refused publishes appended: head %d, %d events", ev.HeadSeq, len(ev.Events))
	}
	// A resume gets only valid UTF-8 from now on.
	s.publish("utf", "x.y", map[string]any{"s": "ok é"})
	c, _ := s.connect("utf", withQuery("since=0"))
	f := c.read()
	if f.Type != "x.y" || !utf8.Valid(f.raw) {
		t.Fatalf("replayed %q", f.raw)
	}
}

// TestPublishControlCharsInIDs refuses ids a store could not keep (NUL in
// PostgreSQL text) with the same 400 on every backend.
func TestPublishControlCharsInIDs(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, field := range []string{"user_id", "thread_id", "run_id", "idempotency_key"} {
		body := map[string]any{"user_id": "ctl", "type": "x.y", "data": map[string]any{}}
		body[field] = "a\x00b"
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		if code := s.do("POST", "/api/v1/publish", testAPIKey, body, &e); code != 400 || e.Error.Code != "invalid_request" {
			t.Errorf("NUL in %s: status %d code %q, want 400 invalid_request", field, code, e.Error.Code)
		}
	}
}

// TestNULInClientFrames sends ids and content holding NUL: every store
// answers invalid_message (PostgreSQL used to fail with internal_error), and
// the connection stays usable.
func TestNULInClientFrames(t *testing.T) {
	t.Parallel()
	backends := map[string][]string{"sqlite": nil}
	if durl := os.Getenv(databaseURLEnv); durl != "" {
		backends["postgres"] = []string{"--database-url", durl, "--database-schema", pgSchema(t, durl)}
	} else {
		t.Logf("!!! %s unset: the PostgreSQL path of this test is NOT TESTED !!!", databaseURLEnv)
	}
	for name, args := range backends {
		t.Run(name, func(t *testing.T) {
			s := startServer(t, args...)
			c, _ := s.connect("nul")
			for i, fr := range []map[string]any{
				{"type": "user_message", "content": "hi", "client_message_id": "k\x00"},
				{"type": "user_message", "content": "hi", "thread_id": "\x00"},
				{"type": "user_message", "content": "a\x00b"},
				{"type": "stop_agent", "run_id": "r\x00"},
			} {
				fr["id"] = "f" + string(rune('0'+i))
				c.send(fr)
				got := c.read()
				if got.Type != "error" || got.Code != "invalid_message" || got.Ref != fr["id"] {
					t.Errorf("%v: got %s, want error invalid_message", fr, got.raw)
				}
			}
			c.send(map[string]any{"type": "ping", "id": "p"})
			if got := c.read(); got.Type != "pong" {
				t.Fatalf("after the refusals: %s", got.raw)
			}
		})
	}
}

// pgSchema is a fresh PostgreSQL schema name for one test, dropped at
// cleanup (serve creates it).
func pgSchema(t *testing.T, durl string) string {
	t.Helper()
	if _, err := url.Parse(durl); err != nil {
		t.Fatalf("%s: %v", databaseURLEnv, err)
	}
	schema := "awtest_" + randID()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, durl)
		if err != nil {
			t.Logf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

// TestHTTPAgentInvalidUTF8 has an agent service put raw 0xff bytes in every
// field it fills: the frames stay UTF-8 and the run ends properly.
func TestHTTPAgentInvalidUTF8(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"", "data: "} {
		name := map[string]string{"": "ndjson", "data: ": "sse"}[prefix]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fake := newFakeService(t, func(w http.ResponseWriter, _ *http.Request, _ []byte, _ int) {
				if prefix == "" {
					w.Header().Set("Content-Type", "application/x-ndjson")
				} else {
					w.Header().Set("Content-Type", "text/event-stream")
				}
				writeLines(w, prefix,
					"{\"type\":\"agent_thinking\",\"data\":{\"text\":\"th\xffink\"}}",
					"{\"type\":\"tool_executing\",\"data\":{\"tool_call_id\":\"c1\",\"tool\":\"t\xfe\",\"args\":{\"q\":\"a\xffb\",\"\xc3\":1}}}",
					"{\"type\":\"tool_completed\",\"data\":{\"tool_call_id\":\"c1\",\"ok\":false,\"result\":[\"r\xff\"],\"error\":{\"message\":\"e\xff\"}}}",
					"{\"type\":\"agent_message_delta\",\"data\":{\"delta\":\"d\xff\"}}",
					"{\"type\":\"agent_completed\",\"data\":{\"final_response\":\"f\xff\"}}",
				)
			})
			s := startServer(t, "--agent", "http", "--agent-url", fake.URL+"/run")
			c, _ := s.connect("utf-" + name)
			ack := c.ack("u1", "hello", nil)
			frames := c.untilTerminal(ack.RunID, 10*time.Second)
			if last := frames[len(frames)-1]; last.Type != "agent_completed" {
				t.Fatalf("run ended with %s", last.raw)
			}
			for _, f := range frames {
				if !utf8.Valid(f.raw) {
					t.Errorf("frame is not UTF-8: %q", f.raw)
				}
			}
			// A resume replays the same, valid, bytes.
			r, _ := s.connect("utf-"+name, withQuery("since=0"))
			for range frames {
				if f := r.read(); !utf8.Valid(f.raw) {
					t.Errorf("replayed frame is not UTF-8: %q", f.raw)
				}
			}
		})
	}
}

// TestTicketSurvivesRefusedConnect: a connect refused for its origin, the
// connection limit or a bad handshake does not spend its ticket; the one
// that succeeds does.
func TestTicketSurvivesRefusedConnect(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--max-connections-per-user", "1")
	var tk struct {
		Ticket string `json:"ticket"`
	}
	if code := s.do("POST", "/api/v1/tickets", s.token("tix"), nil, &tk); code != 200 || tk.Ticket == "" {
		t.Fatalf("tickets: %d %+v", code, tk)
	}
	first, _ := s.connect("tix")

	if _, resp, err := s.dial(withQuery("ticket="+tk.Ticket), withOrigin("https://evil.example")); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("bad origin: err %v resp %v", err, resp)
	}
	if _, resp, err := s.dial(withQuery("ticket=" + tk.Ticket)); err == nil || resp == nil || resp.StatusCode != 429 {
		t.Fatalf("over the limit: err %v resp %v", err, resp)
	}
	// A handshake the upgrader would refuse (version 12).
	req, _ := http.NewRequest("GET", s.URL+"/ws?ticket="+tk.Ticket, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "12")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	first.c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 400 {
			break
		}
		if resp.StatusCode != 429 || time.Now().After(deadline) {
			t.Fatalf("bad handshake: status %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond) // the first connection is still closing
	}

	c, resp, err := s.dial(withQuery("ticket=" + tk.Ticket))
	if err != nil {
		t.Fatalf("the ticket did not survive the refusals: %v (resp %v)", err, resp)
	}
	defer c.c.Close()
	if f := c.read(); f.Type != "connection_established" || f.UserID != "tix" {
		t.Fatalf("first frame %s", f.raw)
	}
	// Single use still: a second connect with it fails.
	if _, resp, err := s.dial(withQuery("ticket=" + tk.Ticket)); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("second use: err %v resp %v", err, resp)
	}
}

// startProcess runs the agentwire binary's serve on dataDir (SQLite, memory
// stream) and returns it once it listens; it is killed at cleanup.
func startProcess(t *testing.T, dataDir string) *node {
	t.Helper()
	return startServe(t, "sqlite", []string{"PATH=" + os.Getenv("PATH")}, []string{"serve", "--addr", "127.0.0.1:0",
		"--data-dir", dataDir, "--dev", "--jwt-secret", testSecret, "--api-keys", testAPIKey, "--log-level", "warn"})
}

// TestKilledSingleNodeRunsEndAtRestart kills -9 a single-node (SQLite)
// process mid-run and restarts it on the same data dir: the run is failed
// with node_lost at once, not ~15 s later when its lease expires.
func TestKilledSingleNodeRunsEndAtRestart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and starts the binary")
	}
	dir := t.TempDir()
	a := startProcess(t, dir)
	c, _ := a.connect("kill9")
	ack := c.ack("m1", "slow: what is 2+2?", nil)
	a.Kill()
	if _, ok := a.exited(0); !ok {
		t.Fatal("the process survived kill -9")
	}

	b := startProcess(t, dir)
	var run struct {
		Status    string `json:"status"`
		ErrorCode string `json:"error_code"`
		EndedAt   string `json:"ended_at"`
	}
	if code := b.do("GET", "/api/v1/runs/"+ack.RunID, b.token("kill9"), nil, &run); code != 200 {
		t.Fatalf("GET run: %d", code)
	}
	if run.Status != "failed" || run.ErrorCode != "node_lost" || run.EndedAt == "" {
		t.Fatalf("run after restart: %+v, want failed node_lost", run)
	}
}

// TestJWKSFailureInReadyz: a JWKS that cannot be fetched is a loud line at
// start and shows in /readyz's checks (which stay 200: cached keys verify).
func TestJWKSFailureInReadyz(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	down.Store(true)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k"}]}`))
	}))
	t.Cleanup(idp.Close)
	ts := testserver.Start(t, "--jwks-url", idp.URL, "--log-level", "warn")
	if !strings.Contains(ts.Stderr(), "JWKS unreachable at start") || !strings.Contains(ts.Stderr(), idp.URL) {
		t.Errorf("no loud start line with the URL in:\n%s", ts.Stderr())
	}
	readyz := func() (int, map[string]string) {
		resp, err := http.Get(ts.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Checks map[string]string `json:"checks"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body.Checks
	}
	if code, checks := readyz(); code != 200 || checks["jwks"] != "last fetch failed" {
		t.Fatalf("/readyz with the JWKS down: %d %v", code, checks)
	}
	down.Store(false)
	// An unknown kid makes the next fetch; it now succeeds.
	// (EdDSA: the only algorithms a JWKS verifier looks keys up for.)
	_, priv, _ := ed25519.GenerateKey(nil)
	jt := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": "x", "exp": time.Now().Add(time.Hour).Unix()})
	jt.Header["kid"] = "unknown"
	tok, _ := jt.SignedString(priv)
	deadline := time.Now().Add(30 * time.Second) // unknown kids fetch at most every 5 s
	for {
		req, _ := http.NewRequest("POST", ts.URL+"/api/v1/tickets", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
		if _, checks := readyz(); checks["jwks"] == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz never showed the JWKS back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
