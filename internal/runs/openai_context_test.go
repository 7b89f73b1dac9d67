package runs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentwire/agentwire/internal/agent/openai"
	"github.com/agentwire/agentwire/internal/agent/tools"
	"github.com/agentwire/agentwire/protocol"
)

// handlerTransport serves requests with a handler in memory (no socket,
// so it runs inside a synctest bubble).
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// The OpenAI agent's follow-up turn sends the model the first turn's tool
// call and result in Chat Completions form (assistant tool_calls, then a
// tool message), rebuilt from the stored transcript, so "and times 2?"
// can use the earlier result.
func TestOpenAIFollowUpSeesTheEarlierToolCall(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var reqs []map[string]any
		chunk := func(delta any, finish any) string {
			b, _ := json.Marshal(map[string]any{"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}})
			return "data: " + string(b) + "\n\n"
		}
		model := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var body map[string]any
			_ = json.NewDecoder(r.Body).Decode(&body)
			mu.Lock()
			reqs = append(reqs, body)
			n := len(reqs)
			mu.Unlock()
			w.Header().Set("Content-Type", "text/event-stream")
			switch n {
			case 1: // turn 1: call the calculator
				fmt.Fprint(w, chunk(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "id": "call_1", "type": "function",
					"function": map[string]any{"name": "calculator", "arguments": `{"expression":"6*7"}`}}}}, nil))
				fmt.Fprint(w, chunk(map[string]any{}, "tool_calls"))
			case 2:
				fmt.Fprint(w, chunk(map[string]any{"content": "It is 42."}, nil), chunk(map[string]any{}, "stop"))
			default: // turn 2
				fmt.Fprint(w, chunk(map[string]any{"content": "84."}, nil), chunk(map[string]any{}, "stop"))
			}
			fmt.Fprint(w, "data: [DONE]\n\n")
		})
		a, err := openai.New(openai.Config{BaseURL: "http://model.test/v1/", Model: "m", Tools: tools.Default(),
			HTTPClient: &http.Client{Transport: handlerTransport{model}}, RequestTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		f := newFixture(t, a, Config{})
		ack, perr := f.send(t, "oa", "what is 6*7?", "")
		if perr != nil {
			t.Fatal(perr)
		}
		if evs := f.waitTerminal(t, "oa", ack.RunID); evs[len(evs)-1].Type != protocol.TypeAgentCompleted {
			t.Fatalf("turn 1: %v", evs)
		}
		ack2, perr := f.m.UserMessage(context.Background(), "oa", &protocol.Frame{Type: protocol.TypeUserMessage, ThreadID: ack.ThreadID, Content: "and times 2?"})
		if perr != nil {
			t.Fatal(perr)
		}
		f.waitTerminal(t, "oa", ack2.RunID)

		mu.Lock()
		defer mu.Unlock()
		if len(reqs) != 3 {
			t.Fatalf("%d requests to the model, want 3", len(reqs))
		}
		var got []string
		for _, m := range reqs[2]["messages"].([]any) {
			m := m.(map[string]any)
			s := fmt.Sprintf("%v:%v", m["role"], m["content"])
			if calls, ok := m["tool_calls"].([]any); ok {
				for _, c := range calls {
					c := c.(map[string]any)
					fn := c["function"].(map[string]any)
					s += fmt.Sprintf("[%v %v %v %v]", c["id"], c["type"], fn["name"], fn["arguments"])
				}
			}
			if id, ok := m["tool_call_id"]; ok {
				s += fmt.Sprintf("(%v)", id)
			}
			got = append(got, s)
		}
		want := []string{
			`user:what is 6*7?`,
			`assistant:<nil>[call_1 function calculator {"expression":"6*7"}]`,
			`tool:42(call_1)`,
			`assistant:It is 42.`,
			`user:and times 2?`,
		}
		if len(got) < 1 || !strings.HasPrefix(got[0], "system:") || strings.Join(got[1:], "\n") != strings.Join(want, "\n") {
			t.Fatalf("second turn's messages:\n%s\nwant (after the system prompt):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}
