package tracing

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// collector is a stub OTLP/HTTP collector: it decodes each request with
// the generated opentelemetry-proto package and answers with the next of
// its statuses (200 once they run out).
type collector struct {
	t        *testing.T
	mu       sync.Mutex
	statuses []int
	reqs     []*coltracepb.ExportTraceServiceRequest
	headers  []http.Header
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		c.t.Errorf("collector: %v", err)
	}
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			c.t.Errorf("collector: gzip: %v", err)
			return
		}
		body, _ = io.ReadAll(zr)
	}
	var req coltracepb.ExportTraceServiceRequest
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		c.t.Errorf("collector got %s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	if err := proto.Unmarshal(body, &req); err != nil {
		c.t.Errorf("collector: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, &req)
	c.headers = append(c.headers, r.Header.Clone())
	if len(c.statuses) > 0 {
		st := c.statuses[0]
		c.statuses = c.statuses[1:]
		w.WriteHeader(st)
	}
}

func exporterFor(t *testing.T, env map[string]string) *otlpExporter {
	t.Helper()
	c, err := otlpFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return newOTLPExporter(c)
}

var attrs = []attribute.KeyValue{
	attribute.String("s", "v"), attribute.String("empty", ""),
	attribute.Bool("b", true), attribute.Bool("f", false),
	attribute.Int64("i", -42), attribute.Int64("zero", 0),
	attribute.Float64("d", 2.5),
	attribute.BoolSlice("bs", []bool{true, false}),
	attribute.Int64Slice("is", []int64{1, -2, 3}),
	attribute.Float64Slice("ds", []float64{0.5, -1}),
	attribute.StringSlice("ss", []string{"a", "", "c"}),
	{Key: "bytes", Value: attribute.ByteSliceValue([]byte{0, 1, 255})},
	{Key: "slice", Value: attribute.SliceValue(attribute.StringValue("x"), attribute.IntValue(7))},
	{Key: "map", Value: attribute.MapValue(attribute.String("k", "v"), attribute.Bool("t", true))},
}

// fromAttr and fromPB bring an otel value and an OTLP AnyValue to the
// same Go values, to compare.
func fromAttr(v attribute.Value) any {
	switch v.Type() {
	case attribute.STRING:
		return v.AsString()
	case attribute.BOOL:
		return v.AsBool()
	case attribute.INT64:
		return v.AsInt64()
	case attribute.FLOAT64:
		return v.AsFloat64()
	case attribute.BYTESLICE:
		return v.AsByteSlice()
	case attribute.BOOLSLICE:
		return anys(v.AsBoolSlice())
	case attribute.INT64SLICE:
		return anys(v.AsInt64Slice())
	case attribute.FLOAT64SLICE:
		return anys(v.AsFloat64Slice())
	case attribute.STRINGSLICE:
		return anys(v.AsStringSlice())
	case attribute.SLICE:
		var out []any
		for _, x := range v.AsSlice() {
			out = append(out, fromAttr(x))
		}
		return out
	case attribute.MAP:
		return fromAttrs(v.AsMap())
	}
	return nil
}

func anys[T any](xs []T) []any {
	var out []any
	for _, x := range xs {
		out = append(out, x)
	}
	return out
}

func fromAttrs(kvs []attribute.KeyValue) map[string]any {
	out := map[string]any{}
	for _, kv := range kvs {
		out[string(kv.Key)] = fromAttr(kv.Value)
	}
	return out
}

func fromPB(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		var out []any
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, fromPB(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return fromPBs(x.KvlistValue.GetValues())
	}
	return nil
}

func fromPBs(kvs []*commonpb.KeyValue) map[string]any {
	out := map[string]any{}
	for _, kv := range kvs {
		out[kv.GetKey()] = fromPB(kv.GetValue())
	}
	return out
}

func sameAttrs(t *testing.T, what string, got []*commonpb.KeyValue, want []attribute.KeyValue) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d attributes, want %d", what, len(got), len(want))
	}
	if g, w := fromPBs(got), fromAttrs(want); !reflect.DeepEqual(g, w) {
		t.Errorf("%s: attributes\n got %#v\nwant %#v", what, g, w)
	}
}

