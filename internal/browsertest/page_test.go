package browsertest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// timelineJS reads the runs on the page: status, answer and timeline lines.
const timelineJS = `[...document.querySelectorAll(".run")].map(r => ({
	run: r.dataset.runId,
	status: r.querySelector(".status").textContent,
	answer: r.querySelector(".answer").textContent,
	lines: [...r.querySelectorAll(".timeline li")].map(li => ({
		seq: Number(li.dataset.seq), type: li.dataset.type, text: li.textContent,
		completedSeq: Number(li.dataset.completedSeq || 0),
	})),
}))`

type pageRun struct {
	Run    string `json:"run"`
	Status string `json:"status"`
	Answer string `json:"answer"`
	Lines  []struct {
		Seq          uint64 `json:"seq"`
		Type         string `json:"type"`
		Text         string `json:"text"`
		CompletedSeq uint64 `json:"completedSeq"`
	} `json:"lines"`
}

func (b *browser) runs() []pageRun {
	b.t.Helper()
	return eval[[]pageRun](b, timelineJS)
}

func TestGoldenPathInBrowser(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := newBrowser(t)
	b.login(srv.URL, "alice")
	b.screenshot("1-logged-in")

	b.ask("what is 12*(3+4)?")
	b.waitJS("the run to complete", `!!document.querySelector(".run.completed")`, 15*time.Second)
	runs := b.runs()
	if len(runs) != 1 {
		t.Fatalf("%d runs on the page, want 1: %+v", len(runs), runs)
	}
	r := runs[0]
	var tool string
	for _, l := range r.Lines {
		if l.Type == "tool_executing" {
			tool = l.Text
		}
	}
	for _, want := range []string{"calculator", "12*(3+4)", "→ 84", "ms"} {
		if !strings.Contains(tool, want) {
			t.Errorf("tool line %q does not contain %q", tool, want)
		}
	}
	if !strings.Contains(r.Answer, "84") {
		t.Errorf("answer %q does not contain 84", r.Answer)
	}
	if r.Status != "completed" {
		t.Errorf("status %q", r.Status)
	}
	total := eval[string](b, `document.querySelector(".run .clock").textContent`)
	if !strings.HasPrefix(total, "total ") {
		t.Errorf("total time %q", total)
	}
	types := make([]string, 0, len(r.Lines))
	for _, l := range r.Lines {
		types = append(types, l.Type)
	}
	if types[0] != "agent_started" || !slices.Contains(types, "agent_thinking") || types[len(types)-1] != "agent_completed" {
		t.Errorf("timeline %v: want started, thinking…, completed", types)
	}
	b.waitJS("the thread list", `[...document.querySelectorAll("#thread-list .thread-title")].some(e => e.textContent.includes("12*(3+4)"))`, 5*time.Second)
	b.screenshot("2-answered")

	// The same page on a phone-sized screen.
	b.do("narrow viewport", chromedp.EmulateViewport(390, 844))
	b.screenshot("3-narrow")
}

// A slow run loses its socket (close 1011 from the "server") in the middle:
// the page reconnects, resumes, and shows every step and the answer once.
func TestDropMidRunInBrowser(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	px := startProxy(t, srv.URL)
	b := newBrowser(t)
	b.login(px.URL, "bob")

	const question = "slow: what is 6*7?"
	b.ask(question)
	b.waitJS("the run to be under way", `document.querySelectorAll(".run.running .timeline li").length >= 3`, 10*time.Second)
	if n := px.dropWebSockets(1011, "internal error"); n != 1 {
		t.Fatalf("dropped %d WebSockets, want 1", n)
	}
	b.waitJS("the page to notice", `["reconnecting","resumed"].includes(document.getElementById("conn").dataset.state)`, 5*time.Second)
	b.waitJS("the run to complete", `!!document.querySelector(".run.completed")`, 20*time.Second)
	b.waitJS("resumed", `document.getElementById("conn").dataset.state === "resumed"`, 5*time.Second)
	b.screenshot("1-after-drop")

	runs := b.runs()
	if len(runs) != 1 {
		t.Fatalf("%d runs on the page, want 1", len(runs))
	}
	r := runs[0]

	// What the page shows must be exactly the run's events, each once.
	var want []uint64
	var final string
	for _, ev := range srv.events(t, srv.devToken(t, "bob")) {
		if ev.RunID != r.Run {
			continue
		}
		switch ev.Type {
		case "user_message", "agent_message_delta", "tool_completed": // not lines of their own
		case "agent_completed":
			var d struct {
				FinalResponse string `json:"final_response"`
			}
			_ = json.Unmarshal(ev.Data, &d)
			final = d.FinalResponse
			want = append(want, ev.Seq)
		default:
			want = append(want, ev.Seq)
		}
	}
	var got []uint64
	for _, l := range r.Lines {
		got = append(got, l.Seq)
	}
	if !slices.Equal(got, want) {
		t.Errorf("timeline seqs %v, want the run's events %v", got, want)
	}
	if r.Answer != final || !strings.Contains(final, "42") {
		t.Errorf("answer %q, want the final response %q once", r.Answer, final)
	}
	if r.Status != "completed" {
		t.Errorf("status %q", r.Status)
	}

	// After a reload the conversation is in the thread list and its history.
	b.do("reload", chromedp.Reload())
	b.waitJS("the thread list", fmt.Sprintf(`[...document.querySelectorAll("#thread-list .thread-title")].some(e => e.textContent.includes(%q))`, "6*7"), 10*time.Second)
	b.do("open the thread", chromedp.Click(chromedp.CSS(`#thread-list button.thread`)))
	b.waitJS("the history", fmt.Sprintf(`[...document.querySelectorAll(".msg.user .body")].some(e => e.textContent === %q) &&
		[...document.querySelectorAll(".run .answer")].some(e => e.textContent === %q)`, question, final), 10*time.Second)
	answers := eval[int](b, `document.querySelectorAll(".run").length`)
	if answers != 1 {
		t.Errorf("%d runs after reload, want 1", answers)
	}
	b.screenshot("2-after-reload")
}

func TestStopButtonInBrowser(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := newBrowser(t)
	b.login(srv.URL, "carol")
	b.ask("a slow one, please")
	b.waitJS("the stop button", `!!document.querySelector(".run.running button.stop")`, 10*time.Second)
	b.do("stop", chromedp.Click(chromedp.CSS(`.run.running button.stop`)))
	b.waitJS("the run to be cancelled", `!!document.querySelector(".run.cancelled")`, 10*time.Second)
	last := eval[string](b, `[...document.querySelectorAll(".run .timeline li")].at(-1).textContent`)
	if !strings.Contains(last, "cancelled") {
		t.Errorf("last line %q does not say cancelled", last)
	}
	b.screenshot("stopped")
}
