// Package aguiagent is an agent implemented by any AG-UI agent server
// (protocol 1.0: CopilotKit, LangGraph, Mastra, Pydantic AI, … behind an
// AG-UI endpoint): each run is POSTed as an AG-UI RunAgentInput and the
// server's text/event-stream of AG-UI events is mapped back into the run.
//
// Request body: RunAgentInput with threadId and runId the run's, messages
// the thread's history (ids the stored messages' ids, stable across runs),
// and no tools, context or state of its own (tools: [], context: [],
// state: {}, forwardedProps: {}). Accept: text/event-stream.
//
// Answer, event by event (each SSE "data:" a JSON AG-UI event):
//
//   - TEXT_MESSAGE_CONTENT and TEXT_MESSAGE_CHUNK: agent_message_delta with
//     their delta; TEXT_MESSAGE_START and _END mark nothing of their own.
//   - REASONING_MESSAGE_CONTENT and REASONING_MESSAGE_CHUNK: collected per
//     reasoning message, emitted as one agent_thinking when the message ends
//     (REASONING_MESSAGE_END, REASONING_END, or for chunks any other event).
//   - TOOL_CALL_START, TOOL_CALL_ARGS…, TOOL_CALL_END: one tool_executing
//     {tool_call_id: toolCallId, tool: toolCallName, args} at the end, args
//     the concatenated deltas, which must be a JSON object (empty: {}).
//     TOOL_CALL_CHUNK does the same, a call ending at the first event that
//     is not a chunk of it.
//   - TOOL_CALL_RESULT: tool_completed for an announced call, ok, result
//     the content parsed as JSON when it is JSON, else the content string.
//   - RUN_FINISHED: agent_completed (the answer is the deltas). RUN_ERROR:
//     agent_error agent_failed with its message.
//   - STATE_SNAPSHOT, STATE_DELTA, STEP_STARTED, STEP_FINISHED,
//     ACTIVITY_SNAPSHOT, ACTIVITY_DELTA, CUSTOM, RAW: run events of their
//     own type (protocol.RelayedEventType).
//   - RUN_STARTED, MESSAGES_SNAPSHOT, REASONING_START,
//     REASONING_ENCRYPTED_VALUE, the SUBAGENT_* events and types this
//     version does not know are skipped: AG-UI grows, and its servers
//     send more than a run can show.
//
// A stream that ends without RUN_FINISHED or RUN_ERROR, an event that is not
// a JSON object or lacks a field its type needs, an event over
// upstream.MaxEvent bytes, an answer over Config.MaxBytes, a non-2xx status or a
// timeout end the run with agent_error agent_failed. Bytes that are not
// UTF-8 become U+FFFD. Stop, the run's timeout and shutdown cancel the
// upstream request.
package aguiagent

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/internal/upstream"
	"github.com/agentwire/agentwire/internal/agui"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/protocol"
)

// DefaultTimeout bounds one run's request, streamed answer included.
const DefaultTimeout = 5 * time.Minute

// DefaultMaxBytes bounds one run's answer.
const DefaultMaxBytes = upstream.DefaultMaxBytes

// Config configures the agent.
type Config struct {
	// URL is the AG-UI agent server's run endpoint; required, http or https.
	URL string
	// HTTPClient makes the requests; default http.DefaultClient.
	HTTPClient *http.Client
	// Timeout bounds one run's request, streamed answer included; default
	// DefaultTimeout.
	Timeout time.Duration
	// MaxBytes bounds the bytes of one run's answer; default DefaultMaxBytes.
	// One event is bounded by 1 MiB besides (upstream.MaxEvent).
	MaxBytes int64
}

// Agent forwards runs to an AG-UI agent server. It is safe for concurrent
// runs.
type Agent struct{ svc *upstream.Service }

var _ agent.Agent = (*Agent)(nil)

// New returns an agent for cfg, or an error if cfg cannot work.
func New(cfg Config) (*Agent, error) {
	svc, err := upstream.NewService("aguiagent", cfg.URL, cfg.HTTPClient, cfg.Timeout, DefaultTimeout)
	if err != nil {
		return nil, err
	}
	if cfg.MaxBytes > 0 {
		svc.MaxBytes = cfg.MaxBytes
	}
	return &Agent{svc: svc}, nil
}

// Name is "agui".
func (a *Agent) Name() string { return "agui" }