// TestOTLPEncoding: what the exporter sends decodes with the generated
// opentelemetry-proto package into the spans it was given, field by field,
// grouped by resource and then scope.
func TestOTLPEncoding(t *testing.T) {
	col := &collector{t: t}
	srv := httptest.NewServer(col)
	defer srv.Close()
	exp := exporterFor(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL + "/"})

	resA := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "a"), attribute.Int64("pid", 7))
	resB := resource.NewSchemaless(attribute.String("service.name", "b"))
	scope1 := instrumentation.Scope{Name: "one", Version: "1.2.3", SchemaURL: "https://example.com/s1", Attributes: attribute.NewSet(attribute.Bool("lib", true))}
	scope2 := instrumentation.Scope{Name: "two"}
	ts, _ := trace.ParseTraceState("vendor=x")
	sc := func(tid, sid byte, flags trace.TraceFlags, remote bool) trace.SpanContext {
		return trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{tid, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
			SpanID:  trace.SpanID{sid, 1, 2, 3, 4, 5, 6, 7}, TraceFlags: flags, TraceState: ts, Remote: remote,
		})
	}
	start := time.Unix(1_700_000_000, 123456789)
	stubs := tracetest.SpanStubs{
		{
			Name: "full", SpanContext: sc(1, 1, trace.FlagsSampled, false), Parent: sc(1, 9, trace.FlagsSampled, true),
			SpanKind: trace.SpanKindServer, StartTime: start, EndTime: start.Add(1500 * time.Millisecond),
			Attributes: attrs,
			Events: []sdktrace.Event{
				{Name: "ev", Time: start.Add(time.Millisecond), Attributes: []attribute.KeyValue{attribute.Int("n", 3)}, DroppedAttributeCount: 2},
				{Name: "bare", Time: start.Add(2 * time.Millisecond)},
			},
			Links: []sdktrace.Link{
				{SpanContext: sc(2, 2, 0, true), Attributes: []attribute.KeyValue{attribute.String("why", "session")}, DroppedAttributeCount: 1},
			},
			Status:            sdktrace.Status{Code: codes.Error, Description: "upstream_error"},
			DroppedAttributes: 3, DroppedEvents: 4, DroppedLinks: 5,
			Resource: resA, InstrumentationScope: scope1,
		},
		{Name: "b-span", SpanContext: sc(3, 3, trace.FlagsSampled, false), SpanKind: trace.SpanKindClient, StartTime: start, EndTime: start, Resource: resB, InstrumentationScope: scope1},
		{Name: "ok", SpanContext: sc(1, 4, trace.FlagsSampled, false), SpanKind: trace.SpanKindProducer, Status: sdktrace.Status{Code: codes.Ok}, StartTime: start, EndTime: start, Resource: resA, InstrumentationScope: scope2},
		{Name: "same-group", SpanContext: sc(1, 5, trace.FlagsSampled, false), SpanKind: trace.SpanKindConsumer, StartTime: start, EndTime: start, Resource: resA, InstrumentationScope: scope1},
	}
	if err := exp.ExportSpans(context.Background(), stubs.Snapshots()); err != nil {
		t.Fatal(err)
	}
	if len(col.reqs) != 1 {
		t.Fatalf("collector got %d requests, want 1", len(col.reqs))
	}
	rss := col.reqs[0].GetResourceSpans()
	if len(rss) != 2 {
		t.Fatalf("%d ResourceSpans, want 2 (a, b)", len(rss))
	}
	a, b := rss[0], rss[1]
	if a.GetSchemaUrl() != resA.SchemaURL() || b.GetSchemaUrl() != "" {
		t.Errorf("resource schema urls %q, %q", a.GetSchemaUrl(), b.GetSchemaUrl())
	}
	sameAttrs(t, "resource a", a.GetResource().GetAttributes(), resA.Attributes())
	sameAttrs(t, "resource b", b.GetResource().GetAttributes(), resB.Attributes())
	if len(a.GetScopeSpans()) != 2 || len(b.GetScopeSpans()) != 1 {
		t.Fatalf("scopes: a %d, b %d; want 2, 1", len(a.GetScopeSpans()), len(b.GetScopeSpans()))
	}
	s1, s2 := a.GetScopeSpans()[0], a.GetScopeSpans()[1]
	if s := s1.GetScope(); s.GetName() != "one" || s.GetVersion() != "1.2.3" || s1.GetSchemaUrl() != scope1.SchemaURL {
		t.Errorf("scope 1 = %v, schema %q", s, s1.GetSchemaUrl())
	}
	sameAttrs(t, "scope 1", s1.GetScope().GetAttributes(), scope1.Attributes.ToSlice())
	if s2.GetScope().GetName() != "two" || s2.GetScope().GetVersion() != "" {
		t.Errorf("scope 2 = %v", s2.GetScope())
	}
	names := func(ss *tracepb.ScopeSpans) (out []string) {
		for _, s := range ss.GetSpans() {
			out = append(out, s.GetName())
		}
		return out
	}
	if got := [][]string{names(s1), names(s2), names(b.GetScopeSpans()[0])}; !reflect.DeepEqual(got, [][]string{{"full", "same-group"}, {"ok"}, {"b-span"}}) {
		t.Errorf("grouping %q", got)
	}

	full, want := s1.GetSpans()[0], stubs[0]
	tid, sid, psid := want.SpanContext.TraceID(), want.SpanContext.SpanID(), want.Parent.SpanID()
	if !bytes.Equal(full.GetTraceId(), tid[:]) || !bytes.Equal(full.GetSpanId(), sid[:]) || !bytes.Equal(full.GetParentSpanId(), psid[:]) {
		t.Errorf("ids %x %x %x", full.GetTraceId(), full.GetSpanId(), full.GetParentSpanId())
	}
	if full.GetTraceState() != "vendor=x" || full.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("trace state %q, kind %v", full.GetTraceState(), full.GetKind())
	}
	if full.GetStartTimeUnixNano() != uint64(start.UnixNano()) || full.GetEndTimeUnixNano() != uint64(start.Add(1500*time.Millisecond).UnixNano()) {
		t.Errorf("times %d, %d", full.GetStartTimeUnixNano(), full.GetEndTimeUnixNano())
	}
	sameAttrs(t, "span", full.GetAttributes(), attrs)
	if full.GetDroppedAttributesCount() != 3 || full.GetDroppedEventsCount() != 4 || full.GetDroppedLinksCount() != 5 {
		t.Errorf("dropped %d %d %d", full.GetDroppedAttributesCount(), full.GetDroppedEventsCount(), full.GetDroppedLinksCount())
	}
	// Sampled, the parent's remoteness known (0x100) and remote (0x200).
	if full.GetFlags() != 0x301 {
		t.Errorf("flags %#x, want 0x301", full.GetFlags())
	}
	if st := full.GetStatus(); st.GetCode() != tracepb.Status_STATUS_CODE_ERROR || st.GetMessage() != "upstream_error" {
		t.Errorf("status %v", st)
	}
	if evs := full.GetEvents(); len(evs) != 2 {
		t.Errorf("%d events, want 2", len(evs))
	} else {
		if evs[0].GetName() != "ev" || evs[0].GetTimeUnixNano() != uint64(start.Add(time.Millisecond).UnixNano()) || evs[0].GetDroppedAttributesCount() != 2 {
			t.Errorf("event %v", evs[0])
		}
		sameAttrs(t, "event", evs[0].GetAttributes(), want.Events[0].Attributes)
		if evs[1].GetName() != "bare" || len(evs[1].GetAttributes()) != 0 {
			t.Errorf("event %v", evs[1])
		}
	}
	if ls := full.GetLinks(); len(ls) != 1 {
		t.Errorf("%d links, want 1", len(ls))
	} else {
		l, lsc := ls[0], want.Links[0].SpanContext
		ltid, lsid := lsc.TraceID(), lsc.SpanID()
		if !bytes.Equal(l.GetTraceId(), ltid[:]) || !bytes.Equal(l.GetSpanId(), lsid[:]) || l.GetTraceState() != "vendor=x" || l.GetDroppedAttributesCount() != 1 || l.GetFlags() != 0x300 {
			t.Errorf("link %v", l)
		}
		sameAttrs(t, "link", l.GetAttributes(), want.Links[0].Attributes)
	}
	ok := s2.GetSpans()[0]
	if ok.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_OK || ok.GetKind() != tracepb.Span_SPAN_KIND_PRODUCER || len(ok.GetParentSpanId()) != 0 || ok.GetFlags() != 0x101 {
		t.Errorf("span ok: %v", ok)
	}
	if k := s1.GetSpans()[1].GetKind(); k != tracepb.Span_SPAN_KIND_CONSUMER {
		t.Errorf("kind %v", k)
	}
	if k := b.GetScopeSpans()[0].GetSpans()[0].GetKind(); k != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("kind %v", k)
	}
	if st := b.GetScopeSpans()[0].GetSpans()[0].GetStatus(); st.GetCode() != tracepb.Status_STATUS_CODE_UNSET {
		t.Errorf("unset status %v", st)
	}
}

