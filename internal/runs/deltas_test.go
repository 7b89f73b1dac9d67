package runs

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/protocol"
)

const testWindow = 15 * time.Millisecond

// runEvents reads the stream's events of runID (every event of user, when
// runID is ""), checking their seqs have no gap.
func runEvents(t *testing.T, s stream.Stream, user, runID string) []stream.Event {
	t.Helper()
	all, _, err := s.Since(context.Background(), user, protocol.Cursor{}, stream.Limit{})
	if err != nil {
		t.Fatal(err)
	}
	var out []stream.Event
	for i, e := range all {
		if i > 0 && e.Seq != all[i-1].Seq+1 {
			t.Fatalf("seq %d after %d", e.Seq, all[i-1].Seq)
		}
		if e.RunID == runID {
			out = append(out, e)
		}
	}
	return out
}

// shape is the run's events after the echo and agent_started: each delta
// as its text in brackets, every other event as its type; and the final
// answer when the run completed.
func shape(t *testing.T, evs []stream.Event) (string, string) {
	t.Helper()
	var parts []string
	final := ""
	for _, e := range evs[2:] {
		switch e.Type {
		case protocol.TypeAgentMessageDelta:
			var d protocol.AgentMessageDelta
			if err := json.Unmarshal(e.Data, &d); err != nil || d.MessageID == "" {
				t.Fatalf("delta %s: %v", e.Data, err)
			}
			parts = append(parts, "["+d.Delta+"]")
		case protocol.TypeAgentCompleted:
			var d protocol.AgentCompleted
			_ = json.Unmarshal(e.Data, &d)
			final = d.FinalResponse
			parts = append(parts, e.Type)
		default:
			parts = append(parts, e.Type)
		}
	}
	return strings.Join(parts, " "), final
}

// Deltas an agent emits are coalesced within the window, flushed before any
// other event of the run, at the byte cap and at the end; the text, the
// answer and the seqs are what they would be without the window.
func TestDeltaWindow(t *testing.T) {
	t.Parallel()
	big := func(c string, n int) string { return strings.Repeat(c, n) }
	type step func(em agent.Emitter) error
	d := func(s string) step { return func(em agent.Emitter) error { return em.Delta(s) } }
	sleep := func(dur time.Duration) step {
		return func(agent.Emitter) error { time.Sleep(dur); return nil }
	}
	tool := func(em agent.Emitter) error {
		if err := em.ToolExecuting("c1", "calculator", map[string]any{"expression": "1+1"}); err != nil {
			return err
		}
		return em.ToolCompleted(agent.ToolResult{CallID: "c1", Tool: "calculator", OK: true, Result: 2})
	}
	think := func(em agent.Emitter) error { return em.Thinking("hm") }
	cases := []struct {
		name   string
		window time.Duration
		steps  []step
		end    string // "complete", "return" (no Complete)
		want   string
	}{
		{"within one window", testWindow, []step{d("Hel"), d("lo"), d(", "), d("world.")}, "complete",
			"[Hel] [lo, world.] agent_completed"},
		{"across windows", testWindow, []step{d("a"), d("b"), d("c"), sleep(2 * testWindow), d("d"), d("e"), sleep(testWindow / 2), d("f"), sleep(2 * testWindow), d("g"), d("h")}, "complete",
			"[a] [bc] [d] [ef] [g] [h] agent_completed"},
		{"before a tool call", testWindow, []step{d("a"), d("b"), tool, d("c")}, "complete",
			"[a] [b] tool_executing tool_completed [c] agent_completed"},
		{"before thinking", testWindow, []step{d("a"), think, d("b")}, "complete",
			"[a] agent_thinking [b] agent_completed"},
		{"before the end of an agent that does not finish", testWindow, []step{d("a"), d("b")}, "return",
			"[a] [b] agent_error"},
		{"at the byte cap", testWindow, []step{d(big("x", 10<<10)), d(big("y", 10<<10)), d("z")}, "complete",
			"[" + big("x", 10<<10) + "] [" + big("y", 10<<10) + "z] agent_completed"},
		{"a delta over the cap alone", testWindow, []step{d("a"), d(big("x", 20<<10)), d("b")}, "complete",
			"[a] [" + big("x", 20<<10) + "] [b] agent_completed"},
		{"window 0: every delta", 0, []step{d("a"), d("b"), d("c")}, "complete",
			"[a] [b] [c] agent_completed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
					for _, s := range tc.steps {
						if err := s(em); err != nil {
							return err
						}
					}
					if tc.end == "complete" {
						return em.Complete("")
					}
					return nil
				}), Config{DeltaWindow: tc.window})
				ack, perr := f.send(t, "u", "go", "")
				if perr != nil {
					t.Fatal(perr)
				}
				f.waitTerminal(t, "u", ack.RunID)
				evs := runEvents(t, f.stream, "u", ack.RunID)
				got, final := shape(t, evs)
				if got != tc.want {
					t.Fatalf("events\n %.300s\nwant\n %.300s", got, tc.want)
				}
				joined := joinDeltas(evs)
				if tc.end == "complete" && final != joined {
					t.Fatalf("final_response %q, deltas joined %q", final, joined)
				}
				checkStoredText(t, f, "u", ack, joined, tc.end == "complete")
			})
		})
	}
}

