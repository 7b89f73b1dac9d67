package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/agui"
	"github.com/agentwire/agentwire/internal/agui/aguitest"
)

// Human in the loop across nodes (PROTOCOL.md sections 3, 4 and 7): the
// demo agent asks (input_required) on the node that runs the run, and a
// tab on the other node answers; the first answer wins cluster-wide.

// inputData is the data of input_required and input_received.
type inputData struct {
	RequestID string   `json:"request_id"`
	Kind      string   `json:"kind"`
	Prompt    string   `json:"prompt"`
	Options   []string `json:"options"`
	Approved  *bool    `json:"approved"`
	Text      *string  `json:"text"`
	Choice    *string  `json:"choice"`
}

func inputOf(t *testing.T, f frame) inputData {
	t.Helper()
	var d inputData
	if err := json.Unmarshal(f.Data, &d); err != nil || d.RequestID == "" {
		t.Fatalf("%s without request_id: %s", f.Type, f.raw)
	}
	return d
}

// waitInput reads c until runID asks and returns the request.
func waitInput(t *testing.T, c *client, runID string) inputData {
	t.Helper()
	fs := c.readUntilFn(15*time.Second, "input_required of "+runID, func(f frame) bool {
		return f.Type == "input_required" && f.RunID == runID
	})
	return inputOf(t, fs[len(fs)-1])
}

// answerHTTP posts an answer through n and returns the status and code.
func answerHTTP(t *testing.T, n *node, tok, runID string, body map[string]any) (int, string) {
	t.Helper()
	code, b, err := n.status("POST", "/api/v1/runs/"+runID+"/input", tok, body)
	if err != nil {
		t.Fatal(err)
	}
	return code, errorCode(b)
}

// TestClusterInputApprovalFromAnotherNode: a run of n1 asks; a tab on n2
// approves with the user_input frame; both tabs see input_received, the run
// completes with the computed answer, and a second answer (over HTTP, on
// n1) is 409 conflict.
func TestClusterInputApprovalFromAnotherNode(t *testing.T) {
	e := newClusterEnv(t)
	n1, n2 := e.startNode("n1", ""), e.startNode("n2", "")
	alice := e.user("alice")
	tok := n1.token(alice)
	tab1, _ := n1.connect(alice)
	tab2, _ := n2.connect(alice)

	ack := tab1.ack("m1", "please approve 6*7", nil)
	req := waitInput(t, tab2, ack.RunID)
	if req.Kind != "approval" || req.Prompt == "" {
		t.Fatalf("input_required %+v, want an approval with a prompt", req)
	}
	waitInput(t, tab1, ack.RunID)
	n2.waitRunStatus(tok, ack.RunID, "waiting_for_input")
	tab2.send(map[string]any{"type": "user_input", "id": "i1", "run_id": ack.RunID, "request_id": req.RequestID, "approved": true})
	if reply, _ := tab2.untilReply("i1", 5*time.Second); reply.Type != "ack" || reply.RunID != ack.RunID {
		t.Fatalf("user_input on n2: %s, want ack", reply.raw)
	}
	for _, tab := range []*client{tab1, tab2} {
		fs := tab.untilTerminal(ack.RunID, 10*time.Second)
		var got *inputData
		for _, f := range ofRun(fs, ack.RunID) {
			if f.Type == "input_received" {
				d := inputOf(t, f)
				got = &d
			}
		}
		if got == nil || got.RequestID != req.RequestID || got.Approved == nil || !*got.Approved {
			t.Fatalf("input_received %+v in %s", got, typesOf(fs))
		}
		if last := fs[len(fs)-1]; last.Type != "agent_completed" || !strings.Contains(dataOf(t, last).FinalResponse, "42") {
			t.Fatalf("end %s, want agent_completed with 42", last.raw)
		}
	}
	if code, c := answerHTTP(t, n1, tok, ack.RunID, map[string]any{"request_id": req.RequestID, "approved": false}); code != 409 || c != "conflict" {
		t.Fatalf("a second answer: %d %s, want 409 conflict", code, c)
	}
	run := ofRun(n2.eventsOf(tok), ack.RunID)
	checkRunOrder(t, run)
	if n := strings.Count(typesOf(run), "input_received"); n != 1 {
		t.Fatalf("%d input_received in %s, want 1", n, typesOf(run))
	}
}

