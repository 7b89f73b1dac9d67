// Package tracing is agentwire's OpenTelemetry tracing, and nothing of
// agentwire: the tracer provider configured only by the standard OTEL_…
// environment variables (Settings, FromEnv), the W3C tracecontext and
// baggage propagator, the HTTP server and client instrumentation (otelhttp)
// and the one place spans start (Tracer.Start).
//
// Tracing is off unless an OTLP endpoint (or OTEL_TRACES_EXPORTER=otlp) is
// set. Off, New returns a nil *Tracer: every method of a nil Tracer does
// nothing and allocates nothing, so callers hold a *Tracer and never ask
// whether it is on. No tracer is installed globally (otel.SetTracerProvider):
// the app owns its provider and passes it down.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of agentwire's own spans.
const ScopeName = "github.com/agentwire/agentwire"

// DefaultServiceName is service.name when neither OTEL_SERVICE_NAME nor
// OTEL_RESOURCE_ATTRIBUTES names the service.
const DefaultServiceName = "agentwire"

// Settings are what the environment says about tracing, read once by
// FromEnv. The zero value is off.
type Settings struct {
	// On is true when spans are exported.
	On bool
	// Endpoint is the URL spans are posted to (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
	// as is, else OTEL_EXPORTER_OTLP_ENDPOINT + "/v1/traces", else
	// http://localhost:4318/v1/traces), a password in it masked: for the
	// log.
	Endpoint string

	// otlp is the exporter's configuration (endpoint, headers, timeout,
	// compression, TLS), read by FromEnv.
	otlp *otlpConfig

	// Exporter, when set, takes the spans instead of OTLP, synchronously
	// (tests: sdk/trace/tracetest.InMemoryExporter). It turns tracing on.
	Exporter sdktrace.SpanExporter
}

