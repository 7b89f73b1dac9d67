package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	defaultJWKSMinRefresh = 5 * time.Second
	defaultJWKSRefresh    = time.Hour
	defaultJWKSTimeout    = 10 * time.Second
	defaultJWKSWait       = 5 * time.Second
	maxJWKSBytes          = 1 << 20
	maxJWKSKeys           = 64
)

var errNoKey = errors.New("no JWKS key for this token")

// jwkKey is a usable key of the set with the one algorithm it accepts.
type jwkKey struct {
	kid string
	alg string
	key crypto.PublicKey
}

// jwks is a cached JSON Web Key Set. At most one fetch runs at a time,
// detached from the requests that wait for it (bounded by the HTTP client's
// timeout and close); every caller needing a fetch while one runs shares it
// and waits at most wait. A fetch caused by an unknown kid starts at most
// once per minRefresh, and loop (which the Verifier's Run is) refreshes
// the set every interval until close.
type jwks struct {
	url        string
	client     *http.Client
	minRefresh time.Duration
	wait       time.Duration
	interval   time.Duration // of the periodic refresh (loop)
	now        func() time.Time
	log        *slog.Logger

	mu      sync.RWMutex
	keys    []jwkKey // replaced whole on each successful fetch
	lastErr error    // of the last fetch; nil after a success

	fmu       sync.Mutex // guards inflight, lastFetch and the fetch goroutines' start
	inflight  *fetchCall
	lastFetch time.Time // start of the last fetch, failed or not
	fetches   sync.WaitGroup

	ctx    context.Context // ends with close
	cancel context.CancelFunc
	once   sync.Once
}

// fetchCall is one fetch that any number of callers wait for.
type fetchCall struct {
	done chan struct{}
	err  error // set before done is closed
}

func newJWKS(ctx context.Context, cfg Config, now func() time.Time) (*jwks, error) {
	if err := jwksURL(cfg.JWKSURL); err != nil {
		return nil, err
	}
	j := &jwks{
		url:        cfg.JWKSURL,
		client:     cfg.HTTPClient,
		minRefresh: cfg.JWKSMinRefresh,
		wait:       cfg.JWKSWait,
		now:        now,
		interval:   cfg.JWKSRefresh,
		log:        cfg.Logger,
	}
	if j.client == nil {
		j.client = &http.Client{Timeout: defaultJWKSTimeout}
	}
	if j.minRefresh <= 0 {
		j.minRefresh = defaultJWKSMinRefresh
	}
	if j.wait <= 0 {
		j.wait = defaultJWKSWait
	}
	if j.log == nil {
		j.log = slog.New(slog.DiscardHandler)
	}
	if j.interval <= 0 {
		j.interval = defaultJWKSRefresh
	}
	j.ctx, j.cancel = context.WithCancel(context.Background())

	// A failed first fetch is not fatal: the identity provider may come up
	// after us, and the next unknown kid fetches again. Status reports it.
	_ = j.refresh(ctx, true, 0)
	return j, nil
}

// loop refreshes the set every j.interval until ctx is done or close.
func (j *jwks) loop(ctx context.Context) {
	t := time.NewTicker(j.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-j.ctx.Done():
			return
		case <-t.C:
			_ = j.refresh(j.ctx, true, 0)
		}
	}
}

func (j *jwks) close() {
	j.once.Do(func() {
		j.fmu.Lock()
		j.cancel() // no fetch starts after this
		j.fmu.Unlock()
	})
	j.fetches.Wait()
}

// status returns the error of the last fetch, nil when it succeeded.
func (j *jwks) status() error {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return j.lastErr
}

// keyfunc returns the keys of the set that may verify t: those of t's
// algorithm with t's kid (all of that algorithm when t has no kid). When none
// is cached it fetches the set again, subject to the rate limit, waiting at
// most j.wait for it.
func (j *jwks) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		kid, _ := t.Header["kid"].(string)
		if _, ok := t.Header["kid"]; ok && kid == "" {
			return nil, errors.New("kid is not a non-empty string")
		}
		if set := j.lookup(kid, alg); len(set.Keys) > 0 {
			return set, nil
		}
		if err := j.refresh(ctx, false, j.wait); err != nil {
			return nil, fmt.Errorf("%w: %w", errNoKey, err)
		}
		if set := j.lookup(kid, alg); len(set.Keys) > 0 {
			return set, nil
		}
		return nil, errNoKey
	}
}

func (j *jwks) lookup(kid, alg string) jwt.VerificationKeySet {
	j.mu.RLock()
	defer j.mu.RUnlock()
	var set jwt.VerificationKeySet
	for _, k := range j.keys {
		if k.alg == alg && (kid == "" || k.kid == kid) {
			set.Keys = append(set.Keys, k.key)
		}
	}
	return set
}

