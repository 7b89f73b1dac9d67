package agenttest_test

import (
	"errors"
	"testing"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/agenttest"
)

func TestRecorderRules(t *testing.T) {
	t.Parallel()
	var r agenttest.Recorder
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.Thinking("hm"))
	if err := r.ToolCompleted(agent.ToolResult{CallID: "c1", Tool: "calculator", OK: true, Result: 1}); !errors.Is(err, agenttest.ErrOrder) {
		t.Errorf("tool_completed before tool_executing: %v", err)
	}
	if err := r.ToolExecuting("c0", "calculator", []int{1}); !errors.Is(err, agenttest.ErrOrder) {
		t.Errorf("array args: %v", err)
	}
	must(r.ToolExecuting("c1", "calculator", map[string]string{"expression": "1+1"}))
	if err := r.ToolExecuting("c1", "calculator", map[string]string{}); !errors.Is(err, agenttest.ErrOrder) {
		t.Errorf("duplicate call id: %v", err)
	}
	must(r.ToolCompleted(agent.ToolResult{CallID: "c1", Tool: "calculator", OK: true, Result: 2}))
	must(r.Delta("a"))
	must(r.Delta("b"))
	must(r.Complete(""))
	if got := len(r.Violations()); got != 3 {
		t.Errorf("violations = %d, want 3", got)
	}
	for _, err := range []error{r.Thinking("x"), r.Delta("x"), r.Complete("x"), r.Fail("x", "y"), r.ToolExecuting("c9", "t", map[string]int{})} {
		if !errors.Is(err, agent.ErrRunEnded) {
			t.Errorf("after terminal: %v, want ErrRunEnded", err)
		}
	}
	e, ok := r.Terminal()
	if !ok || e.Final != "ab" {
		t.Errorf("terminal = %+v", e)
	}
	r.AssertTypes(t, "agent_thinking", "tool_executing", "tool_completed", "agent_message_delta", "agent_message_delta", "agent_completed")
}

func TestRecorderEnd(t *testing.T) {
	t.Parallel()
	var r agenttest.Recorder
	var seen []string
	r.OnEvent = func(e agenttest.Event) {
		seen = append(seen, e.Type)
		r.End()
	}
	if err := r.Thinking("1"); err != nil {
		t.Fatal(err)
	}
	if err := r.Thinking("2"); !errors.Is(err, agent.ErrRunEnded) {
		t.Errorf("after End: %v", err)
	}
	if len(seen) != 1 || !r.Ended() {
		t.Errorf("seen %v ended %v", seen, r.Ended())
	}
	if _, ok := r.Terminal(); ok {
		t.Error("End recorded a terminal event")
	}
}
