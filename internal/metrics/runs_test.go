package metrics_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/metrics"
)

// TestToolLabelsCapped: an agent naming endless tools cannot grow the
// registry past MaxToolLabels names; the rest, and names unfit for a
// label, count as other.
func TestToolLabelsCapped(t *testing.T) {
	m := metrics.New()
	r := m.Runs("demo")
	for i := range metrics.MaxToolLabels + 10 {
		r.ToolCall(fmt.Sprintf("tool-%d", i), true, time.Millisecond)
	}
	r.ToolCall("\xff\xfe", false, time.Millisecond)
	r.ToolCall(strings.Repeat("x", 1000), false, -1)
	r.ToolCall("tool-0", true, time.Millisecond) // a known name keeps its label

	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	tools := make(map[string]float64)
	for _, f := range fams {
		if f.GetName() != "agentwire_tool_calls_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "tool" {
					tools[l.GetValue()] += s.GetCounter().GetValue()
				}
			}
		}
	}
	if len(tools) != metrics.MaxToolLabels+1 {
		t.Errorf("%d tool labels, want %d names and other", len(tools), metrics.MaxToolLabels)
	}
	if tools[metrics.ToolOther] != 12 || tools["tool-0"] != 2 {
		t.Errorf("other counted %v calls (want 12), tool-0 %v (want 2)", tools[metrics.ToolOther], tools["tool-0"])
	}
}

// TestRunsHotPathAllocs: recording a run's events allocates nothing.
func TestRunsHotPathAllocs(t *testing.T) {
	r := metrics.New().Runs("demo")
	r.ToolCall("calculator", true, time.Millisecond)
	var nilRuns *metrics.Runs
	if n := testing.AllocsPerRun(100, func() {
		r.FirstEvent(time.Millisecond)
		r.FirstDelta(time.Millisecond)
		r.ToolCall("calculator", true, time.Millisecond)
		r.Tokens(10, 20)
		r.Ended("completed", time.Second)
		nilRuns.Ended("completed", time.Second)
	}); n != 0 {
		t.Errorf("%v allocations per run's events", n)
	}
}

// BenchmarkRunsHotPath is what a run's events cost the recorder.
func BenchmarkRunsHotPath(b *testing.B) {
	r := metrics.New().Runs("demo")
	b.ReportAllocs()
	for b.Loop() {
		r.FirstDelta(time.Millisecond)
		r.ToolCall("calculator", true, time.Millisecond)
		r.Ended("completed", time.Second)
	}
}
