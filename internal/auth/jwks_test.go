package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

// jwksServer serves a replaceable JWK Set and counts requests.
type jwksServer struct {
	*httptest.Server
	doc    atomic.Pointer[[]byte]
	status atomic.Int32
	hits   atomic.Int32
}

func newJWKSServer(t *testing.T, doc []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.set(doc)
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if code := int(s.status.Load()); code != http.StatusOK {
			http.Error(w, "down", code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.doc.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(doc []byte) { s.doc.Store(&doc) }

func (s *jwksServer) config() Config {
	return Config{JWKSURL: s.URL, HTTPClient: s.Client(), JWKSMinRefresh: time.Nanosecond}
}

func TestJWKSVerify(t *testing.T) {
	t.Parallel()
	k := getKeys()
	srv := newJWKSServer(t, jwksDoc(t,
		jwkOf(t, "rsa", &k.rsa.PublicKey),
		jwkOf(t, "ec", &k.ec.PublicKey),
		jwkOf(t, "ed", k.ed.Public()),
	))
	v, err := NewVerifier(t.Context(), srv.config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)

	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"RS256", sign(t, jwt.SigningMethodRS256, k.rsa, "rsa", valid(nil)), true},
		{"ES256", sign(t, jwt.SigningMethodES256, k.ec, "ec", valid(nil)), true},
		{"EdDSA", sign(t, jwt.SigningMethodEdDSA, k.ed, "ed", valid(nil)), true},
		{"no kid", sign(t, jwt.SigningMethodES256, k.ec, "", valid(nil)), true},
		{"kid of another key", sign(t, jwt.SigningMethodRS256, k.rsa, "ec", valid(nil)), false},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, k.rsa, "nope", valid(nil)), false},
		{"wrong RSA key", sign(t, jwt.SigningMethodRS256, k.rsa2, "rsa", valid(nil)), false},
		{"RS384 on RSA key", sign(t, jwt.SigningMethodRS384, k.rsa, "rsa", valid(nil)), false},
		{"HS256", sign(t, jwt.SigningMethodHS256, hsSecret, "rsa", valid(nil)), false},
		{"expired", sign(t, jwt.SigningMethodRS256, k.rsa, "rsa", valid(jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()})), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := v.Verify(t.Context(), tt.token)
			if tt.ok {
				if err != nil || c.Subject != "alice" {
					t.Fatalf("Verify = %+v, %v", c, err)
				}
				return
			}
			if err == nil {
				t.Fatal("Verify succeeded, want error")
			}
			if Reason(err) != "invalid" && Reason(err) != "expired" {
				t.Fatalf("Reason = %q", Reason(err))
			}
		})
	}
}

func TestJWKSRotate(t *testing.T) {
	t.Parallel()
	k := getKeys()
	srv := newJWKSServer(t, jwksDoc(t, jwkOf(t, "k1", &k.rsa.PublicKey)))
	v, err := NewVerifier(t.Context(), srv.config())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	old := sign(t, jwt.SigningMethodRS256, k.rsa, "k1", valid(nil))
	if _, err := v.Verify(t.Context(), old); err != nil {
		t.Fatalf("k1 before rotation: %v", err)
	}
	srv.set(jwksDoc(t, jwkOf(t, "k2", &k.rsa2.PublicKey)))
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa2, "k2", valid(nil))); err != nil {
		t.Fatalf("k2 after rotation: %v", err)
	}
	// A refresh replaces the whole set, so a removed key stops working.
	if _, err := v.Verify(t.Context(), old); !errors.Is(err, ErrInvalid) {
		t.Fatalf("k1 after rotation: err = %v, want ErrInvalid", err)
	}
}

func TestJWKSStartFailureIsNotFatal(t *testing.T) {
	t.Parallel()
	k := getKeys()
	srv := newJWKSServer(t, jwksDoc(t, jwkOf(t, "k1", k.ed.Public())))
	srv.status.Store(http.StatusServiceUnavailable)
	v, err := NewVerifier(t.Context(), srv.config())
	if err != nil {
		t.Fatalf("NewVerifier with the JWKS down: %v", err)
	}
	defer v.Close()
	tok := sign(t, jwt.SigningMethodEdDSA, k.ed, "k1", valid(nil))
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Verify with the JWKS down: err = %v, want ErrInvalid", err)
	}
	srv.status.Store(http.StatusOK)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("Verify once the JWKS is up: %v", err)
	}
}

func TestJWKSUnreachableAtStart(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	v, err := NewVerifier(t.Context(), Config{JWKSURL: url, HTTPClient: &http.Client{Timeout: time.Second}})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	v.Close()
}

