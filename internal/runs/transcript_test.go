package runs

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/protocol"
)

// transcriptOf reads the whole stored transcript of a run.
func (f *fixture) transcriptOf(t *testing.T, user, runID string) []store.RunEvent {
	t.Helper()
	evs, more, err := f.store.ListRunEvents(context.Background(), user, runID, store.RunEventQuery{Limit: 1000})
	if err != nil || more {
		t.Fatalf("ListRunEvents: more %v, %v", more, err)
	}
	return evs
}

func types(evs []store.RunEvent) string {
	var b []string
	for _, e := range evs {
		b = append(b, e.Type)
	}
	return strings.Join(b, " ")
}

// The transcript keeps every event but deltas, which it folds per stretch
// of text; seq and epoch are the stream's, the terminal's stored first.
func TestTranscriptOfACompletedRun(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			_ = em.Thinking("let me see")
			_ = em.Delta("Four")
			_ = em.Delta(", ")
			_ = em.ToolExecuting("c1", "calculator", map[string]any{"expression": "2+2"})
			_ = em.ToolCompleted(agent.ToolResult{CallID: "c1", Tool: "calculator", OK: true, Result: 4, Duration: 3 * time.Millisecond})
			_ = em.Delta("it is ")
			_ = em.Delta("4.")
			return em.Complete("")
		}), Config{})
		ack, perr := f.send(t, "tr", "2+2?", "")
		if perr != nil {
			t.Fatal(perr)
		}
		f.waitTerminal(t, "tr", ack.RunID)
		got := f.transcriptOf(t, "tr", ack.RunID)
		want := "agent_started agent_thinking agent_message_delta tool_executing tool_completed agent_message_delta agent_completed"
		if types(got) != want {
			t.Fatalf("transcript %q, want %q", types(got), want)
		}
		if string(got[2].Data) == "" || !strings.Contains(string(got[2].Data), `"delta":"Four, "`) ||
			!strings.Contains(string(got[5].Data), `"delta":"it is 4."`) {
			t.Errorf("folded deltas: %s / %s", got[2].Data, got[5].Data)
		}
		if !strings.Contains(string(got[4].Data), `"duration_ms":3`) || !strings.Contains(string(got[3].Data), `"expression":"2+2"`) {
			t.Errorf("tool events: %s / %s", got[3].Data, got[4].Data)
		}
		for i, e := range got[:len(got)-1] {
			if e.Seq == 0 || e.Epoch == "" || e.Index != i+1 {
				t.Errorf("event %d (%s): seq %d epoch %q index %d", i, e.Type, e.Seq, e.Epoch, e.Index)
			}
		}
		if last := got[len(got)-1]; last.Seq != 0 || !strings.Contains(string(last.Data), `"final_response":"Four, it is 4."`) {
			t.Errorf("terminal %+v %s", last, last.Data)
		}
	})
}

// A stopped run keeps the answer it had, folded, and its end.
func TestTranscriptOfAStoppedRunKeepsThePartialAnswer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			_ = em.Delta("half ")
			_ = em.Delta("an answer")
			<-ctx.Done()
			return ctx.Err()
		}), Config{})
		ack, _ := f.send(t, "st", "go", "")
		waitFor(t, "deltas", func() bool { return len(f.events(t, "st", ack.RunID)) >= 4 })
		if _, perr := f.m.StopAgent(context.Background(), "st", &protocol.Frame{RunID: ack.RunID}); perr != nil {
			t.Fatal(perr)
		}
		f.waitTerminal(t, "st", ack.RunID)
		got := f.transcriptOf(t, "st", ack.RunID)
		if types(got) != "agent_started agent_message_delta agent_error" {
			t.Fatalf("transcript %q", types(got))
		}
		var d protocol.AgentMessageDelta
		_ = json.Unmarshal(got[1].Data, &d)
		var e protocol.AgentError
		_ = json.Unmarshal(got[2].Data, &e)
		if d.Delta != "half an answer" || e.Code != protocol.CodeCancelled {
			t.Errorf("delta %q, end %+v", d.Delta, e)
		}
	})
}

// Big steps are cut with the marker, and a run stores a bounded transcript
// whatever its agent emits, its end always.
func TestTranscriptIsBounded(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		big := strings.Repeat("é", maxStepBytes/2+64) // over the bound in bytes
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			for i := range maxTranscriptBytes/maxStepBytes/2 + 2 {
				_ = em.Thinking(big)
				id := "c" + string(rune('a'+i%26))
				_ = em.ToolExecuting(id, "t", map[string]any{"x": big})
				_ = em.ToolCompleted(agent.ToolResult{CallID: id, Tool: "t", OK: true, Result: big})
			}
			return em.Fail(protocol.CodeAgentFailed, big)
		}), Config{})
		ack, _ := f.send(t, "big", "go", "")
		f.waitTerminal(t, "big", ack.RunID)
		got := f.transcriptOf(t, "big", ack.RunID)
		total := 0
		for _, e := range got {
			total += len(e.Data)
			if len(e.Data) > maxStepBytes+maxStepBytes/8 {
				t.Fatalf("%s of %d bytes", e.Type, len(e.Data))
			}
			if e.Type != protocol.TypeAgentStarted && !strings.Contains(string(e.Data), protocol.TruncatedMarker) {
				t.Errorf("%s without the marker", e.Type)
			}
			if !json.Valid(e.Data) {
				t.Errorf("%s: invalid JSON", e.Type)
			}
		}
		if total > maxTranscriptBytes+maxStepBytes+maxStepBytes/8 {
			t.Errorf("transcript of %d bytes", total)
		}
		if got[len(got)-1].Type != protocol.TypeAgentError {
			t.Errorf("last stored %s, want the end", got[len(got)-1].Type)
		}
	})
}

