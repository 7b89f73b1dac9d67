// Package openai is an agent backed by any OpenAI-compatible Chat
// Completions endpoint (OpenAI, Azure-style proxies, vLLM, Ollama,
// llama.cpp, LiteLLM …), streaming the answer and running the model's tool
// calls through the tool registry.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/tools"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/protocol"
)

// Defaults of Config.
const (
	DefaultBaseURL        = "https://api.openai.com/v1"
	DefaultMaxToolRounds  = 5
	DefaultRequestTimeout = 2 * time.Minute
	DefaultSystemPrompt   = "You are a helpful assistant inside a chat. Answer concisely. " +
		"Use the tools you are given when they help, especially the calculator for arithmetic."
)

// maxChunk bounds one streamed chunk (one event's data): what Read refuses
// over it ends the run with agent_failed.
const maxChunk = 1 << 20

// Config configures the agent.
type Config struct {
	// BaseURL is the API root, without /chat/completions; default
	// DefaultBaseURL.
	BaseURL string
	// APIKey is sent as a bearer token; empty sends none (local servers).
	APIKey string
	// Model is the model name; required.
	Model string
	// HTTPClient makes the requests; default http.DefaultClient. Its own
	// Timeout, if any, should exceed RequestTimeout.
	HTTPClient *http.Client
	// Tools are offered to the model, asked again before each request (so
	// an MCP server's new list counts from the next request); nil offers
	// none.
	Tools tools.Source
	// MaxToolRounds is how many times in one run the model may ask for tool
	// calls; one more ends the run with agent_failed. Default 5.
	MaxToolRounds int
	// RequestTimeout bounds one request, streamed answer included. Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// SystemPrompt opens every conversation; default DefaultSystemPrompt.
	SystemPrompt string
	// RequireApproval names the tools whose calls ask the user first
	// (input_required approval, with the call's tool_call_id); "*" is
	// every tool. A denied call is not run: the model gets the denial as
	// the call's result, and the timeline a failed tool call.
	RequireApproval []string
}

// Agent is the OpenAI-compatible agent. It is safe for concurrent runs.
type Agent struct {
	cfg      Config
	endpoint string
}

var _ agent.Agent = (*Agent)(nil)

// New returns an agent for cfg, or an error if cfg cannot work.
func New(cfg Config) (*Agent, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("openai: base URL %q is not an http(s) URL", cfg.BaseURL)
	}
	if strings.TrimSpace(cfg.Model) == "" {
		return nil, errors.New("openai: a model name is required")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.MaxToolRounds <= 0 {
		cfg.MaxToolRounds = DefaultMaxToolRounds
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.SystemPrompt == "" {
		cfg.SystemPrompt = DefaultSystemPrompt
	}
	return &Agent{cfg: cfg, endpoint: strings.TrimRight(cfg.BaseURL, "/") + "/chat/completions"}, nil
}

// Name is "openai".
func (a *Agent) Name() string { return "openai" }

// failure is a reason to end the run with agent_failed, worded for the
// person running agentwire.
type failure struct{ msg string }

func (f *failure) Error() string { return f.msg }

func failf(format string, args ...any) error { return &failure{fmt.Sprintf(format, args...)} }

// Run answers the thread: it calls the model, runs the tool calls it asks
// for and calls it again, up to MaxToolRounds, then completes with the whole
// streamed text. Endpoint problems end the run with agent_failed; a
// cancelled ctx returns ctx.Err().
func (a *Agent) Run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	err := a.run(ctx, run, em)
	var f *failure
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &f):
		return em.Fail(protocol.CodeAgentFailed, a.redact(f.msg))
	default:
		return err
	}
}