// joinDeltas is the text of the deltas among evs.
func joinDeltas(evs []stream.Event) string {
	var b strings.Builder
	for _, e := range evs {
		if e.Type == protocol.TypeAgentMessageDelta {
			var d protocol.AgentMessageDelta
			_ = json.Unmarshal(e.Data, &d)
			b.WriteString(d.Delta)
		}
	}
	return b.String()
}

// checkStoredText checks the transcript's folded deltas join to text and,
// for a completed run, that the stored answer is text.
func checkStoredText(t *testing.T, f *fixture, user string, ack protocol.AckFrame, text string, completed bool) {
	t.Helper()
	var b strings.Builder
	for _, e := range f.transcriptOf(t, user, ack.RunID) {
		if e.Type == protocol.TypeAgentMessageDelta {
			var d protocol.AgentMessageDelta
			_ = json.Unmarshal(e.Data, &d)
			b.WriteString(strings.TrimSuffix(d.Delta, protocol.TruncatedMarker))
		}
	}
	if tr := b.String(); !strings.HasPrefix(text, tr) || (len(text) <= maxStepBytes && tr != text) {
		t.Fatalf("transcript deltas %.80q…, want %.80q…", tr, text)
	}
	if !completed {
		return
	}
	msgs, _, err := f.store.ListMessages(context.Background(), user, ack.ThreadID, store.MessageQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(msgs); n != 2 || msgs[1].Content != text {
		t.Fatalf("stored messages %d, answer %.80q…, want %.80q…", n, msgs[n-1].Content, text)
	}
}

// A run stopped, timed out or shut down while it holds delta text appends
// that text before its agent_error: nothing is lost.
func TestDeltaWindowEndMidWindow(t *testing.T) {
	t.Parallel()
	ends := map[string]func(f *fixture, user string, ack protocol.AckFrame){
		"stop": func(f *fixture, user string, ack protocol.AckFrame) {
			if _, e := f.m.StopAgent(context.Background(), user, &protocol.Frame{ID: "s", RunID: ack.RunID}); e != nil {
				t.Fatal(e)
			}
		},
		"shutdown": func(f *fixture, _ string, _ protocol.AckFrame) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // do not wait for the run
			f.m.Shutdown(ctx)
		},
	}
	for name, end := range ends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				held := make(chan struct{})
				f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
					_ = em.Delta("half an ")
					_ = em.Delta("answer")
					close(held)
					<-ctx.Done()
					return ctx.Err()
				}), Config{DeltaWindow: time.Hour})
				ack, perr := f.send(t, "u", "go", "")
				if perr != nil {
					t.Fatal(perr)
				}
				<-held
				end(f, "u", ack)
				f.waitTerminal(t, "u", ack.RunID)
				evs := runEvents(t, f.stream, "u", ack.RunID)
				if got, _ := shape(t, evs); got != "[half an ] [answer] agent_error" {
					t.Fatalf("events %s", got)
				}
				checkStoredText(t, f, "u", ack, "half an answer", false)
			})
		})
	}
}

// A published event of a run that holds delta text comes after that text.
// ("one " is the run's first delta, appended at once; "two" is held.)
func TestDeltaWindowFlushedBeforeAPublishedEvent(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		held, done := make(chan struct{}), make(chan struct{})
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			_ = em.Delta("one ")
			close(held)
			<-done
			_ = em.Delta("two")
			return em.Complete("")
		}), Config{DeltaWindow: time.Hour})
		ack, _ := f.send(t, "u", "go", "")
		<-held
		if _, err := f.m.Publish("u", ack.RunID, protocol.TypeAgentThinking, json.RawMessage(`{"text":"from the backend"}`)); err != nil {
			t.Fatal(err)
		}
		close(done)
		f.waitTerminal(t, "u", ack.RunID)
		if got, final := shape(t, runEvents(t, f.stream, "u", ack.RunID)); got != "[one ] agent_thinking [two] agent_completed" || final != "one two" {
			t.Fatalf("events %s, final %q", got, final)
		}
	})
}

// A stream that refuses held text when its window passes ends the run,
// as a refused Delta would: agent_error once the stream is back, and the
// agent's next call learns the run ended.
func TestDeltaWindowStreamRefusesTheFlush(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New(memory.Options{})
		defer mem.Close()
		fs := &failingStream{Stream: mem}
		db := openStore(t)
		held, next := make(chan struct{}), make(chan error, 1)
		ag := agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			_ = em.Delta("first") // the first delta goes at once
			_ = em.Delta("lost")  // held for the window
			fs.failing.Store(true)
			close(held)
			<-ctx.Done() // ended by the failed flush
			next <- em.Delta("more")
			return nil
		})
		m := New(Config{Stream: fs, Store: db, Agent: ag, DeltaWindow: testWindow})
		m.Start()
		defer m.Shutdown(context.Background())
		ack, perr := m.UserMessage(context.Background(), "u", &protocol.Frame{Content: "hi"})
		if perr != nil {
			t.Fatal(perr)
		}
		<-held
		if err := <-next; err != agent.ErrRunEnded {
			t.Fatalf("Delta after the failed flush: %v, want ErrRunEnded", err)
		}
		fs.failing.Store(false)
		f := &fixture{m: m, stream: mem, store: db}
		evs := f.waitTerminal(t, "u", ack.RunID)
		checkOrder(t, evs)
		if last := evs[len(evs)-1]; last.Data["code"] != string(protocol.CodeAgentFailed) || last.Data["message"] != streamLostMessage {
			t.Fatalf("terminal %v", last)
		}
	})
}
