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
	}
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
	)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
