package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// The admin API (issue 14, PROTOCOL.md section 16).

const testAdminKey = "e2e-admin-key-0123456789"

var adminKeysFlag = []string{"--admin-keys", "ops:" + testAdminKey}

// oldToken is a token of user issued a minute ago: what a revocation at
// "now" refuses.
func oldToken(t *testing.T, user string) string {
	t.Helper()
	now := time.Now()
	tok, err := signRaw(map[string]any{"sub": user, "iat": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestAdminAuth: only an admin key opens the admin API; a publish key and a
// user's token are the wrong credentials (403), anything else is 401; a
// server without --admin-keys has no admin API.
func TestAdminAuth(t *testing.T) {
	s := startServer(t, adminKeysFlag...)
	for _, tc := range []struct {
		name, bearer string
		status       int
		code         string
	}{
		{"no credentials", "", 401, "unauthorized"},
		{"a wrong key", "not-a-key-0123456789", 401, "unauthorized"},
		{"the admin key with a suffix", testAdminKey + "x", 401, "unauthorized"},
		{"a publish key", testAPIKey, 403, "forbidden"},
		{"a user's token", s.token("mallory"), 403, "forbidden"},
	} {
		for _, ep := range []struct{ method, path string }{
			{"GET", "/api/v1/admin/nodes"}, {"GET", "/api/v1/admin/runs"},
			{"GET", "/api/v1/admin/users/alice/connections"}, {"POST", "/api/v1/admin/users/alice/disconnect"},
			{"POST", "/api/v1/admin/users/alice/revoke"}, {"POST", "/api/v1/admin/runs/r1/cancel"},
		} {
			var body json.RawMessage
			if got := s.do(ep.method, ep.path, tc.bearer, nil, &body); got != tc.status || !strings.Contains(string(body), `"`+tc.code+`"`) {
				t.Errorf("%s %s with %s: %d %s, want %d %s", ep.method, ep.path, tc.name, got, body, tc.status, tc.code)
			}
		}
	}
	var nodes struct {
		Nodes []string `json:"nodes"`
	}
	if code := s.do("GET", "/api/v1/admin/nodes", testAdminKey, nil, &nodes); code != 200 || len(nodes.Nodes) != 1 {
		t.Fatalf("GET /api/v1/admin/nodes with the admin key: %d %v, want 200 and this node", code, nodes.Nodes)
	}
	// Bad input is refused before anything is done.
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/api/v1/admin/runs?limit=0", ""},
		{"GET", "/api/v1/admin/runs?limit=501", ""},
		{"GET", "/api/v1/admin/runs?after=nonsense", ""},
		{"POST", "/api/v1/admin/users/" + url.PathEscape("a\x01b") + "/disconnect", ""},
		{"POST", "/api/v1/admin/users/alice/revoke", `{"before":"` + time.Now().Add(time.Hour).Format(time.RFC3339) + `"}`},
		{"POST", "/api/v1/admin/users/alice/revoke", `{"before":"yesterday"}`},
	} {
		req, _ := http.NewRequest(tc.method, s.URL+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%s %s %s: %d, want 400", tc.method, tc.path, tc.body, resp.StatusCode)
		}
	}
	if code := s.do("POST", "/api/v1/admin/runs/no-such-run/cancel", testAdminKey, nil, nil); code != 404 {
		t.Errorf("cancel of an unknown run: %d, want 404", code)
	}

	plain := startServer(t)
	if code := plain.do("GET", "/api/v1/admin/nodes", testAPIKey, nil, nil); code != 404 {
		t.Errorf("without --admin-keys: GET /api/v1/admin/nodes %d, want 404", code)
	}
}

// adminConns is the answer of GET /api/v1/admin/users/{user}/connections.
type adminConns struct {
	Connections []struct {
		ID          string    `json:"id"`
		Node        string    `json:"node"`
		Transport   string    `json:"transport"`
		ConnectedAt time.Time `json:"connected_at"`
		LastSeq     uint64    `json:"last_seq"`
	} `json:"connections"`
	Nodes    []string `json:"nodes"`
	Answered []string `json:"answered"`
	Complete bool     `json:"complete"`
}

// closedWithin reads c until it closes and returns the close code and how
// long after since it came.
func closedWithin(t *testing.T, c *client, since time.Time) (int, time.Duration) {
	t.Helper()
	code := c.expectClose(10 * time.Second)
	return code, time.Since(since)
}

// TestClusterAdmin: on two nodes sharing Redis and PostgreSQL, the admin
// API of either node lists a user's connections on both, lists and cancels
// a run of the other node, and disconnects a user and revokes a user's
// tokens everywhere within a second.
func TestClusterAdmin(t *testing.T) {
	e := newClusterEnv(t)
	n1, n2 := e.startNode("n1", "", adminKeysFlag...), e.startNode("n2", "", adminKeysFlag...)

	// Both nodes are listed once they announced themselves.
	var nodes struct {
		Nodes []string `json:"nodes"`
	}
	if !waitProgress(10*time.Second, func() int64 { return 0 }, func() bool {
		return n1.do("GET", "/api/v1/admin/nodes", testAdminKey, nil, &nodes) == 200 && len(nodes.Nodes) >= 2
	}) {
		t.Fatalf("GET /api/v1/admin/nodes: %v, want both nodes", nodes.Nodes)
	}

	// Connections on both nodes, listed through either.
	alice := e.user("alice")
	a1, _ := n1.connect(alice)
	a2, _ := n2.connect(alice)
	seq, _ := n1.publish(alice, "note.admin", map[string]string{"x": "1"})
	for _, c := range []*client{a1, a2} {
		if f := c.read(); f.Seq != seq {
			t.Fatalf("publish: got %s, want seq %d", f.raw, seq)
		}
	}
	var conns adminConns
	if code := n2.do("GET", "/api/v1/admin/users/"+url.PathEscape(alice)+"/connections", testAdminKey, nil, &conns); code != 200 {
		t.Fatalf("list connections: %d", code)
	}
	// Nodes of earlier runs sharing this Redis may still be listed (a killed
	// node stays listed up to 15 s, and then the answer is not complete):
	// this test's two nodes must have answered, with one connection each.
	if len(conns.Connections) != 2 || conns.Connections[0].Node == conns.Connections[1].Node {
		t.Fatalf("connections of %s: %+v, want one on each node", alice, conns)
	}
	for _, c := range conns.Connections {
		if !slices.Contains(conns.Answered, c.Node) || !slices.Contains(conns.Nodes, c.Node) {
			t.Fatalf("connections of %s: %+v, node %s not listed as asked and answered", alice, conns, c.Node)
		}
	}
	for _, c := range conns.Connections {
		if c.Transport != "websocket" || c.LastSeq != seq || c.ConnectedAt.IsZero() || time.Since(c.ConnectedAt) > time.Minute {
			t.Errorf("connection %+v: want websocket, last_seq %d, connected just now", c, seq)
		}
	}

	// A slow run of bob on node 2, listed and cancelled through node 1.
	bob := e.user("bob")
	b2, _ := n2.connect(bob)
	ack := b2.ack("m1", "slow: what is 1+1?", nil)
	var runs struct {
		Runs []struct {
			RunID  string `json:"run_id"`
			UserID string `json:"user_id"`
			Node   string `json:"node"`
			Status string `json:"status"`
		} `json:"runs"`
		HasMore bool `json:"has_more"`
	}
	if code := n1.do("GET", "/api/v1/admin/runs?user="+url.QueryEscape(bob), testAdminKey, nil, &runs); code != 200 ||
		len(runs.Runs) != 1 || runs.Runs[0].RunID != ack.RunID || runs.Runs[0].Status != "running" || runs.Runs[0].Node == "" {
		t.Fatalf("admin runs of %s: %d %+v, want the running run %s", bob, code, runs, ack.RunID)
	}
	if code := n1.do("POST", "/api/v1/admin/runs/"+ack.RunID+"/cancel", testAdminKey, nil, nil); code != 200 {
		t.Fatalf("cancel through the other node: %d", code)
	}
	evs := ofRun(streamFrames(b2.untilTerminal(ack.RunID, 10*time.Second)), ack.RunID)
	if last := evs[len(evs)-1]; last.Type != "agent_error" || dataOf(t, last).Code != "cancelled" {
		t.Fatalf("cancelled run ended with %s, want agent_error cancelled", last.raw)
	}
	if code := n1.do("POST", "/api/v1/admin/runs/"+ack.RunID+"/cancel", testAdminKey, nil, nil); code != 409 {
		t.Fatalf("cancel of an ended run: %d, want 409", code)
	}

	// Disconnect through node 1: both of alice's tabs close with 4003
	// within a second; bob's stays.
	start := time.Now()
	if code := n1.do("POST", "/api/v1/admin/users/"+url.PathEscape(alice)+"/disconnect", testAdminKey, nil, nil); code != 200 {
		t.Fatalf("disconnect: %d", code)
	}
	for i, c := range []*client{a1, a2} {
		code, took := closedWithin(t, c, start)
		t.Logf("disconnect: tab on n%d closed %d after %v", i+1, code, took)
		if code != 4003 || took > time.Second {
			t.Errorf("tab on n%d: close %d after %v, want 4003 within 1 s", i+1, code, took)
		}
	}
	if seq, _ := n2.publish(bob, "note.admin", nil); b2.readUntil("note.admin").Seq != seq {
		t.Fatal("bob's connection did not stay open")
	}

	// Revoke carol's tokens through node 2: her tabs on both nodes, which
	// came with a token issued a minute ago, close within a second; the
	// token is refused from then on, on either node, for every endpoint; a
	// token issued afterwards works.
	carol := e.user("carol")
	old := oldToken(t, carol)
	c1, _ := n1.connect(carol, withBearer(old))
	c2, _ := n2.connect(carol, withBearer(old))
	start = time.Now()
	var rev struct {
		RevokedBefore time.Time `json:"revoked_before"`
	}
	if code := n2.do("POST", "/api/v1/admin/users/"+url.PathEscape(carol)+"/revoke", testAdminKey, nil, &rev); code != 200 || rev.RevokedBefore.IsZero() {
		t.Fatalf("revoke: %d %+v", code, rev)
	}
	for i, c := range []*client{c1, c2} {
		code, took := closedWithin(t, c, start)
		t.Logf("revoke: tab on n%d closed %d after %v", i+1, code, took)
		if code != 4003 || took > time.Second {
			t.Errorf("tab on n%d: close %d after %v, want 4003 within 1 s", i+1, code, took)
		}
	}
	for _, n := range []*node{n1, n2} {
		if _, resp, err := n.dial(withBearer(old)); err == nil || resp == nil || resp.StatusCode != 401 {
			t.Errorf("%s: connect with the revoked token: %v, want 401", n.name, err)
		}
		if code := n.do("GET", "/api/v1/threads", old, nil, nil); code != 401 {
			t.Errorf("%s: GET /api/v1/threads with the revoked token: %d, want 401", n.name, code)
		}
	}
	// iat has a second's precision: a token counts as issued after the
	// revocation from the next second on.
	freshTok, err := signRaw(map[string]any{"sub": carol, "iat": rev.RevokedBefore.Truncate(time.Second).Add(time.Second).Unix(),
		"exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := n1.connect(carol, withBearer(freshTok))
	if seq, _ := n2.publish(carol, "note.admin", nil); fresh.readUntil("note.admin").Seq != seq {
		t.Fatal("a token issued after the revocation does not work")
	}
}
