package browsertest

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestInputPromptInBrowser: a run that asks shows Approve/Deny in every tab
// of the thread, one that saw it live and one opened after the question;
// answering in one closes the prompt in both, and the run goes on.
func TestInputPromptInBrowser(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	a, b := newBrowser(t), newBrowser(t)
	a.login(srv.URL, "erin")
	a.ask("please approve 6*7")
	a.waitJS("the prompt in tab A", `!!document.querySelector(".run .prompt button.approve")`, 10*time.Second)
	b.login(srv.URL+"/"+eval[string](a, `location.hash`), "erin") // opened after the question
	b.waitJS("the prompt in tab B", `!!document.querySelector(".run .prompt button.approve")`, 10*time.Second)
	if st := eval[string](b, `document.querySelector(".run .status").textContent`); st != "waiting for input" {
		t.Errorf("status %q while the run waits, want waiting for input", st)
	}
	b.screenshot("asking")
	b.do("approve in tab B", chromedp.Click(chromedp.CSS(`.run .prompt button.approve`)))
	for name, tab := range map[string]*browser{"A": a, "B": b} {
		tab.waitJS("the run to complete in tab "+name, `!!document.querySelector(".run.completed") && !document.querySelector(".prompt")`, 10*time.Second)
		if ans := eval[string](tab, `document.querySelector(".run .answer").textContent`); !strings.Contains(ans, "42") {
			t.Errorf("tab %s: answer %q, want 42", name, ans)
		}
		if lines := eval[string](tab, `document.querySelector(".run .timeline").textContent`); !strings.Contains(lines, "Answered: approved") {
			t.Errorf("tab %s: timeline %q does not show the answer", name, lines)
		}
	}
}
