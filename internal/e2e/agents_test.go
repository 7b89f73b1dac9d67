package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// The http and openai agents against local fakes of their services.

// agentRequest is what agentwire POSTs to an http agent.
type agentRequest struct {
	RunID    string `json:"run_id"`
	ThreadID string `json:"thread_id"`
	UserID   string `json:"user_id"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
}

// fakeService is an httptest server that records the requests it got.
type fakeService struct {
	*httptest.Server
	mu   sync.Mutex
	reqs [][]byte
}

func newFakeService(t *testing.T, h func(w http.ResponseWriter, r *http.Request, body []byte, n int)) *fakeService {
	f := &fakeService{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, body)
		n := len(f.reqs)
		f.mu.Unlock()
		h(w, r, body, n)
	}))
	t.Cleanup(f.Close) // runs after the agentwire server stopped (cleanups are LIFO)
	return f
}

func (f *fakeService) requests() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.reqs...)
}

func writeLines(w http.ResponseWriter, prefix string, lines ...string) {
	fl, _ := w.(http.Flusher)
	for _, l := range lines {
		fmt.Fprintf(w, "%s%s\n", prefix, l)
		if prefix != "" {
			fmt.Fprint(w, "\n") // SSE: blank line ends the event
		}
		if fl != nil {
			fl.Flush()
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHTTPAgent(t *testing.T) {
	t.Parallel()

	t.Run("events relayed under the run's own user", func(t *testing.T) {
		t.Parallel()
		fake := newFakeService(t, func(w http.ResponseWriter, _ *http.Request, _ []byte, _ int) {
			w.Header().Set("Content-Type", "application/x-ndjson")
			writeLines(w, "",
				// The service tries to speak for someone else: ignored.
				`{"type":"agent_thinking","user_id":"mallory","run_id":"01MALLORYRUN","thread_id":"01MALLORYTHREAD","data":{"text":"looking it up","user_id":"mallory"}}`,
				`{"type":"agent_message_delta","data":{"delta":"Hello, "}}`,
				`{"type":"agent_message_delta","delta":"world.","user_id":"mallory"}`,
				`{"type":"agent_completed","data":{"final_response":"Hello, world."}}`,
			)
		})
		// Each event relayed as it came, the two deltas included: no
		// delta window (TestDeltaWindowThroughTheHTTPAgent has one).
		s := startServer(t, "--agent", "http", "--agent-url", fake.URL+"/run", "--delta-window", "0")
		tok := s.token("alice")
		c, est := s.connect("alice")
		mallory, _ := s.connect("mallory")

		ack := c.ack("h1", "say hello", nil)
		frames := c.untilTerminal(ack.RunID, 10*time.Second)
		want := "user_message agent_started agent_thinking agent_message_delta agent_message_delta agent_completed"
		if typesOf(frames) != want {
			t.Fatalf("run: %s", dump(frames))
		}
		checkContiguous(t, frames, est.HeadSeq+1)
		checkRunOrder(t, frames)
		for _, f := range frames {
			checkStreamEvent(t, f, ack.RunID, ack.ThreadID, est.Epoch)
			if strings.Contains(string(f.raw), "mallory") || strings.Contains(string(f.raw), "MALLORY") {
				t.Fatalf("the service's user_id/run_id reached the event: %s", f.raw)
			}
		}
		if d := dataOf(t, frames[1]); d.Agent != "http" {
			t.Fatalf("agent_started: %s", frames[1].raw)
		}
		if d := dataOf(t, frames[2]); d.Text != "looking it up" {
			t.Fatalf("thinking: %s", frames[2].raw)
		}
		if d := dataOf(t, frames[5]); d.FinalResponse != "Hello, world." || d.MessageID == "" {
			t.Fatalf("completed: %s", frames[5].raw)
		}
		if leaked := s.probe("mallory", mallory); len(leaked) != 0 {
			t.Fatalf("mallory received: %s", dump(leaked))
		}
		if evs := s.eventsOf(s.token("mallory")); len(evs) != 1 || evs[0].Type != "test.probe" {
			t.Fatalf("mallory's stream: %s", dump(evs))
		}
		s.waitRunStatus(tok, ack.RunID, "completed")

		reqs := fake.requests()
		if len(reqs) != 1 {
			t.Fatalf("%d requests to the agent service", len(reqs))
		}
		var req agentRequest
		if err := json.Unmarshal(reqs[0], &req); err != nil {
			t.Fatalf("request %s: %v", reqs[0], err)
		}
		if req.UserID != "alice" || req.RunID != ack.RunID || req.ThreadID != ack.ThreadID ||
			len(req.Messages) != 1 || req.Messages[0].Role != "user" || req.Messages[0].Content != "say hello" {
			t.Fatalf("request to the agent service: %s", reqs[0])
		}
	})

	t.Run("service answering 500 fails the run", func(t *testing.T) {
		t.Parallel()
		fake := newFakeService(t, func(w http.ResponseWriter, _ *http.Request, _ []byte, _ int) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"error":{"message":"the service exploded"}}`)
		})
		s := startServer(t, "--agent", "http", "--agent-url", fake.URL)
		tok := s.token("alice")
		c, _ := s.connect("alice")
		ack := c.ack("h2", "say hello", nil)
		frames := c.untilTerminal(ack.RunID, 10*time.Second)
		checkRunOrder(t, frames)
		end := frames[len(frames)-1]
		if d := dataOf(t, end); end.Type != "agent_error" || d.Code != "agent_failed" || !strings.Contains(d.Message, "500") {
			t.Fatalf("terminal: %s", end.raw)
		}
		s.waitRunStatus(tok, ack.RunID, "failed")
	})
}

