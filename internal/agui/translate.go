package agui

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/agentwire/agentwire/protocol"
)

// Translator turns the agentwire stream events of one run into the AG-UI
// events an AG-UI client expects, in order. It keeps what a run has open
// (its text message), so it is used for one run's events in seq order, by
// one goroutine. It is pure: no I/O, no clock.
//
// The mapping (docs/PROTOCOL.md, "AG-UI"):
//
//	agent_started          RUN_STARTED
//	agent_thinking         REASONING_MESSAGE_START, _CONTENT, _END
//	tool_executing         TOOL_CALL_START, TOOL_CALL_ARGS (the args' JSON), TOOL_CALL_END
//	tool_completed         TOOL_CALL_RESULT
//	agent_message_delta    TEXT_MESSAGE_START (first delta of a message), TEXT_MESSAGE_CONTENT
//	agent_completed        TEXT_MESSAGE_END (if open), RUN_FINISHED (outcome success)
//	agent_error cancelled  TEXT_MESSAGE_END (if open), RUN_FINISHED (outcome cancelled)
//	agent_error other      RUN_ERROR
//	state_snapshot, state_delta, step_started, step_finished,
//	activity_snapshot, activity_delta, custom, raw
//	                       STATE_SNAPSHOT, STATE_DELTA, STEP_STARTED, STEP_FINISHED,
//	                       ACTIVITY_SNAPSHOT, ACTIVITY_DELTA, CUSTOM, RAW (what an
//	                       AG-UI agent server reported, relayed back; open steps are
//	                       finished before RUN_FINISHED)
//	input_required         TEXT_MESSAGE_END (if open), RUN_FINISHED (outcome interrupt,
//	                       one Interrupt: id "<run>:<request>", reason the kind
//	                       ("tool_approval" for an approval of a tool call))
//	input_received         RUN_STARTED (the run goes on, after an interrupt)
//	any other type         CUSTOM{name: type, value: data}
//	user_message           nothing (the client sent it)
//
// Every AG-UI event carries metadata {"agentwire":{"seq","epoch"}} of the
// stream event it comes from.
type Translator struct {
	threadID, runID string

	started bool
	ended   bool
	// interrupted: the run's RUN_FINISHED was an interrupt; the answer
	// (input_received) starts it again.
	interrupted bool
	// text is the open text message, "" when none; textMeta the metadata of
	// the last event that touched it (a re-opening carries it).
	text     string
	textMeta json.RawMessage
	// streamed: some answer text went out as deltas, so agent_completed's
	// final_response repeats nothing.
	streamed bool
	// steps are the steps started and not finished, in order, each with the
	// metadata of its start (a re-opening carries it).
	steps []openStep
}

type openStep struct {
	name string
	meta json.RawMessage
}

// NewTranslator returns the translator of run runID of thread threadID.
func NewTranslator(threadID, runID string) *Translator {
	return &Translator{threadID: threadID, runID: runID}
}

// Started reports whether the run's RUN_STARTED has been produced.
func (t *Translator) Started() bool { return t.started }

// Ended reports whether the run's last event (RUN_FINISHED or RUN_ERROR)
// has been produced: nothing follows it.
func (t *Translator) Ended() bool { return t.ended }

// RunID is the run this translator translates.
func (t *Translator) RunID() string { return t.runID }

// Metadata is the metadata every AG-UI event made from ev carries.
func Metadata(ev protocol.Event) json.RawMessage {
	b := make([]byte, 0, 48+len(ev.Epoch))
	b = append(b, `{"agentwire":{"seq":`...)
	b = strconv.AppendUint(b, ev.Seq, 10)
	b = append(b, `,"epoch":`...)
	b = protocol.AppendString(b, ev.Epoch)
	return append(b, `}}`...)
}

// MetadataCursor reads the stream position an AG-UI event's metadata
// carries (see Metadata); ok is false for metadata without it.
func MetadataCursor(metadata json.RawMessage) (c protocol.Cursor, ok bool) {
	var m struct {
		AW *struct {
			Seq   uint64 `json:"seq"`
			Epoch string `json:"epoch"`
		} `json:"agentwire"`
	}
	if json.Unmarshal(metadata, &m) != nil || m.AW == nil {
		return protocol.Cursor{}, false
	}
	return protocol.Cursor{Seq: m.AW.Seq, Epoch: m.AW.Epoch}, true
}

