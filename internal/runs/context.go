package runs

import (
	"context"
	"encoding/json"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/protocol"
)

// contextBytes bounds the transcripts read for one run's context, and
// contextTimeout the read: a store that does not answer delays the agent's
// start that long at most (it then gets the messages alone).
const (
	contextBytes   = 1 << 20
	contextTimeout = 2 * time.Second
)

// agentMessages is the context of run runID: the thread's history, each
// earlier run's tool calls and results (from its transcript) after the
// user message that started it. Without transcripts (off, or the store
// failing to read them) it is the messages alone.
func (m *Manager) agentMessages(ctx context.Context, user, runID string, history []store.Message) []agent.Message {
	var trs map[string]*store.Transcript
	if !m.noTranscripts {
		var ids []string
		for _, h := range history {
			if h.Role == store.RoleUser && h.RunID != "" && h.RunID != runID {
				ids = append(ids, h.RunID)
			}
		}
		if len(ids) > 0 {
			rctx, cancel := context.WithTimeout(ctx, contextTimeout)
			var err error
			trs, err = m.store.RunTranscripts(rctx, user, ids, contextBytes)
			cancel()
			if err != nil && ctx.Err() == nil {
				m.log.Warn("read earlier runs' transcripts, the agent gets the messages alone", "user", user, "run", runID, "err", err)
			}
		}
	}
	out := make([]agent.Message, 0, len(history))
	for _, h := range history {
		out = append(out, agent.Message{ID: h.ID, Role: h.Role, Content: h.Content})
		if t := trs[h.RunID]; t != nil && h.Role == store.RoleUser {
			out = append(out, toolMessages(t.Events)...)
		}
	}
	return out
}

// toolMessages rebuilds a run's tool calls from its transcript: each
// stretch of tool events becomes an assistant message with its calls, then
// one tool message per result. A call without a result (the run ended
// during it) is left out, so every call listed has its result.
func toolMessages(evs []store.RunEvent) []agent.Message {
	var out, results []agent.Message
	var calls []agent.ToolCall
	flush := func() {
		done := make(map[string]bool, len(results))
		for _, r := range results {
			done[r.ToolCallID] = true
		}
		var kept []agent.ToolCall
		for _, c := range calls {
			if done[c.ID] {
				kept = append(kept, c)
				done[c.ID] = false // a call id once
			}
		}
		if len(kept) > 0 {
			out = append(out, agent.Message{Role: agent.RoleAssistant, ToolCalls: kept})
			for _, c := range kept {
				for _, r := range results {
					if r.ToolCallID == c.ID {
						out = append(out, r)
						break
					}
				}
			}
		}
		calls, results = nil, nil
	}
	for _, ev := range evs {
		switch ev.Type {
		case protocol.TypeToolExecuting:
			var d protocol.ToolExecuting
			if json.Unmarshal(ev.Data, &d) == nil && d.ToolCallID != "" {
				if len(d.Args) == 0 {
					d.Args = json.RawMessage(`{}`)
				}
				calls = append(calls, agent.ToolCall{ID: d.ToolCallID, Name: d.Tool, Args: d.Args})
			}
		case protocol.TypeToolCompleted:
			var d protocol.ToolCompleted
			if json.Unmarshal(ev.Data, &d) == nil && d.ToolCallID != "" {
				content := string(d.Result)
				if !d.OK || content == "" {
					msg := d.Error
					if msg == "" && !d.OK {
						msg = "the tool failed"
					}
					if msg != "" {
						b, _ := json.Marshal(map[string]string{"error": msg})
						content = string(b)
					} else {
						content = "null"
					}
				}
				results = append(results, agent.Message{Role: agent.RoleTool, ToolCallID: d.ToolCallID, Content: content})
			}
		default:
			flush()
		}
	}
	flush()
	return out
}
