package browsertest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// tab opens a second tab of b's browser (the same profile, so the same
// localStorage); it closes when the test ends.
func (b *browser) tab() *browser {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	return &browser{t: b.t, ctx: ctx, artifacts: b.artifacts}
}

// seqs returns the seqs of the timeline lines of run runID, in page order.
func (b *browser) seqs(runID string) []uint64 {
	b.t.Helper()
	for _, r := range b.runs() {
		if r.Run == runID {
			out := make([]uint64, 0, len(r.Lines))
			for _, l := range r.Lines {
				out = append(out, l.Seq)
			}
			return out
		}
	}
	return nil
}

// One login serves every tab; a run started in one shows live in the
// other; a tab reloaded mid-run resumes and draws each step once; logging
// out in one tab logs every tab out.
func TestTabsShareSessionInBrowser(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	const user = "heidi"
	one := newBrowser(t)
	one.login(srv.URL, user)
	two := one.tab()
	two.do("open the page in a second tab", chromedp.Navigate(srv.URL))
	two.waitJS("the second tab to be logged in and connected", `document.getElementById("login").hidden &&
		document.getElementById("who").textContent === "heidi" && document.getElementById("conn").dataset.state === "connected"`, 10*time.Second)

	// A run started in the first tab, followed live in the second (it
	// waits for an approval, so it is under way however slow the machine),
	// and approved there.
	one.ask("approve: what is 6*7?")
	two.waitJS("the thread with its running badge", `!!document.querySelector("#thread-list .thread .badge.running")`, 10*time.Second)
	two.do("open the thread", chromedp.Click(chromedp.CSS(`#thread-list button.thread`)))
	two.waitJS("the run live in the second tab", `!!document.querySelector(".run.running .prompt button.approve")`, 10*time.Second)
	two.do("approve in the second tab", chromedp.Click(chromedp.CSS(`.run.running .prompt button.approve`)))
	two.waitJS("the run to complete in the second tab", `!!document.querySelector(".run.completed .answer") && document.querySelector(".run.completed .answer").textContent.includes("42")`, 15*time.Second)
	one.waitJS("the run to complete in the first tab", `!!document.querySelector(".run.completed .answer") && document.querySelector(".run.completed .answer").textContent.includes("42")`, 10*time.Second)

	// The second tab reloads in the middle of the next run.
	one.ask("slow: what is 5*5?")
	two.waitJS("the second run under way", `document.querySelectorAll(".run.running .timeline li").length >= 3`, 10*time.Second)
	runID := eval[string](two, `document.querySelector(".run.running").dataset.runId`)
	two.do("reload mid-run", chromedp.Reload())
	two.waitJS("the run after the reload", `!!document.querySelector(".run.completed[data-run-id='`+runID+`']")`, 15*time.Second)
	var want []uint64
	for _, ev := range srv.events(t, srv.devToken(t, user)) {
		if ev.RunID == runID && ev.Type != "user_message" && ev.Type != "agent_message_delta" && ev.Type != "tool_completed" {
			want = append(want, ev.Seq)
		}
	}
	if got := two.seqs(runID); !slices.Equal(got, want) {
		t.Errorf("after a reload mid-run the timeline has seqs %v, want each of the run's events once: %v", got, want)
	}
	if ans := eval[string](two, `document.querySelector(".run.completed[data-run-id='`+runID+`'] .answer").textContent`); !strings.Contains(ans, "25") {
		t.Errorf("answer after reload %q", ans)
	}
	if pos := eval[string](two, `sessionStorage.getItem("agentwire.position.heidi") || ""`); !strings.Contains(pos, `"since"`) {
		t.Errorf("kept position %q", pos)
	}
	two.screenshot("after-reload")

	// The second tab leaves; a run starts while it is away; back, it
	// resumes from its kept position, so it knows the run is under way.
	// (The run waits for an approval, so it is still under way however
	// slowly the tab comes back.)
	two.do("leave", chromedp.Navigate("about:blank"))
	one.do("new conversation", chromedp.Click(chromedp.ID("new-thread")))
	one.ask("approve: what is 7*7?")
	one.waitJS("the third run waiting", `!!document.querySelector(".run.running .prompt button.approve")`, 10*time.Second)
	two.do("come back", chromedp.Navigate(srv.URL))
	two.waitJS("the running badge from the events it missed", `!!document.querySelector("#thread-list .thread .badge.running")`, 10*time.Second)
	one.do("approve", chromedp.Click(chromedp.CSS(`.run.running .prompt button.approve`)))
	one.waitJS("the third run to end", `!!document.querySelector(".run.completed")`, 15*time.Second)
	two.waitJS("the badge to go", `!document.querySelector("#thread-list .thread .badge.running")`, 10*time.Second)

	// A rename and a delete in the first tab reach the second at once.
	two.do("open the third thread in the second tab", chromedp.Click(chromedp.CSS(`#thread-list button.thread`)))
	two.waitJS("its run", `!!document.querySelector(".run.completed")`, 10*time.Second)
	one.do("rename in the first tab",
		chromedp.Click(chromedp.ID("rename-thread")),
		chromedp.SetValue(chromedp.ID("rename-input"), "Squares"),
		chromedp.Click(chromedp.CSS(`#rename-form button[type=submit]`)))
	two.waitJS("the new title in the second tab", `document.getElementById("chat-title").textContent === "Squares"`, 5*time.Second)
	one.do("delete in the first tab", chromedp.Click(chromedp.ID("delete-thread")), chromedp.Click(chromedp.ID("delete-yes")))
	two.waitJS("the thread gone from the second tab", `document.querySelectorAll("#thread-list .thread").length === 1 && document.getElementById("chat-title").textContent === "New conversation"`, 5*time.Second)

	// Log out in the first tab: the second follows.
	one.do("log out", chromedp.Click(chromedp.ID("logout")))
	two.waitJS("the second tab to log out", `!document.getElementById("login").hidden && document.getElementById("conn").dataset.state === "idle"`, 10*time.Second)
	if tok := eval[string](two, `localStorage.getItem("agentwire.token") || ""`); tok != "" {
		t.Error("the token is still stored after logout")
	}
}