// Input returns the RunAgentInput posted for run.
func Input(run agent.Run) agui.RunAgentInput {
	in := agui.RunAgentInput{
		ThreadID:       run.ThreadID,
		RunID:          run.ID,
		State:          json.RawMessage(`{}`),
		Messages:       make([]agui.Message, 0, len(run.Messages)),
		Tools:          []agui.Tool{},
		Context:        []agui.Context{},
		ForwardedProps: json.RawMessage(`{}`),
	}
	for i, m := range run.Messages {
		id := m.ID
		switch {
		case id != "":
		case m.ToolCallID != "": // stable across runs, as stored ids are
			id = m.ToolCallID + "-result"
		case len(m.ToolCalls) > 0:
			id = m.ToolCalls[0].ID + "-calls"
		default:
			id = fmt.Sprintf("%s-%d", run.ID, i)
		}
		am := agui.Message{ID: id, Role: m.Role, ToolCallID: m.ToolCallID}
		if m.Content != "" || len(m.ToolCalls) == 0 {
			am.Content = agui.String(m.Content)
		}
		for _, c := range m.ToolCalls {
			am.ToolCalls = append(am.ToolCalls, agui.ToolCall{ID: c.ID, Type: "function", Function: agui.FunctionCall{Name: c.Name, Arguments: string(c.Args)}})
		}
		in.Messages = append(in.Messages, am)
	}
	return in
}

// Run posts run to the AG-UI server and relays its events to em.
func (a *Agent) Run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	return upstream.Finish(ctx, em, a.run(ctx, run, em))
}

func (a *Agent) run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	svc := a.svc
	rctx, cancel := context.WithTimeout(ctx, svc.Timeout)
	defer cancel() // also tells the server to stop, once we have our terminal event
	body, err := json.Marshal(Input(run))
	if err != nil {
		return fmt.Errorf("aguiagent: encoding the request: %w", err)
	}
	resp, err := svc.Post(ctx, rctx, body, "text/event-stream")
	if err != nil {
		return svc.ReadError(ctx, rctx, err)
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return upstream.Failf("AG-UI agent server answered %q, not text/event-stream", mt)
	}

	r := relay{em: em, calls: map[string]*call{}}
	err = sse.Read(svc.Body(resp), upstream.MaxEvent, func(e sse.Event) error {
		return r.handle(e.Data)
	})
	return svc.Ended(ctx, rctx, err, r.ended, string(agui.RunFinished))
}

// call is a tool call of the server: its arguments until it ends, then
// when it was announced.
type call struct {
	name    string
	args    strings.Builder
	started time.Time // when tool_executing was emitted; zero before
}

// relay turns the server's events into Emitter calls, in order.
type relay struct {
	em    agent.Emitter
	n     int // events read
	ended bool

	calls    map[string]*call            // by toolCallId, announced or collecting args
	chunkID  string                      // the TOOL_CALL_CHUNK call collecting args
	thinking map[string]*strings.Builder // open reasoning messages, by id
	thoughts []string                    // their ids, oldest first
	// chunkThinking collects the REASONING_MESSAGE_CHUNKs of chunkThought.
	chunkThinking strings.Builder
	chunkThought  string
	inChunks      bool
}

