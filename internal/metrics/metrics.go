// Package metrics holds agentwire's Prometheus collectors. One Metrics value
// is made in main with its own registry and passed to whoever records; there
// is no global registry.
package metrics

import (
	"net/http"

	"github.com/agentwire/agentwire/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of collectors agentwire records into.
type Metrics struct {
	Registry *prometheus.Registry

	Connections      prometheus.Gauge
	ConnectionsTotal prometheus.Counter
	FramesIn         *prometheus.CounterVec // by type
	FramesOut        prometheus.Counter
	BytesIn          prometheus.Counter
	BytesOut         prometheus.Counter
	QueueOverflows   prometheus.Counter
	AuthFailures     *prometheus.CounterVec // by reason
	Deprecated       *prometheus.CounterVec // by alias
	Closes           *prometheus.CounterVec // by code
	Published        prometheus.Counter
	ErrorsSent       *prometheus.CounterVec // by code
	PublishToWrite   prometheus.Histogram
	Tokens           *prometheus.CounterVec // by agent and direction (input, output)

	// The runs, their tool calls, resumes and stream appends. Record runs
	// and tool calls through Runs (children resolved once per agent, tool
	// names capped), resumes through ResumeReplayed and ResumeResync.
	RunsTotal      *prometheus.CounterVec   // by agent and outcome
	RunDuration    *prometheus.HistogramVec // by agent
	FirstEvent     prometheus.Histogram
	FirstDelta     prometheus.Histogram
	ToolCalls      *prometheus.CounterVec   // by tool and ok
	ToolDuration   *prometheus.HistogramVec // by tool
	Resumes        *prometheus.CounterVec   // by result
	ResumeReplayed prometheus.Counter       // Resumes{result="replayed"}
	ResumeResync   prometheus.Counter       // Resumes{result="resync"}
	StreamAppend   *prometheus.HistogramVec // by backend

	tools *toolLabels
}

// New creates the collectors and registers them, with the Go and process
// collectors, on a fresh registry.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentwire_connections", Help: "Open WebSocket connections."}),
		ConnectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentwire_connections_total", Help: "WebSocket connections accepted."}),
		FramesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentwire_frames_in_total", Help: "Client frames received, by canonical type (invalid for undecodable)."}, []string{"type"}),
		FramesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentwire_frames_out_total", Help: "Frames written to clients (stream events and control frames)."}),
		BytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentwire_bytes_in_total", Help: "Bytes of client frames received."}),
		BytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentwire_bytes_out_total", Help: "Bytes of frames written to clients."}),
		QueueOverflows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentwire_queue_overflows_total", Help: "Connections closed with 4008 because their outbound queue overflowed."}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentwire_auth_failures_total", Help: "Rejected authentications, by reason."}, []string{"reason"}),
		Deprecated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentwire_deprecated_messages_total", Help: "Client frames that used a deprecated alias, by alias."}, []string{"alias"}),
		Closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentwire_closes_total", Help: "Connections closed by the server, by close code."}, []string{"code"}),
		Published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentwire_published_total", Help: "Events accepted by POST /api/v1/publish."}),
		ErrorsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentwire_errors_sent_total", Help: "error frames sent to clients, by code."}, []string{"code"}),
		Tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentwire_tokens_total", Help: "Tokens the runs' model calls used, as their agents reported them, by agent and direction (input, output)."},
			[]string{"agent", "direction"}),
		PublishToWrite: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentwire_publish_to_write_seconds",
			Help:    "Time from an event's append to its write on a socket.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		RunsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentwire_runs_total", Help: "Runs ended, by agent and outcome (completed, failed, cancelled, timeout, node_lost)."},
			[]string{"agent", "outcome"}),
		RunDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentwire_run_duration_seconds",
			Help:    "Time from a run's start to its terminal event, by agent.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800},
		}, []string{"agent"}),
		FirstEvent: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentwire_first_event_seconds",
			Help:    "Time from a user_message's arrival to its run's agent_started in the stream.",
			Buckets: latencyBuckets,
		}),
		FirstDelta: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentwire_first_delta_seconds",
			Help:    "Time from a user_message's arrival to its run's first agent_message_delta in the stream.",
			Buckets: latencyBuckets,
		}),
		ToolCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentwire_tool_calls_total", Help: "Tool calls completed, by tool (the first MaxToolLabels names, then other) and ok."},
			[]string{"tool", "ok"}),
		ToolDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentwire_tool_duration_seconds",
			Help:    "Duration of completed tool calls as their agents reported it, by tool (the first MaxToolLabels names, then other).",
			Buckets: latencyBuckets,
		}, []string{"tool"}),
		Resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentwire_resumes_total", Help: "Resumes from a stream position (WebSocket, SSE and AG-UI), by result: replayed or resync."},
			[]string{"result"}),
		StreamAppend: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "agentwire_stream_append_seconds",
			Help:    "Duration of appends to the event stream, failed ones included, by backend (memory, redis).",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"backend"}),
	}
	m.ResumeReplayed = m.Resumes.WithLabelValues(ResumeReplayed)
	m.ResumeResync = m.Resumes.WithLabelValues(ResumeResync)
	m.tools = newToolLabels(m.ToolCalls, m.ToolDuration)
	// Known label values start at 0 so dashboards and alerts see them at once.
	for _, t := range []string{protocol.TypeUserMessage, protocol.TypeStopAgent, protocol.TypeResume, protocol.TypePing,
		"invalid", protocol.CodeRateLimited.String()} {
		m.FramesIn.WithLabelValues(t)
	}
	for _, r := range []string{"missing", "expired", "invalid", "ticket", "origin", "api_key", "admin_key", "revoked"} {
		m.AuthFailures.WithLabelValues(r)
	}
	for _, a := range protocol.Aliases() {
		m.Deprecated.WithLabelValues(a)
	}
	r.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Connections, m.ConnectionsTotal, m.FramesIn, m.FramesOut, m.BytesIn, m.BytesOut,
		m.QueueOverflows, m.AuthFailures, m.Deprecated, m.Closes, m.Published, m.ErrorsSent,
		m.PublishToWrite, m.Tokens,
		m.RunsTotal, m.RunDuration, m.FirstEvent, m.FirstDelta, m.ToolCalls, m.ToolDuration, m.Resumes, m.StreamAppend,
	)
	return m
}

// latencyBuckets (seconds) suit what a user waits for: a first event, a
// first token, a tool call.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// The result label values of agentwire_resumes_total.
const (
	ResumeReplayed = "replayed" // the retained events after the position were replayed
	ResumeResync   = "resync"   // resync_required: the position could not be served
)

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
