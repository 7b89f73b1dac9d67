// Package tools defines the tools an agent may call, a registry of them, and
// CallTool, which runs one and reports the call through an agent.Emitter. A
// tool takes a JSON object of arguments and returns any JSON-marshalable
// result; it knows nothing about runs or emitters.
package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
)

// Tool is one callable tool.
type Tool interface {
	// Name is the identifier models and events use, e.g. "calculator".
	Name() string
	// Description tells a model what the tool does.
	Description() string
	// Parameters is the JSON Schema (an object schema) of the arguments.
	Parameters() json.RawMessage
	// Call runs the tool with args, a JSON object (or empty). The result must
	// marshal to JSON. Errors are reported to the user and the model; their
	// messages should say what was wrong with the input.
	Call(ctx context.Context, args json.RawMessage) (any, error)
}

// Source gives an agent its tools, asked again before each model request:
// a *Registry is a fixed set; the MCP tools (internal/agent/mcptools) change
// when a server's list does.
type Source interface {
	// Registry returns the tools as they are now; nil holds none.
	Registry() *Registry
}

// Registry returns r itself: a Registry is its own Source.
func (r *Registry) Registry() *Registry { return r }

// Registry is an immutable set of tools, looked up by name. A nil *Registry
// holds no tools.
type Registry struct {
	byName map[string]Tool
	sorted []Tool
}

// New returns a registry of ts. It panics on a nil tool, an empty name or two
// tools with the same name: those are programming errors, like registering a
// route twice on an http.ServeMux.
func New(ts ...Tool) *Registry {
	r := &Registry{byName: make(map[string]Tool, len(ts))}
	for _, t := range ts {
		if t == nil || t.Name() == "" {
			panic("tools: nil tool or empty tool name")
		}
		if _, dup := r.byName[t.Name()]; dup {
			panic(fmt.Sprintf("tools: tool %q registered twice", t.Name()))
		}
		r.byName[t.Name()] = t
		r.sorted = append(r.sorted, t)
	}
	sort.Slice(r.sorted, func(i, j int) bool { return r.sorted[i].Name() < r.sorted[j].Name() })
	return r
}

// Default returns a registry of every built-in tool: calculator and
// current_time (on the real clock).
func Default() *Registry {
	return New(Calculator(), CurrentTime(nil))
}

// Get returns the tool called name.
func (r *Registry) Get(name string) (Tool, bool) {
	if r == nil {
		return nil, false
	}
	t, ok := r.byName[name]
	return t, ok
}

// List returns the tools sorted by name. The slice is a copy.
func (r *Registry) List() []Tool {
	if r == nil {
		return nil
	}
	return append([]Tool(nil), r.sorted...)
}

// Len reports how many tools r holds.
func (r *Registry) Len() int {
	if r == nil {
		return 0
	}
	return len(r.sorted)
}

// FunctionSchema is one entry of the OpenAI Chat Completions "tools" request
// parameter.
type FunctionSchema struct {
	Type     string   `json:"type"` // always "function"
	Function Function `json:"function"`
}

// Function describes a tool to a model.
type Function struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
}

// Schemas returns the tools in the shape of the OpenAI "tools" parameter,
// sorted by name; nil when r holds no tools (so omitempty drops it).
func (r *Registry) Schemas() []FunctionSchema {
	if r.Len() == 0 {
		return nil
	}
	out := make([]FunctionSchema, 0, len(r.sorted))
	for _, t := range r.sorted {
		out = append(out, FunctionSchema{
			Type:     "function",
			Function: Function{Name: t.Name(), Description: t.Description(), Parameters: t.Parameters()},
		})
	}
	return out
}

// decodeArgs unmarshals a tool's arguments into v; empty or null args leave v
// unchanged. Unknown fields are ignored: models add them.
func decodeArgs(args json.RawMessage, v any) error {
	if len(args) == 0 || string(args) == "null" {
		return nil
	}
	if err := json.Unmarshal(args, v); err != nil {
		return fmt.Errorf("arguments must be a JSON object: %w", err)
	}
	return nil
}
