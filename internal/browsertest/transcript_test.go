package browsertest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/agentwire/agentwire/internal/testserver"
)

// shownJS reads the runs on the page as a reload must show them again:
// status, answer, and each timeline line's type and text without its time
// offset (the stored terminal event's time is its run's end, a moment
// before the stream's).
const shownJS = `[...document.querySelectorAll(".run")].map(r => r.dataset.runId + " " +
	r.querySelector(".status").textContent + " | " + r.querySelector(".answer").textContent + " | " +
	[...r.querySelectorAll(".timeline li")].map(li => li.dataset.type + ": " + li.querySelector(".what").textContent).join(" / "))`

// A completed run with a tool call, a failed one and one stopped mid-answer
// show, after a reload once the stream no longer retains their events, the
// same timeline as they did live: from the stored transcripts.
func TestReloadAfterRetentionShowsTheSameTimeline(t *testing.T) {
	t.Parallel()
	srv := &server{URL: testserver.Start(t, "--dev", "--log-level", "warn", "--retention-events", "3").URL}
	b := newBrowser(t)
	b.login(srv.URL, "dora")

	b.ask("what is 12*(3+4)?")
	b.waitJS("the first run to complete", `document.querySelectorAll(".run.completed").length === 1`, 15*time.Second)
	b.ask("please fail")
	b.waitJS("the second run to fail", `document.querySelectorAll(".run.failed").length === 1`, 15*time.Second)
	b.ask("slow: what is 6*7?")
	b.waitJS("a partial answer", `[...document.querySelectorAll(".run.running .answer")].some(a => a.textContent.length > 0)`, 15*time.Second)
	b.do("stop", chromedp.Click(chromedp.CSS(`.run.running button.stop`)))
	b.waitJS("the third run to be cancelled", `!!document.querySelector(".run.cancelled")`, 10*time.Second)
	live := eval[[]string](b, shownJS)
	if len(live) != 3 {
		t.Fatalf("%d runs live, want 3: %q", len(live), live)
	}
	if !strings.Contains(live[0], "→ 84") || !strings.Contains(live[1], "agent_failed") || strings.Contains(live[2], "cancelled |  |") {
		t.Fatalf("live runs: %q", live)
	}
	b.screenshot("1-live")

	// The stream keeps 3 events: none of the first runs' are left.
	for _, ev := range srv.events(t, srv.devToken(t, "dora")) {
		if strings.Contains(live[0], ev.RunID) || strings.Contains(live[1], ev.RunID) {
			t.Fatalf("the stream still retains %s of an early run", ev.Type)
		}
	}

	b.do("reload", chromedp.Reload())
	b.waitJS("the thread list", `[...document.querySelectorAll("#thread-list .thread-title")].some(e => e.textContent.includes("12*(3+4)"))`, 10*time.Second)
	b.do("open the thread", chromedp.Click(chromedp.CSS(`#thread-list button.thread`)))
	b.waitJS("the runs", `document.querySelectorAll(".run").length === 3 && !document.querySelector("#messages[aria-busy]")`, 10*time.Second)
	reloaded := eval[[]string](b, shownJS)
	b.screenshot("2-reloaded")
	t.Logf("reloaded:\n%s", strings.Join(reloaded, "\n"))
	if fmt.Sprint(reloaded) != fmt.Sprint(live) {
		t.Errorf("after the reload:\n%s\nlive:\n%s", strings.Join(reloaded, "\n"), strings.Join(live, "\n"))
	}
}
