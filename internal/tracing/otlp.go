package tracing

// The OTLP/HTTP span exporter: an ExportTraceServiceRequest (OTLP v1,
// opentelemetry-proto) encoded by hand with protowire and POSTed as
// application/x-protobuf. It replaces otlptracehttp, whose generated
// collector package links grpc and grpc-gateway into the binary (20 MB of
// it, and 6 MB of resident memory at init, tracing on or off).

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/encoding/protowire"
)

// defaultTracesURL is where spans go when OTEL_TRACES_EXPORTER=otlp names
// no endpoint.
const defaultTracesURL = "http://localhost:4318/v1/traces"

// otlpConfig is the exporter's part of the environment, read by FromEnv.
type otlpConfig struct {
	url     string // the traces URL, posted to as is
	headers []otlpHeader
	timeout time.Duration
	gzip    bool
	tls     *tls.Config // nil: Go's defaults
}

type otlpHeader struct{ key, value string }

// otlpFromEnv reads the exporter's variables: for each, the TRACES_ one
// wins over the general one. Errors name the variable, never a header's
// value (they hold API keys).
func otlpFromEnv(env func(string) string) (*otlpConfig, error) {
	// pick returns the traces variable's value and name if it is set, else
	// the general one's.
	pick := func(what string) (string, string) {
		k := "OTEL_EXPORTER_OTLP_TRACES_" + what
		if v := env(k); v != "" {
			return v, k
		}
		k = "OTEL_EXPORTER_OTLP_" + what
		return env(k), k
	}
	c := &otlpConfig{url: defaultTracesURL, timeout: 10 * time.Second}
	name := "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	if v := env(name); v != "" {
		c.url = v
	} else if v := env("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
		name = "OTEL_EXPORTER_OTLP_ENDPOINT"
		c.url = strings.TrimSuffix(v, "/") + "/v1/traces"
	}
	u, err := url.Parse(c.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: %q is not an http:// or https:// URL", name, c.url)
	}
	if v, k := pick("HEADERS"); v != "" {
		for _, kv := range strings.Split(v, ",") {
			if strings.TrimSpace(kv) == "" {
				continue
			}
			key, val, ok := strings.Cut(kv, "=")
			key, kerr := url.PathUnescape(strings.TrimSpace(key))
			val, verr := url.PathUnescape(strings.TrimSpace(val))
			if !ok || kerr != nil || verr != nil || !httpguts.ValidHeaderFieldName(key) || !httpguts.ValidHeaderFieldValue(val) {
				return nil, fmt.Errorf("%s: want comma-separated key=value pairs, header names with URL-encoded values", k)
			}
			c.headers = append(c.headers, otlpHeader{key, val})
		}
	}
	if v, k := pick("TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return nil, fmt.Errorf("%s=%s: want a positive number of milliseconds", k, v)
		}
		c.timeout = time.Duration(ms) * time.Millisecond
	}
	switch v, k := pick("COMPRESSION"); v {
	case "gzip":
		c.gzip = true
	case "", "none":
	default:
		return nil, fmt.Errorf("%s=%s: want gzip or none", k, v)
	}
	ca, caVar := pick("CERTIFICATE")
	cert, certVar := pick("CLIENT_CERTIFICATE")
	key, keyVar := pick("CLIENT_KEY")
	if ca == "" && cert == "" && key == "" {
		return c, nil
	}
	c.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", caVar, err)
		}
		c.tls.RootCAs = x509.NewCertPool()
		if !c.tls.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: %s holds no PEM certificate", caVar, ca)
		}
	}
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("%s and %s: set both or neither", certVar, keyVar)
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", certVar, keyVar, err)
		}
		c.tls.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// otlpExporter is an sdktrace.SpanExporter posting to an OTLP/HTTP
// collector. The batch span processor calls ExportSpans one batch at a
// time and reports its errors.
type otlpExporter struct {
	cfg     *otlpConfig
	client  *http.Client
	stopped atomic.Bool
}

var _ sdktrace.SpanExporter = (*otlpExporter)(nil)

func newOTLPExporter(c *otlpConfig) *otlpExporter {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.tls != nil {
		tr.TLSClientConfig = c.tls
	}
	return &otlpExporter{cfg: c, client: &http.Client{Transport: tr}}
}

// errExporterStopped is ExportSpans's answer after Shutdown.
var errExporterStopped = errors.New("OTLP exporter is shut down")

