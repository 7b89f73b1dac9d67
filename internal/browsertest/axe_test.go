package browsertest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/agentwire/agentwire/internal/testserver"
)

const squaresAnswer = "Here are the **squares** of the first numbers, and how to print them:\n\n" +
	"1. loop from 1 to 4\n2. multiply each number by itself\n\n" +
	"```go\nfor i := 1; i <= 4; i++ {\n\tfmt.Println(i, i*i)\n}\n```\n\n" +
	"| n | n² |\n|---|---:|\n| 1 | 1 |\n| 2 | 4 |\n| 3 | 9 |\n| 4 | 16 |\n\n" +
	"See [the Go tour](https://go.dev/tour/) for more."

// axeSource is axe-core, installed by `npm ci` in testdata/axe (scripts/test
// does it). Without it the test skips loudly, unless CI=true: then it fails.
func axeSource(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "axe", "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		msg := "\n!!! ACCESSIBILITY TEST NOT RUN: internal/browsertest/testdata/axe/node_modules is missing (run npm ci there)\n"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "CI=true: it must run in CI")
		}
		fmt.Fprint(os.Stderr, msg)
		t.Skip(msg)
	}
	return string(src)
}

// colorScheme emulates prefers-color-scheme: "light" or "dark".
func colorScheme(scheme string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
		})
		return err
	})
}

type axeViolation struct {
	ID, Impact, Help string
	Nodes            []string
}

// axeJS runs axe-core on the whole page and returns its serious and
// critical violations.
const axeJS = `axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations
	.filter(v => v.impact === "serious" || v.impact === "critical")
	.map(v => ({id: v.id, impact: v.impact, help: v.help,
		nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + ": " + (n.failureSummary || "").replace(/\s+/g, " "))})))`

// checkA11y injects axe-core if needed and fails the test on any serious
// or critical violation in the page as it is.
func (b *browser) checkA11y(src, state string) {
	b.t.Helper()
	if !eval[bool](b, `typeof window.axe === "object"`) {
		if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](src+"\n;true")); err != nil {
			b.t.Fatalf("inject axe-core: %v", err)
		}
	}
	vs, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]axeViolation](axeJS, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("axe on %s: %v", state, err)
	}
	for _, v := range vs {
		b.t.Errorf("axe, %s: %s %s (%s):\n\t%s", state, v.Impact, v.ID, v.Help, strings.Join(v.Nodes, "\n\t"))
	}
}

// Zero serious or critical axe-core violations on the empty page, a
// finished run, a running run and the narrow layout (drawer open too), in
// light and dark; screenshots of each layout, theme and state.
func TestAccessibilityInBrowser(t *testing.T) {
	t.Parallel()
	src := axeSource(t)
	const apiKey = "browser-api-key"
	srv := &server{URL: testserver.Start(t, "--dev", "--api-keys", apiKey, "--log-level", "warn").URL}
	b := newBrowser(t)
	b.do("desktop", chromedp.EmulateViewport(1280, 800))
	b.do("open the page", chromedp.Navigate(srv.URL), chromedp.WaitVisible(chromedp.ID("dev-user")))
	b.checkA11y(src, "the login page")
	b.login(srv.URL, "ivan")
	schemes := []string{"light", "dark"}
	each := func(state, shot string) {
		t.Helper()
		for _, s := range schemes {
			b.do("theme "+s, colorScheme(s))
			b.checkA11y(src, state+" ("+s+")")
			if shot != "" {
				b.screenshot(shot + "-" + s)
			}
		}
	}
	each("the empty page", "desktop-empty")

	b.ask("what is 12*(3+4)?")
	b.waitJS("the first run to complete", `document.querySelectorAll(".run.completed").length === 1`, 15*time.Second)
	// An answer in Markdown (as an external agent would publish it into
	// its run): a list, a code block with its copy button, a table.
	b.ask("slow: show me squares in Go")
	b.waitJS("the second run to start", `!!document.querySelector(".run.running[data-run-id]")`, 10*time.Second)
	runID := eval[string](b, `document.querySelector(".run.running").dataset.runId`)
	srv.publish(t, apiKey, "ivan", "agent_completed", runID, map[string]any{"final_response": squaresAnswer})
	b.waitJS("the second run to complete", `document.querySelectorAll(".run.completed").length === 2 && !!document.querySelector(".run.completed .answer table")`, 15*time.Second)
	each("a finished run", "desktop-conversation")

	b.ask("slow: what is 6*7?")
	b.waitJS("a running run", `document.querySelectorAll(".run.running .timeline li").length >= 2`, 10*time.Second)
	each("a running run", "desktop-running")
	b.waitJS("the slow run to complete", `document.querySelectorAll(".run.completed").length === 3`, 15*time.Second)

	b.do("narrow", chromedp.EmulateViewport(390, 844))
	each("the narrow layout", "narrow-conversation")
	b.do("open the drawer", chromedp.Click(chromedp.ID("threads-toggle")))
	b.waitJS("the drawer", `document.getElementById("app").classList.contains("drawer-open")`, 5*time.Second)
	each("the narrow layout with the drawer open", "narrow-drawer")
	b.do("new conversation", chromedp.Click(chromedp.ID("new-thread")))
	b.waitJS("the empty conversation", `!!document.querySelector(".examples")`, 5*time.Second)
	each("the narrow empty page", "narrow-empty")
}
