package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/testproc"
)

// Runs across nodes: a stop reaches the run's node, the per-user run limit
// holds for the cluster, and a Redis outage during a run loses neither its
// terminal event nor leaves rows of the messages it refused.

// TestClusterStopFromAnotherNode: a run started through n1 is stopped by
// stop_agent on a connection to n2. It ends with agent_error cancelled
// within a second of the stop's ack, exactly once, and GET /api/v1/runs
// says cancelled.
func TestClusterStopFromAnotherNode(t *testing.T) {
	e := newClusterEnv(t)
	n1, n2 := e.startNode("n1", ""), e.startNode("n2", "")
	alice := e.user("alice")
	tok := n1.token(alice)
	tab1, _ := n1.connect(alice)
	tab2, _ := n2.connect(alice)

	ack := tab1.ack("m1", "please be slow about it", nil)
	// The run is under way (seen on n2's tab too) before the stop.
	tab2.readUntilFn(10*time.Second, "agent_thinking on n2", func(f frame) bool {
		return f.Type == "agent_thinking" && f.RunID == ack.RunID
	})
	sent := time.Now()
	tab2.send(map[string]any{"type": "stop_agent", "id": "s1", "run_id": ack.RunID})
	reply, _ := tab2.untilReply("s1", 5*time.Second)
	if reply.Type != "ack" {
		t.Fatalf("stop_agent on n2: %s, want ack", reply.raw)
	}
	fs := tab2.untilTerminal(ack.RunID, 10*time.Second)
	took := time.Since(sent)
	last := fs[len(fs)-1]
	if d := dataOf(t, last); last.Type != "agent_error" || d.Code != "cancelled" {
		t.Fatalf("the run stopped on n2 ended with %s, want agent_error code cancelled", last.raw)
	}
	t.Logf("cancelled %v after stop_agent on the other node", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("the stop took %v to end the run, want within 1 s", took)
	}
	// Nothing of the run after its end, on either tab; the stream holds the
	// run whole, with one terminal event.
	for _, f := range ofRun(n2.probe(alice, tab1, tab2), ack.RunID) {
		if f.Seq > last.Seq {
			t.Fatalf("event of the run after its end: %s", f.raw)
		}
	}
	run := ofRun(n2.eventsOf(tok), ack.RunID)
	checkRunOrder(t, run)
	if r := n2.waitRunStatus(tok, ack.RunID, "cancelled"); r.EndedAt == nil {
		t.Fatalf("cancelled run without ended_at: %+v", r)
	}
	// Its transcript, written on n1, reads the same from n2: the stream's
	// events but deltas (folded), ending with the stop.
	var page struct {
		Events []frame `json:"events"`
	}
	if code := n2.do("GET", "/api/v1/runs/"+ack.RunID+"/events", tok, nil, &page); code != 200 {
		t.Fatalf("GET the run's events on n2: %d", code)
	}
	if got, want := summary(t, page.Events, true), summary(t, run[1:], false); got != want { // run[0]: the echo
		t.Errorf("transcript on n2:\n%s\nthe stream:\n%s", got, want)
	}
}

// TestClusterRunLimit: the per-user run limit (3) holds across two nodes,
// a slot comes back when a run ends, and the slots of a node that died come
// back once its leases lapse.
func TestClusterRunLimit(t *testing.T) {
	e := newClusterEnv(t)
	lease := []string{"--run-lease-ttl", "2s", "--run-lease-renew", "500ms", "--max-runs-per-user", "3"}
	n1, n2 := e.startNode("n1", "", lease...), e.startNode("n2", "", lease...)
	bob := e.user("bob")
	tab1, _ := n1.connect(bob)
	tab2, _ := n2.connect(bob)

	accepted(tab1, "a1", "be slow one")
	accepted(tab1, "a2", "be slow two")
	b1 := accepted(tab2, "b1", "be slow three")
	for _, c := range []*client{tab2, tab1} {
		c.userMessage("over", "be slow four", nil)
		reply, _ := c.untilReply("over", 5*time.Second)
		if reply.Type != "error" || reply.Code != "too_many_runs" {
			t.Fatalf("a 4th concurrent run across two nodes: %s, want error too_many_runs", reply.raw)
		}
	}

	// Stopping a run frees its slot at once, on any node.
	tab2.send(map[string]any{"type": "stop_agent", "id": "s1", "run_id": b1.RunID})
	tab2.untilTerminal(b1.RunID, 10*time.Second)
	a3 := accepted(tab1, "a3", "be slow five")

	// n1 dies holding the user's runs (a3 at least, just started): once
	// their leases lapse (the reaper's node_lost says so), their slots are
	// free and n2 takes three runs.
	n1.Kill()
	killed := time.Now()
	tab2.readUntilFn(30*time.Second, "node_lost of a3", func(f frame) bool {
		return f.Type == "agent_error" && f.RunID == a3.RunID
	})
	t.Logf("a3 reaped %v after the kill", time.Since(killed).Round(time.Millisecond))
	for i := range 3 {
		id := fmt.Sprintf("after%d", i)
		tab2.userMessage(id, "be slow after", nil)
		if reply, _ := tab2.untilReply(id, 5*time.Second); reply.Type != "ack" {
			t.Fatalf("run %d on n2 after n1's runs were reaped: %s, want ack (the dead node's slots came back)", i+1, reply.raw)
		}
	}
}

// accepted sends a user_message on c and returns its ack, skipping the
// events that come before it.
func accepted(c *client, id, content string) frame {
	c.t.Helper()
	c.userMessage(id, content, nil)
	reply, _ := c.untilReply(id, 5*time.Second)
	if reply.Type != "ack" || reply.RunID == "" {
		c.t.Fatalf("user_message %s: %s, want its ack", id, reply.raw)
	}
	return reply
}

