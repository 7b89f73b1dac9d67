package metrics

import (
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes are the outcome label values of agentwire_runs_total: a run's
// REST status once it ended, and node_lost for a run whose node died,
// counted by the node that reaped it.
var Outcomes = []string{"completed", "failed", "cancelled", "timeout", OutcomeNodeLost}

// OutcomeNodeLost is the outcome of a run reaped after its node died.
const OutcomeNodeLost = "node_lost"

// MaxToolLabels is how many distinct tool names get a tool label of their
// own; the calls of any further tool are counted under ToolOther. Tool names
// come from agents and MCP servers, so without a bound one agent could grow
// the registry without end.
const MaxToolLabels = 64

// maxToolName bounds a tool name used as a label: a longer one, or one that
// is not valid UTF-8, counts as ToolOther.
const maxToolName = 128

// ToolOther is the tool label of calls past MaxToolLabels distinct names.
const ToolOther = "other"

// Runs records the runs of one agent, their first events and their tool
// calls. Its label children are resolved once, in Metrics.Runs, so the hot
// path costs a lookup in a map that never changes and no allocation. A nil
// *Runs records nothing.
type Runs struct {
	agent      string
	outcomes   map[string]prometheus.Counter
	vec        *prometheus.CounterVec
	duration   prometheus.Observer
	firstEvent prometheus.Observer
	firstDelta prometheus.Observer
	tokensIn   prometheus.Counter
	tokensOut  prometheus.Counter
	tools      *toolLabels
}

// Runs returns the recorder of agent's runs. Agent names come from the
// configuration, so the agent label stays bounded.
func (m *Metrics) Runs(agent string) *Runs {
	r := &Runs{agent: agent, outcomes: make(map[string]prometheus.Counter, len(Outcomes)), vec: m.RunsTotal,
		duration: m.RunDuration.WithLabelValues(agent), firstEvent: m.FirstEvent, firstDelta: m.FirstDelta,
		tokensIn: m.Tokens.WithLabelValues(agent, "input"), tokensOut: m.Tokens.WithLabelValues(agent, "output"), tools: m.tools}
	for _, o := range Outcomes {
		r.outcomes[o] = m.RunsTotal.WithLabelValues(agent, o)
	}
	return r
}

// Ended counts a run that ended with outcome (one of Outcomes) after d; a
// negative d is not observed (a run that failed before it began).
func (r *Runs) Ended(outcome string, d time.Duration) {
	if r == nil {
		return
	}
	c, ok := r.outcomes[outcome]
	if !ok {
		c = r.vec.WithLabelValues(r.agent, outcome) // a status added to the store and not to Outcomes
	}
	c.Inc()
	if d >= 0 {
		r.duration.Observe(d.Seconds())
	}
}

// Lost counts a run of agent reaped after its node died. Agent is the
// stored run's, which may be another node's: a configured name all the same.
func (r *Runs) Lost(agent string) {
	if r == nil {
		return
	}
	if agent == r.agent {
		r.outcomes[OutcomeNodeLost].Inc()
		return
	}
	r.vec.WithLabelValues(agent, OutcomeNodeLost).Inc()
}

// Tokens counts the tokens a run's model calls used, as its agent reported
// them (agentwire_tokens_total).
func (r *Runs) Tokens(input, output int64) {
	if r == nil {
		return
	}
	r.tokensIn.Add(float64(input))
	r.tokensOut.Add(float64(output))
}

// FirstEvent observes the time from a user_message's arrival to its run's
// agent_started.
func (r *Runs) FirstEvent(d time.Duration) {
	if r != nil {
		r.firstEvent.Observe(d.Seconds())
	}
}

// FirstDelta observes the time from a user_message's arrival to its run's
// first agent_message_delta.
func (r *Runs) FirstDelta(d time.Duration) {
	if r != nil {
		r.firstDelta.Observe(d.Seconds())
	}
}

// ToolCall counts a completed tool call and observes its duration.
func (r *Runs) ToolCall(tool string, ok bool, d time.Duration) {
	if r == nil {
		return
	}
	c := r.tools.get(tool)
	if ok {
		c.ok.Inc()
	} else {
		c.failed.Inc()
	}
	if d >= 0 {
		c.duration.Observe(d.Seconds())
	}
}

// toolLabels hands out the children of the first MaxToolLabels tool names,
// then those of ToolOther.
type toolLabels struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	other    *toolChildren

	mu    sync.RWMutex
	known map[string]*toolChildren
}

type toolChildren struct {
	ok, failed prometheus.Counter
	duration   prometheus.Observer
}

func newToolLabels(calls *prometheus.CounterVec, duration *prometheus.HistogramVec) *toolLabels {
	t := &toolLabels{calls: calls, duration: duration, known: make(map[string]*toolChildren)}
	t.other = t.children(ToolOther)
	return t
}

func (t *toolLabels) children(tool string) *toolChildren {
	return &toolChildren{ok: t.calls.WithLabelValues(tool, "true"), failed: t.calls.WithLabelValues(tool, "false"),
		duration: t.duration.WithLabelValues(tool)}
}

func (t *toolLabels) get(tool string) *toolChildren {
	if tool == ToolOther || tool == "" || len(tool) > maxToolName || !utf8.ValidString(tool) {
		return t.other
	}
	t.mu.RLock()
	c, full := t.known[tool], len(t.known) >= MaxToolLabels
	t.mu.RUnlock()
	switch {
	case c != nil:
		return c
	case full:
		return t.other
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.known[tool]; c != nil {
		return c
	}
	if len(t.known) >= MaxToolLabels {
		return t.other
	}
	c = t.children(tool)
	t.known[tool] = c
	return c
}