func (r *relay) handle(data []byte) error {
	r.n++
	var e agui.Event
	if err := json.Unmarshal(upstream.ValidUTF8(data), &e); err != nil {
		return upstream.Failf("AG-UI agent server sent a malformed event (#%d): %v", r.n, err)
	}
	if e.Type != agui.ToolCallChunk {
		if err := r.endChunkCall(); err != nil {
			return err
		}
	}
	if e.Type != agui.ReasoningMessageChunk {
		if err := r.endChunkThought(); err != nil {
			return err
		}
	}
	switch e.Type {
	case agui.TextMessageContent, agui.TextMessageChunk:
		if d := e.DeltaText(); d != "" {
			return upstream.Emitted(r.em.Delta(d))
		}
		return nil

	case agui.ReasoningMessageStart:
		r.thought(e.MessageID)
		return nil
	case agui.ReasoningMessageContent:
		b := r.thought(e.MessageID)
		if b.Len()+len(e.DeltaText()) > upstream.MaxEvent {
			return upstream.Failf("AG-UI agent server sent a reasoning message over %d bytes", upstream.MaxEvent)
		}
		b.WriteString(e.DeltaText())
		return nil
	case agui.ReasoningMessageEnd:
		return r.endThought(e.MessageID)
	case agui.ReasoningEnd:
		return r.endThoughts()
	case agui.ReasoningMessageChunk:
		if r.inChunks && e.MessageID != "" && e.MessageID != r.chunkThought {
			if err := r.endChunkThought(); err != nil {
				return err
			}
		}
		if !r.inChunks {
			r.inChunks, r.chunkThought = true, e.MessageID
		}
		if r.chunkThinking.Len()+len(e.DeltaText()) > upstream.MaxEvent {
			return upstream.Failf("AG-UI agent server sent a reasoning message over %d bytes", upstream.MaxEvent)
		}
		r.chunkThinking.WriteString(e.DeltaText())
		return nil

	case agui.ToolCallStart:
		return r.startCall(e.ToolCallID, e.ToolCallName)
	case agui.ToolCallArgs:
		c := r.calls[e.ToolCallID]
		if c == nil || !c.started.IsZero() {
			return upstream.Failf("AG-UI agent server sent TOOL_CALL_ARGS for tool call %q not started or already ended", e.ToolCallID)
		}
		return r.addArgs(c, e.DeltaText())
	case agui.ToolCallEnd:
		return r.endCall(e.ToolCallID)
	case agui.ToolCallChunk:
		if e.ToolCallID != "" && e.ToolCallID != r.chunkID {
			if err := r.endChunkCall(); err != nil {
				return err
			}
			if err := r.startCall(e.ToolCallID, e.ToolCallName); err != nil {
				return err
			}
			r.chunkID = e.ToolCallID
		}
		if r.chunkID == "" {
			return upstream.Failf("AG-UI agent server sent a first TOOL_CALL_CHUNK without toolCallId and toolCallName (#%d)", r.n)
		}
		return r.addArgs(r.calls[r.chunkID], e.DeltaText())
	case agui.ToolCallResult:
		c := r.calls[e.ToolCallID]
		if c == nil || c.started.IsZero() {
			return upstream.Failf("AG-UI agent server sent TOOL_CALL_RESULT for tool call %q before its TOOL_CALL_END", e.ToolCallID)
		}
		delete(r.calls, e.ToolCallID)
		return upstream.Emitted(r.em.ToolCompleted(agent.ToolResult{
			CallID: e.ToolCallID, Tool: c.name, OK: true, Result: result(e.Content), Duration: time.Since(c.started)}))

	case agui.RunFinished:
		if err := r.endThoughts(); err != nil {
			return err
		}
		r.ended = true
		if err := upstream.Emitted(r.em.Complete("")); err != nil {
			return err
		}
		return upstream.ErrStop
	case agui.RunError:
		msg := e.Message
		if msg == "" {
			msg = "the AG-UI agent server reported an error without a message"
		}
		r.ended = true
		if err := upstream.Emitted(r.em.Fail(protocol.CodeAgentFailed, msg)); err != nil {
			return err
		}
		return upstream.ErrStop

	case agui.StateSnapshot:
		if len(e.Snapshot) == 0 {
			return r.missing(e, "snapshot")
		}
		return r.relay(protocol.TypeStateSnapshot, protocol.StateSnapshot{Snapshot: e.Snapshot})
	case agui.StateDelta:
		if len(e.Delta) == 0 || e.Delta[0] != '[' {
			return r.missing(e, "delta (a JSON Patch array)")
		}
		return r.relay(protocol.TypeStateDelta, protocol.StateDelta{Delta: e.Delta})
	case agui.StepStarted, agui.StepFinished:
		if e.StepName == "" {
			return r.missing(e, "stepName")
		}
		typ := protocol.TypeStepStarted
		if e.Type == agui.StepFinished {
			typ = protocol.TypeStepFinished
		}
		return r.relay(typ, protocol.Step{StepName: e.StepName})
	case agui.ActivitySnapshot:
		if e.MessageID == "" || len(e.Content) == 0 || e.Content[0] != '{' {
			return r.missing(e, "messageId and content (an object)")
		}
		return r.relay(protocol.TypeActivitySnapshot, protocol.ActivitySnapshot{
			MessageID: e.MessageID, ActivityType: e.ActivityType, Content: e.Content, Replace: e.Replace})
	case agui.ActivityDelta:
		if e.MessageID == "" || len(e.Patch) == 0 || e.Patch[0] != '[' {
			return r.missing(e, "messageId and patch (a JSON Patch array)")
		}
		return r.relay(protocol.TypeActivityDelta, protocol.ActivityDelta{
			MessageID: e.MessageID, ActivityType: e.ActivityType, Patch: e.Patch})
	case agui.Custom:
		if e.Name == "" {
			return r.missing(e, "name")
		}
		return r.relay(protocol.TypeCustom, protocol.Custom{Name: e.Name, Value: orNull(e.Value)})
	case agui.Raw:
		return r.relay(protocol.TypeRaw, protocol.Raw{Event: orNull(e.Event), Source: e.Source})
	}
	return nil // TEXT_MESSAGE_START/END, RUN_STARTED, snapshots of messages, unknown types
}

