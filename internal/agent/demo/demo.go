// Package demo is the built-in agent of section 9 of the wire contract: it
// needs no network and no model, answers deterministically, and exercises
// every event type, so a fresh install shows the whole protocol.
//
// For each message it thinks, calls the calculator when the message holds
// arithmetic ("what is 12*(3+4)?" → "12*(3+4) = 84"), streams its answer
// word by word and completes. The word "fail" makes it end with agent_error
// agent_failed; the word "slow" makes the run take about two seconds, so
// stop_agent and disconnects can be tried mid-run.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/tools"
	"github.com/agentwire/agentwire/protocol"
)

// Pacing defaults.
const (
	// DefaultPace is the pause between two steps of a normal run.
	DefaultPace = 30 * time.Millisecond
	// DefaultSlowDuration is about how long a "slow" run takes.
	DefaultSlowDuration = 2 * time.Second
	// maxNormalDuration caps the pauses of a normal run, whatever its length.
	maxNormalDuration = 400 * time.Millisecond
	// maxChunks bounds the number of deltas of one answer.
	maxChunks = 16
	// echoRunes is how much of the message an echo answer quotes.
	echoRunes = 120
)

// Options tune the demo agent; the zero value is the default behaviour.
type Options struct {
	// Pace is the pause between two steps (thinking, tool call, each chunk
	// of the answer) of a normal run: 0 means DefaultPace, negative none.
	// The pauses of one run never add up to more than 400 ms.
	Pace time.Duration
	// SlowDuration is about how long a run for a message containing the
	// word "slow" takes, spread evenly over its steps: 0 means
	// DefaultSlowDuration, negative no pause.
	SlowDuration time.Duration
}

// Agent is the demo agent. It is safe for concurrent runs.
type Agent struct {
	pace, slow time.Duration
	tools      *tools.Registry
}

var _ agent.Agent = (*Agent)(nil)

// New returns a demo agent.
func New(opts Options) *Agent {
	a := &Agent{pace: opts.Pace, slow: opts.SlowDuration, tools: tools.New(tools.Calculator())}
	if a.pace == 0 {
		a.pace = DefaultPace
	}
	if a.slow == 0 {
		a.slow = DefaultSlowDuration
	}
	return a
}

// Name is "demo".
func (a *Agent) Name() string { return "demo" }

// step is one thing the run does, followed by a pause unless it is last.
type step func(ctx context.Context, em agent.Emitter) error

// Run answers the last user message of run.
func (a *Agent) Run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	msg := lastUserMessage(run.Messages)
	msg, done, err := a.ask(ctx, msg, em)
	if done || err != nil {
		return err
	}
	steps := []step{thinking("Reading your message.")}
	switch expr, hasExpr := FindExpression(msg); {
	case HasWord(msg, "fail"):
		steps = append(steps,
			thinking(`The message contains the word "fail", so I will fail on purpose.`),
			func(_ context.Context, em agent.Emitter) error {
				return em.Fail(protocol.CodeAgentFailed, `the demo agent failed on purpose: the message contains the word "fail"`)
			})
	case hasExpr:
		var answer string
		steps = append(steps,
			thinking(fmt.Sprintf("The message contains arithmetic: %s. Let me use the calculator.", expr)),
			func(ctx context.Context, em agent.Emitter) error {
				args, _ := json.Marshal(map[string]string{"expression": expr})
				res, err := tools.CallTool(ctx, em, a.tools, "", "calculator", args)
				var toolErr *tools.CallError
				switch {
				case errors.As(err, &toolErr):
					answer = fmt.Sprintf("I could not compute %s: %v.", expr, toolErr.Err)
				case err != nil:
					return err
				default:
					answer = fmt.Sprintf("The calculator says %s = %s.", expr, tools.FormatNumber(res.(float64)))
				}
				return nil
			})
		// The answer is known only after the tool ran; chunks read it then.
		steps = append(steps, answerSteps(func() string { return answer }, calcChunks)...)
	default:
		answer := echo(msg)
		steps = append(steps, thinking("There is no arithmetic in it, so I will just answer."))
		steps = append(steps, answerSteps(func() string { return answer }, len(chunk(answer)))...)
	}

	pause := a.pauseFor(HasWord(msg, "slow"), len(steps)-1)
	for i, s := range steps {
		if i > 0 {
			if err := sleep(ctx, pause); err != nil {
				return err
			}
		}
		if err := s(ctx, em); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
	return nil
}

// calcChunks is how many delta steps a calculator answer gets; the answer
// is chunked to fit once it is known.
const calcChunks = 8

