package demo_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agent/agenttest"
	"github.com/agentwire/agentwire/internal/agent/demo"
	"github.com/agentwire/agentwire/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func fast() *demo.Agent { return demo.New(demo.Options{Pace: -1, SlowDuration: -1}) }

func runOf(msgs ...string) agent.Run {
	r := agent.Run{ID: "r1", ThreadID: "t1", UserID: "alice"}
	for i, m := range msgs {
		role := "user"
		if i%2 == 1 {
			role = "assistant"
		}
		r.Messages = append(r.Messages, agent.Message{Role: role, Content: m})
	}
	return r
}

func TestArithmetic(t *testing.T) {
	t.Parallel()
	var rec agenttest.Recorder
	if err := fast().Run(context.Background(), runOf("what is 12*(3+4)?"), &rec); err != nil {
		t.Fatal(err)
	}
	final := rec.Completed(t)
	if !strings.Contains(final, "12*(3+4) = 84") {
		t.Errorf("final = %q", final)
	}
	if rec.Text() != final {
		t.Errorf("deltas %q != final %q", rec.Text(), final)
	}
	types := rec.Types()
	if types[0] != protocol.TypeAgentThinking || types[len(types)-1] != protocol.TypeAgentCompleted {
		t.Errorf("types = %v", types)
	}
	exec, done := rec.Of(protocol.TypeToolExecuting), rec.Of(protocol.TypeToolCompleted)
	if len(exec) != 1 || len(done) != 1 {
		t.Fatalf("tool events: %s", &rec)
	}
	if exec[0].Tool != "calculator" || string(exec[0].Args) != `{"expression":"12*(3+4)"}` {
		t.Errorf("tool_executing = %+v", exec[0])
	}
	if !done[0].OK || string(done[0].Result) != "84" || done[0].ToolCallID != exec[0].ToolCallID {
		t.Errorf("tool_completed = %+v", done[0])
	}
	if n := len(rec.Of(protocol.TypeAgentMessageDelta)); n < 3 {
		t.Errorf("%d deltas, want several", n)
	}
}

func TestAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		msgs     []string
		contains string
		tool     bool
	}{
		{"echo", []string{"hello there"}, `You said: "hello there"`, false},
		{"empty", []string{""}, "Hello!", false},
		{"division by zero", []string{"what about 1/0 ?"}, "I could not compute 1/0: division by zero.", true},
		{"decimals", []string{"0.1 + 0.2 please"}, "0.1 + 0.2 = 0.3", true},
		{"power", []string{"2^10"}, "2^10 = 1024", true},
		{"last user message", []string{"what is 1+1", "2", "and thanks"}, `You said: "and thanks"`, false},
		{"failure is not fail", []string{"a failure"}, `You said: "a failure"`, false},
		{"long echo", []string{strings.Repeat("word ", 100)}, "…", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var rec agenttest.Recorder
			if err := fast().Run(context.Background(), runOf(tt.msgs...), &rec); err != nil {
				t.Fatal(err)
			}
			final := rec.Completed(t)
			if !strings.Contains(final, tt.contains) || rec.Text() != final {
				t.Errorf("final = %q (deltas %q), want %q", final, rec.Text(), tt.contains)
			}
			if got := len(rec.Of(protocol.TypeToolExecuting)) == 1; got != tt.tool {
				t.Errorf("tool call = %v, want %v", got, tt.tool)
			}
			if n := len(rec.Of(protocol.TypeAgentMessageDelta)); n < 2 || n > 16 {
				t.Errorf("%d deltas", n)
			}
		})
	}
}

