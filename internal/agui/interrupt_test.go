package agui

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentwire/agentwire/protocol"
)

func askingRun() *run {
	r := &run{thread: "T", id: "R"}
	yes := true
	r.add(protocol.TypeUserMessage, protocol.UserMessage{MessageID: "U", Content: "approve", ClientMessageID: "c1"})
	r.add(protocol.TypeAgentStarted, protocol.AgentStarted{Agent: "demo"})
	r.add(protocol.TypeAgentMessageDelta, protocol.AgentMessageDelta{MessageID: "A", Delta: "Let me ask. "})
	r.add(protocol.TypeInputRequired, protocol.InputRequired{RequestID: "Q", Kind: protocol.InputApproval, Prompt: "May I?", ToolCallID: "tc1"})
	r.add(protocol.TypeInputReceived, protocol.InputReceived{RequestID: "Q", InputAnswer: protocol.InputAnswer{Approved: &yes}})
	r.add(protocol.TypeAgentMessageDelta, protocol.AgentMessageDelta{MessageID: "A", Delta: "Done."})
	r.add(protocol.TypeAgentCompleted, protocol.AgentCompleted{MessageID: "A", FinalResponse: "Let me ask. Done."})
	return r
}

func TestTranslateInterrupt(t *testing.T) {
	t.Parallel()
	r := askingRun()
	tr := NewTranslator(r.thread, r.id)
	var first []Event
	for _, ev := range r.events[:4] {
		first = append(first, tr.Event(ev)...)
	}
	if got := show(first); !strings.HasSuffix(got, "TEXT_MESSAGE_END A @4\nRUN_FINISHED outcome=interrupt @4\n") {
		t.Fatalf("up to the question:\n%s", got)
	}
	if !tr.Ended() {
		t.Fatal("not ended at the interrupt")
	}
	var in []Interrupt
	if err := json.Unmarshal(first[len(first)-1].Outcome.Interrupts, &in); err != nil || len(in) != 1 ||
		in[0].ID != "R:Q" || in[0].Reason != "tool_approval" || in[0].Message != "May I?" || in[0].ToolCallID != "tc1" ||
		string(in[0].Metadata) != `{"agentwire":{"kind":"approval"}}` {
		t.Fatalf("interrupts %s", first[len(first)-1].Outcome.Interrupts)
	}
	// The answer starts the run again, in this translator or a new one (a
	// resume request's response).
	for _, tr := range []*Translator{tr, NewTranslator(r.thread, r.id)} {
		var rest []Event
		for _, ev := range r.events[4:] {
			rest = append(rest, tr.Event(ev)...)
		}
		want := "RUN_STARTED @5\nTEXT_MESSAGE_START A @6\nTEXT_MESSAGE_CONTENT A Done. @6\nTEXT_MESSAGE_END A @7\nRUN_FINISHED outcome=success @7\n"
		if got := show(rest); got != want {
			t.Fatalf("after the answer:\n%s\nwant\n%s", got, want)
		}
	}
	// /connect while the run waits: the prelude ends with the interrupt.
	prelude, rt := Resume(r.thread, r.id, nil, r.events[:4])
	if !rt.Ended() || prelude[len(prelude)-1].Outcome == nil || prelude[len(prelude)-1].Outcome.Type != OutcomeInterrupt {
		t.Fatalf("prelude of a waiting run:\n%s", show(prelude))
	}
}

func TestResumeFrame(t *testing.T) {
	t.Parallel()
	for payload, want := range map[string]string{
		`{"approved":false}`: `"approved":false`, `true`: `"approved":true`, `{"text":"hi"}`: `"text":"hi"`, `{"choice":"red"}`: `"choice":"red"`,
	} {
		in := RunAgentInput{Resume: []ResumeEntry{{InterruptID: "R:Q", Status: ResumeResolved, Payload: json.RawMessage(payload)}}}
		f, e := in.ResumeFrame()
		if e != nil || f.RunID != "R" || f.RequestID != "Q" || !strings.Contains(string(protocol.EncodeFrame(&f)), want) {
			t.Errorf("%s: %+v %v", payload, f, e)
		}
	}
	in := RunAgentInput{Resume: []ResumeEntry{{InterruptID: "R:Q", Status: ResumeCancelled}}}
	if f, e := in.ResumeFrame(); e != nil || f.Answer.Approved == nil || *f.Answer.Approved {
		t.Errorf("cancelled: %+v %v, want a denial", f, e)
	}
	for _, bad := range [][]ResumeEntry{
		nil,
		{{InterruptID: "R:Q", Status: ResumeResolved, Payload: json.RawMessage(`true`)}, {InterruptID: "R:P", Status: ResumeResolved, Payload: json.RawMessage(`true`)}},
		{{InterruptID: "RQ", Status: ResumeResolved, Payload: json.RawMessage(`true`)}},
		{{InterruptID: "R:Q", Status: ResumeResolved}},
		{{InterruptID: "R:Q", Status: ResumeResolved, Payload: json.RawMessage(`{}`)}},
	} {
		in := RunAgentInput{Resume: bad}
		if _, e := in.ResumeFrame(); e == nil || e.Code != protocol.CodeInvalidMessage {
			t.Errorf("%+v: %v, want invalid_message", bad, e)
		}
	}
}
