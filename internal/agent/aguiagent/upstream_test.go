package aguiagent_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/agenttest"
	"github.com/agentwire/agentwire/internal/agent/aguiagent"
	"github.com/agentwire/agentwire/internal/agent/aguiagent/aguitest"
	"github.com/agentwire/agentwire/protocol"
)

func upstreamAgent(t *testing.T, u *aguitest.Server) *aguiagent.Agent {
	t.Helper()
	a, err := aguiagent.New(aguiagent.Config{URL: u.URL, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func ask(runID, text string) agent.Run {
	return agent.Run{ID: runID, ThreadID: "thread-" + runID, UserID: "alice", Messages: []agent.Message{
		{ID: "msg-1", Role: "user", Content: "earlier"}, {ID: "msg-2", Role: "assistant", Content: "answer"}, {ID: "msg-3", Role: "user", Content: text}}}
}

func TestUpstreamScenarios(t *testing.T) {
	u := aguitest.Start(t)
	a := upstreamAgent(t, u)
	runIt := func(t *testing.T, run agent.Run) *agenttest.Recorder {
		t.Helper()
		rec := &agenttest.Recorder{}
		if err := a.Run(context.Background(), run, rec); err != nil {
			t.Fatalf("Run: %v%s", err, rec)
		}
		return rec
	}

	t.Run("text", func(t *testing.T) {
		t.Parallel()
		rec := runIt(t, ask("r-text", "text please"))
		rec.AssertTypes(t, protocol.TypeAgentMessageDelta, protocol.TypeAgentMessageDelta, protocol.TypeAgentMessageDelta, protocol.TypeAgentCompleted)
		if got := rec.Completed(t); got != "Hello, world." {
			t.Errorf("final %q", got)
		}
	})

	t.Run("reasoning", func(t *testing.T) {
		t.Parallel()
		rec := runIt(t, ask("r-reasoning", "reasoning please"))
		rec.AssertTypes(t, protocol.TypeAgentThinking, protocol.TypeAgentThinking, protocol.TypeAgentMessageDelta, protocol.TypeAgentCompleted)
		ev := rec.Events()
		if ev[0].Text != "Let me think." || ev[1].Text != "Still thinking." {
			t.Errorf("thinking %q, %q", ev[0].Text, ev[1].Text)
		}
		if got := rec.Completed(t); got != "Done." {
			t.Errorf("final %q", got)
		}
	})

	t.Run("tool", func(t *testing.T) {
		t.Parallel()
		rec := runIt(t, ask("r-tool", "tool please"))
		rec.AssertTypes(t, protocol.TypeToolExecuting, protocol.TypeToolCompleted, protocol.TypeToolExecuting, protocol.TypeToolCompleted,
			protocol.TypeAgentMessageDelta, protocol.TypeAgentCompleted)
		ev := rec.Events()
		if e := ev[0]; e.ToolCallID != "call-1" || e.Tool != "calculator" || string(e.Args) != `{"expression":"12*(3+4)"}` {
			t.Errorf("tool_executing %+v (args %s)", e, e.Args)
		}
		if e := ev[1]; e.ToolCallID != "call-1" || e.Tool != "calculator" || !e.OK || string(e.Result) != `84` {
			t.Errorf("tool_completed %+v (result %s)", e, e.Result)
		}
		if e := ev[2]; e.ToolCallID != "call-2" || e.Tool != "current_time" || string(e.Args) != `{"zone":"UTC"}` {
			t.Errorf("chunked tool_executing %+v (args %s)", e, e.Args)
		}
		if e := ev[3]; e.ToolCallID != "call-2" || string(e.Result) != `"noon"` {
			t.Errorf("chunked tool_completed %+v (result %s)", e, e.Result)
		}
		if got := rec.Completed(t); got != "12*(3+4) = 84" {
			t.Errorf("final %q", got)
		}
	})

	t.Run("state", func(t *testing.T) {
		t.Parallel()
		rec := runIt(t, ask("r-state", "state please"))
		rec.AssertTypes(t, protocol.TypeStepStarted, protocol.TypeStateSnapshot, protocol.TypeStateDelta, protocol.TypeActivitySnapshot,
			protocol.TypeActivityDelta, protocol.TypeCustom, protocol.TypeRaw, protocol.TypeStepFinished, protocol.TypeAgentCompleted)
		want := []string{
			`{"step_name":"plan"}`,
			`{"snapshot":{"count":1,"items":["a"]}}`,
			`{"delta":[{"op":"replace","path":"/count","value":2}]}`,
			`{"message_id":"a1","activity_type":"PLAN","content":{"steps":["x"]}}`,
			`{"message_id":"a1","activity_type":"PLAN","patch":[{"op":"add","path":"/steps/-","value":"y"}]}`,
			`{"name":"confetti","value":{"colour":"gold"}}`,
			`{"event":{"provider":"event"},"source":"langgraph"}`,
			`{"step_name":"plan"}`,
		}
		for i, e := range rec.Events()[:len(want)] {
			if string(e.Data) != want[i] {
				t.Errorf("%s data %s, want %s", e.Type, e.Data, want[i])
			}
		}
		rec.Completed(t)
	})

	t.Run("echo", func(t *testing.T) {
		t.Parallel()
		rec := runIt(t, ask("r-echo", "echo please"))
		rec.Completed(t)
		c := rec.Of(protocol.TypeCustom)
		if len(c) != 1 {
			t.Fatalf("no echo: %s", rec)
		}
		var got struct {
			Value map[string]json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(c[0].Data, &got); err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]string{"threadId": `"thread-r-echo"`, "runId": `"r-echo"`, "tools": `[]`, "context": `[]`, "state": `{}`,
			"messages": `[{"id":"msg-1","role":"user","content":"earlier"},{"id":"msg-2","role":"assistant","content":"answer"},{"id":"msg-3","role":"user","content":"echo please"}]`} {
			if string(got.Value[k]) != want {
				t.Errorf("the server got %s = %s, want %s", k, got.Value[k], want)
			}
		}
	})

	t.Run("error", func(t *testing.T) {
		t.Parallel()
		rec := runIt(t, ask("r-error", "error please"))
		rec.AssertTypes(t, protocol.TypeAgentMessageDelta, protocol.TypeAgentError)
		failed(t, rec, "upstream exploded")
	})

	for _, word := range []string{"cut", "drop"} {
		t.Run(word, func(t *testing.T) {
			t.Parallel()
			rec := runIt(t, ask("r-"+word, word+" please"))
			rec.AssertTypes(t, protocol.TypeAgentMessageDelta, protocol.TypeAgentError)
			code, msg := rec.Failed(t)
			if code != protocol.CodeAgentFailed {
				t.Errorf("agent_error %s %q", code, msg)
			}
		})
	}

	t.Run("stop cancels upstream", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rec := &agenttest.Recorder{}
		var n int
		rec.OnEvent = func(e agenttest.Event) {
			if n++; n == 3 {
				rec.End() // as the runs package does on stop_agent, then it cancels
				cancel()
			}
		}
		if err := a.Run(ctx, ask("r-slow", "slow please"), rec); err != context.Canceled {
			t.Errorf("Run after stop = %v, want context.Canceled%s", err, rec)
		}
		u.Wait(t, "closed r-slow", 10*time.Second)
		if _, ok := rec.Terminal(); ok {
			t.Errorf("the agent ended a stopped run itself:%s", rec)
		}
	})
}
