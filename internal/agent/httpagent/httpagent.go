// Package httpagent is an agent implemented by another service, in any
// language: each run is POSTed to a URL and the service answers with the
// run's events, in the wire contract's vocabulary, as NDJSON or SSE.
//
// Request body:
//
//	{"run_id":"…","thread_id":"…","user_id":"…","messages":[{"role":"user","content":"…"}]}
//
// Response: one event per NDJSON line (any Content-Type but
// text/event-stream) or per SSE "data:" event (text/event-stream), each
// either {"type":"agent_thinking","data":{"text":"…"}} or flat,
// {"type":"agent_thinking","text":"…"}. With SSE, the "event:" field may
// give the type instead. Types: agent_thinking {text}, tool_executing
// {tool_call_id, tool, args}, tool_completed {tool_call_id, tool?, ok?,
// result, duration_ms?, error?}, agent_message_delta {delta},
// agent_completed {final_response?}, agent_error {code?, message}.
//
// Human in the loop: the service may ask the user with input_required
// {kind, prompt, tool_call_id?, options?, schema?} and then end its response
// (agentwire reads nothing after it). agentwire asks the user and, with the
// answer, POSTs the same request again with "input": {"kind", "prompt",
// "tool_call_id"?, and "approved", "text" or "choice"}; the new response
// continues the run (open tool calls and the answer so far carry over).
// At most MaxInputRounds questions per run; the run's timeout applies to
// each request, not to the user's wait.
//
// The service speaks for this one run only: user_id, run_id and thread_id
// in its events are ignored (the Emitter is bound to the run), and so is
// agent_started (agentwire sent it). Anything else ends the run with
// agent_error agent_failed: an unknown event type (the vocabulary is the
// contract; silently dropping events would hide a service's bugs), a
// malformed line, a tool_completed without its tool_executing, a non-2xx
// status, a timeout, or a stream that ends without agent_completed or
// agent_error. A service's agent_error becomes agent_failed with the
// service's message.
package httpagent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/internal/upstream"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/protocol"
)

// DefaultTimeout bounds one run's request, streamed answer included.
const DefaultTimeout = 5 * time.Minute

// Config configures the agent.
type Config struct {
	// URL receives the POSTed runs; required, http or https.
	URL string
	// HTTPClient makes the requests; default http.DefaultClient.
	HTTPClient *http.Client
	// Timeout bounds one run's request, streamed answer included; default
	// DefaultTimeout.
	Timeout time.Duration
}

// Agent forwards runs to an agent service. It is safe for concurrent runs.
type Agent struct{ svc *upstream.Service }

var _ agent.Agent = (*Agent)(nil)

// New returns an agent for cfg, or an error if cfg cannot work.
func New(cfg Config) (*Agent, error) {
	svc, err := upstream.NewService("httpagent", cfg.URL, cfg.HTTPClient, cfg.Timeout, DefaultTimeout)
	if err != nil {
		return nil, err
	}
	return &Agent{svc: svc}, nil
}

// Name is "http".
func (a *Agent) Name() string { return "http" }

type request struct {
	RunID    string    `json:"run_id"`
	ThreadID string    `json:"thread_id"`
	UserID   string    `json:"user_id"`
	Messages []message `json:"messages"`
	// Input is the user's answer to the previous response's input_required.
	Input *input `json:"input,omitempty"`
}

// input is a question the service asked and the user's answer.
type input struct {
	Kind       protocol.InputKind `json:"kind"`
	Prompt     string             `json:"prompt"`
	ToolCallID string             `json:"tool_call_id,omitempty"`
	protocol.InputAnswer
}

// MaxInputRounds bounds the questions of one run.
const MaxInputRounds = 16

// message is one message of the thread (PROTOCOL.md section 9): an
// assistant message may carry the tools it called, a "tool" message is the
// result of one of them.
type message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type toolCall struct {
	ID   string          `json:"id"`
	Tool string          `json:"tool"`
	Args json.RawMessage `json:"args"`
}

// Run posts run to the service and relays its events to em.
func (a *Agent) Run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	return upstream.Finish(ctx, em, a.run(ctx, run, em))
}