func (a *Agent) run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	if err := em.Thinking("Calling model " + a.cfg.Model); err != nil {
		return err
	}
	msgs := []message{{Role: "system", Content: ptr(a.cfg.SystemPrompt)}}
	msgs = append(msgs, history(run.Messages)...)

	var text answer
	for rounds := 0; ; rounds++ {
		text.newRound()
		var reg *tools.Registry
		if a.cfg.Tools != nil {
			reg = a.cfg.Tools.Registry()
		}
		fns := functions(reg)
		t, err := a.complete(ctx, msgs, fns, em, &text)
		if err != nil {
			return err
		}
		if len(t.calls) == 0 {
			return em.Complete(text.String())
		}
		if rounds == a.cfg.MaxToolRounds {
			return failf("tool-call limit reached: the model asked for tools more than %d times in one run", a.cfg.MaxToolRounds)
		}
		assistant := message{Role: "assistant", ToolCalls: t.calls}
		if t.text != "" {
			assistant.Content = ptr(t.text)
		}
		msgs = append(msgs, assistant)
		for _, c := range t.calls {
			name := c.Function.Name
			if tool, ok := fns.byFunction[name]; ok {
				name = tool
			}
			denied, err := a.deniedByUser(ctx, em, c, name)
			if err != nil {
				return err
			}
			if denied {
				msgs = append(msgs, message{Role: "tool", ToolCallID: c.ID, Content: ptr(deniedResult)})
				continue
			}
			res, err := tools.CallTool(ctx, em, reg, c.ID, name, json.RawMessage(c.Function.Arguments))
			var toolErr *tools.CallError
			var content []byte
			switch {
			case errors.As(err, &toolErr):
				content, _ = json.Marshal(map[string]string{"error": toolErr.Err.Error()})
			case err != nil:
				return err
			default:
				content, _ = json.Marshal(res) // CallTool checked it encodes
			}
			msgs = append(msgs, message{Role: "tool", ToolCallID: c.ID, Content: ptr(string(content))})
		}
	}
}

// history is the thread in Chat Completions form: an assistant message's
// tool calls as its tool_calls (content null when it has no text), each
// result as a tool message.
func history(in []agent.Message) []message {
	out := make([]message, 0, len(in))
	for _, m := range in {
		switch {
		case m.Role == agent.RoleTool:
			out = append(out, message{Role: "tool", ToolCallID: m.ToolCallID, Content: ptr(m.Content)})
		case m.Role == agent.RoleAssistant && len(m.ToolCalls) > 0:
			am := message{Role: "assistant"}
			if m.Content != "" {
				am.Content = ptr(m.Content)
			}
			for _, c := range m.ToolCalls {
				tc := toolCall{ID: c.ID, Type: "function"}
				tc.Function.Name, tc.Function.Arguments = c.Name, string(c.Args)
				am.ToolCalls = append(am.ToolCalls, tc)
			}
			out = append(out, am)
		case m.Role == agent.RoleAssistant:
			out = append(out, message{Role: "assistant", Content: ptr(m.Content)})
		default:
			out = append(out, message{Role: "user", Content: ptr(m.Content)})
		}
	}
	return out
}

// deniedResult is what the model gets for a call the user denied.
const deniedResult = `{"error":"the user denied this tool call; do not retry it"}`

// maxPromptArgs bounds the arguments quoted in an approval prompt.
const maxPromptArgs = 1000

// deniedByUser asks the user to approve call, of the tool named tool (its
// name in the registry, "NAME.tool" for an MCP server's, not the function
// name the model saw), when that tool needs approval, and reports a denial,
// which it also records as a failed tool call.
func (a *Agent) deniedByUser(ctx context.Context, em agent.Emitter, c toolCall, tool string) (bool, error) {
	if !slices.Contains(a.cfg.RequireApproval, "*") && !slices.Contains(a.cfg.RequireApproval, tool) {
		return false, nil
	}
	args := c.Function.Arguments
	if len(args) > maxPromptArgs {
		args = strings.ToValidUTF8(args[:maxPromptArgs], "") + "…"
	}
	ans, err := em.RequestInput(ctx, agent.InputRequest{Kind: protocol.InputApproval, ToolCallID: c.ID,
		Prompt: fmt.Sprintf("Allow the tool %s with %s?", tool, args)})
	if err != nil {
		return false, err
	}
	if *ans.Approved {
		return false, nil
	}
	var raw map[string]any
	if json.Unmarshal([]byte(c.Function.Arguments), &raw) != nil {
		raw = map[string]any{}
	}
	if err := em.ToolExecuting(c.ID, tool, raw); err != nil {
		return false, err
	}
	return true, em.ToolCompleted(agent.ToolResult{CallID: c.ID, Tool: tool, Result: json.RawMessage(deniedResult), Error: "denied by the user"})
}

// answer is the text streamed to the user across rounds.
type answer struct {
	b       strings.Builder
	needSep bool
}

func (w *answer) newRound() { w.needSep = w.b.Len() > 0 }

