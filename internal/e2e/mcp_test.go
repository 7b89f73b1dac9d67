package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestOpenAIAgentMCPToolsUsageAndQuota: the real server with --agent openai
// (a fake model), an MCP server of the test (--mcp-server, Streamable
// HTTP) and --user-token-quota. The model calls the MCP tool, whose
// progress reaches the user as tool_progress; agent_completed and
// GET /api/v1/runs/{id} carry the usage; once the day's usage reaches the
// quota, the next message is answered quota_exceeded.
func TestOpenAIAgentMCPToolsUsageAndQuota(t *testing.T) {
	t.Parallel()
	srv := mcp.NewServer(&mcp.Implementation{Name: "e2e", Version: "1"}, nil)
	srv.AddTool(&mcp.Tool{Name: "count", Description: "counts to two", InputSchema: json.RawMessage(`{"type":"object"}`)},
		func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			for i := 1; i <= 2; i++ {
				if i > 1 {
					time.Sleep(150 * time.Millisecond) // the work between two steps
				}
				_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
					ProgressToken: req.Params.GetProgressToken(), Progress: float64(i), Total: 2, Message: fmt.Sprintf("step %d", i)})
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "two"}}}, nil
		})
	mcpSrv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(func() {
		mcpSrv.CloseClientConnections()
		mcpSrv.Close()
		for ss := range srv.Sessions() {
			_ = ss.Close()
		}
	})

	fake := newFakeService(t, func(w http.ResponseWriter, r *http.Request, body []byte, _ int) {
		var req struct {
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
			Messages []struct {
				Role    string  `json:"role"`
				Content *string `json:"content"`
			} `json:"messages"`
		}
		_ = json.Unmarshal(body, &req)
		w.Header().Set("Content-Type", "text/event-stream")
		choice := func(delta, finish string) string {
			return `{"choices":[{"index":0,"delta":` + delta + `,"finish_reason":"` + finish + `"}]}`
		}
		usage := func(in, out int) string {
			if !req.StreamOptions.IncludeUsage {
				return `{"choices":[]}`
			}
			return fmt.Sprintf(`{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, in, out)
		}
		last := req.Messages[len(req.Messages)-1]
		if last.Role != "tool" {
			writeLines(w, "data: ",
				choice(`{"tool_calls":[{"index":0,"id":"call_mcp","type":"function","function":{"name":"tools_count","arguments":"{}"}}]}`, "tool_calls"),
				usage(40, 5), "[DONE]")
			return
		}
		writeLines(w, "data: ", choice(`{"content":"it said "}`, ""), choice(`{"content":`+*last.Content+`}`, "stop"), usage(50, 5), "[DONE]")
	})

	s := startServer(t, "--agent", "openai", "--openai-base-url", fake.URL+"/v1", "--openai-model", "test",
		"--mcp-server", "tools="+mcpSrv.URL, "--user-token-quota", "100")
	tok := s.token("alice")
	c, _ := s.connect("alice")

	// The server serves once the MCP servers were tried: the first run is
	// offered their tools.
	ack := c.ack("m1", "count to two", nil)
	frames := c.untilTerminal(ack.RunID, 10*time.Second)
	checkRunOrder(t, frames)
	ex := ofType(frames, "tool_executing")
	if len(ex) != 1 || dataOf(t, ex[0]).Tool != "tools.count" {
		t.Fatalf("tool_executing: %s", dump(frames))
	}
	done := dataOf(t, ofType(frames, "tool_completed")[0])
	if done.OK == nil || !*done.OK || string(done.Result) != `"two"` {
		t.Fatalf("tool_completed: %s", dump(frames))
	}
	prog := ofType(frames, "tool_progress")
	if len(prog) == 0 {
		t.Fatalf("no tool_progress: %s", dump(frames))
	}
	for _, p := range prog {
		var d struct {
			ToolCallID string   `json:"tool_call_id"`
			Progress   float64  `json:"progress"`
			Total      *float64 `json:"total"`
			Message    string   `json:"message"`
		}
		if err := json.Unmarshal(p.Data, &d); err != nil || d.ToolCallID != "call_mcp" || d.Total == nil || *d.Total != 2 || !strings.HasPrefix(d.Message, "step ") {
			t.Errorf("tool_progress %s", p.raw)
		}
	}
	end := frames[len(frames)-1]
	var completed struct {
		FinalResponse string `json:"final_response"`
		Usage         *struct {
			InputTokens  int64 `json:"input_tokens"`
			OutputTokens int64 `json:"output_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(end.Data, &completed); err != nil || end.Type != "agent_completed" || completed.FinalResponse != "it said two" ||
		completed.Usage == nil || completed.Usage.InputTokens != 90 || completed.Usage.OutputTokens != 10 {
		t.Fatalf("agent_completed: %s", end.raw)
	}
	var run struct {
		Usage *struct {
			InputTokens  int64 `json:"input_tokens"`
			OutputTokens int64 `json:"output_tokens"`
		} `json:"usage"`
	}
	if code := s.do("GET", "/api/v1/runs/"+ack.RunID, tok, nil, &run); code != 200 || run.Usage == nil || run.Usage.InputTokens != 90 || run.Usage.OutputTokens != 10 {
		t.Fatalf("GET run: %d %+v", code, run.Usage)
	}

	// 100 tokens today: the quota is used.
	c.userMessage("over", "again", nil)
	reply, _ := c.untilReply("over", 10*time.Second)
	if reply.Type != "error" || reply.Code != "quota_exceeded" {
		t.Fatalf("over the quota: %s", reply.raw)
	}
	var eb struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if code := s.do("POST", "/api/v1/messages", tok, map[string]any{"content": "over HTTP"}, &eb); code != http.StatusTooManyRequests || eb.Error.Code != "quota_exceeded" {
		t.Fatalf("POST /api/v1/messages over the quota: %d %+v", code, eb)
	}
}

func ofType(fs []frame, typ string) []frame {
	var out []frame
	for _, f := range fs {
		if f.Type == typ {
			out = append(out, f)
		}
	}
	return out
}
