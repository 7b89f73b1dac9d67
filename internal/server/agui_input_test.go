package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/agentwire/agentwire/internal/agent/demo"
	"github.com/agentwire/agentwire/internal/agui"
)

// A run that asks ends its AG-UI response with RUN_FINISHED outcome
// interrupt; a run request with the resume entry answers it and streams
// the rest of the run; a second answer is 409 conflict.
func TestAGUIInterruptAndResume(t *testing.T) {
	t.Parallel()
	e := newAGUI(t, demo.New(demo.Options{Pace: 1}), aguiOpts{})
	resp := e.post(t.Context(), "alice", "/api/v1/agui", input("thread-i", "m1", "please approve 6*7"))
	defer resp.Body.Close()
	evs := read(t, resp, nil)
	if got := typesOf(evs); !strings.HasPrefix(got, "RUN_STARTED") || !strings.HasSuffix(got, "RUN_FINISHED") {
		t.Fatalf("events %s", got)
	}
	last := evs[len(evs)-1]
	var interrupts []agui.Interrupt
	if last.Outcome == nil || last.Outcome.Type != agui.OutcomeInterrupt || json.Unmarshal(last.Outcome.Interrupts, &interrupts) != nil || len(interrupts) != 1 {
		t.Fatalf("RUN_FINISHED %+v", last.Event)
	}
	in := interrupts[0]
	if in.Reason != "approval" || in.Message != demo.ApprovalPrompt || !strings.HasPrefix(in.ID, evs[0].RunID+":") {
		t.Fatalf("interrupt %+v", in)
	}

	resume := agui.RunAgentInput{ThreadID: "thread-i", RunID: "client-run-2",
		Resume: []agui.ResumeEntry{{InterruptID: in.ID, Status: agui.ResumeResolved, Payload: json.RawMessage(`{"approved":true}`)}}}
	resp2 := e.post(t.Context(), "alice", "/api/v1/agui", resume)
	defer resp2.Body.Close()
	evs2 := read(t, resp2, nil)
	got := typesOf(evs2)
	if !strings.HasPrefix(got, "RUN_STARTED") || !strings.Contains(got, "TOOL_CALL_RESULT") || !strings.HasSuffix(got, "RUN_FINISHED") {
		t.Fatalf("resumed events %s", got)
	}
	end := evs2[len(evs2)-1]
	if evs2[0].RunID != evs[0].RunID || end.Outcome == nil || end.Outcome.Type != agui.OutcomeSuccess || !strings.Contains(string(end.Result), "42") {
		t.Fatalf("resumed run %+v … %+v", evs2[0].Event, end.Event)
	}

	again := e.post(t.Context(), "alice", "/api/v1/agui", resume)
	defer again.Body.Close()
	if again.StatusCode != http.StatusConflict {
		t.Fatalf("a second resume: %d, want 409", again.StatusCode)
	}
	for _, bad := range []agui.ResumeEntry{
		{InterruptID: "no-colon", Status: agui.ResumeResolved, Payload: json.RawMessage(`true`)},
		{InterruptID: in.ID, Status: agui.ResumeResolved},
		{InterruptID: in.ID, Status: agui.ResumeResolved, Payload: json.RawMessage(`[1]`)},
	} {
		r := e.post(t.Context(), "alice", "/api/v1/agui", agui.RunAgentInput{ThreadID: "thread-i", Resume: []agui.ResumeEntry{bad}})
		r.Body.Close()
		if r.StatusCode != http.StatusBadRequest {
			t.Errorf("resume %+v: %d, want 400", bad, r.StatusCode)
		}
	}
}