func oneSpan() []sdktrace.ReadOnlySpan {
	return tracetest.SpanStubs{{Name: "x", SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}})}}.Snapshots()
}

// TestOTLPHeadersGzipRetry: headers (URL-decoded) and gzip as the
// environment says; 503 is tried again, 400 is an error naming it.
func TestOTLPHeadersGzipRetry(t *testing.T) {
	col := &collector{t: t, statuses: []int{http.StatusServiceUnavailable, http.StatusOK, http.StatusBadRequest}}
	srv := httptest.NewServer(col)
	defer srv.Close()
	exp := exporterFor(t, map[string]string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":    srv.URL + "/v1/traces",
		"OTEL_EXPORTER_OTLP_HEADERS":            "ignored=1",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS":     "Authorization=Bearer%20s3cr%3Dt, x-tenant = eu ,",
		"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip",
		"OTEL_EXPORTER_OTLP_TIMEOUT":            "30000",
	})
	if err := exp.ExportSpans(context.Background(), oneSpan()); err != nil {
		t.Fatalf("export after a 503: %v", err)
	}
	if len(col.reqs) != 2 {
		t.Fatalf("%d requests, want 2 (a 503, then 200)", len(col.reqs))
	}
	h := col.headers[1]
	if h.Get("Authorization") != "Bearer s3cr=t" || h.Get("X-Tenant") != "eu" || h.Get("Ignored") != "" || h.Get("Content-Encoding") != "gzip" {
		t.Errorf("headers %v", h)
	}
	if got := col.reqs[1].GetResourceSpans()[0].GetScopeSpans()[0].GetSpans()[0].GetName(); got != "x" {
		t.Errorf("span %q", got)
	}
	err := exp.ExportSpans(context.Background(), oneSpan())
	if err == nil || !strings.Contains(err.Error(), "400 Bad Request") {
		t.Errorf("export answered 400: %v, want an error naming it", err)
	}
	if err := exp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := exp.ExportSpans(context.Background(), oneSpan()); err == nil {
		t.Error("export after Shutdown succeeded")
	}
}

