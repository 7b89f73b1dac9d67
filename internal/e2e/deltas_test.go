package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDeltaWindowThroughTheHTTPAgent: an HTTP agent streams many small
// deltas at once. With the delta window (on by default) the client gets
// fewer delta events than the agent sent; without it (--delta-window 0) one
// per delta. Either way the joined text, the final answer and the stored
// answer are the text sent, and seqs have no gap.
func TestDeltaWindowThroughTheHTTPAgent(t *testing.T) {
	t.Parallel()
	const tokens = 400
	var lines []string
	var sent strings.Builder
	for i := range tokens {
		tok := fmt.Sprintf("tok%d ", i)
		sent.WriteString(tok)
		b, _ := json.Marshal(map[string]any{"type": "agent_message_delta", "data": map[string]string{"delta": tok}})
		lines = append(lines, string(b))
	}
	lines = append(lines, `{"type":"agent_completed","data":{}}`)
	body := strings.Join(lines, "\n") + "\n"

	for _, tc := range []struct {
		name  string
		args  []string
		fewer bool // fewer delta events than deltas sent; else exactly as many
	}{
		{"default window", nil, true},
		{"window off", []string{"--delta-window", "0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake := newFakeService(t, func(w http.ResponseWriter, _ *http.Request, _ []byte, _ int) {
				w.Header().Set("Content-Type", "application/x-ndjson")
				_, _ = w.Write([]byte(body)) // a fast model: every token at once
			})
			s := startServer(t, append([]string{"--agent", "http", "--agent-url", fake.URL + "/run"}, tc.args...)...)
			tok := s.token("dora")
			c, est := s.connect("dora")
			ack := c.ack("d1", "stream", nil)
			frames := c.untilTerminal(ack.RunID, 10*time.Second)
			checkContiguous(t, frames, est.HeadSeq+1)
			checkRunOrder(t, frames)
			var joined strings.Builder
			deltas := 0
			for _, f := range frames {
				checkStreamEvent(t, f, ack.RunID, ack.ThreadID, est.Epoch)
				if f.Type == "agent_message_delta" {
					deltas++
					joined.WriteString(dataOf(t, f).Delta)
				}
			}
			last := frames[len(frames)-1]
			if last.Type != "agent_completed" {
				t.Fatalf("run ended %s", last.raw)
			}
			if joined.String() != sent.String() || dataOf(t, last).FinalResponse != sent.String() {
				t.Fatalf("deltas joined %.80q…, final %.80q…, want %.80q…", joined.String(), dataOf(t, last).FinalResponse, sent.String())
			}
			if tc.fewer && (deltas == 0 || deltas >= tokens) || !tc.fewer && deltas != tokens {
				t.Fatalf("%d delta events for %d deltas sent (fewer: %v)", deltas, tokens, tc.fewer)
			}
			t.Logf("%d delta events for %d deltas", deltas, tokens)
			s.waitRunStatus(tok, ack.RunID, "completed")
			var msgs struct {
				Messages []struct {
					Role    string `json:"role"`
					Content string `json:"content"`
				} `json:"messages"`
			}
			if code := s.do("GET", "/api/v1/threads/"+ack.ThreadID+"/messages", tok, nil, &msgs); code != 200 || len(msgs.Messages) != 2 ||
				msgs.Messages[1].Content != sent.String() {
				t.Fatalf("GET messages: %d %+v", code, msgs)
			}
		})
	}
}