// TestClusterInputDenialTextConflictStop: over HTTP from the other node, a
// denial ends the run with the demo's answer saying so; a text answer is
// computed; two racing answers give one ack and one conflict; a stop while
// waiting cancels.
func TestClusterInputDenialTextConflictStop(t *testing.T) {
	e := newClusterEnv(t)
	n1, n2 := e.startNode("n1", ""), e.startNode("n2", "")
	bob := e.user("bob")
	tok := n2.token(bob)
	tab1, _ := n1.connect(bob)

	// Denial.
	ack := tab1.ack("m1", "approve this", nil)
	req := waitInput(t, tab1, ack.RunID)
	if code, c := answerHTTP(t, n2, tok, ack.RunID, map[string]any{"request_id": req.RequestID, "text": "no"}); code != 400 || c != "invalid_message" {
		t.Fatalf("a text answer to an approval: %d %s, want 400 invalid_message", code, c)
	}
	if code, c := answerHTTP(t, n2, tok, ack.RunID, map[string]any{"request_id": req.RequestID, "approved": false}); code != 200 {
		t.Fatalf("denial: %d %s", code, c)
	}
	fs := tab1.untilTerminal(ack.RunID, 10*time.Second)
	if last := fs[len(fs)-1]; last.Type != "agent_completed" || !strings.Contains(dataOf(t, last).FinalResponse, "denied") {
		t.Fatalf("end after a denial %s", last.raw)
	}

	// Text, with two answers racing from both nodes: one wins.
	ack = tab1.ack("m2", "ask me", nil)
	req = waitInput(t, tab1, ack.RunID)
	if req.Kind != "text" {
		t.Fatalf("kind %q, want text", req.Kind)
	}
	type res struct {
		code int
		c    string
	}
	results := make(chan res, 2)
	for _, n := range []*node{n1, n2} {
		go func() {
			code, b, err := n.status("POST", "/api/v1/runs/"+ack.RunID+"/input", tok, map[string]any{"request_id": req.RequestID, "text": "6*7"})
			if err != nil {
				code = -1
			}
			results <- res{code, errorCode(b)}
		}()
	}
	a, b := <-results, <-results
	if !(a.code == 200 && b.code == 409 && b.c == "conflict") && !(b.code == 200 && a.code == 409 && a.c == "conflict") {
		t.Fatalf("two racing answers: %v and %v, want one 200 and one 409 conflict", a, b)
	}
	fs = tab1.untilTerminal(ack.RunID, 10*time.Second)
	if last := fs[len(fs)-1]; last.Type != "agent_completed" || !strings.Contains(dataOf(t, last).FinalResponse, "42") {
		t.Fatalf("end after a text answer %s", last.raw)
	}
	if n := strings.Count(typesOf(ofRun(fs, ack.RunID)), "input_received"); n != 1 {
		t.Fatalf("%d input_received, want 1: %s", n, typesOf(fs))
	}

	// Stop while waiting, from the other node.
	ack = tab1.ack("m3", "choose one", nil)
	req = waitInput(t, tab1, ack.RunID)
	if req.Kind != "choice" || len(req.Options) == 0 {
		t.Fatalf("input_required %+v, want a choice", req)
	}
	n2.waitRunStatus(tok, ack.RunID, "waiting_for_input") // a stop of a waiting run goes to its node too
	if code, _, err := n2.status("POST", "/api/v1/runs/"+ack.RunID+"/stop", tok, nil); err != nil || code != 200 {
		t.Fatalf("stop: %d %v", code, err)
	}
	fs = tab1.untilTerminal(ack.RunID, 10*time.Second)
	if last := fs[len(fs)-1]; last.Type != "agent_error" || dataOf(t, last).Code != "cancelled" {
		t.Fatalf("end after a stop while waiting %s", last.raw)
	}
	if code, c := answerHTTP(t, n2, tok, ack.RunID, map[string]any{"request_id": req.RequestID, "choice": req.Options[0]}); code != 409 || c != "conflict" {
		t.Fatalf("an answer after the stop: %d %s, want 409 conflict", code, c)
	}
	n2.waitRunStatus(tok, ack.RunID, "cancelled")
}