// The demo's questions (human in the loop): "approve" asks for approval
// before anything else (a denial ends the run with an answer that says so),
// "ask" asks for text and "choose" for one of ChoiceOptions; the text or
// choice then stands for the message (so an answer "2+3" is computed).
var ChoiceOptions = []string{"red", "green", "blue"}

// Prompts of the demo's questions.
const (
	ApprovalPrompt = "May I answer your message?"
	TextPrompt     = "What should I answer? (arithmetic is computed)"
	ChoicePrompt   = "Pick a colour."
	// DeniedAnswer is the whole answer after a denial.
	DeniedAnswer = "You denied the request, so I did nothing."
)

// ask asks what msg calls for and returns the message to answer; done
// when the run has already ended (denied).
func (a *Agent) ask(ctx context.Context, msg string, em agent.Emitter) (string, bool, error) {
	switch {
	case HasWord(msg, "approve"):
		ans, err := em.RequestInput(ctx, agent.InputRequest{Kind: protocol.InputApproval, Prompt: ApprovalPrompt})
		if err != nil {
			return "", true, err
		}
		if !*ans.Approved {
			if err := em.Thinking("The request was denied."); err != nil {
				return "", true, err
			}
			return "", true, em.Complete(DeniedAnswer)
		}
	case HasWord(msg, "ask"):
		ans, err := em.RequestInput(ctx, agent.InputRequest{Kind: protocol.InputText, Prompt: TextPrompt})
		if err != nil {
			return "", true, err
		}
		return *ans.Text, false, nil
	case HasWord(msg, "choose"):
		ans, err := em.RequestInput(ctx, agent.InputRequest{Kind: protocol.InputChoice, Prompt: ChoicePrompt, Options: ChoiceOptions})
		if err != nil {
			return "", true, err
		}
		return *ans.Choice, false, nil
	}
	return msg, false, nil
}

// answerSteps streams answer() in n deltas, then completes with it.
func answerSteps(answer func() string, n int) []step {
	var steps []step
	for i := range n {
		steps = append(steps, func(_ context.Context, em agent.Emitter) error {
			c := chunkInto(answer(), n)
			if c[i] == "" {
				return nil
			}
			return em.Delta(c[i])
		})
	}
	return append(steps, func(_ context.Context, em agent.Emitter) error { return em.Complete(answer()) })
}

func thinking(text string) step {
	return func(_ context.Context, em agent.Emitter) error { return em.Thinking(text) }
}

func (a *Agent) pauseFor(slow bool, pauses int) time.Duration {
	if pauses <= 0 {
		return 0
	}
	if slow {
		return max(a.slow/time.Duration(pauses), 0)
	}
	return max(min(a.pace, maxNormalDuration/time.Duration(pauses)), 0)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func lastUserMessage(msgs []agent.Message) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			return msgs[i].Content
		}
	}
	return ""
}

// echo is the answer to a message without arithmetic.
func echo(msg string) string {
	quoted := strings.Join(strings.Fields(msg), " ")
	if utf8.RuneCountInString(quoted) > echoRunes {
		quoted = string([]rune(quoted)[:echoRunes]) + "…"
	}
	if quoted == "" {
		return `Hello! I am the demo agent. Ask me some arithmetic, like "what is 12*(3+4)?", and I will use my calculator.`
	}
	return fmt.Sprintf(`You said: "%s". I am the demo agent, so I answer without a model. Ask me some arithmetic, like "what is 12*(3+4)?", and I will use my calculator.`, quoted)
}

// chunk splits s after each space: the chunks concatenate back to s.
func chunk(s string) []string {
	var out []string
	for _, w := range strings.SplitAfter(s, " ") {
		if w != "" {
			out = append(out, w)
		}
	}
	if len(out) > maxChunks {
		return chunkInto(s, maxChunks)
	}
	return out
}

// chunkInto splits s into exactly n pieces of whole words (some may be
// empty), concatenating back to s.
func chunkInto(s string, n int) []string {
	words := strings.SplitAfter(s, " ")
	out := make([]string, n)
	for i, w := range words {
		out[i*n/len(words)] += w
	}
	return out
}

// HasWord reports whether text contains word as a whole word, ignoring case:
// "Please FAIL." has "fail", "failure" does not.
func HasWord(text, word string) bool {
	isWordRune := func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' }
	for _, w := range strings.FieldsFunc(text, func(r rune) bool { return !isWordRune(r) }) {
		if strings.EqualFold(w, word) {
			return true
		}
	}
	return false
}
