package agui

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/agentwire/agentwire/protocol"
)

// run builds the stream events of one run, seq from 1, epoch "E".
type run struct {
	thread, id string
	events     []protocol.Event
}

func (r *run) add(typ string, data any) *run {
	b, err := json.Marshal(data)
	if err != nil {
		panic(err)
	}
	r.events = append(r.events, protocol.Event{Type: typ, Seq: uint64(len(r.events) + 1), Epoch: "E", ThreadID: r.thread, RunID: r.id, Data: b})
	return r
}

// golden is the demo agent's run for "what is 12*(3+4)?".
func golden() *run {
	r := &run{thread: "T", id: "R"}
	r.add(protocol.TypeUserMessage, protocol.UserMessage{MessageID: "U", Content: "what is 12*(3+4)?", ClientMessageID: "c1"})
	r.add(protocol.TypeAgentStarted, protocol.AgentStarted{Agent: "demo"})
	r.add(protocol.TypeAgentThinking, protocol.AgentThinking{Text: "Let me calculate."})
	r.add(protocol.TypeToolExecuting, protocol.ToolExecuting{ToolCallID: "tc1", Tool: "calculator", Args: json.RawMessage(`{"expression":"12*(3+4)"}`)})
	r.add(protocol.TypeToolCompleted, protocol.ToolCompleted{ToolCallID: "tc1", Tool: "calculator", OK: true, Result: json.RawMessage(`84`)})
	r.add(protocol.TypeAgentMessageDelta, protocol.AgentMessageDelta{MessageID: "A", Delta: "The calculator says "})
	r.add(protocol.TypeAgentMessageDelta, protocol.AgentMessageDelta{MessageID: "A", Delta: "84."})
	r.add(protocol.TypeAgentCompleted, protocol.AgentCompleted{MessageID: "A", FinalResponse: "The calculator says 84."})
	return r
}