// TestOTLPRetryWithinTimeout: a collector that keeps answering 503 makes
// an error naming it once the timeout leaves no room for another try.
func TestOTLPRetryWithinTimeout(t *testing.T) {
	col := &collector{t: t, statuses: []int{503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503}}
	srv := httptest.NewServer(col)
	defer srv.Close()
	exp := exporterFor(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2000"})
	err := exp.ExportSpans(context.Background(), oneSpan())
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("err = %v, want one naming 503", err)
	}
	if len(col.reqs) < 1 || len(col.reqs) > 5 {
		t.Errorf("%d tries within 2s of backoffs from 100ms doubling, want 1 to 5", len(col.reqs))
	}
}

// TestOTLPCertificate: OTEL_EXPORTER_OTLP_CERTIFICATE is the CA an https
// collector is trusted by; without it, its self-signed certificate fails.
func TestOTLPCertificate(t *testing.T) {
	col := &collector{t: t}
	srv := httptest.NewTLSServer(col)
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	exp := exporterFor(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_EXPORTER_OTLP_CERTIFICATE": ca})
	if err := exp.ExportSpans(context.Background(), oneSpan()); err != nil {
		t.Errorf("with the CA: %v", err)
	}
	exp = exporterFor(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL})
	if err := exp.ExportSpans(context.Background(), oneSpan()); err == nil {
		t.Error("without the CA: exported to a self-signed collector")
	}
	if len(col.reqs) != 1 {
		t.Errorf("collector got %d requests, want 1", len(col.reqs))
	}
}