// Event returns the AG-UI events ev becomes: none for an event of another
// run, one after the run's end, or one that makes no AG-UI event.
func (t *Translator) Event(ev protocol.Event) []Event {
	if ev.RunID != t.runID || (t.ended && !(t.interrupted && ev.Type == protocol.TypeInputReceived)) {
		return nil
	}
	meta := Metadata(ev)
	var out []Event
	var ts int64
	if !ev.TS.IsZero() {
		ts = ev.TS.UnixMilli()
	}
	add := func(e Event) {
		e.Metadata, e.Timestamp = meta, ts
		out = append(out, e)
	}
	switch ev.Type {
	case protocol.TypeUserMessage:
		return nil
	case protocol.TypeAgentStarted:
		if t.started {
			return nil
		}
		t.started = true
		add(Event{Type: RunStarted, ThreadID: t.threadID, RunID: t.runID})
	case protocol.TypeAgentThinking:
		d, ok := ev.AgentThinking()
		if !ok || d.Text == "" {
			return nil
		}
		id := t.runID + "-reasoning-" + strconv.FormatUint(ev.Seq, 10)
		add(Event{Type: ReasoningMessageStart, MessageID: id, Role: RoleReasoning})
		add(Event{Type: ReasoningMessageContent, MessageID: id, Delta: String(d.Text)})
		add(Event{Type: ReasoningMessageEnd, MessageID: id})
	case protocol.TypeToolExecuting:
		d, ok := ev.ToolExecuting()
		if !ok || d.ToolCallID == "" {
			return nil
		}
		args := string(d.Args)
		if args == "" || args == "null" {
			args = "{}"
		}
		name := d.Tool
		if name == "" {
			name = "unknown" // a published tool_executing may name none; AG-UI requires one
		}
		add(Event{Type: ToolCallStart, ToolCallID: d.ToolCallID, ToolCallName: name})
		add(Event{Type: ToolCallArgs, ToolCallID: d.ToolCallID, Delta: String(args)})
		add(Event{Type: ToolCallEnd, ToolCallID: d.ToolCallID})
	case protocol.TypeToolCompleted:
		d, ok := ev.ToolCompleted()
		if !ok || d.ToolCallID == "" {
			return nil
		}
		add(Event{Type: ToolCallResult, MessageID: ToolResultID(d.ToolCallID), ToolCallID: d.ToolCallID,
			Role: RoleTool, Content: String(toolContent(d))})
	case protocol.TypeAgentMessageDelta:
		d, ok := ev.AgentMessageDelta()
		if !ok || d.Delta == "" {
			return nil
		}
		id := d.MessageID
		if id == "" {
			id = t.answerID()
		}
		out = t.openText(out, id, meta, ts)
		add(Event{Type: TextMessageContent, MessageID: id, Delta: String(d.Delta)})
		t.textMeta, t.streamed = meta, true
	case protocol.TypeAgentCompleted:
		d, _ := ev.AgentCompleted()
		if !t.streamed && d.FinalResponse != "" {
			// An answer that was never streamed: the whole of it, at once.
			id := d.MessageID
			if id == "" {
				id = t.answerID()
			}
			out = t.openText(out, id, meta, ts)
			add(Event{Type: TextMessageContent, MessageID: id, Delta: String(d.FinalResponse)})
		}
		out = t.closeOpen(out, meta, ts)
		result := String(d.FinalResponse)
		add(Event{Type: RunFinished, ThreadID: t.threadID, RunID: t.runID, Result: result, Outcome: &Outcome{Type: OutcomeSuccess}})
		t.ended = true
	case protocol.TypeInputRequired:
		d, ok := ev.InputRequired()
		if !ok || d.RequestID == "" {
			return nil
		}
		reason := string(d.Kind)
		if d.Kind == protocol.InputApproval && d.ToolCallID != "" {
			reason = "tool_approval"
		}
		var ws bytes.Buffer
		ws.WriteString(`{"agentwire":{"kind":`)
		ws.Write(protocol.AppendString(nil, string(d.Kind)))
		if len(d.Options) > 0 {
			opts, _ := json.Marshal(d.Options)
			ws.WriteString(`,"options":`)
			ws.Write(opts)
		}
		ws.WriteString(`}}`)
		interrupts, _ := json.Marshal([]Interrupt{{ID: InterruptID(t.runID, d.RequestID), Reason: reason, Message: d.Prompt,
			ToolCallID: d.ToolCallID, ResponseSchema: d.Schema, Metadata: ws.Bytes()}})
		out = t.closeOpen(out, meta, ts)
		add(Event{Type: RunFinished, ThreadID: t.threadID, RunID: t.runID, Outcome: &Outcome{Type: OutcomeInterrupt, Interrupts: interrupts}})
		t.ended, t.interrupted = true, true
	case protocol.TypeInputReceived:
		if t.started && !t.interrupted {
			return nil
		}
		t.started, t.ended, t.interrupted = true, false, false
		add(Event{Type: RunStarted, ThreadID: t.threadID, RunID: t.runID})
	case protocol.TypeAgentError:
		d, _ := ev.AgentError()
		if d.Code == protocol.CodeCancelled {
			out = t.closeOpen(out, meta, ts)
			add(Event{Type: RunFinished, ThreadID: t.threadID, RunID: t.runID, Outcome: &Outcome{Type: OutcomeCancelled}})
		} else {
			code := d.Code
			if code == "" {
				code = protocol.CodeAgentFailed
			}
			msg := d.Message
			if msg == "" {
				msg = string(code) // AG-UI requires a message
			}
			add(Event{Type: RunError, Message: msg, Code: string(code)})
		}
		t.ended = true
	case protocol.TypeStateSnapshot:
		if d, ok := ev.StateSnapshot(); ok {
			add(Event{Type: StateSnapshot, Snapshot: orNull(d.Snapshot)})
		}
	case protocol.TypeStateDelta:
		if d, ok := ev.StateDelta(); ok && len(d.Delta) > 0 && d.Delta[0] == '[' {
			add(Event{Type: StateDelta, Delta: d.Delta})
		}
	case protocol.TypeStepStarted:
		if d, ok := ev.Step(); ok && d.StepName != "" && t.step(d.StepName) < 0 {
			t.steps = append(t.steps, openStep{name: d.StepName, meta: meta})
			add(Event{Type: StepStarted, StepName: d.StepName})
		}
	case protocol.TypeStepFinished:
		if d, ok := ev.Step(); ok {
			if i := t.step(d.StepName); i >= 0 { // a step never started is dropped: AG-UI refuses it
				t.steps = append(t.steps[:i], t.steps[i+1:]...)
				add(Event{Type: StepFinished, StepName: d.StepName})
			}
		}
	case protocol.TypeActivitySnapshot:
		if d, ok := ev.ActivitySnapshot(); ok && d.MessageID != "" {
			add(Event{Type: ActivitySnapshot, MessageID: d.MessageID, ActivityType: d.ActivityType, Content: orNull(d.Content), Replace: d.Replace})
		}
	case protocol.TypeActivityDelta:
		if d, ok := ev.ActivityDelta(); ok && d.MessageID != "" {
			add(Event{Type: ActivityDelta, MessageID: d.MessageID, ActivityType: d.ActivityType, Patch: d.Patch})
		}
	case protocol.TypeCustom:
		if d, ok := ev.Custom(); ok && d.Name != "" {
			add(Event{Type: Custom, Name: d.Name, Value: orNull(d.Value)})
		}
	case protocol.TypeRaw:
		if d, ok := ev.Raw(); ok {
			add(Event{Type: Raw, Event: orNull(d.Event), Source: d.Source})
		}
	default:
		value := ev.Data
		if len(value) == 0 {
			value = json.RawMessage(`{}`)
		}
		add(Event{Type: Custom, Name: ev.Type, Value: value})
	}
	return out
}

