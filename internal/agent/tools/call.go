package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/agentwire/agentwire/internal/agent"
)

// ErrCallFailed matches (errors.Is) every *CallError.
var ErrCallFailed = errors.New("tool failed")

// CallError is a tool call that failed — unknown tool, bad arguments, the
// tool's own error — and was reported with tool_completed ok=false. The run
// can go on, e.g. by telling the model.
type CallError struct {
	Tool string
	Err  error // what tool_completed reported as "error"
}

func (e *CallError) Error() string { return fmt.Sprintf("tool %s failed: %v", e.Tool, e.Err) }

// Unwrap returns the tool's error.
func (e *CallError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCallFailed) true.
func (e *CallError) Is(target error) bool { return target == ErrCallFailed }

// CallTool runs the tool name from reg with args and reports it: tool_executing
// (args as a JSON object), then tool_completed with ok, result, duration and
// error. An empty callID gets a fresh ULID.
//
// The error is nil on success. It is a *CallError (errors.Is ErrCallFailed)
// when the tool failed but the run may continue; anything else — ErrRunEnded from em, ctx's
// error — means the agent should stop and return it.
func CallTool(ctx context.Context, em agent.Emitter, reg *Registry, callID, name string, args json.RawMessage) (any, error) {
	if callID == "" {
		callID = ulid.Make().String()
	}
	shown, argsErr := argsObject(args)
	if err := em.ToolExecuting(callID, name, shown); err != nil {
		return nil, err
	}

	if tc, ok := em.(agent.ToolContexter); ok {
		ctx = tc.ToolContext(ctx, callID)
	}
	ctx = context.WithValue(ctx, progressKey{}, progressFunc(func(p agent.Progress) {
		p.CallID = callID
		_ = em.ToolProgress(p) // an ended run ends the call through ctx
	}))
	start := time.Now()
	var result any
	var toolErr error
	if tool, ok := reg.Get(name); !ok {
		toolErr = errors.New("unknown tool")
	} else if argsErr != nil {
		toolErr = argsErr
	} else {
		result, toolErr = safeCall(ctx, tool, args)
	}
	d := time.Since(start)
	if toolErr == nil {
		if _, err := json.Marshal(result); err != nil {
			result, toolErr = nil, fmt.Errorf("result does not encode as JSON: %w", err)
		}
	}

	var emitErr error
	if toolErr != nil {
		emitErr = em.ToolCompleted(agent.ToolResult{CallID: callID, Tool: name, Duration: d, Error: toolErr.Error()})
	} else {
		emitErr = em.ToolCompleted(agent.ToolResult{CallID: callID, Tool: name, OK: true, Result: result, Duration: d})
	}
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case emitErr != nil:
		return nil, emitErr
	case toolErr != nil:
		return nil, &CallError{Tool: name, Err: toolErr}
	}
	return result, nil
}

type progressKey struct{}

type progressFunc func(agent.Progress)

// ReportProgress tells the user how far the tool call ctx belongs to has
// come (tool_progress; p.CallID is filled in). A tool calls it from Call;
// outside CallTool it does nothing.
func ReportProgress(ctx context.Context, p agent.Progress) {
	if f, ok := ctx.Value(progressKey{}).(progressFunc); ok {
		f(p)
	}
}

// argsObject returns args as something that encodes to a JSON object for
// tool_executing. Arguments that are not an object (a model's broken JSON)
// are shown as {"raw": "<text>"} and make the call fail.
func argsObject(args json.RawMessage) (any, error) {
	if len(args) == 0 || string(args) == "null" {
		return json.RawMessage(`{}`), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(args, &obj); err != nil || obj == nil {
		return map[string]string{"raw": string(args)}, errors.New("arguments are not a JSON object")
	}
	// Compact, so the event holds one canonical encoding whatever the source,
	// and without HTML escapes (<, > and & would take six bytes each).
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(obj)
	return json.RawMessage(bytes.TrimSuffix(b.Bytes(), []byte{'\n'})), nil
}

// safeCall runs the tool, turning a panic into an error: a broken tool must
// not take the run (or the process) down with it.
func safeCall(ctx context.Context, tool Tool, args json.RawMessage) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			result, err = nil, fmt.Errorf("tool panicked: %v", p)
		}
	}()
	return tool.Call(ctx, args)
}
