package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	upstream "github.com/agentwire/agentwire/internal/agent/aguiagent/aguitest"
	"github.com/agentwire/agentwire/internal/agui"
	"github.com/agentwire/agentwire/internal/agui/aguitest"
)

// TestAGUIThroughAgentwire: AG-UI in and out. An AG-UI front end's run
// request (POST /api/v1/agui) is answered by an AG-UI agent server behind
// agentwire (--agent agui, the Node server written with the real
// @ag-ui/encoder): what that server sent comes back to the front end as
// the AG-UI events it was, in order, in the run agentwire keeps.
func TestAGUIThroughAgentwire(t *testing.T) {
	t.Parallel()
	up := upstream.Start(t)
	s := startServer(t, "--agent", "agui", "--agent-url", up.URL)
	tok := s.token("alice")
	ask := func(id, text string) []aguitest.Item {
		in := agui.RunAgentInput{ThreadID: "roundtrip", Messages: []agui.Message{{ID: id, Role: agui.RoleUser, Content: agui.String(text)}}}
		return aguiPost(t, s.URL, "/api/v1/agui", tok, "", in, nil)
	}

	evs := ask("q1", "tool please")
	if got, want := strings.Join(aguitest.Types(evs), " "), "RUN_STARTED TOOL_CALL_START TOOL_CALL_ARGS TOOL_CALL_END TOOL_CALL_RESULT "+
		"TOOL_CALL_START TOOL_CALL_ARGS TOOL_CALL_END TOOL_CALL_RESULT TEXT_MESSAGE_START TEXT_MESSAGE_CONTENT TEXT_MESSAGE_END RUN_FINISHED"; got != want {
		t.Fatalf("tool run:\n got %s\nwant %s", got, want)
	}
	if evs[1].ToolCallID != "call-1" || evs[1].ToolCallName != "calculator" || evs[2].DeltaText() != `{"expression":"12*(3+4)"}` || agui.Text(evs[4].Content) != "84" {
		t.Fatalf("the tool call: %+v %+v %+v", evs[1].Event, evs[2].Event, evs[4].Event)
	}
	if string(evs[len(evs)-1].Result) != `"12*(3+4) = 84"` {
		t.Fatalf("RUN_FINISHED: %+v", evs[len(evs)-1].Event)
	}

	evs = ask("q2", "state please")
	if got, want := strings.Join(aguitest.Types(evs), " "), "RUN_STARTED STEP_STARTED STATE_SNAPSHOT STATE_DELTA ACTIVITY_SNAPSHOT ACTIVITY_DELTA CUSTOM RAW STEP_FINISHED RUN_FINISHED"; got != want {
		t.Fatalf("state run:\n got %s\nwant %s", got, want)
	}
	var b strings.Builder
	for _, e := range evs[1:9] {
		x := e.Event
		x.Metadata, x.Timestamp = nil, 0
		j, _ := json.Marshal(x)
		b.Write(j)
		b.WriteByte('\n')
	}
	want := `{"type":"STEP_STARTED","stepName":"plan"}
{"type":"STATE_SNAPSHOT","snapshot":{"count":1,"items":["a"]}}
{"type":"STATE_DELTA","delta":[{"op":"replace","path":"/count","value":2}]}
{"type":"ACTIVITY_SNAPSHOT","messageId":"a1","content":{"steps":["x"]},"activityType":"PLAN"}
{"type":"ACTIVITY_DELTA","messageId":"a1","activityType":"PLAN","patch":[{"op":"add","path":"/steps/-","value":"y"}]}
{"type":"CUSTOM","name":"confetti","value":{"colour":"gold"}}
{"type":"RAW","event":{"provider":"event"},"source":"langgraph"}
{"type":"STEP_FINISHED","stepName":"plan"}
`
	if b.String() != want {
		t.Fatalf("relayed back:\n%s\nwant\n%s", b.String(), want)
	}

	evs = ask("q3", "error please")
	if last := evs[len(evs)-1]; last.Type != agui.RunError || last.Code != "agent_failed" {
		t.Fatalf("error run ends with %+v", last.Event)
	}
}
