package browsertest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// geometryJS measures what the layout promises: the page itself never
// scrolls, the composer is on screen, the message pane scrolls on its own
// and its newest answer is inside it.
const geometryJS = `(() => {
	const r = (e) => { const b = e.getBoundingClientRect(); return {top: b.top, bottom: b.bottom, left: b.left, right: b.right}; };
	const box = document.getElementById("messages");
	const answers = document.querySelectorAll(".run .answer");
	const last = answers[answers.length - 1];
	return {
		vw: innerWidth, vh: innerHeight,
		pageHeight: document.documentElement.scrollHeight,
		pageWidth: document.documentElement.scrollWidth,
		composer: r(document.getElementById("composer")),
		input: r(document.getElementById("composer-input")),
		pane: r(box),
		paneScrolls: box.scrollHeight > box.clientHeight,
		answer: last ? r(last) : null,
		answerText: last ? last.textContent : "",
		pill: !document.getElementById("new-below").hidden,
	};
})()`

type rect struct{ Top, Bottom, Left, Right float64 }

type geometry struct {
	VW, VH                float64
	PageHeight, PageWidth float64
	Composer, Input, Pane rect
	PaneScrolls           bool
	Answer                *rect
	AnswerText            string
	Pill                  bool
}

func (g geometry) check(t *testing.T) {
	t.Helper()
	if g.PageHeight > g.VH+1 || g.PageWidth > g.VW+1 {
		t.Errorf("the page is %vx%v in a %vx%v viewport: it must not scroll itself", g.PageWidth, g.PageHeight, g.VW, g.VH)
	}
	if g.Composer.Top < 0 || g.Composer.Bottom > g.VH+1 || g.Input.Right > g.VW+1 || g.Input.Bottom-g.Input.Top < 20 {
		t.Errorf("composer %+v (input %+v) is not on a %vx%v screen", g.Composer, g.Input, g.VW, g.VH)
	}
	if !g.PaneScrolls {
		t.Errorf("the message pane does not scroll on its own (pane %+v)", g.Pane)
	}
	if g.Answer == nil {
		t.Fatal("no answer on the page")
	}
	if a := g.Answer; a.Top < g.Pane.Top-1 || a.Bottom > g.Pane.Bottom+1 || a.Bottom > g.Composer.Top+1 {
		t.Errorf("newest answer %+v is not in view (pane %+v, composer %+v)", *a, g.Pane, g.Composer)
	}
}

// After ten exchanges the composer is still on screen and the newest answer
// in view, on a laptop and on a phone; a reader who scrolls up is left there
// and offered a way back down.
func TestLayoutHoldsInBrowser(t *testing.T) {
	t.Parallel()
	for _, vp := range []struct {
		name string
		w, h int64
	}{{"desktop", 1280, 800}, {"narrow", 390, 844}} {
		t.Run(vp.name, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t)
			b := newBrowser(t)
			b.do("viewport", chromedp.EmulateViewport(vp.w, vp.h))
			b.login(srv.URL, "layout-"+vp.name)
			var want string
			for i := 1; i <= 10; i++ {
				b.ask(fmt.Sprintf("what is %d*11?", i))
				want = fmt.Sprint(i * 11)
				b.waitJS(fmt.Sprintf("answer %d", i), fmt.Sprintf(`document.querySelectorAll(".run.completed").length === %d`, i), 15*time.Second)
			}
			// The last delta may land a frame after the completion class.
			b.waitJS("the pane to settle", `(() => { const m = document.getElementById("messages"); return m.scrollHeight - m.scrollTop - m.clientHeight < 2; })()`, 5*time.Second)
			g := eval[geometry](b, geometryJS)
			if !strings.Contains(g.AnswerText, want) {
				t.Fatalf("newest answer %q does not contain %s", g.AnswerText, want)
			}
			g.check(t)
			b.screenshot("10-exchanges")

			// Scrolled up while a run goes on: the pane stays, the pill shows.
			// (The run waits for an approval, given without scrolling, so
			// its answer comes after the scroll however slow the machine.)
			b.ask("approve: what is 6*7?")
			b.waitJS("the run to ask", `!!document.querySelector(".run.running .prompt button.approve")`, 10*time.Second)
			b.do("scroll up", chromedp.Evaluate[chromedp.Void](`document.getElementById("messages").scrollTop = 0`))
			b.waitJS("the scroll", `document.getElementById("messages").scrollTop === 0`, 5*time.Second)
			b.do("approve", chromedp.Evaluate[chromedp.Void](`document.querySelector(".run.running .prompt button.approve").click()`))
			b.waitJS("the pill", `!document.getElementById("new-below").hidden`, 10*time.Second)
			b.waitJS("the run to end", `document.querySelectorAll(".run.completed").length === 11`, 15*time.Second)
			if top := eval[float64](b, `document.getElementById("messages").scrollTop`); top > 1 {
				t.Errorf("the pane scrolled to %v although the reader had scrolled up", top)
			}
			b.do("click the pill", chromedp.Click(chromedp.ID("new-below")))
			g = eval[geometry](b, geometryJS)
			if g.Pill {
				t.Error("the pill is still shown at the bottom")
			}
			g.check(t)

			if vp.w < 700 {
				// The thread list is a drawer: closed, it takes no room.
				if x := eval[float64](b, `document.getElementById("threads").getBoundingClientRect().right`); x > 1 {
					t.Errorf("closed drawer reaches x=%v", x)
				}
				b.do("open the drawer", chromedp.Click(chromedp.ID("threads-toggle")))
				b.waitJS("the drawer", `document.getElementById("threads").getBoundingClientRect().left >= 0 && document.querySelectorAll("#thread-list .thread").length > 0`, 5*time.Second)
				b.screenshot("drawer")
				b.do("pick the thread", chromedp.Click(chromedp.CSS(`#thread-list button.thread`)))
				b.waitJS("the drawer to close", `!document.getElementById("app").classList.contains("drawer-open")`, 5*time.Second)
			}
		})
	}
}