// TestOTLPFromEnv: the endpoint's resolution and defaults; a bad value is
// an error naming its variable, never showing a header's value.
func TestOTLPFromEnv(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "http://localhost:4318/v1/traces"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c/otlp/"}, "https://c/otlp/v1/traces"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/custom"}, "http://t:1/custom"},
	} {
		c, err := otlpFromEnv(func(k string) string { return tc.env[k] })
		if err != nil || c.url != tc.want || c.timeout != 10*time.Second || c.gzip || c.tls != nil {
			t.Errorf("%v: %+v, %v; want url %s, 10s, no gzip", tc.env, c, err, tc.want)
		}
	}
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(notPEM, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	for v, env := range map[string]map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":           {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"},
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":    {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://c/v1/traces"},
		"OTEL_EXPORTER_OTLP_HEADERS":            {"OTEL_EXPORTER_OTLP_HEADERS": "api-key"},
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS":     {"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "k=%zzsecret"},
		"OTEL_EXPORTER_OTLP_TIMEOUT":            {"OTEL_EXPORTER_OTLP_TIMEOUT": "10s"},
		"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT":     {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0"},
		"OTEL_EXPORTER_OTLP_COMPRESSION":        {"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"},
		"OTEL_EXPORTER_OTLP_CERTIFICATE":        {"OTEL_EXPORTER_OTLP_CERTIFICATE": filepath.Join(dir, "missing.pem")},
		"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": {"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": notPEM},
		"OTEL_EXPORTER_OTLP_CLIENT_KEY":         {"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": notPEM},
		"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY":  {"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": notPEM, "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": notPEM},
	} {
		v = strings.TrimSpace(v) // a trailing space: a second case of the variable
		_, err := otlpFromEnv(func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("%v: error %v, want one naming %s", env, err, v)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows a header's value: %v", err)
		}
	}
	// Through FromEnv, as config reads it.
	if _, err := FromEnv(func(k string) string {
		return map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_COMPRESSION": "br"}[k]
	}); err == nil || !strings.Contains(err.Error(), "OTEL_EXPORTER_OTLP_COMPRESSION") {
		t.Errorf("FromEnv: %v, want an error naming OTEL_EXPORTER_OTLP_COMPRESSION", err)
	}
	s, err := FromEnv(func(k string) string {
		return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://u:pw@c"}[k]
	})
	if err != nil || strings.Contains(s.Endpoint, "pw") || s.otlp.url != "https://u:pw@c/v1/traces" {
		t.Errorf("FromEnv: %+v, %v; want the password masked in Endpoint only", s, err)
	}
}