// With transcripts off, a run stores none.
func TestNoTranscripts(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			_ = em.Thinking("x")
			return em.Complete("done")
		}), Config{NoTranscripts: true})
		ack, _ := f.send(t, "off", "go", "")
		f.waitTerminal(t, "off", ack.RunID)
		if got := f.transcriptOf(t, "off", ack.RunID); len(got) != 0 {
			t.Fatalf("transcript %q with transcripts off", types(got))
		}
	})
}

// A run's agent gets the earlier runs' tool calls and results, rebuilt
// from their transcripts, between each user message and its answer; a
// call the run never finished is left out.
func TestAgentContextCarriesToolHistory(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		seen := make(chan []agent.Message, 2)
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			seen <- run.Messages
			_ = em.ToolExecuting("c1", "calculator", map[string]any{"expression": "6*7"})
			_ = em.ToolCompleted(agent.ToolResult{CallID: "c1", Tool: "calculator", OK: true, Result: 42})
			_ = em.ToolExecuting("c2", "current_time", nil)
			_ = em.ToolCompleted(agent.ToolResult{CallID: "c2", Tool: "current_time", OK: false, Error: "no clock"})
			_ = em.ToolExecuting("c3", "never", nil)
			return em.Complete("42")
		}), Config{})
		ack, _ := f.send(t, "ctx", "6*7?", "")
		f.waitTerminal(t, "ctx", ack.RunID)
		<-seen
		ack2, perr := f.m.UserMessage(context.Background(), "ctx", &protocol.Frame{Type: protocol.TypeUserMessage, ThreadID: ack.ThreadID, Content: "and times 2?"})
		if perr != nil {
			t.Fatal(perr)
		}
		f.waitTerminal(t, "ctx", ack2.RunID)
		msgs := <-seen
		var got []string
		for _, m := range msgs {
			s := m.Role + ":" + m.Content
			for _, c := range m.ToolCalls {
				s += "[" + c.ID + " " + c.Name + " " + string(c.Args) + "]"
			}
			if m.ToolCallID != "" {
				s += "(" + m.ToolCallID + ")"
			}
			got = append(got, s)
		}
		want := []string{
			"user:6*7?",
			`assistant:[c1 calculator {"expression":"6*7"}][c2 current_time {}]`,
			"tool:42(c1)",
			`tool:{"error":"no clock"}(c2)`,
			"assistant:42",
			"user:and times 2?",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("context:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

// A run longer than transcriptSaveEvery writes its steps while it runs,
// not only with its end.
func TestTranscriptSavedWhileRunning(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			_ = em.Thinking("first")
			time.Sleep(transcriptSaveEvery)
			_ = em.Delta("so far")
			_ = em.Thinking("second")
			<-release
			return em.Complete("")
		}), Config{})
		ack, _ := f.send(t, "long", "go", "")
		waitFor(t, "the steps stored while running", func() bool {
			return types(f.transcriptOf(t, "long", ack.RunID)) == "agent_started agent_thinking agent_message_delta agent_thinking"
		})
		close(release)
		f.waitTerminal(t, "long", ack.RunID)
		if got := types(f.transcriptOf(t, "long", ack.RunID)); got != "agent_started agent_thinking agent_message_delta agent_thinking agent_completed" {
			t.Fatalf("transcript %q", got)
		}
	})
}

// Text that escaping makes six times longer is still cut to fit, keeping
// the other fields; data with no text to cut becomes {"truncated":true}.
func TestClipDataFitsEscapedText(t *testing.T) {
	t.Parallel()
	raw, _ := protocol.MarshalData(protocol.AgentError{Code: protocol.CodeAgentFailed, Message: strings.Repeat("\x01", 2*maxStepBytes)})
	out := clipData(protocol.TypeAgentError, raw, maxStepBytes)
	var d protocol.AgentError
	if err := json.Unmarshal(out, &d); err != nil || len(out) > maxStepBytes || d.Code != protocol.CodeAgentFailed || !strings.HasSuffix(d.Message, protocol.TruncatedMarker) {
		t.Fatalf("%d bytes, %v: code %q", len(out), err, d.Code)
	}
	big, _ := json.Marshal(map[string]string{"x": strings.Repeat("y", 2*maxStepBytes)})
	if got := string(clipData("state_snapshot", big, maxStepBytes)); got != `{"truncated":true}` {
		t.Fatalf("relayed event: %s", got)
	}
}

// A run that starts waiting for its user writes its transcript then, the
// question included, and a stop while it waits ends it there.
func TestTranscriptSavedWhenWaiting(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			_ = em.Thinking("let me ask")
			_, err := em.RequestInput(ctx, agent.InputRequest{Kind: protocol.InputApproval, Prompt: "May I?"})
			return err
		}), Config{})
		ack, _ := f.send(t, "wait", "go", "")
		waitFor(t, "the question stored", func() bool {
			return types(f.transcriptOf(t, "wait", ack.RunID)) == "agent_started agent_thinking input_required"
		})
		if _, perr := f.m.StopAgent(context.Background(), "wait", &protocol.Frame{RunID: ack.RunID}); perr != nil {
			t.Fatal(perr)
		}
		f.waitTerminal(t, "wait", ack.RunID)
		if got := types(f.transcriptOf(t, "wait", ack.RunID)); got != "agent_started agent_thinking input_required agent_error" {
			t.Fatalf("transcript %q", got)
		}
	})
}