func (a *Agent) run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	msgs := make([]message, 0, len(run.Messages))
	for _, m := range run.Messages {
		hm := message{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID}
		for _, c := range m.ToolCalls {
			hm.ToolCalls = append(hm.ToolCalls, toolCall{ID: c.ID, Tool: c.Name, Args: c.Args})
		}
		msgs = append(msgs, hm)
	}
	req := request{RunID: run.ID, ThreadID: run.ThreadID, UserID: run.UserID, Messages: msgs}
	r := relay{em: em, open: map[string]openCall{}}
	for rounds := 0; ; rounds++ {
		if err := a.round(ctx, req, &r); err != nil || r.ask == nil {
			return err
		}
		if rounds == MaxInputRounds {
			return upstream.Failf("agent service asked more than %d questions in one run", MaxInputRounds)
		}
		ask := *r.ask
		r.ask = nil
		ans, err := em.RequestInput(ctx, ask)
		switch {
		case err == nil:
		case errors.Is(err, agent.ErrRunEnded) || ctx.Err() != nil:
			return err
		default:
			return upstream.Failf("agent service asked a question that cannot be asked: %v", err)
		}
		req.Input = &input{Kind: ask.Kind, Prompt: ask.Prompt, ToolCallID: ask.ToolCallID, InputAnswer: ans}
	}
}

// round posts req and relays the response, until the run's end or the
// service's question (r.ask).
func (a *Agent) round(ctx context.Context, req request, r *relay) error {
	svc := a.svc
	rctx, cancel := context.WithTimeout(ctx, svc.Timeout)
	defer cancel() // also tells the service to stop, once we have our terminal event
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("httpagent: encoding the request: %w", err)
	}
	resp, err := svc.Post(ctx, rctx, body, "application/x-ndjson, text/event-stream")
	if err != nil {
		return svc.ReadError(ctx, rctx, err)
	}
	defer resp.Body.Close()

	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "text/event-stream" {
		err = sse.Read(svc.Body(resp), upstream.MaxEvent, func(e sse.Event) error {
			if string(bytes.TrimSpace(e.Data)) == "[DONE]" {
				return upstream.ErrStop
			}
			return r.handle(e.Data, e.Name)
		})
	} else {
		err = readLines(svc.Body(resp), func(line []byte) error { return r.handle(line, "") })
	}
	if r.ask != nil && errors.Is(err, upstream.ErrStop) {
		return nil
	}
	return svc.Ended(ctx, rctx, err, r.ended, protocol.TypeAgentCompleted)
}

func readLines(r io.Reader, fn func([]byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), upstream.MaxEvent)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Event is one decoded event of an agent service.
type Event struct {
	Type   string
	Fields Fields
}

// Fields are the fields of every event type; each type reads its own.
type Fields struct {
	Text          string          `json:"text"`
	ToolCallID    string          `json:"tool_call_id"`
	Tool          string          `json:"tool"`
	Args          json.RawMessage `json:"args"`
	OK            *bool           `json:"ok"`
	Result        json.RawMessage `json:"result"`
	DurationMS    *float64        `json:"duration_ms"`
	Error         json.RawMessage `json:"error"`
	Delta         string          `json:"delta"`
	FinalResponse string          `json:"final_response"`
	Code          string          `json:"code"`
	Message       string          `json:"message"`
	// Usage, on agent_completed: the tokens the service's model calls used.
	Usage *protocol.Usage `json:"usage"`
	// input_required
	Kind    protocol.InputKind `json:"kind"`
	Prompt  string             `json:"prompt"`
	Options []string           `json:"options"`
	Schema  json.RawMessage    `json:"schema"`
}

// Decode parses one event, nested ({"type","data":{…}}) or flat. name is
// the SSE event name, used when the JSON has no "type". Bytes that are not
// UTF-8 become U+FFFD first: encoding/json would carry them into args,
// result and error verbatim, and from there into text frames that
// compliant clients must fail (1007), on every later resume too.
func Decode(line []byte, name string) (Event, error) {
	line = upstream.ValidUTF8(line)
	var head struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(line, &head); err != nil {
		return Event{}, fmt.Errorf("not a JSON object: %w", err)
	}
	e := Event{Type: head.Type}
	if e.Type == "" {
		e.Type = name
	}
	if e.Type == "" {
		return Event{}, errors.New(`no "type"`)
	}
	src := line
	if len(head.Data) > 0 && string(head.Data) != "null" {
		src = head.Data
	}
	if err := json.Unmarshal(src, &e.Fields); err != nil {
		return Event{}, fmt.Errorf("bad %s fields: %w", e.Type, err)
	}
	return e, nil
}