// TestClusterRedisOutageMidRun: Redis dies while a run is under way and the
// run ends meanwhile (its events cannot be appended). Once Redis is back,
// the stream gets the run's terminal event, exactly once, and the run's
// error message carries no address or driver error. A message sent during
// the outage is refused and leaves no thread or run behind.
func TestClusterRedisOutageMidRun(t *testing.T) {
	e := newClusterEnv(t)
	r := startRedis(t)
	n1 := e.startNode("n1", r.URL())
	carol := e.user("carol")
	tok := n1.token(carol)
	tab, _ := n1.connect(carol)
	ack := tab.ack("m1", "please be slow about it", nil)
	tab.readUntilFn(10*time.Second, "agent_thinking", func(f frame) bool { return f.Type == "agent_thinking" && f.RunID == ack.RunID })

	r.Kill()
	// The run cannot go on without the stream: it ends (in the store) while
	// Redis is down.
	if !testproc.WaitFor(20*time.Second, func() bool { return n1.run(tok, ack.RunID).Status != "running" }) {
		t.Fatal("the run still running 20 s into the Redis outage")
	}
	// A message sent now is refused and leaves nothing behind.
	var before struct {
		Threads []struct{ ID string } `json:"threads"`
	}
	if code := n1.do("GET", "/api/v1/threads", tok, nil, &before); code != 200 {
		t.Fatalf("GET /api/v1/threads: %d", code)
	}
	tab.userMessage("m2", "a message during the outage", nil)
	reply, _ := tab.untilReply("m2", 15*time.Second)
	if reply.Type != "error" {
		t.Fatalf("user_message during the Redis outage: %s, want an error", reply.raw)
	}
	var after struct {
		Threads []struct{ ID string } `json:"threads"`
	}
	if code := n1.do("GET", "/api/v1/threads", tok, nil, &after); code != 200 {
		t.Fatalf("GET /api/v1/threads: %d", code)
	}
	if len(after.Threads) != len(before.Threads) {
		t.Fatalf("the refused message left a thread: %d threads before, %d after", len(before.Threads), len(after.Threads))
	}

	if err := r.Restart(); err != nil {
		t.Fatal(err)
	}
	// The terminal event arrives once the stream takes it (each read may
	// still fail while the node finds Redis again).
	var evs []frame
	terminals := func() bool {
		code, body, err := n1.status("GET", "/api/v1/events?since=0", tok, nil)
		if err != nil || code != 200 {
			return false
		}
		var out struct {
			Events []frame `json:"events"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("GET /api/v1/events: %v: %s", err, body)
		}
		evs = evs[:0]
		for _, f := range out.Events {
			if f.RunID == ack.RunID && isTerminal(f) {
				evs = append(evs, f)
			}
		}
		return len(evs) > 0
	}
	if !testproc.WaitFor(20*time.Second, terminals) {
		t.Fatal("no terminal event of the run 20 s after Redis came back")
	}
	// After a later event (anything the node had queued for the run is
	// in before it): still exactly one.
	if code, _, body := n1.publishStatus(map[string]any{"user_id": carol, "type": "test.after", "data": map[string]int{}}); code != 200 {
		t.Fatalf("publish after the outage: %d %s", code, body)
	}
	terminals()
	if len(evs) != 1 {
		t.Fatalf("%d terminal events of the run after the outage, want exactly 1: %+v", len(evs), evs)
	}
	var run struct {
		Status       string `json:"status"`
		ErrorMessage string `json:"error_message"`
	}
	if code := n1.do("GET", "/api/v1/runs/"+ack.RunID, tok, nil, &run); code != 200 {
		t.Fatalf("GET run: %d", code)
	}
	msg := run.ErrorMessage + " " + string(evs[0].Data)
	for _, leak := range []string{"127.0.0.1", "dial", "tcp", "refused", "redis"} {
		if strings.Contains(strings.ToLower(msg), leak) {
			t.Fatalf("the run's user-visible error carries %q: %s", leak, msg)
		}
	}
	t.Logf("run %s, error_message %q", run.Status, run.ErrorMessage)
}

// TestClusterMessageRightAfterPostgresCut: every PostgreSQL backend of the
// node is terminated while its pool is busy (a run renews its lease every
// 100 ms, so no connection idles long enough to be pinged); the very next
// user_message is accepted: the store tries again on a fresh connection
// instead of answering internal_error.
func TestClusterMessageRightAfterPostgresCut(t *testing.T) {
	e := newClusterEnv(t)
	n1 := e.startNode("n1", "", "--run-lease-ttl", "2s", "--run-lease-renew", "100ms")
	dave := e.user("dave")
	tab, _ := n1.connect(dave)
	for i := range 3 {
		busy := accepted(tab, fmt.Sprintf("busy%d", i), "be slow while the database goes")
		tab.readUntilFn(10*time.Second, "agent_thinking", func(f frame) bool { return f.Type == "agent_thinking" && f.RunID == busy.RunID })
		if n := e.cutPostgres(); n == 0 {
			t.Fatal("no PostgreSQL backend of the node to terminate")
		}
		tab.userMessage(fmt.Sprintf("m%d", i), "right after the cut", nil)
		if reply, _ := tab.untilReply(fmt.Sprintf("m%d", i), 10*time.Second); reply.Type != "ack" {
			t.Fatalf("user_message right after the PostgreSQL backends were terminated (round %d): %s, want ack", i+1, reply.raw)
		}
		tab.untilTerminal(busy.RunID, 10*time.Second)
	}
}
