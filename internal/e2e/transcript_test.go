package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Runs keep their transcripts past the stream's retention: a completed
// run with thinking, a tool call and an answer, a failed run and a run
// stopped mid-answer read back from GET /api/v1/runs/{id}/events as they
// went live (deltas folded, partial answers kept), and the thread's
// messages carry each run with its steps.
func TestTranscriptOutlivesRetention(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--retention-events", "3")
	tok := s.token("tess")
	c, _ := s.connectToken(tok)

	type ran struct {
		id   string
		live []frame
	}
	var runs []ran
	thread := ""
	ask := func(id, content string, stopAtDelta bool) {
		extra := map[string]any{}
		if thread != "" {
			extra["thread_id"] = thread
		}
		a := c.ack(id, content, extra)
		thread = a.ThreadID
		var live []frame
		p := newProgressDeadline(10 * time.Second)
		for {
			f := c.readBy(p.next(), "the end of run "+a.RunID)
			p.progress()
			if f.RunID != a.RunID || f.Type == "ack" {
				continue
			}
			live = append(live, f)
			if stopAtDelta && f.Type == "agent_message_delta" {
				stopAtDelta = false
				c.send(map[string]any{"type": "stop_agent", "id": "stop-" + id, "run_id": a.RunID})
			}
			if isTerminal(f) {
				break
			}
		}
		runs = append(runs, ran{a.RunID, live})
	}
	ask("m1", "what is 12*(3+4)?", false)
	ask("m2", "please fail", false)
	ask("m3", "slow: what is 6*7?", true)

	for _, f := range s.eventsOf(tok) {
		if f.RunID == runs[0].id || f.RunID == runs[1].id {
			t.Fatalf("the stream still retains %s of an early run: retention not exceeded", f.Type)
		}
	}
	if d := dataOf(t, runs[2].live[len(runs[2].live)-1]); d.Code != "cancelled" {
		t.Fatalf("the third run ended %s, want cancelled", d.Code)
	}

	for i, r := range runs {
		var page struct {
			Events  []frame `json:"events"`
			HasMore bool    `json:"has_more"`
		}
		if code := s.do("GET", "/api/v1/runs/"+r.id+"/events", tok, nil, &page); code != 200 || page.HasMore {
			t.Fatalf("run %d events: %d, more %v", i+1, code, page.HasMore)
		}
		if got, want := summary(t, page.Events, true), summary(t, r.live[1:], false); got != want { // live[0]: the echo
			t.Errorf("run %d transcript:\n%s\nlive:\n%s", i+1, got, want)
		}
		if code := s.do("GET", "/api/v1/runs/"+r.id+"/events", s.token("mallory"), nil, nil); code != 404 {
			t.Errorf("another user's run: %d", code)
		}
	}

	var msgs struct {
		Messages []struct {
			Role string `json:"role"`
			Run  *struct {
				ID     string  `json:"id"`
				Status string  `json:"status"`
				Events []frame `json:"events"`
			} `json:"run"`
		} `json:"messages"`
	}
	if code := s.do("GET", "/api/v1/threads/"+thread+"/messages", tok, nil, &msgs); code != 200 {
		t.Fatalf("messages: %d", code)
	}
	var statuses []string
	for _, m := range msgs.Messages {
		if m.Role == "user" && m.Run != nil {
			statuses = append(statuses, m.Run.Status+":"+fmt.Sprint(len(m.Run.Events) > 2))
		}
	}
	if strings.Join(statuses, " ") != "completed:true failed:true cancelled:true" {
		t.Errorf("runs in the thread's messages: %v", statuses)
	}
}

// summary is a run's events as a transcript keeps them: every event but
// deltas with its seq and data, consecutive deltas as one line of their
// text; the terminal event without its seq (the transcript stores it
// before the stream numbers it).
func summary(t *testing.T, evs []frame, stored bool) string {
	t.Helper()
	var b strings.Builder
	text := ""
	for _, f := range evs {
		if f.Type == "agent_message_delta" {
			text += dataOf(t, f).Delta
			continue
		}
		if text != "" {
			fmt.Fprintf(&b, "delta %q\n", text)
			text = ""
		}
		seq := fmt.Sprint(f.Seq)
		if isTerminal(f) {
			if stored && f.Seq != 0 {
				t.Errorf("stored terminal event with seq %d", f.Seq)
			}
			seq = "-"
		}
		var d any
		_ = json.Unmarshal(f.Data, &d)
		norm, _ := json.Marshal(d)
		fmt.Fprintf(&b, "%s %s %s\n", seq, f.Type, norm)
	}
	if text != "" {
		fmt.Fprintf(&b, "delta %q\n", text)
	}
	return b.String()
}