type openCall struct {
	tool  string
	start time.Time
}

// relay turns the service's events into Emitter calls.
type relay struct {
	em    agent.Emitter
	open  map[string]openCall
	seen  map[string]bool
	line  int
	ended bool
	ask   *agent.InputRequest // the service's question, which ends its response
}

func (r *relay) handle(line []byte, name string) error {
	r.line++
	e, err := Decode(line, name)
	if err != nil {
		return upstream.Failf("agent service sent a malformed event (#%d): %v", r.line, err)
	}
	f := e.Fields
	switch e.Type {
	case protocol.TypeAgentStarted:
		return nil
	case protocol.TypeAgentThinking:
		return r.emit(r.em.Thinking(f.Text))
	case protocol.TypeToolExecuting:
		if f.ToolCallID == "" || f.Tool == "" {
			return upstream.Failf("agent service sent tool_executing without tool_call_id or tool (#%d)", r.line)
		}
		args := f.Args
		if len(args) == 0 || string(args) == "null" {
			args = json.RawMessage(`{}`)
		} else if args[0] != '{' {
			return upstream.Failf("agent service sent tool_executing %q with args that are not a JSON object", f.ToolCallID)
		}
		if r.seen[f.ToolCallID] {
			return upstream.Failf("agent service announced tool_call_id %q twice", f.ToolCallID)
		}
		if r.seen == nil {
			r.seen = map[string]bool{}
		}
		r.seen[f.ToolCallID] = true
		r.open[f.ToolCallID] = openCall{tool: f.Tool, start: time.Now()}
		return r.emit(r.em.ToolExecuting(f.ToolCallID, f.Tool, args))
	case protocol.TypeToolCompleted:
		call, ok := r.open[f.ToolCallID]
		if !ok {
			return upstream.Failf("agent service sent tool_completed for tool_call_id %q without its tool_executing", f.ToolCallID)
		}
		if f.Tool != "" && f.Tool != call.tool {
			return upstream.Failf("agent service sent tool_completed %q for tool %q, announced as %q", f.ToolCallID, f.Tool, call.tool)
		}
		delete(r.open, f.ToolCallID)
		errMsg := upstream.ErrorText(f.Error)
		succeeded := errMsg == ""
		if f.OK != nil {
			succeeded = *f.OK
		}
		d := time.Since(call.start)
		if f.DurationMS != nil && *f.DurationMS >= 0 {
			d = time.Duration(*f.DurationMS * float64(time.Millisecond))
		}
		var result any
		if len(f.Result) > 0 {
			result = f.Result
		}
		return r.emit(r.em.ToolCompleted(agent.ToolResult{CallID: f.ToolCallID, Tool: call.tool, OK: succeeded, Result: result, Duration: d, Error: errMsg}))
	case protocol.TypeAgentMessageDelta:
		if f.Delta == "" {
			return nil
		}
		return r.emit(r.em.Delta(f.Delta))
	case protocol.TypeAgentCompleted:
		r.ended = true
		if u := f.Usage; u != nil && u.InputTokens >= 0 && u.OutputTokens >= 0 {
			if err := r.emit(r.em.AddUsage(*u)); err != nil {
				return err
			}
		}
		if err := r.emit(r.em.Complete(f.FinalResponse)); err != nil {
			return err
		}
		return upstream.ErrStop
	case protocol.TypeInputRequired:
		ask := agent.InputRequest{Kind: f.Kind, Prompt: f.Prompt, ToolCallID: f.ToolCallID, Options: f.Options}
		if len(f.Schema) > 0 && string(f.Schema) != "null" {
			ask.Schema = f.Schema
		}
		r.ask = &ask
		return upstream.ErrStop
	case protocol.TypeAgentError:
		msg := f.Message
		if msg == "" {
			msg = upstream.ErrorText(f.Error)
		}
		if msg == "" {
			msg = "the agent service reported an error without a message"
		}
		r.ended = true
		if err := r.emit(r.em.Fail(protocol.CodeAgentFailed, msg)); err != nil {
			return err
		}
		return upstream.ErrStop
	default:
		return upstream.Failf("agent service sent unknown event type %q", e.Type)
	}
}

func (r *relay) emit(err error) error { return upstream.Emitted(err) }