// TestJWKSPinning checks that a key is used only with the algorithm of its
// type, whatever the set claims.
func TestJWKSPinning(t *testing.T) {
	t.Parallel()
	k := getKeys()
	rsaAsHS := jwkOf(t, "rsa-hs", &k.rsa.PublicKey)
	rsaAsHS["alg"] = "HS256"
	ecAsRS := jwkOf(t, "ec-rs", &k.ec.PublicKey)
	ecAsRS["alg"] = "RS256"
	enc := jwkOf(t, "enc", &k.rsa2.PublicKey)
	enc["use"] = "enc"
	oct := map[string]string{"kty": "oct", "kid": "oct", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}
	plain := jwkOf(t, "rsa", &k.rsa.PublicKey)
	plain["alg"] = "RS256"
	srv := newJWKSServer(t, jwksDoc(t, rsaAsHS, ecAsRS, enc, oct, plain))
	v, err := NewVerifier(t.Context(), srv.config())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	tests := []struct {
		name  string
		token string
	}{
		{"RSA key declared HS256", sign(t, jwt.SigningMethodRS256, k.rsa, "rsa-hs", valid(nil))},
		{"EC key declared RS256", sign(t, jwt.SigningMethodES256, k.ec, "ec-rs", valid(nil))},
		{"encryption key", sign(t, jwt.SigningMethodRS256, k.rsa2, "enc", valid(nil))},
		{"symmetric key", sign(t, jwt.SigningMethodHS256, hsSecret, "oct", valid(nil))},
		{"HS256 with an RSA key's modulus", sign(t, jwt.SigningMethodHS256, []byte(plain["n"]), "rsa", valid(nil))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := v.Verify(t.Context(), tt.token); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k.rsa, "rsa", valid(nil))); err != nil {
		t.Fatalf("the well-formed key: %v", err)
	}
}

func TestJWKSRefreshRateLimited(t *testing.T) {
	t.Parallel()
	k := getKeys()
	clock := newFakeClock(time.Now())
	srv := newJWKSServer(t, jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey)))
	cfg := srv.config()
	cfg.JWKSMinRefresh = 5 * time.Second
	v, err := newVerifier(t.Context(), cfg, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if got := srv.hits.Load(); got != 1 {
		t.Fatalf("hits after start = %d, want 1", got)
	}

	// The fake clock runs ahead of the tokens' real issue time.
	far := jwt.MapClaims{"exp": time.Now().Add(100 * time.Hour).Unix()}
	unknown := sign(t, jwt.SigningMethodES256, k.ec, "unknown", valid(far))
	burst := func() {
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if _, err := v.Verify(t.Context(), unknown); !errors.Is(err, ErrInvalid) {
					t.Errorf("unknown kid: err = %v, want ErrInvalid", err)
				}
			})
		}
		wg.Wait()
	}
	steps := []struct {
		advance time.Duration
		hits    int32
	}{
		{0, 1},                               // within 5 s of the start fetch
		{6 * time.Second, 2},                 // one fetch for the whole burst
		{time.Second, 2},                     // 1 s after it: limited
		{5 * time.Second, 3},                 // 6 s after it: allowed again
		{0, 3},                               // same instant
		{5*time.Second - time.Nanosecond, 3}, // just short of the limit
		{time.Nanosecond, 4},                 // exactly at the limit
		{time.Hour, 5},                       // long after
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		burst()
		if got := srv.hits.Load(); got != s.hits {
			t.Fatalf("step %d: hits = %d, want %d", i, got, s.hits)
		}
	}

	// A known kid never causes a fetch.
	known := sign(t, jwt.SigningMethodES256, k.ec, "k1", valid(far))
	clock.Advance(time.Minute)
	for range 10 {
		if _, err := v.Verify(t.Context(), known); err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.hits.Load(); got != 5 {
		t.Fatalf("hits after known kids = %d, want 5", got)
	}

	// The key appears: found by the next allowed refresh.
	srv.set(jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey), jwkOf(t, "unknown", &k.ec.PublicKey)))
	if _, err := v.Verify(t.Context(), unknown); err != nil {
		t.Fatalf("after the key appeared: %v", err)
	}
	if got := srv.hits.Load(); got != 6 {
		t.Fatalf("hits = %d, want 6", got)
	}
}