func TestOpenAIAgent(t *testing.T) {
	t.Parallel()
	const apiKey = "sk-e2e-test-key"
	var authHeaders sync.Map
	fake := newFakeService(t, func(w http.ResponseWriter, r *http.Request, body []byte, _ int) {
		authHeaders.Store(r.Header.Get("Authorization"), r.URL.Path)
		var req struct {
			Model    string `json:"model"`
			Stream   bool   `json:"stream"`
			Messages []struct {
				Role       string  `json:"role"`
				Content    *string `json:"content"`
				ToolCallID string  `json:"tool_call_id"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(body, &req); err != nil || req.Model != "test" || !req.Stream {
			w.WriteHeader(400)
			fmt.Fprintf(w, `{"error":{"message":"bad request: %v"}}`, err)
			return
		}
		toolAnswered := false
		for _, m := range req.Messages {
			if m.Role == "tool" && m.ToolCallID == "call_e2e_1" && m.Content != nil && *m.Content == "84" {
				toolAnswered = true
			}
		}
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := func(delta, finish string) string {
			f := "null"
			if finish != "" {
				f = `"` + finish + `"`
			}
			return `{"id":"chatcmpl-e2e","object":"chat.completion.chunk","created":1,"model":"test","choices":[{"index":0,"delta":` + delta + `,"finish_reason":` + f + `}]}`
		}
		if !toolAnswered {
			// Round 1: a calculator call, its arguments split across chunks.
			writeLines(w, "data: ",
				chunk(`{"role":"assistant","content":null}`, ""),
				chunk(`{"tool_calls":[{"index":0,"id":"call_e2e_1","type":"function","function":{"name":"calculator","arguments":""}}]}`, ""),
				chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"{\"expr"}}]}`, ""),
				chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"ession\": \"12*(3"}}]}`, ""),
				chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"+4)\"}"}}]}`, ""),
				chunk(`{}`, "tool_calls"),
				"[DONE]",
			)
			return
		}
		// Round 2: the answer.
		writeLines(w, "data: ",
			chunk(`{"role":"assistant","content":""}`, ""),
			chunk(`{"content":"12*(3+4) "}`, ""),
			chunk(`{"content":"is 84."}`, ""),
			chunk(`{}`, "stop"),
			"[DONE]",
		)
	})
	s := startServer(t, "--agent", "openai", "--openai-base-url", fake.URL+"/v1", "--openai-model", "test", "--openai-api-key", apiKey)
	tok := s.token("alice")
	c, est := s.connect("alice")
	ack := c.ack("o1", "what is 12*(3+4)? use the calculator", nil)
	frames := c.untilTerminal(ack.RunID, 10*time.Second)
	checkContiguous(t, frames, est.HeadSeq+1)
	checkRunOrder(t, frames)
	var answer strings.Builder
	var exec, done bool
	for _, f := range frames {
		checkStreamEvent(t, f, ack.RunID, ack.ThreadID, est.Epoch)
		d := dataOf(t, f)
		switch f.Type {
		case "agent_started":
			if d.Agent != "openai" {
				t.Fatalf("agent_started: %s", f.raw)
			}
		case "tool_executing":
			if d.ToolCallID != "call_e2e_1" || d.Tool != "calculator" || d.Args["expression"] != "12*(3+4)" {
				t.Fatalf("tool_executing: %s", f.raw)
			}
			exec = true
		case "tool_completed":
			if d.ToolCallID != "call_e2e_1" || d.Tool != "calculator" || d.OK == nil || !*d.OK || string(d.Result) != "84" {
				t.Fatalf("tool_completed: %s", f.raw)
			}
			done = true
		case "agent_message_delta":
			if !done {
				t.Fatalf("answer before the tool result: %s", dump(frames))
			}
			answer.WriteString(d.Delta)
		case "agent_completed":
			if d.FinalResponse != "12*(3+4) is 84." || d.FinalResponse != answer.String() {
				t.Fatalf("agent_completed %s, deltas %q", f.raw, answer.String())
			}
		}
	}
	if !exec || !done || frames[len(frames)-1].Type != "agent_completed" {
		t.Fatalf("run: %s", dump(frames))
	}
	s.waitRunStatus(tok, ack.RunID, "completed")

	reqs := fake.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests to the model endpoint, want 2 (tool round, answer round)", len(reqs))
	}
	var first struct {
		Tools []struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		} `json:"tools"`
	}
	_ = json.Unmarshal(reqs[0], &first)
	hasCalc := false
	for _, tl := range first.Tools {
		hasCalc = hasCalc || (tl.Type == "function" && tl.Function.Name == "calculator")
	}
	if !hasCalc {
		t.Fatalf("calculator not offered to the model: %s", reqs[0])
	}
	n := 0
	authHeaders.Range(func(k, v any) bool {
		n++
		if k != "Bearer "+apiKey || v != "/v1/chat/completions" {
			t.Errorf("request to %v with Authorization %q", v, k)
		}
		return true
	})
	if n != 1 {
		t.Fatalf("%d distinct Authorization headers", n)
	}
}