var errJWKSWait = errors.New("JWKS fetch still running")

// refresh waits for the fetch in flight, or starts one unless force is false
// and a fetch started less than minRefresh ago (then it returns nil at once:
// the caller just looks up that fetch's result). It waits at most wait (no
// bound when 0) and ctx; the fetch itself goes on for the callers after it.
// On failure the cached keys are kept.
func (j *jwks) refresh(ctx context.Context, force bool, wait time.Duration) error {
	j.fmu.Lock()
	if j.ctx.Err() != nil {
		j.fmu.Unlock()
		return errors.New("verifier closed")
	}
	call := j.inflight
	if call == nil {
		now := j.now()
		if !force && !j.lastFetch.IsZero() && now.Sub(j.lastFetch) < j.minRefresh {
			j.fmu.Unlock()
			return nil
		}
		j.lastFetch = now
		call = &fetchCall{done: make(chan struct{})}
		j.inflight = call
		j.fetches.Add(1)
		go j.run(call)
	}
	j.fmu.Unlock()

	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	case <-timeout:
		return errJWKSWait
	}
}

// run performs one fetch for everyone waiting on call.
func (j *jwks) run(call *fetchCall) {
	defer j.fetches.Done()
	keys, err := j.fetch(j.ctx)
	j.mu.Lock()
	if err == nil {
		j.keys = keys
	}
	j.lastErr = err
	j.mu.Unlock()
	if err != nil && j.ctx.Err() == nil {
		j.log.Error("JWKS fetch failed; tokens signed by keys not cached are refused until it answers",
			"url", redactedURL(j.url), "err", err)
	}
	j.fmu.Lock()
	j.inflight = nil
	j.fmu.Unlock()
	call.err = err
	close(call.done)
}

// redactedURL hides a password in u, if any.
func redactedURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable)"
	}
	return p.Redacted()
}

func (j *jwks) fetch(ctx context.Context) ([]jwkKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, fmt.Errorf("JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("JWKS fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS fetch: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("JWKS fetch: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
	}
	return parseJWKS(body)
}

// jwk holds the members of a JSON Web Key that agentwire reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS returns the usable keys of a JWK Set document. Keys that are not
// RSA, EC P-256 or Ed25519, are not for signatures, or declare an `alg` other
// than the one pinned to their type are skipped; a set with no usable key is
// an error so that a broken answer does not wipe the cache.
func parseJWKS(data []byte) ([]jwkKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var keys []jwkKey
	for _, raw := range doc.Keys {
		var k jwk
		if json.Unmarshal(raw, &k) != nil {
			continue
		}
		key, err := k.publicKey()
		if err != nil {
			continue
		}
		alg, err := algFor(key)
		if err != nil || (k.Alg != "" && k.Alg != alg) || (k.Use != "" && k.Use != "sig") {
			continue
		}
		keys = append(keys, jwkKey{kid: k.Kid, alg: alg, key: key})
		if len(keys) == maxJWKSKeys {
			break
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS has no usable RSA, EC P-256 or Ed25519 signing key")
	}
	return keys, nil
}

func (k jwk) publicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "RSA":
		n, err := b64(k.N)
		if err != nil {
			return nil, err
		}
		e, err := b64(k.E)
		if err != nil {
			return nil, err
		}
		if len(e) == 0 || len(e) > 4 {
			return nil, errors.New("RSA exponent out of range")
		}
		exp := new(big.Int).SetBytes(e)
		if exp.Int64() < 3 || exp.Int64()%2 == 0 || exp.Int64() > 1<<31-1 {
			return nil, errors.New("RSA exponent out of range")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}, nil
	case "EC":
		if k.Crv != "P-256" {
			return nil, fmt.Errorf("unsupported curve %q", k.Crv)
		}
		x, err := b64(k.X)
		if err != nil {
			return nil, err
		}
		y, err := b64(k.Y)
		if err != nil {
			return nil, err
		}
		if len(x) != 32 || len(y) != 32 {
			return nil, errors.New("malformed P-256 point")
		}
		// Rejects points not on the curve.
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	case "OKP":
		if k.Crv != "Ed25519" {
			return nil, fmt.Errorf("unsupported curve %q", k.Crv)
		}
		x, err := b64(k.X)
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, errors.New("malformed Ed25519 key")
		}
		return ed25519.PublicKey(x), nil
	default:
		return nil, fmt.Errorf("unsupported key type %q", k.Kty)
	}
}

// b64 decodes base64url, with or without padding, as JWKs in the wild vary.
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
