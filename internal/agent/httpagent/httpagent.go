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
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/internal/sse"
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
type Agent struct{ cfg Config }

var _ agent.Agent = (*Agent)(nil)

// New returns an agent for cfg, or an error if cfg cannot work.
func New(cfg Config) (*Agent, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("httpagent: agent URL %q is not an http(s) URL", cfg.URL)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	return &Agent{cfg: cfg}, nil
}

// Name is "http".
func (a *Agent) Name() string { return "http" }

// failure is a reason to end the run with agent_failed.
type failure struct{ msg string }

func (f *failure) Error() string { return f.msg }

func failf(format string, args ...any) error { return &failure{fmt.Sprintf(format, args...)} }

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
	err := a.run(ctx, run, em)
	var f *failure
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &f):
		return em.Fail(protocol.CodeAgentFailed, f.msg)
	default:
		return err
	}
}

func (a *Agent) run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	rctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel() // also tells the service to stop, once we have our terminal event
	msgs := make([]message, 0, len(run.Messages))
	for _, m := range run.Messages {
		msgs = append(msgs, message(m))
	}
	body, err := json.Marshal(request{RunID: run.ID, ThreadID: run.ThreadID, UserID: run.UserID, Messages: msgs})
	if err != nil {
		return fmt.Errorf("httpagent: encoding the request: %w", err)
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, a.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("httpagent: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/x-ndjson, text/event-stream")

	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		if ctx.Err() == nil && rctx.Err() == nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return failf("cannot reach agent service %s: %v — check --agent-url", a.cfg.URL, err)
		}
		return a.readError(ctx, rctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		msg := fmt.Sprintf("agent service returned %d", resp.StatusCode)
		if s := snippet(b); s != "" {
			msg += ": " + s
		}
		return &failure{msg}
	}

	r := relay{em: em, open: map[string]openCall{}}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "text/event-stream" {
		err = sse.Read(resp.Body, func(e sse.Event) error {
			if strings.TrimSpace(e.Data) == "[DONE]" {
				return errStop
			}
			return r.handle([]byte(e.Data), e.Name)
		})
	} else {
		err = readLines(resp.Body, func(line []byte) error { return r.handle(line, "") })
	}
	switch {
	case err == nil || errors.Is(err, errStop):
	case errors.Is(err, sse.ErrLineTooLong) || errors.Is(err, bufio.ErrTooLong):
		return failf("agent service sent an event over %d bytes", sse.MaxLine)
	default:
		return a.readError(ctx, rctx, err)
	}
	if !r.ended {
		return failf("agent service ended without agent_completed")
	}
	return nil
}

// errStop ends reading after the terminal event (or an SSE [DONE]).
var errStop = errors.New("stop")

func (a *Agent) readError(ctx, rctx context.Context, err error) error {
	var f *failure
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case rctx.Err() != nil:
		return failf("agent service did not finish within %v", a.cfg.Timeout)
	case errors.As(err, &f) || errors.Is(err, agent.ErrRunEnded):
		return err
	case errors.Is(err, errEmit):
		return err
	default:
		return failf("agent service stream broke: %v", err)
	}
}

func readLines(r io.Reader, fn func([]byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), sse.MaxLine)
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
}

// Decode parses one event, nested ({"type","data":{…}}) or flat. name is
// the SSE event name, used when the JSON has no "type". Bytes that are not
// UTF-8 become U+FFFD first: encoding/json would carry them into args,
// result and error verbatim, and from there into text frames that
// compliant clients must fail (1007), on every later resume too.
func Decode(line []byte, name string) (Event, error) {
	if !utf8.Valid(line) {
		line = bytes.ToValidUTF8(line, []byte("\uFFFD"))
	}
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

// errEmit marks an Emitter error other than ErrRunEnded: the runs package
// refused an event, which ends the run.
var errEmit = errors.New("httpagent: emitter refused an event")

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
		return failf("agent service sent a malformed event (#%d): %v", r.line, err)
	}
	f := e.Fields
	switch e.Type {
	case protocol.TypeAgentStarted:
		return nil
	case protocol.TypeAgentThinking:
		return r.emit(r.em.Thinking(f.Text))
	case protocol.TypeToolExecuting:
		if f.ToolCallID == "" || f.Tool == "" {
			return failf("agent service sent tool_executing without tool_call_id or tool (#%d)", r.line)
		}
		args := f.Args
		if len(args) == 0 || string(args) == "null" {
			args = json.RawMessage(`{}`)
		} else if args[0] != '{' {
			return failf("agent service sent tool_executing %q with args that are not a JSON object", f.ToolCallID)
		}
		if r.seen[f.ToolCallID] {
			return failf("agent service announced tool_call_id %q twice", f.ToolCallID)
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
			return failf("agent service sent tool_completed for tool_call_id %q without its tool_executing", f.ToolCallID)
		}
		if f.Tool != "" && f.Tool != call.tool {
			return failf("agent service sent tool_completed %q for tool %q, announced as %q", f.ToolCallID, f.Tool, call.tool)
		}
		delete(r.open, f.ToolCallID)
		errMsg := errorText(f.Error)
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
		if err := r.emit(r.em.Complete(f.FinalResponse)); err != nil {
			return err
		}
		return errStop
	case protocol.TypeAgentError:
		msg := f.Message
		if msg == "" {
			msg = errorText(f.Error)
		}
		if msg == "" {
			msg = "the agent service reported an error without a message"
		}
		r.ended = true
		if err := r.emit(r.em.Fail(protocol.CodeAgentFailed, msg)); err != nil {
			return err
		}
		return errStop
	default:
		return failf("agent service sent unknown event type %q", e.Type)
	}
}

func (r *relay) emit(err error) error {
	if err == nil || errors.Is(err, agent.ErrRunEnded) {
		return err
	}
	return fmt.Errorf("%w: %w", errEmit, err)
}

// errorText reads an "error" field: a string, or an object with a message.
func errorText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Message
	}
	return ""
}

// snippet makes an error body printable: its error message when it is
// JSON, else its first 200 characters.
func snippet(b []byte) string {
	var body struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(b, &body) == nil {
		if s := errorText(body.Error); s != "" {
			return s
		}
		if body.Message != "" {
			return body.Message
		}
	}
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
	if utf8.RuneCountInString(s) > 200 {
		s = string([]rune(s)[:200]) + "…"
	}
	return s
}
