package e2e

import (
	"net/http"
	"testing"

	"github.com/agentwire/agentwire/protocol"
)

// TestClusterSSEResumeOnOtherNode: a tab reads its stream over SSE from one
// node, loses it mid-run, and resumes with Last-Event-ID on the other node:
// every event exactly once, the run whole. Sending and stopping over HTTP
// work from either node.
func TestClusterSSEResumeOnOtherNode(t *testing.T) {
	e := newClusterEnv(t)
	n1, n2 := e.startNode("n1", ""), e.startNode("n2", "")
	alice := e.user("alice")
	tok := n1.token(alice)

	tab, est := streamSSE(t, n1.URL, "", bearer(tok))
	// A run started over HTTP on n2, read over SSE on n1.
	ack := sendAck(t, n2.server, tok, map[string]any{"content": "please be slow: what is 6*7?", "client_message_id": "c1"})
	before := tab.until("the run under way", func(f frame) bool { return f.RunID == ack.RunID && f.Type == "agent_thinking" })
	checkIDs(t, before)
	last := before[len(before)-1]
	tab.close()
	n1.publish(alice, "while.away", map[string]any{})

	h := bearer(tok)
	h.Set("Last-Event-ID", last.id)
	tab2, est2 := streamSSE(t, n2.URL, "", h)
	if est2.Epoch != est.Epoch {
		t.Fatalf("epoch changed between nodes: %s then %s", est.raw, est2.raw)
	}
	after := tab2.until("the run's end", func(f frame) bool { return f.RunID == ack.RunID && isTerminal(f) })
	checkIDs(t, after)
	var all []frame
	for _, it := range append(before, after...) {
		if it.f.Seq > 0 {
			all = append(all, it.f)
		}
	}
	checkContiguous(t, all, est.HeadSeq+1)
	run := ofRun(all, ack.RunID)
	checkRunOrder(t, run)
	if lastEv := run[len(run)-1]; lastEv.Type != "agent_completed" {
		t.Fatalf("run ended with %s", lastEv.raw)
	}
	// Exactly the stream's history, nothing more, nothing less.
	hist := n2.eventsOf(tok)
	if len(hist) < len(all) {
		t.Fatalf("history has %d events, the tab saw %d", len(hist), len(all))
	}
	for i, f := range all {
		if hist[i].Seq != f.Seq || hist[i].Type != f.Type || protocol.EventID(hist[i].Epoch, hist[i].Seq) != protocol.EventID(f.Epoch, f.Seq) {
			t.Fatalf("event %d: tab %s, history %s", i, f.raw, hist[i].raw)
		}
	}

	// A run started on n1 and stopped over HTTP on n2 ends cancelled; the
	// other user cannot stop it from either node.
	slow := sendAck(t, n1.server, tok, map[string]any{"content": "please be slow"})
	tab2.until("the second run under way", func(f frame) bool { return f.RunID == slow.RunID && f.Type == "agent_thinking" })
	other := n1.token(e.user("mallory"))
	for _, n := range []*node{n1, n2} {
		if code, raw := n.post("/api/v1/runs/"+slow.RunID+"/stop", other, nil); code != http.StatusNotFound || errorCode(raw) != "not_found" {
			t.Fatalf("another user's stop on %s: %d %s", n.name, code, raw)
		}
	}
	if code, raw := n2.post("/api/v1/runs/"+slow.RunID+"/stop", tok, nil); code != 200 {
		t.Fatalf("stop on n2: %d %s", code, raw)
	}
	end := tab2.until("the stopped run's end", func(f frame) bool { return f.RunID == slow.RunID && isTerminal(f) })
	if f := end[len(end)-1].f; f.Type != "agent_error" || dataOf(t, f).Code != "cancelled" {
		t.Fatalf("stopped run ended with %s", f.raw)
	}
}