func (r *relay) missing(e agui.Event, what string) error {
	return upstream.Failf("AG-UI agent server sent %s without %s (#%d)", e.Type, what, r.n)
}

func (r *relay) relay(typ string, data any) error { return upstream.Emitted(r.em.Event(typ, data)) }

func (r *relay) thought(id string) *strings.Builder {
	if r.thinking == nil {
		r.thinking = map[string]*strings.Builder{}
	}
	b := r.thinking[id]
	if b == nil {
		b = &strings.Builder{}
		r.thinking[id] = b
		r.thoughts = append(r.thoughts, id)
	}
	return b
}

// endThoughts ends every open reasoning message, oldest first.
func (r *relay) endThoughts() error {
	for len(r.thoughts) > 0 {
		if err := r.endThought(r.thoughts[0]); err != nil {
			return err
		}
	}
	return nil
}

// endThought emits the reasoning message id as one agent_thinking.
func (r *relay) endThought(id string) error {
	b := r.thinking[id]
	delete(r.thinking, id)
	for i, t := range r.thoughts {
		if t == id {
			r.thoughts = append(r.thoughts[:i], r.thoughts[i+1:]...)
			break
		}
	}
	if b == nil || b.Len() == 0 {
		return nil
	}
	return upstream.Emitted(r.em.Thinking(b.String()))
}

func (r *relay) endChunkThought() error {
	if !r.inChunks {
		return nil
	}
	text := r.chunkThinking.String()
	r.inChunks, r.chunkThought = false, ""
	r.chunkThinking.Reset()
	if text == "" {
		return nil
	}
	return upstream.Emitted(r.em.Thinking(text))
}

func (r *relay) startCall(id, name string) error {
	if id == "" || name == "" {
		return upstream.Failf("AG-UI agent server started a tool call without toolCallId or toolCallName (#%d)", r.n)
	}
	if r.calls[id] != nil {
		return upstream.Failf("AG-UI agent server started tool call %q twice", id)
	}
	r.calls[id] = &call{name: name}
	return nil
}

func (r *relay) addArgs(c *call, delta string) error {
	if c.args.Len()+len(delta) > upstream.MaxEvent {
		return upstream.Failf("AG-UI agent server sent tool call arguments over %d bytes", upstream.MaxEvent)
	}
	c.args.WriteString(delta)
	return nil
}

// endCall announces the call id with its whole arguments.
func (r *relay) endCall(id string) error {
	c := r.calls[id]
	if c == nil || !c.started.IsZero() {
		return upstream.Failf("AG-UI agent server sent TOOL_CALL_END for tool call %q not started or already ended", id)
	}
	args := json.RawMessage(strings.TrimSpace(c.args.String()))
	if len(args) == 0 {
		args = json.RawMessage(`{}`)
	}
	if args[0] != '{' || !json.Valid(args) {
		return upstream.Failf("AG-UI agent server sent tool call %q with arguments that are not a JSON object", id)
	}
	c.started = time.Now()
	c.args.Reset()
	return upstream.Emitted(r.em.ToolExecuting(id, c.name, args))
}

func (r *relay) endChunkCall() error {
	if r.chunkID == "" {
		return nil
	}
	id := r.chunkID
	r.chunkID = ""
	return r.endCall(id)
}

// result is a TOOL_CALL_RESULT's content as a tool result: the JSON it
// holds when it is JSON (a result agentwire's own AG-UI endpoint sent as
// JSON text comes back as it was), else the text.
func result(content json.RawMessage) any {
	text := agui.Text(content)
	if t := strings.TrimSpace(text); t != "" && json.Valid([]byte(t)) {
		return json.RawMessage(t)
	}
	return text
}

func orNull(v json.RawMessage) json.RawMessage {
	if len(v) == 0 {
		return json.RawMessage(`null`)
	}
	return v
}