func TestJWKSPeriodicRefresh(t *testing.T) {
	t.Parallel()
	k := getKeys()
	srv := newJWKSServer(t, jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey)))
	cfg := srv.config()
	cfg.JWKSRefresh = 10 * time.Millisecond
	v, err := NewVerifier(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	go v.Run(t.Context()) // Close ends it
	deadline := time.Now().Add(5 * time.Second)
	for srv.hits.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("hits = %d after 5 s, want periodic refreshes", srv.hits.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestJWKSCloseLeavesNoGoroutine is not parallel, so that the goroutines it
// compares are only its own.
func TestJWKSCloseLeavesNoGoroutine(t *testing.T) {
	k := getKeys()
	before := goleak.IgnoreCurrent()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey)))
	}))
	v, err := NewVerifier(t.Context(), Config{JWKSURL: srv.URL, HTTPClient: srv.Client(), JWKSRefresh: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		v.Run(context.Background()) // Close ends it
	}()
	if _, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodES256, k.ec, "k1", valid(nil))); err != nil {
		t.Fatal(err)
	}
	v.Close()
	v.Close() // idempotent
	<-ran
	srv.Close()
	goleak.VerifyNone(t, before)
}

// TestJWKSCloseAbortsFetch checks that Close does not wait for a JWKS that
// never answers, and that a Verify blocked on it returns.
func TestJWKSCloseAbortsFetch(t *testing.T) {
	t.Parallel()
	k := getKeys()
	hang := make(chan struct{})
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.Write(jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey)))
			return
		}
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	v, err := NewVerifier(t.Context(), Config{JWKSURL: srv.URL, HTTPClient: srv.Client(), JWKSMinRefresh: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodES256, k.ec, "k2", valid(nil)))
		done <- err
	}()
	for hits.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	v.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Verify still blocked 5 s after Close")
	}
}

func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := parseJWKS(data)
		if err == nil && len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		for _, k := range keys {
			if alg, err := algFor(k.key); err != nil || alg != k.alg {
				t.Fatalf("key %T pinned to %q, want %q (%v)", k.key, k.alg, alg, err)
			}
		}
	})
}

// TestJWKSSlowFetchShared: with the JWKS endpoint hanging, concurrent
// verifies of unknown kids share one fetch and each returns within
// JWKSWait, not one fetch timeout after the other. The endpoint blocks
// until the test releases it.
func TestJWKSSlowFetchShared(t *testing.T) {
	t.Parallel()
	k := getKeys()
	release := make(chan struct{})
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.Write(jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey)))
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write(jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey), jwkOf(t, "k2", &k.ec.PublicKey)))
	}))
	defer srv.Close()
	var logs syncBuf
	v, err := NewVerifier(t.Context(), Config{JWKSURL: srv.URL, HTTPClient: srv.Client(), JWKSMinRefresh: time.Nanosecond,
		JWKSWait: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	defer close(release)

	const n = 4
	errs := make(chan error, n)
	start := time.Now()
	for i := range n {
		go func() {
			_, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodES256, k.ec, fmt.Sprintf("unknown-%d", i), valid(nil)))
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; !errors.Is(err, ErrInvalid) {
			t.Fatalf("unknown kid during a hung fetch: %v, want ErrInvalid", err)
		}
	}
	// Each waited at most 300 ms; sequential fetches would need n times the
	// client's timeout. Generous for a loaded machine, far below n × 300 ms.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("%d verifies took %v", n, d)
	}
	if got := hits.Load(); got != 2 {
		t.Fatalf("JWKS requests = %d, want 2 (start + one shared fetch)", got)
	}
	release <- struct{}{} // the shared fetch completes
	tok := sign(t, jwt.SigningMethodES256, k.ec, "k2", valid(nil))
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := v.Verify(context.Background(), tok); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("k2 after the fetch completed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestJWKSFailureReported: a failed fetch is logged with the URL and shown
// by JWKSStatus until a fetch succeeds.
func TestJWKSFailureReported(t *testing.T) {
	t.Parallel()
	k := getKeys()
	srv := newJWKSServer(t, jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey)))
	srv.status.Store(http.StatusInternalServerError)
	var logs syncBuf
	cfg := srv.config()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	v, err := NewVerifier(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if v.JWKSStatus() == nil {
		t.Fatal("JWKSStatus nil after a failed start fetch")
	}
	if out := logs.String(); !strings.Contains(out, "JWKS fetch failed") || !strings.Contains(out, srv.URL) {
		t.Fatalf("log %q lacks the failure and its URL", out)
	}
	srv.status.Store(http.StatusOK)
	tok := sign(t, jwt.SigningMethodES256, k.ec, "k1", valid(nil))
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	if err := v.JWKSStatus(); err != nil {
		t.Fatalf("JWKSStatus after a success: %v", err)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
