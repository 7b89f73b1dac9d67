package browsertest

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// threadTitlesJS is the thread list's titles, top first.
const threadTitlesJS = `[...document.querySelectorAll("#thread-list .thread-title")].map(e => e.textContent)`

// A conversation is renamed and deleted from the page; a conversation
// whose run is still going is not deleted.
func TestRenameDeleteThreadInBrowser(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := newBrowser(t)
	const user = "frank"
	b.login(srv.URL, user)

	b.ask("what is 2+2?")
	b.waitJS("the first answer", `document.querySelectorAll(".run.completed").length === 1`, 15*time.Second)
	b.do("new conversation", chromedp.Click(chromedp.ID("new-thread")))
	b.ask("what is 3+3?")
	b.waitJS("the second answer", `document.querySelectorAll(".run.completed").length === 1 && document.querySelector(".run .answer").textContent.includes("6")`, 15*time.Second)
	b.waitJS("two threads listed", `document.querySelectorAll("#thread-list .thread").length === 2`, 5*time.Second)

	// Rename the open one.
	b.do("rename",
		chromedp.Click(chromedp.ID("rename-thread")),
		chromedp.WaitVisible(chromedp.ID("rename-input")),
		chromedp.SetValue(chromedp.ID("rename-input"), "  Sums & <b>friends</b> "),
		chromedp.Click(chromedp.CSS(`#rename-form button[type=submit]`)),
	)
	b.waitJS("the new title", `document.getElementById("chat-title").textContent === "Sums & <b>friends</b>" && !document.getElementById("chat-title").hidden`, 5*time.Second)
	if titles := eval[[]string](b, threadTitlesJS); len(titles) != 2 || !strings.Contains(strings.Join(titles, "|"), "Sums & <b>friends</b>") {
		t.Errorf("thread list %q after rename", titles)
	}
	b.do("reload", chromedp.Reload())
	b.waitJS("the renamed thread after reload", `[...document.querySelectorAll("#thread-list .thread-title")].some(e => e.textContent === "Sums & <b>friends</b>")`, 10*time.Second)
	b.waitJS("the renamed thread open", `document.getElementById("chat-title").textContent === "Sums & <b>friends</b>"`, 10*time.Second)
	b.screenshot("renamed")

	// Delete it: a confirmation, then it is gone from the page and the server.
	b.do("delete", chromedp.Click(chromedp.ID("delete-thread")), chromedp.WaitVisible(chromedp.ID("delete-yes")))
	b.do("cancel", chromedp.Click(chromedp.ID("delete-no")))
	if n := eval[int](b, `document.querySelectorAll("#thread-list .thread").length`); n != 2 {
		t.Fatalf("%d threads after a cancelled delete, want 2", n)
	}
	b.do("delete for real", chromedp.Click(chromedp.ID("delete-thread")), chromedp.WaitVisible(chromedp.ID("delete-yes")), chromedp.Click(chromedp.ID("delete-yes")))
	b.waitJS("the thread to go", `document.querySelectorAll("#thread-list .thread").length === 1 && document.getElementById("chat-title").textContent === "New conversation" && document.querySelectorAll(".run").length === 0`, 5*time.Second)
	if titles := remoteTitles(t, srv, srv.devToken(t, user)); len(titles) != 1 || !strings.Contains(titles[0], "2+2") {
		t.Fatalf("threads on the server after delete: %q", titles)
	}

	// A thread with a run under way is kept, with a message saying why.
	b.do("open the other thread", chromedp.Click(chromedp.CSS(`#thread-list button.thread`)))
	b.waitJS("its history", `document.querySelectorAll(".run.completed").length === 1`, 10*time.Second)
	// (It waits for an approval, so it is under way however slow the machine.)
	b.ask("approve: what is 6*7?")
	b.waitJS("the waiting run", `!!document.querySelector(".run.running .prompt button.approve")`, 10*time.Second)
	b.do("delete while running", chromedp.Click(chromedp.ID("delete-thread")), chromedp.WaitVisible(chromedp.ID("delete-yes")), chromedp.Click(chromedp.ID("delete-yes")))
	b.waitJS("the refusal", `document.getElementById("chat-error").textContent.includes("stop it")`, 5*time.Second)
	b.do("approve", chromedp.Click(chromedp.CSS(`.run.running .prompt button.approve`)))
	b.waitJS("the run to end", `document.querySelectorAll(".run.completed").length === 2`, 15*time.Second)
	if n := len(remoteTitles(t, srv, srv.devToken(t, user))); n != 1 {
		t.Errorf("%d threads on the server after a refused delete, want 1", n)
	}
}

