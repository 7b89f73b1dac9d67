// Package agent defines what an agent is to agentwire: something that answers
// one user message in one thread, reporting its progress through an Emitter
// bound to that run. The runs package owns a run's lifecycle (agent_started
// first, exactly one terminal event last, whatever the agent does); agents
// only report what they do.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/agentwire/agentwire/protocol"
)

// Message roles: RoleUser and RoleAssistant as stored; RoleTool is a
// tool's result, rebuilt from a run's transcript.
const (
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
)

// Message is one earlier message of the thread, oldest first. Between a
// user message and the answer of its run come the run's tool calls, from
// its stored transcript: an assistant message with ToolCalls (and no
// Content), then one RoleTool message per call, in the Chat Completions
// shape. Every call of ToolCalls has its RoleTool message.
type Message struct {
	// ID is the stored message's id, stable across runs of the thread
	// (empty when the caller has none, and for tool calls and results).
	ID   string
	Role string // RoleUser, RoleAssistant or RoleTool
	// Content is the text; for RoleTool the tool's result as JSON, or
	// {"error": "…"} for a call that failed.
	Content string
	// ToolCalls are the tools an assistant message called.
	ToolCalls []ToolCall
	// ToolCallID is the call a RoleTool message answers.
	ToolCallID string
}

// ToolCall is one call of a tool by an assistant message.
type ToolCall struct {
	ID   string
	Name string
	// Args is the call's arguments, a JSON object.
	Args json.RawMessage
}

// Run is what an agent is given for one run.
type Run struct {
	ID       string
	ThreadID string
	UserID   string
	// Messages is the thread's history, oldest first, ending with the user
	// message this run answers.
	Messages []Message
}

// ErrRunEnded is returned by an Emitter once the run has its terminal event:
// the run completed, failed, was cancelled or timed out. Agents should stop.
var ErrRunEnded = errors.New("agent: run already ended")

// ToolResult is how a tool call ended: the data of tool_completed.
type ToolResult struct {
	// CallID is the id the call was announced with by ToolExecuting.
	CallID string
	Tool   string
	OK     bool
	// Result is the tool's result; it must marshal to JSON.
	Result any
	// Duration is how long the call took; it is sent in milliseconds.
	Duration time.Duration
	// Error is sent as "error" when non-empty.
	Error string
}

// Progress is how far a tool call has come: the data of tool_progress.
type Progress struct {
	// CallID is the id the call was announced with by ToolExecuting.
	CallID   string
	Progress float64
	// Total is the progress at which the call is done; 0 when unknown.
	Total   float64
	Message string
}

// InputRequest is what an agent asks its user (the data of input_required
// but its request id, which the emitter assigns).
type InputRequest struct {
	Kind   protocol.InputKind
	Prompt string
	// ToolCallID names the tool call the request is about, if any.
	ToolCallID string
	// Options are the choices of a protocol.InputChoice request.
	Options []string
	// Schema optionally describes the expected text (a JSON object).
	Schema json.RawMessage
}

// Emitter reports a run's progress to its user. It is bound at creation to
// one user, thread and run and cannot address anything else. Methods are safe
// for concurrent use; every method returns ErrRunEnded after the terminal
// event and emits nothing then.
type Emitter interface {
	// Thinking emits agent_thinking.
	Thinking(text string) error
	// ToolExecuting emits tool_executing; args must marshal to a JSON object.
	ToolExecuting(callID, tool string, args any) error
	// ToolCompleted emits tool_completed for a call announced by ToolExecuting.
	ToolCompleted(r ToolResult) error
	// ToolProgress emits tool_progress for a call announced by
	// ToolExecuting and not yet completed.
	ToolProgress(p Progress) error
	// AddUsage adds u to the tokens the run has used; agent_completed
	// carries the sum. It emits nothing.
	AddUsage(u protocol.Usage) error
	// Delta emits agent_message_delta with the next chunk of the answer.
	Delta(text string) error
	// Complete ends the run with agent_completed. final is the whole answer;
	// when empty, the concatenated deltas are used.
	Complete(final string) error
	// Fail ends the run with agent_error with the given code (usually
	// protocol.CodeAgentFailed) and message.
	Fail(code protocol.ErrorCode, message string) error
	// RequestInput asks the run's user (input_required) and blocks until
	// the first answer (input_received), ctx's end, or the run's end
	// (ErrRunEnded: stopped, or no answer within the input timeout). The
	// run timeout does not run meanwhile. One request at a time per run.
	RequestInput(ctx context.Context, req InputRequest) (protocol.InputAnswer, error)
	// Event emits a run event of a relayed type (protocol.RelayedEventType:
	// state, steps, activities, custom, raw) with data, which must marshal
	// to a JSON object (usually that type's protocol struct). Other types
	// are refused with an error and emit nothing.
	Event(typ string, data any) error
}

// Agent answers runs.
type Agent interface {
	// Name is reported in agent_started.
	Name() string
	// Run answers run, reporting through em, and returns when done. ctx is
	// cancelled on stop_agent, timeout and shutdown. Returning without calling
	// Complete or Fail, returning an error, or panicking all end the run with
	// agent_error code agent_failed.
	Run(ctx context.Context, run Run, em Emitter) error
}

// ToolContexter is an Emitter that has a context for each tool call it
// announced (runs: the call's execute_tool span, so what the tool sends —
// an MCP server's request — is traced under the call). tools.CallTool runs
// a tool in it.
type ToolContexter interface {
	// ToolContext is ctx carrying what belongs to callID; ctx itself for
	// a call it does not know.
	ToolContext(ctx context.Context, callID string) context.Context
}
