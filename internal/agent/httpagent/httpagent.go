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
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Run posts run to the service and relays its events to em.
func (a *Agent) Run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	return upstream.Finish(ctx, em, a.run(ctx, run, em))
}

func (a *Agent) run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	svc := a.svc
	rctx, cancel := context.WithTimeout(ctx, svc.Timeout)
	defer cancel() // also tells the service to stop, once we have our terminal event
	msgs := make([]message, 0, len(run.Messages))
	for _, m := range run.Messages {
		msgs = append(msgs, message{Role: m.Role, Content: m.Content})
	}
	body, err := json.Marshal(request{RunID: run.ID, ThreadID: run.ThreadID, UserID: run.UserID, Messages: msgs})
	if err != nil {
		return fmt.Errorf("httpagent: encoding the request: %w", err)
	}
	resp, err := svc.Post(ctx, rctx, body, "application/x-ndjson, text/event-stream")
	if err != nil {
		return svc.ReadError(ctx, rctx, err)
	}
	defer resp.Body.Close()

	r := relay{em: em, open: map[string]openCall{}}
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