// write streams s, separating the text of a new round from the last one
// so that "Let me compute." and "It is 84." do not run together.
func (w *answer) write(em agent.Emitter, s string) error {
	if s == "" {
		return nil
	}
	if w.needSep {
		w.needSep = false
		if last, _ := utf8.DecodeLastRuneInString(w.b.String()); last != ' ' && last != '\n' {
			if err := em.Delta("\n\n"); err != nil {
				return err
			}
			w.b.WriteString("\n\n")
		}
	}
	w.b.WriteString(s)
	return em.Delta(s)
}

func (w *answer) String() string { return w.b.String() }

// turn is what one streamed completion produced.
type turn struct {
	text   string
	calls  []toolCall
	finish string
}

type message struct {
	Role       string     `json:"role"`
	Content    *string    `json:"content"`
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type toolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

type request struct {
	Model         string                 `json:"model"`
	Messages      []message              `json:"messages"`
	Stream        bool                   `json:"stream"`
	StreamOptions streamOptions          `json:"stream_options"`
	Tools         []tools.FunctionSchema `json:"tools,omitempty"`
}

// streamOptions asks for the usage chunk: one last chunk, with no choices,
// whose usage counts the request's tokens.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// toolFunctions is what a request offers the model: the schemas, under
// function names the Chat Completions API accepts, and the way back from
// such a name to the tool's.
type toolFunctions struct {
	schemas    []tools.FunctionSchema
	byFunction map[string]string // function name → tool name, where they differ
}

// functions names reg's tools for the model. Tool names like "files.read"
// (an MCP server's tools) are not valid function names (^[a-zA-Z0-9_-]{1,64}$),
// so every other character becomes '_', with a numeric suffix should two
// names then collide.
func functions(reg *tools.Registry) toolFunctions {
	fns := toolFunctions{schemas: reg.Schemas(), byFunction: map[string]string{}}
	used := map[string]bool{}
	for i := range fns.schemas {
		used[fns.schemas[i].Function.Name] = validFunctionName(fns.schemas[i].Function.Name)
	}
	for i := range fns.schemas {
		f := &fns.schemas[i].Function
		if validFunctionName(f.Name) {
			continue
		}
		base := functionName(f.Name)
		name := base
		for n := 2; used[name]; n++ {
			name = fmt.Sprintf("%.60s_%d", base, n)
		}
		used[name] = true
		fns.byFunction[name] = f.Name
		f.Name = name
	}
	return fns
}

func validFunctionName(s string) bool { return s != "" && functionName(s) == s }

// functionName replaces what a function name may not hold and cuts it to 64 bytes.
func functionName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

type chunk struct {
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Content   string `json:"content"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
	} `json:"usage"`
	Error json.RawMessage `json:"error"`
}

var errDone = errors.New("stream done")

// complete makes one streamed request and returns what the model said.
func (a *Agent) complete(ctx context.Context, msgs []message, fns toolFunctions, em agent.Emitter, text *answer) (turn, error) {
	rctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	body, err := json.Marshal(request{Model: a.cfg.Model, Messages: msgs, Stream: true,
		StreamOptions: streamOptions{IncludeUsage: true}, Tools: fns.schemas})
	if err != nil {
		return turn{}, fmt.Errorf("openai: encoding the request: %w", err)
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, a.endpoint, bytes.NewReader(body))
	if err != nil {
		return turn{}, fmt.Errorf("openai: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if a.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+a.cfg.APIKey)
	}

	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return turn{}, a.transportError(ctx, rctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return turn{}, statusError(resp)
	}

	var t turn
	calls := map[int]*toolCall{}
	done := false
	var round strings.Builder
	err = sse.Read(resp.Body, maxChunk, func(e sse.Event) error {
		if string(bytes.TrimSpace(e.Data)) == "[DONE]" {
			done = true
			return errDone
		}
		var c chunk
		if err := json.Unmarshal(e.Data, &c); err != nil {
			return failf("model endpoint sent a malformed stream chunk (%v): %.200q", err, e.Data)
		}
		if len(c.Error) > 0 && string(c.Error) != "null" {
			return failf("model endpoint reported an error mid-stream: %s", apiMessage(c.Error))
		}
		if u := c.Usage; u != nil && (u.PromptTokens > 0 || u.CompletionTokens > 0) {
			if err := em.AddUsage(protocol.Usage{InputTokens: max(u.PromptTokens, 0), OutputTokens: max(u.CompletionTokens, 0)}); err != nil {
				return err
			}
		}
		for _, ch := range c.Choices {
			if ch.Index != 0 {
				continue // we ask for one choice; ignore any other
			}
			if ch.Delta.Content != "" {
				round.WriteString(ch.Delta.Content)
				if err := text.write(em, ch.Delta.Content); err != nil {
					return err
				}
			}
			for _, tc := range ch.Delta.ToolCalls {
				call := calls[tc.Index]
				if call == nil {
					call = &toolCall{Type: "function"}
					calls[tc.Index] = call
				}
				if tc.ID != "" {
					call.ID = tc.ID
				}
				call.Function.Name += tc.Function.Name
				call.Function.Arguments += tc.Function.Arguments
			}
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				t.finish = *ch.FinishReason
			}
		}
		return nil
	})
	switch {
	case err == nil || errors.Is(err, errDone):
	case errors.Is(err, sse.ErrTooLong):
		return turn{}, failf("model endpoint sent a stream line over %d bytes", maxChunk)
	case ctx.Err() != nil:
		return turn{}, ctx.Err()
	case rctx.Err() != nil:
		return turn{}, a.timeoutError()
	default:
		var f *failure
		if errors.As(err, &f) || errors.Is(err, agent.ErrRunEnded) {
			return turn{}, err
		}
		return turn{}, failf("model stream broke: %v", err)
	}
	if !done && t.finish == "" {
		return turn{}, failf("model stream ended before the answer was finished (no finish_reason, no [DONE]): the endpoint cut the connection")
	}

	idx := make([]int, 0, len(calls))
	for i := range calls {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		c := calls[i]
		if c.ID == "" {
			c.ID = "call_" + ulid.Make().String()
		}
		if c.Function.Name == "" {
			c.Function.Name = "unnamed" // reported as an unknown tool
		}
		if c.Function.Arguments == "" {
			c.Function.Arguments = "{}"
		}
		t.calls = append(t.calls, *c)
	}
	t.text = round.String()
	return t, nil
}

func (a *Agent) transportError(ctx, rctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case rctx.Err() != nil:
		return a.timeoutError()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return failf("cannot reach model endpoint %s: %v — check --openai-base-url", a.endpoint, err)
}

func (a *Agent) timeoutError() error {
	return failf("model endpoint %s did not finish answering within %v", a.endpoint, a.cfg.RequestTimeout)
}

// statusError words a non-2xx answer, with the API's own message if any
// and a hint at the setting to check.
func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := fmt.Sprintf("model endpoint returned %d", resp.StatusCode)
	if m := apiMessage(b); m != "" {
		msg += ": " + m
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		msg += " — check --openai-api-key"
	case resp.StatusCode == http.StatusNotFound:
		msg += " — check --openai-base-url and --openai-model"
	case resp.StatusCode == http.StatusTooManyRequests:
		msg += " — rate limited or out of quota; try again later"
	case resp.StatusCode >= 500:
		msg += " — the model service failed; try again later"
	}
	return &failure{msg}
}

// apiMessage extracts a readable message from an error body:
// {"error":{"message":…}}, {"error":"…"}, {"message":…}, or the text itself.
func apiMessage(b []byte) string {
	var body struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	msg := ""
	if json.Unmarshal(b, &body) == nil {
		var inner struct {
			Message string `json:"message"`
		}
		var s string
		switch {
		case json.Unmarshal(body.Error, &inner) == nil && inner.Message != "":
			msg = inner.Message
		case json.Unmarshal(body.Error, &s) == nil:
			msg = s
		default:
			msg = body.Message
		}
	} else if !json.Valid(b) {
		msg = string(b)
	}
	msg = strings.Join(strings.Fields(strings.ToValidUTF8(msg, "?")), " ")
	if utf8.RuneCountInString(msg) > 300 {
		msg = string([]rune(msg)[:300]) + "…"
	}
	return msg
}

// redact keeps the API key out of what the user sees, even if an endpoint
// echoes it in an error.
func (a *Agent) redact(msg string) string {
	if len(a.cfg.APIKey) >= 8 {
		msg = strings.ReplaceAll(msg, a.cfg.APIKey, "[redacted]")
	}
	return msg
}

func ptr(s string) *string { return &s }