// ExportSpans posts spans as one request, within the configured timeout
// (and ctx): a 429, 502, 503 or 504 answer is tried again after a backoff
// (or the collector's Retry-After) while the timeout allows; any other
// non-2xx answer is an error naming the status.
func (e *otlpExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.stopped.Load() {
		return errExporterStopped
	}
	if len(spans) == 0 {
		return nil
	}
	body := encodeTraces(nil, spans)
	if e.cfg.gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(body); err != nil {
			return fmt.Errorf("OTLP export: gzip: %w", err)
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("OTLP export: gzip: %w", err)
		}
		body = buf.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		retry, wait, err := e.post(ctx, body)
		if !retry {
			return err
		}
		wait = max(wait, backoff)
		if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// post sends body once. retry says whether the answer is worth another
// try, after at least wait (the collector's Retry-After).
func (e *otlpExporter) post(ctx context.Context, body []byte) (retry bool, wait time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.url, bytes.NewReader(body))
	if err != nil {
		return false, 0, fmt.Errorf("OTLP export: %w", err)
	}
	for _, h := range e.cfg.headers {
		req.Header.Set(h.key, h.value)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	if e.cfg.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return false, 0, fmt.Errorf("OTLP export: %w", err)
	}
	// Drain a little so the connection is reused; the answer's body (an
	// ExportTraceServiceResponse, or a Status) is not needed.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, 0, nil
	}
	err = fmt.Errorf("OTLP export: collector answered %s", resp.Status)
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		if s, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return true, wait, err
	}
	return false, 0, err
}

// Shutdown stops the exporter: later ExportSpans calls fail. The batch
// span processor flushes before it calls Shutdown.
func (e *otlpExporter) Shutdown(ctx context.Context) error {
	e.stopped.Store(true)
	e.client.CloseIdleConnections()
	return ctx.Err()
}

// encodeTraces appends to b the ExportTraceServiceRequest of spans, one
// ResourceSpans per resource and in it one ScopeSpans per instrumentation
// scope, in the order they first appear.
func encodeTraces(b []byte, spans []sdktrace.ReadOnlySpan) []byte {
	type scopeKey struct {
		res   attribute.Distinct
		scope instrumentation.Scope
	}
	type group struct {
		key   scopeKey
		spans []sdktrace.ReadOnlySpan
	}
	var resOrder []attribute.Distinct
	resFirst := map[attribute.Distinct]sdktrace.ReadOnlySpan{}
	groups := map[attribute.Distinct][]*group{}
	index := map[scopeKey]*group{}
	for _, s := range spans {
		if s == nil {
			continue
		}
		k := scopeKey{s.Resource().Equivalent(), s.InstrumentationScope()}
		g := index[k]
		if g == nil {
			if _, seen := resFirst[k.res]; !seen {
				resFirst[k.res] = s
				resOrder = append(resOrder, k.res)
			}
			g = &group{key: k}
			index[k] = g
			groups[k.res] = append(groups[k.res], g)
		}
		g.spans = append(g.spans, s)
	}
	for _, r := range resOrder {
		b = appendMessage(b, 1, func(b []byte) []byte { // ResourceSpans
			res := resFirst[r].Resource()
			b = appendMessage(b, 1, func(b []byte) []byte { // Resource
				for it := res.Iter(); it.Next(); {
					b = appendKeyValue(b, 1, it.Attribute())
				}
				return b
			})
			for _, g := range groups[r] {
				b = appendMessage(b, 2, func(b []byte) []byte { // ScopeSpans
					sc := g.key.scope
					if sc != (instrumentation.Scope{}) {
						b = appendMessage(b, 1, func(b []byte) []byte { // InstrumentationScope
							b = appendString(b, 1, sc.Name)
							b = appendString(b, 2, sc.Version)
							for it := sc.Attributes.Iter(); it.Next(); {
								b = appendKeyValue(b, 3, it.Attribute())
							}
							return b
						})
					}
					for _, s := range g.spans {
						b = appendMessage(b, 2, func(b []byte) []byte { return appendSpan(b, s) })
					}
					return appendString(b, 3, sc.SchemaURL)
				})
			}
			return appendString(b, 3, res.SchemaURL())
		})
	}
	return b
}

// appendSpan appends the fields of one Span message.
func appendSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = appendBytes(b, 1, tid[:])
	b = appendBytes(b, 2, sid[:])
	b = appendString(b, 3, sc.TraceState().String())
	parent := s.Parent()
	if psid := parent.SpanID(); psid.IsValid() {
		b = appendBytes(b, 4, psid[:])
	}
	b = appendString(b, 5, s.Name())
	b = appendVarint(b, 6, uint64(s.SpanKind())) // OTLP's SpanKind numbers are otel's
	b = appendFixed64(b, 7, unixNano(s.StartTime()))
	b = appendFixed64(b, 8, unixNano(s.EndTime()))
	for _, kv := range s.Attributes() {
		b = appendKeyValue(b, 9, kv)
	}
	b = appendVarint(b, 10, uint64(clamp32(s.DroppedAttributes())))
	for _, ev := range s.Events() {
		b = appendMessage(b, 11, func(b []byte) []byte { // Span.Event
			b = appendFixed64(b, 1, unixNano(ev.Time))
			b = appendString(b, 2, ev.Name)
			for _, kv := range ev.Attributes {
				b = appendKeyValue(b, 3, kv)
			}
			return appendVarint(b, 4, uint64(clamp32(ev.DroppedAttributeCount)))
		})
	}
	b = appendVarint(b, 12, uint64(clamp32(s.DroppedEvents())))
	for _, l := range s.Links() {
		b = appendMessage(b, 13, func(b []byte) []byte { // Span.Link
			ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
			b = appendBytes(b, 1, ltid[:])
			b = appendBytes(b, 2, lsid[:])
			b = appendString(b, 3, l.SpanContext.TraceState().String())
			for _, kv := range l.Attributes {
				b = appendKeyValue(b, 4, kv)
			}
			b = appendVarint(b, 5, uint64(clamp32(l.DroppedAttributeCount)))
			return appendFixed32(b, 6, spanFlags(l.SpanContext.TraceFlags(), l.SpanContext))
		})
	}
	b = appendVarint(b, 14, uint64(clamp32(s.DroppedLinks())))
	st := s.Status()
	b = appendMessage(b, 15, func(b []byte) []byte { // Status
		b = appendString(b, 2, st.Description)
		return appendVarint(b, 3, statusCode(st.Code))
	})
	return appendFixed32(b, 16, spanFlags(sc.TraceFlags(), parent))
}

