package app_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/app"
	"github.com/agentwire/agentwire/internal/config"
)

// The tests here count goroutines: none runs in parallel.

func testConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.Keys.DataDir = t.TempDir()
	cfg.Dev = true
	return cfg
}

var discard = slog.New(slog.DiscardHandler)

// sqlOpener is database/sql's connection opener, which every sql.DB runs
// from its opening to its Close: the SQLite store's, not one of agentwire's.
var sqlOpener = goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener")

// TestNewStartsNothing: New opens the backends and binds the listener but
// starts no loop; Shutdown without Run releases everything it opened.
func TestNewStartsNothing(t *testing.T) {
	before := goleak.IgnoreCurrent()
	a, err := app.New(context.Background(), testConfig(t), discard)
	if err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, before, sqlOpener)
	addr := a.Addr()
	a.Shutdown(context.Background())
	goleak.VerifyNone(t, before)
	// The listener is closed: the port is free again.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still bound after Shutdown: %v", err)
	}
	ln.Close()
}

// TestJWKSRefreshStartsInRun: with --jwks-url, New fetches the set once
// but leaves the periodic refresh to Run, and Shutdown ends it.
func TestJWKSRefreshStartsInRun(t *testing.T) {
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"keys":[]}`)
	}))
	defer jwks.Close()
	const loop = "auth.(*jwks).loop"
	cfg := testConfig(t)
	cfg.Keys.JWKSURL = jwks.URL
	a, err := app.New(context.Background(), cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	if running(loop) {
		t.Fatal("New started the JWKS refresh loop")
	}
	ctx, stop := context.WithCancel(context.Background())
	stop()
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !running(loop); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no JWKS refresh loop 5 s after Run")
		}
	}
	a.Shutdown(context.Background())
	if running(loop) {
		t.Fatal("the JWKS refresh loop outlived Shutdown")
	}
}

// running reports whether a goroutine is in fn.
func running(fn string) bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn)
}

// TestRunShutdown: Run serves until its ctx is done, and Shutdown then
// ends every goroutine Run started and New's backends.
func TestRunShutdown(t *testing.T) {
	before := goleak.IgnoreCurrent()
	a, err := app.New(context.Background(), testConfig(t), discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := hc.Get("http://" + a.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
	}
	hc.CloseIdleConnections()
	stop()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when its ctx was done")
	}
	done := make(chan struct{})
	go func() { a.Shutdown(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	a.Shutdown(context.Background()) // a second call does nothing
	goleak.VerifyNone(t, before)
}

// TestRunTwice: Run with a done ctx starts and returns at once; a second
// Run is refused; Shutdown still ends everything.
func TestRunTwice(t *testing.T) {
	before := goleak.IgnoreCurrent()
	a, err := app.New(context.Background(), testConfig(t), discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	stop()
	if err := a.Run(ctx); err != nil {
		t.Fatalf("Run with a done ctx: %v", err)
	}
	if err := a.Run(context.Background()); err == nil {
		t.Fatal("a second Run returned nil")
	}
	a.Shutdown(context.Background())
	goleak.VerifyNone(t, before)
}
