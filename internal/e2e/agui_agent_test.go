package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/agent/aguiagent/aguitest"
)

// The agui agent against the Node AG-UI server written with the real
// @ag-ui/encoder (aguitest): what it sends arrives in the run, in order,
// in the contract's vocabulary; the history it gets carries the stored
// message ids; stop_agent closes its request.
func TestAGUIAgent(t *testing.T) {
	t.Parallel()
	up := aguitest.Start(t)
	s := startServer(t, "--agent", "agui", "--agent-url", up.URL)
	c, est := s.connect("alice")

	// A tool call whose args came in three TOOL_CALL_ARGS, then text.
	ack := c.ack("a1", "tool please", nil)
	frames := c.untilTerminal(ack.RunID, 10*time.Second)
	if got, want := typesOf(frames), "user_message agent_started tool_executing tool_completed tool_executing tool_completed agent_message_delta agent_completed"; got != want {
		t.Fatalf("run:\n got %s\nwant %s%s", got, want, dump(frames))
	}
	checkContiguous(t, frames, est.HeadSeq+1)
	checkRunOrder(t, frames)
	for _, f := range frames {
		checkStreamEvent(t, f, ack.RunID, ack.ThreadID, est.Epoch)
	}
	if d := dataOf(t, frames[1]); d.Agent != "agui" {
		t.Errorf("agent_started: %s", frames[1].raw)
	}
	if d := dataOf(t, frames[2]); d.ToolCallID != "call-1" || d.Tool != "calculator" || d.Args["expression"] != "12*(3+4)" {
		t.Errorf("tool_executing: %s", frames[2].raw)
	}
	if d := dataOf(t, frames[3]); d.ToolCallID != "call-1" || string(d.Result) != "84" || d.OK == nil || !*d.OK {
		t.Errorf("tool_completed: %s", frames[3].raw)
	}
	if d := dataOf(t, frames[7]); d.FinalResponse != "12*(3+4) = 84" {
		t.Errorf("agent_completed: %s", frames[7].raw)
	}
	answerID := dataOf(t, frames[7]).MessageID

	// The relayed events, in the thread, then the history the server got:
	// the stored ids of the earlier messages.
	ack2 := c.ack("a2", "state please", map[string]any{"thread_id": ack.ThreadID})
	frames = c.untilTerminal(ack2.RunID, 10*time.Second)
	if got, want := typesOf(frames), "user_message agent_started step_started state_snapshot state_delta activity_snapshot activity_delta custom raw step_finished agent_completed"; got != want {
		t.Fatalf("run:\n got %s\nwant %s%s", got, want, dump(frames))
	}
	if string(frames[3].Data) != `{"snapshot":{"count":1,"items":["a"]}}` || string(frames[7].Data) != `{"name":"confetti","value":{"colour":"gold"}}` {
		t.Errorf("relayed data: %s", dump(frames))
	}
	ack3 := c.ack("a3", "echo please", map[string]any{"thread_id": ack.ThreadID})
	frames = c.untilTerminal(ack3.RunID, 10*time.Second)
	var echo struct {
		Value struct {
			ThreadID string `json:"threadId"`
			RunID    string `json:"runId"`
			Messages []struct {
				ID   string `json:"id"`
				Role string `json:"role"`
			} `json:"messages"`
		} `json:"value"`
	}
	for _, f := range frames {
		if f.Type == "custom" {
			if err := json.Unmarshal(f.Data, &echo); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The first run's two tool calls come back between its question and
	// its answer, from the run's transcript: one assistant message with
	// both calls, then a tool message per result.
	in := echo.Value
	roles := make([]string, len(in.Messages))
	for i, m := range in.Messages {
		roles[i] = m.Role
	}
	if in.ThreadID != ack.ThreadID || in.RunID != ack3.RunID || len(in.Messages) != 8 ||
		strings.Join(roles, " ") != "user assistant tool tool assistant user assistant user" ||
		in.Messages[0].ID != ack.MsgID || in.Messages[4].ID != answerID || in.Messages[7].ID != ack3.MsgID {
		t.Errorf("the AG-UI server got %+v; want thread %s, run %s, first message %s, answer %s, last %s", in, ack.ThreadID, ack3.RunID, ack.MsgID, answerID, ack3.MsgID)
	}

	// stop_agent mid-stream: cancelled, and the server sees its request closed.
	ack4 := c.ack("a4", "slow please", nil)
	c.readUntilFn(10*time.Second, "a delta of the slow run", func(f frame) bool { return f.Type == "agent_message_delta" && f.RunID == ack4.RunID })
	c.send(map[string]any{"type": "stop_agent", "id": "s1", "run_id": ack4.RunID})
	frames = c.untilTerminal(ack4.RunID, 10*time.Second)
	if last := frames[len(frames)-1]; last.Type != "agent_error" || dataOf(t, last).Code != "cancelled" {
		t.Fatalf("stopped run ended with %s", last.raw)
	}
	up.Wait(t, "closed "+ack4.RunID, 10*time.Second)

	// A dropped connection fails the run.
	ack5 := c.ack("a5", "drop please", nil)
	frames = c.untilTerminal(ack5.RunID, 10*time.Second)
	if last := frames[len(frames)-1]; last.Type != "agent_error" || dataOf(t, last).Code != "agent_failed" {
		t.Fatalf("dropped run ended with %s", last.raw)
	}
}