// orNull is raw, or JSON null when it is empty: the field must be there.
func orNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	return raw
}

// step is the index of the open step name, -1 when it is not open.
func (t *Translator) step(name string) int {
	for i, s := range t.steps {
		if s.name == name {
			return i
		}
	}
	return -1
}

// closeOpen ends what is open before the run finishes: the text message,
// then the steps (AG-UI refuses RUN_FINISHED while either is).
func (t *Translator) closeOpen(out []Event, meta json.RawMessage, ts int64) []Event {
	out = t.closeText(out, meta, ts)
	for i := len(t.steps) - 1; i >= 0; i-- {
		out = append(out, Event{Type: StepFinished, StepName: t.steps[i].name, Metadata: meta, Timestamp: ts})
	}
	t.steps = nil
	return out
}

// Reopen returns the events that re-open, for a client that starts reading
// mid-run after a MESSAGES_SNAPSHOT, what the run has open: the
// STEP_STARTED of its open steps and the TEXT_MESSAGE_START of its text
// message. (Tool calls and reasoning messages open and close within one
// stream event, so none is ever open between two.)
func (t *Translator) Reopen() []Event {
	if t.ended {
		return nil
	}
	var out []Event
	for _, s := range t.steps {
		out = append(out, Event{Type: StepStarted, StepName: s.name, Metadata: s.meta})
	}
	if t.text != "" {
		out = append(out, Event{Type: TextMessageStart, MessageID: t.text, Role: RoleAssistant, Metadata: t.textMeta})
	}
	return out
}

// ToolResultID is the id of the tool message a tool call's result becomes.
func ToolResultID(toolCallID string) string { return toolCallID + "-result" }

// answerID names the answer of a run whose events carry no message id.
func (t *Translator) answerID() string { return t.runID + "-answer" }

func (t *Translator) openText(out []Event, id string, meta json.RawMessage, ts int64) []Event {
	if t.text == id {
		return out
	}
	out = t.closeText(out, meta, ts)
	t.text = id
	t.textMeta = meta
	return append(out, Event{Type: TextMessageStart, MessageID: id, Role: RoleAssistant, Metadata: meta, Timestamp: ts})
}

func (t *Translator) closeText(out []Event, meta json.RawMessage, ts int64) []Event {
	if t.text == "" {
		return out
	}
	out = append(out, Event{Type: TextMessageEnd, MessageID: t.text, Metadata: meta, Timestamp: ts})
	t.text, t.textMeta = "", nil
	return out
}

// toolContent is a tool result as the text of a tool message: a JSON string
// as is, any other JSON as its text; a failed call's error.
func toolContent(d protocol.ToolCompleted) string {
	if !d.OK && d.Error != "" {
		return "error: " + d.Error
	}
	var s string
	if json.Unmarshal(d.Result, &s) == nil {
		return s
	}
	if len(d.Result) == 0 {
		return "null"
	}
	return string(d.Result)
}