// FromEnv reads the standard variables through getenv. Tracing is on when
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is set
// or OTEL_TRACES_EXPORTER is otlp; OTEL_TRACES_EXPORTER=none and
// OTEL_SDK_DISABLED=true turn it off whatever else is set. Only OTLP over
// HTTP (http/protobuf) is built in: another exporter or protocol is an
// error naming the variable, as is a bad value of one of the exporter's
// variables (see otlpFromEnv).
func FromEnv(getenv func(string) string) (Settings, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	if strings.EqualFold(env("OTEL_SDK_DISABLED"), "true") {
		return Settings{}, nil
	}
	exporter := strings.ToLower(env("OTEL_TRACES_EXPORTER"))
	endpoint := env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	switch exporter {
	case "none":
		return Settings{}, nil
	case "":
		if endpoint == "" {
			return Settings{}, nil
		}
	case "otlp":
	default:
		return Settings{}, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: agentwire exports traces with otlp only (or none)", exporter)
	}
	proto := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	name := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if proto == "" {
		proto, name = env("OTEL_EXPORTER_OTLP_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	if proto != "" && proto != "http/protobuf" {
		return Settings{}, fmt.Errorf("%s=%s: agentwire exports OTLP over http/protobuf only (port 4318 of a collector)", name, proto)
	}
	c, err := otlpFromEnv(env)
	if err != nil {
		return Settings{}, err
	}
	shown := c.url
	if u, err := url.Parse(c.url); err == nil {
		shown = u.Redacted()
	}
	return Settings{On: true, Endpoint: shown, otlp: c}, nil
}

// Tracer starts agentwire's spans and carries the trace context over HTTP.
// A nil *Tracer is tracing off: its methods do nothing and allocate
// nothing.
type Tracer struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

// New builds the tracer s asks for: nil (off) for the zero Settings, else a
// tracer provider with agentwire's OTLP/HTTP exporter (otlp.go; or s.Exporter) behind a
// batch span processor, the sampler of OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG (default: parent-based, always on), and a
// resource of service.name agentwire overridden by OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES. Nothing is sent before the first span ends.
// Call Shutdown to flush it.
func New(ctx context.Context, s Settings) (*Tracer, error) {
	if !s.On && s.Exporter == nil {
		return nil, nil
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", DefaultServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // last: the operator's names win
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if s.Exporter != nil {
		opts = append(opts, sdktrace.WithSyncer(s.Exporter))
	} else {
		c := s.otlp
		if c == nil { // Settings{On: true} not made by FromEnv: the defaults
			if c, err = otlpFromEnv(func(string) string { return "" }); err != nil {
				return nil, err
			}
		}
		opts = append(opts, sdktrace.WithBatcher(newOTLPExporter(c)))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	return &Tracer{
		tp:     tp,
		tracer: tp.Tracer(ScopeName),
		prop:   propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}, nil
}

// Shutdown exports the spans still buffered and stops the provider, within
// ctx.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.tp.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}

// Start starts a span named name as a child of the span in ctx (if any),
// of the given kind, with attrs. Off, it returns ctx and the span already
// in ctx (a no-op span without one), allocating nothing — as long as the
// caller passes no attrs: a hot path that builds attributes checks
// t != nil first.
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if t == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	return t.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// StartRoot is Start for a span that begins its own trace, linked to the
// span in ctx: each client frame of a long WebSocket session is its own
// trace, linked to the session's span, so one trace is one request and
// what it caused, not hours of a connection.
func (t *Tracer) StartRoot(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if t == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(kind), trace.WithAttributes(attrs...)}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	return t.tracer.Start(ctx, name, opts...)
}

// Handler instruments an HTTP server handler with otelhttp: one server
// span per request, the caller's traceparent (and baggage) its parent. The
// span is named by the route, "METHOD /pattern", once the mux matched one
// (see Route); off, it returns h itself.
func (t *Tracer) Handler(h http.Handler) http.Handler {
	if t == nil {
		return h
	}
	return otelhttp.NewHandler(h, "HTTP",
		otelhttp.WithTracerProvider(t.tp), otelhttp.WithPropagators(t.prop),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithSpanNameFormatter(spanName))
}

// Route names the request's server span after the mux's matched pattern
// (r.Pattern, "POST /api/v1/runs/{id}/stop"): http.route, and url.path
// replaced by the route, since raw paths carry ids of users, threads and
// runs. Call it after the mux served r.
func Route(r *http.Request) {
	if r.Pattern == "" {
		return
	}
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	route := r.Pattern
	if _, path, ok := strings.Cut(route, " "); ok {
		route = path
	}
	span.SetName(spanName("", r))
	span.SetAttributes(attribute.String("http.route", route), attribute.String("url.path", route))
}

func spanName(_ string, r *http.Request) string {
	if r.Pattern == "" {
		return r.Method
	}
	if strings.Contains(r.Pattern, " ") {
		return r.Pattern
	}
	return r.Method + " " + r.Pattern
}

// Client returns an HTTP client whose requests carry the trace context of
// their context (traceparent, baggage) in a client span, over base's
// transport (nil: http.DefaultTransport), with base's other settings. Off,
// it returns base: nothing is added to the requests.
func (t *Tracer) Client(base *http.Client) *http.Client {
	if t == nil {
		return base
	}
	c := &http.Client{}
	if base != nil {
		*c = *base
	}
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c.Transport = hideQuery{otelhttp.NewTransport(restoreURL{next},
		otelhttp.WithTracerProvider(t.tp), otelhttp.WithPropagators(t.prop),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()))}
	return c
}

// fullURL carries a request's URL past otelhttp, which is shown it
// without its query: otelhttp puts the whole URL in the client span
// (url.full), and the query of an agent's, a model's or an MCP server's
// URL may hold a key (?code=…).
type fullURL struct{}

type hideQuery struct{ next http.RoundTripper }

func (h hideQuery) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.RawQuery == "" && !r.URL.ForceQuery && r.URL.User == nil {
		return h.next.RoundTrip(r)
	}
	bare := *r.URL
	bare.RawQuery, bare.ForceQuery, bare.User = "", false, nil
	r = r.WithContext(context.WithValue(r.Context(), fullURL{}, r.URL))
	r.URL = &bare
	return h.next.RoundTrip(r)
}

// restoreURL sends the request otelhttp handed on with its whole URL.
type restoreURL struct{ next http.RoundTripper }

func (h restoreURL) RoundTrip(r *http.Request) (*http.Response, error) {
	if u, ok := r.Context().Value(fullURL{}).(*url.URL); ok {
		r = r.WithContext(r.Context())
		r.URL = u
	}
	return h.next.RoundTrip(r)
}

// Inject writes the trace context of ctx into h (traceparent, baggage);
// off, or without a span in ctx, it writes nothing.
func (t *Tracer) Inject(ctx context.Context, h http.Header) {
	if t == nil {
		return
	}
	t.prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// Provider is the tracer provider (nil when off), for libraries that take
// one.
func (t *Tracer) Provider() trace.TracerProvider {
	if t == nil {
		return nil
	}
	return t.tp
}

// TraceID is the id of the trace the span in ctx belongs to, as 32
// lowercase hex digits; "" when ctx holds no sampled span.
func TraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsSampled() {
		return ""
	}
	return sc.TraceID().String()
}

// Fail marks span failed with error.type errType: a short stable name of
// the failure, never the error's text, which may carry ids or data.
func Fail(span trace.Span, errType string) {
	span.SetAttributes(attribute.String("error.type", errType))
	span.SetStatus(codes.Error, errType)
}
