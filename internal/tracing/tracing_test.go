package tracing_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/agentwire/agentwire/internal/tracing"
)

// TestOffCostsNothing: tracing off is a nil Tracer whose methods hand back
// what they were given and allocate nothing on the hot paths.
func TestOffCostsNothing(t *testing.T) {
	tr, err := tracing.New(context.Background(), tracing.Settings{})
	if err != nil || tr != nil {
		t.Fatalf("New(off) = %v, %v; want nil, nil", tr, err)
	}
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		c, span := tr.Start(ctx, "x", trace.SpanKindInternal)
		span.End()
		c, span = tr.StartRoot(c, "y", trace.SpanKindServer)
		span.End()
		_ = tracing.TraceID(c)
	}); n != 0 {
		t.Errorf("off: %v allocations per span, want 0", n)
	}
	if c, _ := tr.Start(ctx, "x", trace.SpanKindInternal); c != ctx {
		t.Error("off: Start changed the context")
	}
	h := http.NotFoundHandler()
	if got := tr.Handler(h); got == nil || tr.Client(nil) != nil || tr.Provider() != nil {
		t.Error("off: Handler, Client or Provider added something")
	}
	hdr := http.Header{}
	tr.Inject(ctx, hdr)
	if len(hdr) != 0 || tr.Shutdown(ctx) != nil {
		t.Errorf("off: Inject wrote %v", hdr)
	}
}

// TestServiceName: service.name is agentwire unless OTEL_SERVICE_NAME
// says otherwise.
func TestServiceName(t *testing.T) {
	for _, tc := range []struct{ env, want string }{{"", tracing.DefaultServiceName}, {"gateway-eu", "gateway-eu"}} {
		t.Setenv("OTEL_SERVICE_NAME", tc.env)
		exp := tracetest.NewInMemoryExporter()
		tr, err := tracing.New(context.Background(), tracing.Settings{Exporter: exp})
		if err != nil {
			t.Fatal(err)
		}
		_, span := tr.Start(context.Background(), "x", trace.SpanKindInternal)
		span.End()
		spans := exp.GetSpans()
		if len(spans) != 1 {
			t.Fatalf("%d spans", len(spans))
		}
		got, _ := spans[0].Resource.Set().Value("service.name")
		if got.AsString() != tc.want {
			t.Errorf("OTEL_SERVICE_NAME=%q: service.name %q, want %q", tc.env, got.AsString(), tc.want)
		}
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHTTP: a server span is named by the route, never the raw path, and
// is the child of the caller's traceparent; a client request carries its
// context's trace in traceparent.
func TestHTTP(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.New(context.Background(), tracing.Settings{Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	got := make(chan string, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{user}/things", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawQuery != "code=s3cret-key" {
			t.Errorf("the server got query %q: the client lost it", r.URL.RawQuery)
		}
		got <- tracing.TraceID(r.Context())
	})
	srv := httptest.NewServer(tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r)
		tracing.Route(r)
	})))
	defer srv.Close()

	ctx, parent := tr.Start(context.Background(), "caller", trace.SpanKindInternal)
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/users/alice/things?code=s3cret-key", nil)
	resp, err := tr.Client(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	parent.End()
	if id := <-got; id != parent.SpanContext().TraceID().String() {
		t.Errorf("server saw trace %q, want the caller's %s", id, parent.SpanContext().TraceID())
	}
	var server *tracetest.SpanStub
	spans := exp.GetSpans()
	for i := range spans {
		if spans[i].SpanKind == trace.SpanKindServer {
			server = &spans[i]
		}
	}
	if server == nil || server.Name != "GET /users/{user}/things" {
		t.Fatalf("server span %+v, want GET /users/{user}/things", server)
	}
	for _, a := range server.Attributes {
		if v := a.Value.String(); v == "/users/alice/things" {
			t.Errorf("server span attribute %s is the raw path", a.Key)
		}
	}
	// The client span has the URL, without its query.
	var client bool
	for _, sp := range spans {
		for _, a := range sp.Attributes {
			if strings.Contains(a.Value.String(), "s3cret") {
				t.Errorf("span %q attribute %s carries the query: %q", sp.Name, a.Key, a.Value.String())
			}
			if a.Key == "url.full" && sp.SpanKind == trace.SpanKindClient {
				client = a.Value.String() == srv.URL+"/users/alice/things"
			}
		}
	}
	if !client {
		t.Error("no client span with url.full the URL without its query")
	}
}
