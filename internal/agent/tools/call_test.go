package tools_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/agenttest"
	"github.com/agentwire/agentwire/internal/agent/tools"
)

type panicky struct{}

func (panicky) Name() string                { return "panicky" }
func (panicky) Description() string         { return "panics" }
func (panicky) Parameters() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (panicky) Call(context.Context, json.RawMessage) (any, error) {
	panic("boom")
}

type unencodable struct{}

func (unencodable) Name() string                { return "unencodable" }
func (unencodable) Description() string         { return "returns a channel" }
func (unencodable) Parameters() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (unencodable) Call(context.Context, json.RawMessage) (any, error) {
	return make(chan int), nil
}

type sleeper struct{}

func (sleeper) Name() string                { return "sleeper" }
func (sleeper) Description() string         { return "waits for ctx" }
func (sleeper) Parameters() json.RawMessage { return json.RawMessage(`{"type":"object"}`) }
func (sleeper) Call(ctx context.Context, _ json.RawMessage) (any, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestCallTool(t *testing.T) {
	t.Parallel()
	reg := tools.New(tools.Calculator(), panicky{}, unencodable{})
	tests := []struct {
		name, tool, args string
		wantOK           bool
		wantArgs         string
		wantResult       string
		wantErr          string
	}{
		{"ok", "calculator", `{ "expression" : "12*(3+4)" }`, true, `{"expression":"12*(3+4)"}`, `84`, ""},
		{"tool error", "calculator", `{"expression":"1/0"}`, false, `{"expression":"1/0"}`, `null`, "division by zero"},
		{"unknown tool", "nope", `{"a":1}`, false, `{"a":1}`, `null`, "unknown tool"},
		{"empty args", "calculator", ``, false, `{}`, `null`, `missing argument "expression"`},
		{"broken args", "calculator", `{"expression":"1+`, false, `{"raw":"{\"expression\":\"1+"}`, `null`, "arguments are not a JSON object"},
		{"array args", "calculator", `[1]`, false, `{"raw":"[1]"}`, `null`, "arguments are not a JSON object"},
		{"panic", "panicky", `{}`, false, `{}`, `null`, "tool panicked: boom"},
		{"unencodable", "unencodable", `{}`, false, `{}`, `null`, "result does not encode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var rec agenttest.Recorder
			res, err := tools.CallTool(context.Background(), &rec, reg, "call_1", tt.tool, json.RawMessage(tt.args))
			if tt.wantErr == "" {
				if err != nil || res != 84.0 {
					t.Fatalf("CallTool = %v, %v", res, err)
				}
			} else if !errors.Is(err, tools.ErrCallFailed) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want ErrCallFailed with %q", err, tt.wantErr)
			}
			rec.AssertTypes(t, "tool_executing", "tool_completed")
			rec.AssertValid(t)
			ev := rec.Events()
			if ev[0].ToolCallID != "call_1" || ev[0].Tool != tt.tool || string(ev[0].Args) != tt.wantArgs {
				t.Errorf("tool_executing = %+v, want args %s", ev[0], tt.wantArgs)
			}
			c := ev[1]
			if c.ToolCallID != "call_1" || c.OK != tt.wantOK || string(c.Result) != tt.wantResult || !strings.Contains(c.Error, tt.wantErr) || (tt.wantErr == "") != (c.Error == "") {
				t.Errorf("tool_completed = %+v", c)
			}
		})
	}
}

func TestCallToolGeneratesID(t *testing.T) {
	t.Parallel()
	var rec agenttest.Recorder
	if _, err := tools.CallTool(context.Background(), &rec, tools.Default(), "", "current_time", nil); err != nil {
		t.Fatal(err)
	}
	ev := rec.Events()
	if len(ev[0].ToolCallID) != 26 || ev[0].ToolCallID != ev[1].ToolCallID {
		t.Errorf("call ids %q %q, want one ULID", ev[0].ToolCallID, ev[1].ToolCallID)
	}
	if ev[1].Duration < 0 || !ev[1].OK {
		t.Errorf("tool_completed = %+v", ev[1])
	}
}

func TestCallToolStops(t *testing.T) {
	t.Parallel()
	t.Run("run ended", func(t *testing.T) {
		var rec agenttest.Recorder
		rec.End()
		_, err := tools.CallTool(context.Background(), &rec, tools.Default(), "", "calculator", json.RawMessage(`{"expression":"1"}`))
		if !errors.Is(err, agent.ErrRunEnded) || errors.Is(err, tools.ErrCallFailed) {
			t.Errorf("err = %v, want ErrRunEnded", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		var rec agenttest.Recorder
		_, err := tools.CallTool(ctx, &rec, tools.New(sleeper{}), "c", "sleeper", nil)
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, tools.ErrCallFailed) {
			t.Errorf("err = %v, want DeadlineExceeded", err)
		}
		rec.AssertTypes(t, "tool_executing", "tool_completed")
	})
}
