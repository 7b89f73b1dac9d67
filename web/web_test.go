package web

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	t.Parallel()
	h := Handler()
	tests := []struct {
		path, ctype, cache string
		status             int
		contains           string
	}{
		{"/", "text/html; charset=utf-8", "no-cache", 200, `<script type="module" src="/static/app.js">`},
		{"/static/app.js", "text/javascript; charset=utf-8", "no-cache", 200, `from "/static/agentwire.js"`},
		{"/static/agentwire.js", "text/javascript; charset=utf-8", "no-cache", 200, "export class AgentwireClient"},
		{"/static/style.css", "text/css; charset=utf-8", "no-cache", 200, ":root"},
		{"/static/index.html", "application/json", "no-store", 404, `"not_found"`},
		{"/static/nope.js", "application/json", "no-store", 404, `"not_found"`},
		{"/static/", "application/json", "no-store", 404, `"not_found"`},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d", rec.Code, tc.status)
			}
			if got := rec.Header().Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := rec.Header().Get("Cache-Control"); got != tc.cache {
				t.Errorf("Cache-Control %q, want %q", got, tc.cache)
			}
			if !strings.Contains(rec.Body.String(), tc.contains) {
				t.Errorf("body does not contain %q", tc.contains)
			}
		})
	}
}

func TestIndexHeadersAndRevalidation(t *testing.T) {
	t.Parallel()
	h := Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	csp := rec.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	etag := rec.Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Errorf("revalidation: status %d, want 304", rec.Code)
	}
}

// The page embeds a copy of the SDK's build; clients/js/dist is the source.
func TestSDKCopyIsCurrent(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("../clients/js/dist/agentwire.js")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := os.ReadFile("static/agentwire.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(src, cp) {
		t.Fatal("web/static/agentwire.js differs from clients/js/dist/agentwire.js: run go generate ./web")
	}
}

// No external origin anywhere in the page: it must work with no internet.
func TestNoExternalResources(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"static/index.html", "static/app.js", "static/style.css"} {
		b, err := files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"http://", "https://", "//cdn", "@import", "url("} {
			if bytes.Contains(b, []byte(bad)) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
}
