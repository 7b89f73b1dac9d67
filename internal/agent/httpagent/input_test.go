package httpagent_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/agenttest"
	"github.com/agentwire/agentwire/internal/agent/httpagent"
	"github.com/agentwire/agentwire/protocol"
)

// The service asks; agentwire asks the user and posts the request again
// with the answer, and the second response finishes the run.
func TestInputRequiredFollowUp(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("request: %v", err)
		}
		mu.Lock()
		bodies = append(bodies, body)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-ndjson")
		if body["input"] == nil {
			io.WriteString(w, `{"type":"tool_executing","data":{"tool_call_id":"c1","tool":"rm","args":{"path":"/"}}}`+"\n")
			io.WriteString(w, `{"type":"input_required","data":{"kind":"choice","prompt":"Really?","tool_call_id":"c1","options":["yes","no"]}}`+"\n")
			io.WriteString(w, `{"type":"agent_thinking","data":{"text":"never read"}}`+"\n")
			return
		}
		io.WriteString(w, `{"type":"tool_completed","data":{"tool_call_id":"c1","ok":false,"error":"declined"}}`+"\n")
		io.WriteString(w, `{"type":"agent_completed","data":{"final_response":"Not removed."}}`+"\n")
	}))
	t.Cleanup(srv.Close)
	a, err := httpagent.New(httpagent.Config{URL: srv.URL, HTTPClient: srv.Client(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rec := &agenttest.Recorder{Answer: func(r agent.InputRequest) protocol.InputAnswer {
		no := "no"
		return protocol.InputAnswer{Choice: &no}
	}}
	if err := a.Run(context.Background(), theRun(), rec); err != nil {
		t.Fatalf("Run: %v%s", err, rec)
	}
	rec.AssertValid(t)
	rec.AssertTypes(t, "tool_executing", "input_required", "input_received", "tool_completed", "agent_completed")
	if q := rec.Of(protocol.TypeInputRequired)[0].Input; q.Kind != protocol.InputChoice || q.Prompt != "Really?" || q.ToolCallID != "c1" || len(q.Options) != 2 {
		t.Errorf("question %+v", q)
	}
	if len(bodies) != 2 {
		t.Fatalf("%d requests, want 2", len(bodies))
	}
	in, _ := bodies[1]["input"].(map[string]any)
	if in["kind"] != "choice" || in["choice"] != "no" || in["tool_call_id"] != "c1" || in["prompt"] != "Really?" || bodies[1]["run_id"] != "run1" {
		t.Errorf("follow-up request %v", bodies[1])
	}
}
