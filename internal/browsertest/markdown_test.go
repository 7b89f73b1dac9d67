package browsertest

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/agentwire/agentwire/internal/testserver"
)

// markdownAnswer is what an external agent publishes into a running run:
// Markdown with a code block and a table, and HTML and a link meant to run
// script.
const markdownAnswer = "Here is **the plan**:\n\n" +
	"1. compute\n2. check\n\n" +
	"```go\nfmt.Println(\"<b>hi</b>\")\n```\n\n" +
	"| op | result |\n|----|-------:|\n| 6*7 | 42 |\n| 2+2 | 4 |\n\n" +
	"<img src=x onerror=\"window.__pwned='img'\"> and <script>window.__pwned='script'</script>\n\n" +
	"[click me](javascript:window.__pwned='link') or [docs](https://example.com/docs)"

// An answer is rendered as Markdown (a code block with a copy button, a
// list, a table, a safe link) and nothing in it executes.
func TestMarkdownAnswerInBrowser(t *testing.T) {
	t.Parallel()
	const apiKey, user = "browser-api-key", "md-erin"
	srv := &server{URL: testserver.Start(t, "--dev", "--api-keys", apiKey, "--log-level", "warn").URL}
	publish := func(typ, runID string, data map[string]any) {
		t.Helper()
		srv.publish(t, apiKey, user, typ, runID, data)
	}

	b := newBrowser(t)
	b.login(srv.URL, user)
	b.do("trap alert", chromedp.Evaluate[chromedp.Void](`window.alert = () => { window.__pwned = "alert"; }`))
	b.ask("slow: say something")
	b.waitJS("the run to start", `!!document.querySelector(".run.running[data-run-id]")`, 10*time.Second)
	runID := eval[string](b, `document.querySelector(".run.running").dataset.runId`)
	// A tool call with nested arguments and a long result: shown on one
	// line, and in full, pretty-printed, folded under it.
	publish("tool_executing", runID, map[string]any{"tool_call_id": "t1", "tool": "search",
		"args": map[string]any{"query": "sea", "filters": map[string]any{"lang": "go", "year": 2026}}})
	publish("tool_completed", runID, map[string]any{"tool_call_id": "t1", "tool": "search", "ok": true, "duration_ms": 12,
		"result": map[string]any{"hits": []string{"the sea", "the wind", "the waves", "the shore", "the tide", "the storm"}}})
	b.waitJS("the tool's folded arguments and result", `document.querySelectorAll(".run .ev.tool .tool-io").length === 2`, 10*time.Second)
	io := eval[[]string](b, `[...document.querySelectorAll(".run .ev.tool .tool-io")].map(d => (d.open ? "open:" : "") + d.querySelector("summary").textContent + "=" + d.querySelector("pre").textContent)`)
	if len(io) != 2 || !strings.HasPrefix(io[0], "Arguments={\n  \"filters\": {") || !strings.HasPrefix(io[1], "Result={\n  \"hits\": [") {
		t.Errorf("tool arguments and result in full: %q", io)
	}

	// Streamed in two halves (the table is cut in the middle), then ended
	// with the whole answer as the final response.
	half := strings.Index(markdownAnswer, "| 2+2")
	publish("agent_message_delta", runID, map[string]any{"delta": markdownAnswer[:half]})
	publish("agent_message_delta", runID, map[string]any{"delta": markdownAnswer[half:]})
	publish("agent_completed", runID, map[string]any{"final_response": markdownAnswer})
	b.waitJS("the run to complete", `!!document.querySelector(".run.completed .answer table")`, 10*time.Second)

	type rendered struct {
		Strong, Code, CodeLang, CopyLabel string
		ListItems                         int
		Head                              []string
		Rows                              [][]string
		Imgs, Scripts, Handlers           int
		Links                             []struct{ Href, Rel, Target, Text string }
		Unsafe                            string
		Text                              string
	}
	got := eval[rendered](b, `(() => {
		const a = document.querySelector(".run.completed .answer");
		return {
			strong: a.querySelector("strong")?.textContent,
			code: a.querySelector("pre code")?.textContent,
			codeLang: a.querySelector(".code-lang")?.textContent,
			copyLabel: a.querySelector(".code-block button.copy")?.getAttribute("aria-label"),
			listItems: a.querySelectorAll("ol > li").length,
			head: [...a.querySelectorAll("table th")].map(e => e.textContent),
			rows: [...a.querySelectorAll("table tbody tr")].map(r => [...r.cells].map(c => c.textContent)),
			imgs: a.querySelectorAll("img").length,
			scripts: a.querySelectorAll("script").length,
			handlers: [...a.querySelectorAll("*")].filter(e => [...e.attributes].some(x => x.name.startsWith("on"))).length,
			links: [...a.querySelectorAll("a")].map(l => ({href: l.getAttribute("href"), rel: l.rel, target: l.target, text: l.textContent})),
			unsafe: a.querySelector(".unsafe-link")?.textContent,
			text: a.textContent,
		};
	})()`)
	if got.Strong != "the plan" || got.ListItems != 2 || got.Code != `fmt.Println("<b>hi</b>")` || got.CodeLang != "go" || !strings.HasPrefix(got.CopyLabel, "Copy") {
		t.Errorf("rendered %+v", got)
	}
	if strings.Join(got.Head, ",") != "op,result" || len(got.Rows) != 2 || strings.Join(got.Rows[0], ",") != "6*7,42" || strings.Join(got.Rows[1], ",") != "2+2,4" {
		t.Errorf("table head %v rows %v", got.Head, got.Rows)
	}
	if got.Imgs != 0 || got.Scripts != 0 || got.Handlers != 0 {
		t.Errorf("%d img, %d script, %d on* attributes in the answer: HTML must be shown as text", got.Imgs, got.Scripts, got.Handlers)
	}
	if !strings.Contains(got.Text, "<img src=x onerror=") || !strings.Contains(got.Text, "<script>") {
		t.Errorf("the HTML is not shown as text: %q", got.Text)
	}
	if len(got.Links) != 1 || got.Links[0].Href != "https://example.com/docs" || got.Links[0].Target != "_blank" || !strings.Contains(got.Links[0].Rel, "noopener") {
		t.Errorf("links %+v: want only the https one, opening safely", got.Links)
	}
	if got.Unsafe != "click me" {
		t.Errorf("the javascript: link's text %q, want it shown unlinked", got.Unsafe)
	}
	b.do("click the unsafe link", chromedp.Click(chromedp.CSS(`.run.completed .unsafe-link`)))
	b.do("copy the code", chromedp.Click(chromedp.CSS(`.run.completed button.copy`)))
	b.waitJS("the copy to be acknowledged", `document.querySelector(".run.completed button.copy").dataset.copied === "true"`, 5*time.Second)
	if pwned := eval[string](b, `String(window.__pwned ?? "")`); pwned != "" {
		t.Errorf("the answer executed script: %s", pwned)
	}
	b.screenshot("markdown")
}
