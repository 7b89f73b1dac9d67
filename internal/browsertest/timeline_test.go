package browsertest

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/agentwire/agentwire/internal/testserver"
)

// An empty conversation offers examples; a finished run folds its steps
// into a one-line summary with the one total; a stopped run marks its
// partial answer; the thread list shows which conversation is running.
func TestTimelinePolishInBrowser(t *testing.T) {
	t.Parallel()
	const apiKey = "browser-api-key"
	srv := &server{URL: testserver.Start(t, "--dev", "--api-keys", apiKey, "--log-level", "warn").URL}
	b := newBrowser(t)
	b.login(srv.URL, "grace")

	// The examples are drawn once the thread list has loaded, which may be
	// after login returns on a loaded box.
	b.waitJS("the examples", `document.querySelectorAll(".examples .example-prompt").length > 0`, 15*time.Second)
	examples := eval[[]string](b, `[...document.querySelectorAll(".examples .example-prompt")].map(e => e.textContent)`)
	joined := strings.Join(examples, "|")
	for _, want := range []string{"what is 12*(3+4)?", "slow", "fail", "approve"} {
		if !strings.Contains(joined, want) {
			t.Errorf("examples %q lack %q", examples, want)
		}
	}
	b.screenshot("empty")
	b.do("try the calculator example", chromedp.Click(chromedp.CSS(`.examples button.example`)))
	b.waitJS("the run to complete", `!!document.querySelector(".run.completed")`, 15*time.Second)
	if n := eval[int](b, `document.querySelectorAll(".examples").length`); n != 0 {
		t.Errorf("%d example lists in a conversation", n)
	}
	type fold struct {
		Open    bool
		Summary string
		Lines   []string
	}
	f := eval[fold](b, `(() => { const d = document.querySelector(".run.completed details.steps");
		return {open: d.open, summary: d.querySelector("summary").textContent, lines: [...d.querySelectorAll(".timeline li")].map(li => li.textContent)}; })()`)
	if f.Open {
		t.Error("the steps of an ended run are open")
	}
	if !regexp.MustCompile(`^\d+ steps · calculator · total \d+ ms$`).MatchString(f.Summary) {
		t.Errorf("summary %q, want like \"3 steps · calculator · total 457 ms\"", f.Summary)
	}
	for _, l := range f.Lines {
		if strings.Contains(l, "Completed") && strings.Contains(l, "Completed in") {
			t.Errorf("the completed line %q repeats the total", l)
		}
		if strings.Contains(l, "· 0 ms") {
			t.Errorf("line %q shows a 0 ms tool", l)
		}
	}
	b.do("unfold the steps", chromedp.Click(chromedp.CSS(`.run.completed details.steps > summary`)))
	if !eval[bool](b, `document.querySelector(".run.completed details.steps").open`) {
		t.Error("the summary does not unfold the steps")
	}

	// An answer stopped half-way is marked as partial. (The run waits for
	// an approval, and its agent's first words are published into it, so
	// it is under way with part of an answer however slow the machine.)
	b.ask("approve: tell me a story")
	b.waitJS("the run to ask", `!!document.querySelector(".run.running .prompt button.approve")`, 10*time.Second)
	runID := eval[string](b, `document.querySelector(".run.running").dataset.runId`)
	srv.publish(t, apiKey, "grace", "agent_message_delta", runID, map[string]any{"delta": "Once upon a time, "})
	b.waitJS("part of the answer", `[...document.querySelectorAll(".run.running .answer")].some(a => a.textContent.length > 0)`, 10*time.Second)
	b.waitJS("the running badge", `!!document.querySelector("#thread-list .thread[aria-current=true] .badge.running")`, 5*time.Second)
	b.do("stop", chromedp.Click(chromedp.CSS(`.run.running button.stop`)))
	b.waitJS("the run to be stopped", `!!document.querySelector(".run.cancelled")`, 10*time.Second)
	marker := eval[string](b, `(() => { const m = document.querySelector(".run.cancelled .partial"); return m && !m.hidden ? m.textContent : ""; })()`)
	if !strings.Contains(marker, "incomplete") {
		t.Errorf("partial answer marker %q", marker)
	}
	last := eval[string](b, `[...document.querySelectorAll(".run.cancelled .timeline li")].at(-1).textContent`)
	if strings.Count(strings.ToLower(last), "stop") != 1 {
		t.Errorf("the stop line %q says it more than once", last)
	}
	b.waitJS("the badge to go", `!document.querySelector("#thread-list .badge.running")`, 5*time.Second)
	b.screenshot("stopped")
}