// TestClusterInputTimeoutAndNodeLost: an unanswered request ends the run
// with input_timeout after --input-timeout; a node killed while its run
// waits has the run reaped as node_lost, exactly once.
func TestClusterInputTimeoutAndNodeLost(t *testing.T) {
	e := newClusterEnv(t)
	args := []string{"--input-timeout", "2s", "--run-timeout", "1s", "--run-lease-ttl", "2s", "--run-lease-renew", "500ms"}
	n1, n2 := e.startNode("n1", "", args...), e.startNode("n2", "", args...)
	carol := e.user("carol")
	tok := n2.token(carol)
	tab1, _ := n1.connect(carol)
	tab2, _ := n2.connect(carol)

	// The wait outlasts --run-timeout (1 s) and is still ended by the input timeout.
	ack := tab1.ack("m1", "approve", nil)
	waitInput(t, tab1, ack.RunID)
	fs := tab1.untilTerminal(ack.RunID, 10*time.Second)
	if last := fs[len(fs)-1]; last.Type != "agent_error" || dataOf(t, last).Code != "input_timeout" {
		t.Fatalf("end of an unanswered run %s, want agent_error input_timeout", last.raw)
	}

	ack = tab1.ack("m2", "approve", nil)
	req := waitInput(t, tab2, ack.RunID)
	n2.waitRunStatus(tok, ack.RunID, "waiting_for_input")
	n1.Kill()
	fs = tab2.readUntilFn(30*time.Second, "node_lost", func(f frame) bool { return isTerminal(f) && f.RunID == ack.RunID })
	if last := fs[len(fs)-1]; last.Type != "agent_error" || dataOf(t, last).Code != "node_lost" {
		t.Fatalf("end of a waiting run of a killed node %s, want node_lost", last.raw)
	}
	if code, c := answerHTTP(t, n2, tok, ack.RunID, map[string]any{"request_id": req.RequestID, "approved": true}); code != 409 || c != "conflict" {
		t.Fatalf("an answer after node_lost: %d %s, want 409 conflict", code, c)
	}
	e.reapRound(n2)
	e.reapRound(n2)
	run := ofRun(n2.eventsOf(tok), ack.RunID)
	checkRunOrder(t, run)
	if n := strings.Count(typesOf(run), "agent_error"); n != 1 {
		t.Fatalf("%d agent_error in %s, want exactly one", n, typesOf(run))
	}
}

// TestClusterAGUIInterruptResumedOnOtherNode: through the AG-UI endpoint,
// a run of n1 that asks ends its response with an interrupt; the resume
// request on n2 answers it and streams the rest of the run; resuming again
// is 409 conflict.
func TestClusterAGUIInterruptResumedOnOtherNode(t *testing.T) {
	e := newClusterEnv(t)
	n1, n2 := e.startNode("n1", ""), e.startNode("n2", "")
	dana := e.user("dana")
	tok := n1.token(dana)
	thread := "agui-hitl-" + e.id
	in := agui.RunAgentInput{ThreadID: thread, RunID: "client-run",
		Messages: []agui.Message{{ID: "m-" + e.id, Role: agui.RoleUser, Content: agui.String("approve 6*7")}}}
	first := aguiPost(t, n1.URL, "/api/v1/agui", tok, "", in, nil)
	end := first[len(first)-1]
	var interrupts []agui.Interrupt
	if end.Type != agui.RunFinished || end.Outcome == nil || end.Outcome.Type != agui.OutcomeInterrupt ||
		json.Unmarshal(end.Outcome.Interrupts, &interrupts) != nil || len(interrupts) != 1 {
		t.Fatalf("first response ends with %+v", end.Event)
	}
	resume := agui.RunAgentInput{ThreadID: thread, RunID: "client-run-2",
		Resume: []agui.ResumeEntry{{InterruptID: interrupts[0].ID, Status: agui.ResumeResolved, Payload: json.RawMessage(`{"approved":true}`)}}}
	rest := aguiPost(t, n2.URL, "/api/v1/agui", tok, "", resume, nil)
	types := strings.Join(aguitest.Types(rest), " ")
	fin := rest[len(rest)-1]
	if rest[0].Type != agui.RunStarted || rest[0].RunID != first[0].RunID || fin.Type != agui.RunFinished ||
		fin.Outcome == nil || fin.Outcome.Type != agui.OutcomeSuccess || !strings.Contains(string(fin.Result), "42") {
		t.Fatalf("resumed on n2: %s, result %s", types, fin.Result)
	}
	if code, c := answerHTTP(t, n2, tok, first[0].RunID, map[string]any{"request_id": strings.TrimPrefix(interrupts[0].ID, first[0].RunID+":"), "approved": true}); code != 409 || c != "conflict" {
		t.Fatalf("answering again: %d %s, want 409 conflict", code, c)
	}
}