// statusCode maps otel's codes (Unset 0, Error 1, Ok 2) to OTLP's
// StatusCode (UNSET 0, OK 1, ERROR 2).
func statusCode(c codes.Code) uint64 {
	switch c {
	case codes.Ok:
		return 1
	case codes.Error:
		return 2
	}
	return 0
}

// spanFlags is OTLP's SpanFlags: the W3C trace flags in the low byte, and
// bit 8 set (whether the parent is remote is known), bit 9 when it is.
func spanFlags(tf trace.TraceFlags, parent trace.SpanContext) uint32 {
	f := uint32(tf) | 0x100
	if parent.IsRemote() {
		f |= 0x200
	}
	return f
}

func unixNano(t time.Time) uint64 { return uint64(max(0, t.UnixNano())) }

func clamp32(n int) uint32 { return uint32(min(max(n, 0), math.MaxUint32)) }

// appendKeyValue appends kv as the KeyValue field num.
func appendKeyValue(b []byte, num protowire.Number, kv attribute.KeyValue) []byte {
	return appendMessage(b, num, func(b []byte) []byte {
		b = appendString(b, 1, string(kv.Key))
		return appendAnyValue(b, 2, kv.Value)
	})
}

// appendAnyValue appends v as the AnyValue field num. The oneof's field is
// written even when it holds its zero value: its presence is the type.
func appendAnyValue(b []byte, num protowire.Number, v attribute.Value) []byte {
	return appendMessage(b, num, func(b []byte) []byte {
		switch v.Type() {
		case attribute.STRING:
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendString(b, v.AsString())
		case attribute.BOOL:
			b = protowire.AppendTag(b, 2, protowire.VarintType)
			b = protowire.AppendVarint(b, protowire.EncodeBool(v.AsBool()))
		case attribute.INT64:
			b = protowire.AppendTag(b, 3, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(v.AsInt64()))
		case attribute.FLOAT64:
			b = protowire.AppendTag(b, 4, protowire.Fixed64Type)
			b = protowire.AppendFixed64(b, math.Float64bits(v.AsFloat64()))
		case attribute.BYTESLICE:
			b = protowire.AppendTag(b, 7, protowire.BytesType)
			b = protowire.AppendBytes(b, v.AsByteSlice())
		case attribute.MAP:
			b = appendMessage(b, 6, func(b []byte) []byte { // KeyValueList
				for _, kv := range v.AsMap() {
					b = appendKeyValue(b, 1, kv)
				}
				return b
			})
		case attribute.BOOLSLICE, attribute.INT64SLICE, attribute.FLOAT64SLICE, attribute.STRINGSLICE, attribute.SLICE:
			b = appendMessage(b, 5, func(b []byte) []byte { // ArrayValue
				return appendArray(b, v)
			})
		case attribute.EMPTY:
		default:
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendString(b, "INVALID")
		}
		return b
	})
}

// appendArray appends the values of a slice attribute as ArrayValue's
// repeated AnyValue (field 1).
func appendArray(b []byte, v attribute.Value) []byte {
	switch v.Type() {
	case attribute.BOOLSLICE:
		return appendEach(b, v.AsBoolSlice(), attribute.BoolValue)
	case attribute.INT64SLICE:
		return appendEach(b, v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		return appendEach(b, v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		return appendEach(b, v.AsStringSlice(), attribute.StringValue)
	case attribute.SLICE:
		return appendEach(b, v.AsSlice(), func(x attribute.Value) attribute.Value { return x })
	}
	return b
}

func appendEach[T any](b []byte, xs []T, value func(T) attribute.Value) []byte {
	for _, x := range xs {
		b = appendAnyValue(b, 1, value(x))
	}
	return b
}

// appendMessage appends the embedded message body writes as field num.
func appendMessage(b []byte, num protowire.Number, body func([]byte) []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, body(nil))
}

// The scalar appenders leave out proto3 defaults (zero, ""), as the
// generated code does.

func appendString(b []byte, num protowire.Number, s string) []byte { return appendLen(b, num, s) }

func appendBytes(b []byte, num protowire.Number, p []byte) []byte { return appendLen(b, num, p) }

// appendLen appends a length-delimited field (string or bytes).
func appendLen[T string | []byte](b []byte, num protowire.Number, p T) []byte {
	if len(p) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func appendFixed32(b []byte, num protowire.Number, v uint32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, v)
}