// A read of the thread list that answers from before a rename does not put
// the old title back: the page holds the answers of the reads it makes
// (served before the rename) until the rename has answered, then lets them
// through. Every later read of the list goes through unheld.
func TestRenameNotUndoneByAnOlderRead(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	b := newBrowser(t)
	const user = "grace"
	b.login(srv.URL, user)
	b.ask("what is 2+2?")
	b.waitJS("the answer", `document.querySelectorAll(".run.completed").length === 1`, 15*time.Second)
	b.waitJS("the thread listed", `document.querySelectorAll("#thread-list .thread").length === 1`, 10*time.Second)

	// Hold the answers of list reads; count the list's renders from now on.
	eval[bool](b, `(() => {
		window.held = [];
		window.holding = true;
		const fetch0 = window.fetch;
		window.fetch = (url, opts) => {
			const p = fetch0(url, opts);
			if (!window.holding || !String(url).startsWith("/api/v1/threads?") || (opts?.method ?? "GET") !== "GET") return p;
			return p.then((res) => new Promise((resolve) => window.held.push(() => resolve(res))));
		};
		window.renders = 0;
		new MutationObserver(() => window.renders++).observe(document.getElementById("thread-list"), { childList: true });
		return true;
	})()`)
	// What another tab's change asks of this one: read the list again.
	eval[bool](b, `(new BroadcastChannel("agentwire").postMessage({ user: "`+user+`", threads: "changed" }), true)`)
	// (A read that sending the message scheduled may be held with it.)
	b.waitJS("the read answered and held", `window.held.length >= 1`, 10*time.Second)

	b.do("rename",
		chromedp.Click(chromedp.ID("rename-thread")),
		chromedp.WaitVisible(chromedp.ID("rename-input")),
		chromedp.SetValue(chromedp.ID("rename-input"), "Arithmetic"),
		chromedp.Click(chromedp.CSS(`#rename-form button[type=submit]`)),
	)
	b.waitJS("the rename shown", `document.getElementById("chat-title").textContent === "Arithmetic" && document.querySelector("#thread-list .thread-title").textContent === "Arithmetic"`, 10*time.Second)

	// Let the old answer through: the list must show the new title once it
	// has rendered again (without the fix, that render is the old title's,
	// and no other follows).
	eval[bool](b, `(() => { const rendered = window.renders; window.holding = false; window.rendersBefore = rendered; window.held.splice(0).forEach((f) => f()); return true; })()`)
	b.waitJS("a render after the old answer, with the new title",
		`window.renders > window.rendersBefore && document.querySelector("#thread-list .thread-title").textContent === "Arithmetic" && document.getElementById("chat-title").textContent === "Arithmetic"`, 10*time.Second)
	if titles := remoteTitles(t, srv, srv.devToken(t, user)); len(titles) != 1 || titles[0] != "Arithmetic" {
		t.Fatalf("threads on the server: %q", titles)
	}
}

func remoteTitles(t *testing.T, srv *server, token string) []string {
	t.Helper()
	var page struct{ Threads []struct{ Title string } }
	srv.getJSON(t, token, "/api/v1/threads", &page)
	titles := make([]string, 0, len(page.Threads))
	for _, th := range page.Threads {
		titles = append(titles, th.Title)
	}
	return titles
}