// show renders AG-UI events compactly: TYPE(key fields) per event, with the
// seq of their metadata.
func show(evs []Event) string {
	var b strings.Builder
	for _, e := range evs {
		cur, _ := MetadataCursor(e.Metadata)
		fmt.Fprintf(&b, "%s", e.Type)
		for _, f := range []string{e.MessageID, e.ToolCallID, e.ToolCallName, e.DeltaText(), Text(e.Content), e.Name, e.Code} {
			if f != "" {
				fmt.Fprintf(&b, " %s", f)
			}
		}
		if e.Outcome != nil {
			fmt.Fprintf(&b, " outcome=%s", e.Outcome.Type)
		}
		if len(e.Metadata) > 0 {
			fmt.Fprintf(&b, " @%d", cur.Seq)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func translateAll(t *Translator, evs []protocol.Event) []Event {
	var out []Event
	for _, ev := range evs {
		out = append(out, t.Event(ev)...)
	}
	return out
}

func TestTranslateGolden(t *testing.T) {
	r := golden()
	got := show(translateAll(NewTranslator("T", "R"), r.events))
	want := `RUN_STARTED @2
REASONING_MESSAGE_START R-reasoning-3 @3
REASONING_MESSAGE_CONTENT R-reasoning-3 Let me calculate. @3
REASONING_MESSAGE_END R-reasoning-3 @3
TOOL_CALL_START tc1 calculator @4
TOOL_CALL_ARGS tc1 {"expression":"12*(3+4)"} @4
TOOL_CALL_END tc1 @4
TOOL_CALL_RESULT tc1-result tc1 84 @5
TEXT_MESSAGE_START A @6
TEXT_MESSAGE_CONTENT A The calculator says  @6
TEXT_MESSAGE_CONTENT A 84. @7
TEXT_MESSAGE_END A @8
RUN_FINISHED outcome=success @8
`
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	evs := translateAll(NewTranslator("T", "R"), r.events)
	first, last := evs[0], evs[len(evs)-1]
	if first.ThreadID != "T" || first.RunID != "R" || last.ThreadID != "T" || last.RunID != "R" || string(last.Result) != `"The calculator says 84."` {
		t.Fatalf("run ids or result: %+v %+v", first, last)
	}
	if string(first.Metadata) != `{"agentwire":{"seq":2,"epoch":"E"}}` {
		t.Fatalf("metadata %s", first.Metadata)
	}
}

func TestTranslateEnds(t *testing.T) {
	base := func() *run {
		r := &run{thread: "T", id: "R"}
		r.add(protocol.TypeAgentStarted, protocol.AgentStarted{Agent: "demo"})
		r.add(protocol.TypeAgentMessageDelta, protocol.AgentMessageDelta{MessageID: "A", Delta: "par"})
		return r
	}
	cases := []struct {
		name string
		end  protocol.AgentError
		want string
	}{
		{"cancelled", protocol.AgentError{Code: protocol.CodeCancelled, Message: "stopped by the user"},
			"RUN_STARTED @1\nTEXT_MESSAGE_START A @2\nTEXT_MESSAGE_CONTENT A par @2\nTEXT_MESSAGE_END A @3\nRUN_FINISHED outcome=cancelled @3\n"},
		{"failed", protocol.AgentError{Code: protocol.CodeAgentFailed, Message: "the agent failed"},
			"RUN_STARTED @1\nTEXT_MESSAGE_START A @2\nTEXT_MESSAGE_CONTENT A par @2\nRUN_ERROR agent_failed @3\n"},
		{"timeout", protocol.AgentError{Code: protocol.CodeTimeout, Message: "too long"},
			"RUN_STARTED @1\nTEXT_MESSAGE_START A @2\nTEXT_MESSAGE_CONTENT A par @2\nRUN_ERROR timeout @3\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := base().add(protocol.TypeAgentError, tc.end)
			// Nothing after the end, not even a second end.
			r.add(protocol.TypeAgentMessageDelta, protocol.AgentMessageDelta{MessageID: "A", Delta: "late"})
			r.add(protocol.TypeAgentCompleted, protocol.AgentCompleted{MessageID: "A"})
			tr := NewTranslator("T", "R")
			got := translateAll(tr, r.events)
			if s := show(got); s != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", s, tc.want)
			}
			if !tr.Ended() {
				t.Fatal("not ended")
			}
			if tc.name == "failed" && got[len(got)-1].Message != "the agent failed" {
				t.Fatalf("RUN_ERROR message %q", got[len(got)-1].Message)
			}
		})
	}
}

func TestTranslateOthers(t *testing.T) {
	r := &run{thread: "T", id: "R"}
	r.add(protocol.TypeAgentStarted, protocol.AgentStarted{Agent: "x"})
	r.add("progress.update", map[string]any{"pct": 50})
	r.add(protocol.TypeToolExecuting, protocol.ToolExecuting{ToolCallID: "t", Tool: "f", Args: json.RawMessage(`{}`)})
	r.add(protocol.TypeToolCompleted, protocol.ToolCompleted{ToolCallID: "t", Tool: "f", OK: false, Error: "boom"})
	r.add(protocol.TypeToolCompleted, protocol.ToolCompleted{ToolCallID: "u", Tool: "f", OK: true, Result: json.RawMessage(`"text"`)})
	r.add(protocol.TypeAgentMessageDelta, protocol.AgentMessageDelta{Delta: "a"}) // no message id
	r.add(protocol.TypeAgentMessageDelta, protocol.AgentMessageDelta{MessageID: "B", Delta: "b"})
	r.add(protocol.TypeAgentThinking, protocol.AgentThinking{}) // empty: nothing
	r.add(protocol.TypeAgentStarted, protocol.AgentStarted{Agent: "x"})
	other := protocol.Event{Type: protocol.TypeAgentMessageDelta, Seq: 99, Epoch: "E", RunID: "other", Data: json.RawMessage(`{"message_id":"Z","delta":"z"}`)}
	r.events = append(r.events, other)
	r.add(protocol.TypeAgentCompleted, protocol.AgentCompleted{MessageID: "B", FinalResponse: "ignored"})
	tr := NewTranslator("T", "R")
	got := translateAll(tr, r.events)
	want := `RUN_STARTED @1
CUSTOM progress.update @2
TOOL_CALL_START t f @3
TOOL_CALL_ARGS t {} @3
TOOL_CALL_END t @3
TOOL_CALL_RESULT t-result t error: boom @4
TOOL_CALL_RESULT u-result u text @5
TEXT_MESSAGE_START R-answer @6
TEXT_MESSAGE_CONTENT R-answer a @6
TEXT_MESSAGE_END R-answer @7
TEXT_MESSAGE_START B @7
TEXT_MESSAGE_CONTENT B b @7
TEXT_MESSAGE_END B @11
RUN_FINISHED outcome=success @11
`
	if s := show(got); s != want {
		t.Fatalf("got\n%s\nwant\n%s", s, want)
	}
	if string(got[1].Value) != `{"pct":50}` {
		t.Fatalf("CUSTOM value %s", got[1].Value)
	}
}

func TestTranslateUnstreamedAnswer(t *testing.T) {
	r := &run{thread: "T", id: "R"}
	r.add(protocol.TypeAgentStarted, protocol.AgentStarted{Agent: "x"})
	r.add(protocol.TypeAgentCompleted, protocol.AgentCompleted{MessageID: "A", FinalResponse: "whole"})
	got := show(translateAll(NewTranslator("T", "R"), r.events))
	want := "RUN_STARTED @1\nTEXT_MESSAGE_START A @2\nTEXT_MESSAGE_CONTENT A whole @2\nTEXT_MESSAGE_END A @2\nRUN_FINISHED outcome=success @2\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// assemble folds events as a client does.
func assemble(evs []Event, start ...Message) []Message {
	var m Messages
	for _, s := range start {
		m.Add(s)
	}
	for _, e := range evs {
		if e.Type == MessagesSnapshot {
			m = Messages{}
			for _, s := range e.Messages {
				m.Add(s)
			}
			continue
		}
		m.Apply(e)
	}
	return m.List()
}

func TestMessagesGolden(t *testing.T) {
	r := golden()
	got := assemble(translateAll(NewTranslator("T", "R"), r.events), Message{ID: "c1", Role: RoleUser, Content: String("what is 12*(3+4)?")})
	b, _ := json.Marshal(got)
	want := `[{"id":"c1","role":"user","content":"what is 12*(3+4)?"},` +
		`{"id":"R-reasoning-3","role":"reasoning","content":"Let me calculate.","metadata":{"agentwire":{"seq":3,"epoch":"E"}}},` +
		`{"id":"tc1","role":"assistant","toolCalls":[{"id":"tc1","type":"function","function":{"name":"calculator","arguments":"{\"expression\":\"12*(3+4)\"}"},"metadata":{"agentwire":{"seq":4,"epoch":"E"}}}]},` +
		`{"id":"tc1-result","role":"tool","content":"84","toolCallId":"tc1","metadata":{"agentwire":{"seq":5,"epoch":"E"}}},` +
		`{"id":"A","role":"assistant","content":"The calculator says 84.","metadata":{"agentwire":{"seq":8,"epoch":"E"}}}]`
	if string(b) != want {
		t.Fatalf("got\n%s\nwant\n%s", b, want)
	}
}

// TestResumeEqualsUncut cuts the golden run after every event: the prelude
// plus the translation of the rest assembles into the same messages as the
// uncut run, and the resumed stream opens nothing twice.
func TestResumeEqualsUncut(t *testing.T) {
	r := golden()
	user := Message{ID: "c1", Role: RoleUser, Content: String("what is 12*(3+4)?")}
	uncut := assemble(translateAll(NewTranslator("T", "R"), r.events), user)
	earlier := []StoredMessage{{ID: "U0", Role: RoleUser, Content: "hi", RunID: "R0"}, {ID: "A0", Role: RoleAssistant, Content: "hello", RunID: "R0"}}
	thread := append(earlier, StoredMessage{ID: "U", Role: RoleUser, Content: "what is 12*(3+4)?", RunID: "R"})
	for cut := 0; cut <= len(r.events); cut++ {
		prelude, tr := Resume("T", "R", thread, r.events[:cut])
		if prelude[0].Type != RunStarted || prelude[1].Type != MessagesSnapshot {
			t.Fatalf("cut %d: prelude %s", cut, show(prelude))
		}
		all := append(prelude, translateAll(tr, r.events[cut:])...)
		if err := verify(all); err != nil {
			t.Fatalf("cut %d: %v\n%s", cut, err, show(all))
		}
		got := assemble(all)
		want := append([]Message{{ID: "U0", Role: RoleUser, Content: String("hi")}, {ID: "A0", Role: RoleAssistant, Content: String("hello")}}, uncut...)
		if cut == 0 {
			// Nothing of the run retained: its stored user message stands in.
			want[2] = Message{ID: "U", Role: RoleUser, Content: String("what is 12*(3+4)?")}
		}
		if !reflect.DeepEqual(got, want) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			t.Fatalf("cut %d:\n got %s\nwant %s", cut, g, w)
		}
	}
}

// TestResumeFromStore: the run's events are gone (past retention) and the
// run completed: its stored messages make the snapshot, and Finish ends it
// without repeating the answer.
func TestResumeFromStore(t *testing.T) {
	thread := []StoredMessage{{ID: "U", Role: RoleUser, Content: "q", RunID: "R"}, {ID: "A", Role: RoleAssistant, Content: "answer", RunID: "R"}}
	prelude, tr := Resume("T", "R", thread, nil)
	end := tr.Finish(protocol.Event{Type: protocol.TypeAgentCompleted, RunID: "R", Data: json.RawMessage(`{"message_id":"A","final_response":"answer"}`)})
	all := append(prelude, end...)
	if err := verify(all); err != nil {
		t.Fatal(err)
	}
	if s := show(all); s != "RUN_STARTED\nMESSAGES_SNAPSHOT\nRUN_FINISHED outcome=success\n" {
		t.Fatalf("got\n%s", s)
	}
	got, _ := json.Marshal(assemble(all))
	if string(got) != `[{"id":"U","role":"user","content":"q"},{"id":"A","role":"assistant","content":"answer"}]` {
		t.Fatalf("messages %s", got)
	}
}

// TestResumeEnded: a client that resumes after the run ended gets the
// snapshot and the end only.
func TestResumeEnded(t *testing.T) {
	r := golden()
	prelude, tr := Resume("T", "R", nil, r.events)
	if s := show(prelude); s != "RUN_STARTED @8\nMESSAGES_SNAPSHOT @8\nRUN_FINISHED outcome=success @8\n" || !tr.Ended() {
		t.Fatalf("got\n%s", s)
	}
}

// verify checks what @ag-ui/client's verifier checks of the events the
// translator makes: RUN_STARTED first, messages, tool calls and steps
// started before their content and ended once, nothing open at
// RUN_FINISHED, nothing after the end.
func verify(evs []Event) error {
	open := map[string]bool{}
	ended := false
	for i, e := range evs {
		if ended {
			return fmt.Errorf("event %d %s after the end", i, e.Type)
		}
		if i == 0 && e.Type != RunStarted {
			return fmt.Errorf("first event %s", e.Type)
		}
		kind, _, _ := strings.Cut(string(e.Type), "_")
		key := kind + e.MessageID + e.ToolCallID + e.StepName
		switch e.Type {
		case TextMessageStart, ToolCallStart, ReasoningMessageStart, StepStarted:
			if open[key] {
				return fmt.Errorf("event %d: %s %s already open", i, e.Type, key)
			}
			open[key] = true
		case TextMessageContent, ToolCallArgs, ReasoningMessageContent:
			if !open[key] {
				return fmt.Errorf("event %d: %s %s not open", i, e.Type, key)
			}
		case TextMessageEnd, ToolCallEnd, ReasoningMessageEnd, StepFinished:
			if !open[key] {
				return fmt.Errorf("event %d: %s %s not open", i, e.Type, key)
			}
			delete(open, key)
		case RunFinished:
			if len(open) > 0 {
				return fmt.Errorf("RUN_FINISHED with %v open", open)
			}
			ended = true
		case RunError:
			ended = true
		}
	}
	return nil
}

func TestEmptySnapshotKeepsItsMessages(t *testing.T) {
	b, _ := json.Marshal(Event{Type: MessagesSnapshot, Messages: []Message{}})
	if string(b) != `{"type":"MESSAGES_SNAPSHOT","messages":[]}` {
		t.Fatalf("%s", b)
	}
	b, _ = json.Marshal(Event{Type: RunStarted})
	if string(b) != `{"type":"RUN_STARTED"}` {
		t.Fatalf("%s", b)
	}
}

// TestTranslateFillsWhatAGUIRequires: published events may leave out what
// an AG-UI event cannot go without.
func TestTranslateFillsWhatAGUIRequires(t *testing.T) {
	r := &run{thread: "T", id: "R"}
	r.add(protocol.TypeAgentStarted, protocol.AgentStarted{Agent: "x"})
	r.add(protocol.TypeToolExecuting, map[string]any{"tool_call_id": "t"})
	r.add(protocol.TypeAgentError, map[string]any{"code": "agent_failed"})
	got := translateAll(NewTranslator("T", "R"), r.events)
	if got[1].ToolCallName != "unknown" || got[len(got)-1].Message != "agent_failed" {
		t.Fatalf("%s", show(got))
	}
}

// TestTranslateRelayed: what an AG-UI agent server reported comes back as
// the AG-UI events it was; open steps are finished before RUN_FINISHED,
// and a resumed client gets the state and the open steps back.
func TestTranslateRelayed(t *testing.T) {
	r := &run{thread: "T", id: "R"}
	r.add(protocol.TypeAgentStarted, protocol.AgentStarted{Agent: "agui"})
	r.add(protocol.TypeStateSnapshot, protocol.StateSnapshot{Snapshot: json.RawMessage(`{"n":1}`)})
	r.add(protocol.TypeStepStarted, protocol.Step{StepName: "plan"})
	r.add(protocol.TypeStateDelta, protocol.StateDelta{Delta: json.RawMessage(`[{"op":"replace","path":"/n","value":2}]`)})
	r.add(protocol.TypeStepFinished, protocol.Step{StepName: "never started"})
	r.add(protocol.TypeCustom, protocol.Custom{Name: "ping", Value: json.RawMessage(`1`)})
	r.add(protocol.TypeRaw, protocol.Raw{Event: json.RawMessage(`{"x":1}`), Source: "lg"})
	r.add(protocol.TypeActivitySnapshot, protocol.ActivitySnapshot{MessageID: "act", ActivityType: "PLAN", Content: json.RawMessage(`{"a":1}`)})
	r.add(protocol.TypeActivityDelta, protocol.ActivityDelta{MessageID: "act", ActivityType: "PLAN", Patch: json.RawMessage(`[]`)})
	r.add(protocol.TypeStepStarted, protocol.Step{StepName: "act"})
	r.add(protocol.TypeAgentCompleted, protocol.AgentCompleted{MessageID: "A"})
	got := translateAll(NewTranslator("T", "R"), r.events)
	want := "RUN_STARTED @1\nSTATE_SNAPSHOT @2\nSTEP_STARTED @3\nSTATE_DELTA @4\nCUSTOM ping @6\nRAW @7\n" +
		"ACTIVITY_SNAPSHOT act @8\nACTIVITY_DELTA act @9\nSTEP_STARTED @10\nSTEP_FINISHED @11\nSTEP_FINISHED @11\nRUN_FINISHED outcome=success @11\n"
	if s := show(got); s != want {
		t.Fatalf("got\n%s\nwant\n%s", s, want)
	}
	if got[len(got)-3].StepName != "act" || got[len(got)-2].StepName != "plan" || string(got[1].Snapshot) != `{"n":1}` || got[5].Source != "lg" {
		t.Fatalf("%+v", got)
	}
	// Resumed after the delta: the state and the open step come back.
	prelude, tr := Resume("T", "R", nil, r.events[:4])
	if s := show(prelude); s != "RUN_STARTED @4\nMESSAGES_SNAPSHOT @4\nSTATE_SNAPSHOT @2\nSTATE_DELTA @4\nSTEP_STARTED @3\n" {
		t.Fatalf("prelude\n%s", s)
	}
	if err := verify(append(prelude, translateAll(tr, r.events[4:])...)); err != nil {
		t.Fatal(err)
	}
}