func TestFail(t *testing.T) {
	t.Parallel()
	for _, msg := range []string{"please fail", "FAIL now, 1+1", "Fail!"} {
		var rec agenttest.Recorder
		if err := fast().Run(context.Background(), runOf(msg), &rec); err != nil {
			t.Fatal(err)
		}
		code, message := rec.Failed(t)
		if code != protocol.CodeAgentFailed || !strings.Contains(message, "fail") {
			t.Errorf("%q: agent_error %s %q", msg, code, message)
		}
		if len(rec.Of(protocol.TypeAgentThinking)) == 0 || len(rec.Of(protocol.TypeAgentMessageDelta)) != 0 || len(rec.Of(protocol.TypeToolExecuting)) != 0 {
			t.Errorf("%q: events %s", msg, &rec)
		}
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	strip := func(evs []agenttest.Event) []agenttest.Event {
		for i := range evs {
			evs[i].ToolCallID, evs[i].Duration = "", 0
		}
		return evs
	}
	var a, b agenttest.Recorder
	_ = fast().Run(context.Background(), runOf("compute 3 * (2 + 5) - 1 now"), &a)
	_ = fast().Run(context.Background(), runOf("compute 3 * (2 + 5) - 1 now"), &b)
	if !reflect.DeepEqual(strip(a.Events()), strip(b.Events())) {
		t.Errorf("runs differ:%s\nvs%s", &a, &b)
	}
}

func TestPacing(t *testing.T) {
	t.Parallel()
	t.Run("default is quick", func(t *testing.T) {
		t.Parallel()
		for _, msg := range []string{"what is 12*(3+4)?", strings.Repeat("blah ", 500)} {
			var rec agenttest.Recorder
			start := time.Now()
			if err := demo.New(demo.Options{}).Run(context.Background(), runOf(msg), &rec); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < 100*time.Millisecond || d > 1500*time.Millisecond {
				t.Errorf("normal run took %v", d)
			}
		}
	})
	t.Run("slow", func(t *testing.T) {
		t.Parallel()
		var rec agenttest.Recorder
		var stamps []time.Time
		rec.OnEvent = func(agenttest.Event) { stamps = append(stamps, time.Now()) }
		start := time.Now()
		if err := demo.New(demo.Options{SlowDuration: 400 * time.Millisecond}).Run(context.Background(), runOf("slow: 2+2"), &rec); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 350*time.Millisecond || d > 1500*time.Millisecond {
			t.Errorf("slow run took %v, want about 400ms", d)
		}
		// Spread out: no single gap takes most of the time.
		for i := 1; i < len(stamps); i++ {
			if gap := stamps[i].Sub(stamps[i-1]); gap > 200*time.Millisecond {
				t.Errorf("gap %d is %v", i, gap)
			}
		}
		if !strings.Contains(rec.Completed(t), "2+2 = 4") {
			t.Errorf("final %q", rec.Completed(t))
		}
	})
}

func TestCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rec agenttest.Recorder
	rec.OnEvent = func(e agenttest.Event) {
		if e.Type == protocol.TypeAgentMessageDelta {
			cancel()
		}
	}
	a := demo.New(demo.Options{}) // slow: 2 s
	start := time.Now()
	err := a.Run(ctx, runOf("slow 12*(3+4)"), &rec)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("took %v after cancel", d)
	}
	if n := len(rec.Of(protocol.TypeAgentMessageDelta)); n != 1 {
		t.Errorf("%d deltas after cancel at the first", n)
	}
	if _, ok := rec.Terminal(); ok {
		t.Error("a cancelled run must leave the terminal event to the runs package")
	}
}

func TestStopsWhenRunEnded(t *testing.T) {
	t.Parallel()
	var rec agenttest.Recorder
	rec.OnEvent = func(e agenttest.Event) {
		if e.Type == protocol.TypeToolCompleted {
			rec.End()
		}
	}
	err := fast().Run(context.Background(), runOf("12*(3+4)"), &rec)
	if !errors.Is(err, agent.ErrRunEnded) {
		t.Fatalf("err = %v, want ErrRunEnded", err)
	}
	if last := rec.Types()[len(rec.Types())-1]; last != protocol.TypeToolCompleted {
		t.Errorf("events after the end: %s", &rec)
	}
}

func TestFindExpression(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"what is 12*(3+4)?", "12*(3+4)"},
		{"12*(3+4)", "12*(3+4)"},
		{"compute 3 * (2 + 5) - 1 now", "3 * (2 + 5) - 1"},
		{"(see 3+4)", "3+4"},
		{"1+1 and then 22*33", "22*33"},
		{"2^-1 and 2^3", "2^-1"},
		{"what is -5 + 2?", "-5 + 2"},
		{"a 1/0 b", "1/0"},
		{"-5", ""},
		{"(-5)", ""},
		{"pi is 3.14", ""},
		{"hello", ""},
		{"1 2 3", ""},
		{"++", ""},
		{"", ""},
		{"2024-01-15", "2024-01-15"},
		{strings.Repeat("(", 40000), ""},
		{strings.Repeat("1+(", 10000), ""},
	}
	for _, tt := range tests {
		got, ok := demo.FindExpression(tt.in)
		if got != tt.want || ok != (tt.want != "") {
			in := tt.in
			if len(in) > 40 {
				in = in[:40] + "…"
			}
			t.Errorf("FindExpression(%q) = %q, %v; want %q", in, got, ok, tt.want)
		}
	}
}

func TestHasWord(t *testing.T) {
	t.Parallel()
	tests := map[string]bool{"fail": true, "Please FAIL.": true, "x-fail-y": true, "failure": false, "unfail": false, "fail_safe": false, "": false}
	for in, want := range tests {
		if got := demo.HasWord(in, "fail"); got != want {
			t.Errorf("HasWord(%q) = %v", in, got)
		}
	}
}

func FuzzFindExpression(f *testing.F) {
	for _, s := range []string{"what is 12*(3+4)?", "1+(2", "((1+2)*3)-(4", "-5 - -5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, ok := demo.FindExpression(in)
		if ok && (!strings.Contains(in, got) || got == "") {
			t.Fatalf("FindExpression(%q) = %q", in, got)
		}
	})
}
