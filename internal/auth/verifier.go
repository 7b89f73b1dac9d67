package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Algorithms, each pinned to one key type.
const (
	algHS256 = "HS256" // shared secret
	algRS256 = "RS256" // *rsa.PublicKey
	algES256 = "ES256" // *ecdsa.PublicKey on P-256
	algEdDSA = "EdDSA" // ed25519.PublicKey
)

// maxToken bounds the work done on a presented token before any check.
const maxToken = 8 << 10

// minRSABits is the smallest RSA modulus accepted, from a PEM file or a JWKS.
const minRSABits = 2048

// Config selects how tokens are verified. Exactly one of Secret,
// PublicKeyFile and JWKSURL must be set.
type Config struct {
	// Secret is an HS256 shared secret; tokens must be HS256.
	Secret []byte
	// PublicKeyFile is a PEM file holding an RSA, EC P-256 or Ed25519 public
	// key (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE block); tokens must be
	// RS256, ES256 or EdDSA respectively.
	PublicKeyFile string
	// JWKSURL is an http(s) URL of a JSON Web Key Set. Each key accepts only
	// the algorithm of its type (RSA: RS256, EC P-256: ES256, OKP Ed25519:
	// EdDSA); symmetric and other keys are ignored.
	JWKSURL string
	// Issuer and Audience, when non-empty, must match `iss` and `aud`.
	Issuer, Audience string
	// HTTPClient fetches the JWKS; nil means a client with a 10 s timeout.
	HTTPClient *http.Client
	// Leeway is the clock skew allowed on `exp` and `nbf`.
	Leeway time.Duration
	// JWKSMinRefresh is the least time between two JWKS fetches triggered by
	// an unknown `kid`; 0 means 5 s.
	JWKSMinRefresh time.Duration
	// JWKSRefresh is the interval of the periodic JWKS refresh; 0 means 1 h.
	JWKSRefresh time.Duration
	// JWKSWait bounds how long a Verify waits for a JWKS fetch caused by an
	// unknown kid (the fetch, shared by all who need it, goes on); 0 means 5 s.
	JWKSWait time.Duration
	// Logger receives JWKS fetch failures (with the URL, never a token).
	Logger *slog.Logger
}

// Verifier checks tokens against one key source. It is safe for concurrent
// use.
type Verifier struct {
	parser  *jwt.Parser
	keyfunc func(ctx context.Context) jwt.Keyfunc
	jwks    *jwks // nil unless Config.JWKSURL
}

// NewVerifier returns a Verifier for cfg. It fails when not exactly one key
// source is configured, the key file cannot be used, or the JWKS URL is not
// an absolute http(s) URL. With a JWKS URL it fetches the set once, bounded
// by ctx and the HTTP client's timeout; a failed fetch is not an error (the
// set is fetched again on demand). It starts no goroutine that outlives it:
// the periodic refresh is Run.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	return newVerifier(ctx, cfg, time.Now)
}

func newVerifier(ctx context.Context, cfg Config, now func() time.Time) (*Verifier, error) {
	n := 0
	for _, set := range []bool{len(cfg.Secret) > 0, cfg.PublicKeyFile != "", cfg.JWKSURL != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("auth: configure exactly one of a JWT secret, a public key file or a JWKS URL (got %d)", n)
	}

	v := &Verifier{}
	var methods []string
	switch {
	case len(cfg.Secret) > 0:
		secret := append([]byte(nil), cfg.Secret...)
		methods = []string{algHS256}
		v.keyfunc = staticKey(algHS256, secret)
	case cfg.PublicKeyFile != "":
		key, err := readPublicKey(cfg.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		alg, err := algFor(key)
		if err != nil {
			return nil, fmt.Errorf("auth: %s: %w", cfg.PublicKeyFile, err)
		}
		methods = []string{alg}
		v.keyfunc = staticKey(alg, key)
	default:
		j, err := newJWKS(ctx, cfg, now)
		if err != nil {
			return nil, err
		}
		methods = []string{algRS256, algES256, algEdDSA}
		v.jwks = j
		v.keyfunc = j.keyfunc
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(max(cfg.Leeway, 0)),
		jwt.WithTimeFunc(now),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Verify checks token and returns its claims. The error wraps ErrMissing for
// an empty token, ErrExpired for a correctly signed token that passes every
// other check but has expired, and ErrInvalid otherwise. ctx bounds a JWKS
// fetch caused by an unknown `kid`.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return Claims{}, ErrMissing
	}
	if len(token) > maxToken {
		return Claims{}, fmt.Errorf("%w: token longer than %d bytes", ErrInvalid, maxToken)
	}
	var c tokenClaims
	if _, err := v.parser.ParseWithClaims(token, &c, v.keyfunc(ctx)); err != nil {
		if expiredOnly(err) {
			return Claims{}, fmt.Errorf("%w: %w", ErrExpired, err)
		}
		return Claims{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	cl := Claims{Subject: c.Subject}
	if c.ExpiresAt != nil {
		cl.ExpiresAt = c.ExpiresAt.Time
	}
	if c.IssuedAt != nil {
		cl.IssuedAt = c.IssuedAt.Time
	}
	return cl, nil
}

// JWKSStatus returns the error of the last JWKS fetch: nil when it
// succeeded or no JWKS is configured.
func (v *Verifier) JWKSStatus() error {
	if v.jwks == nil {
		return nil
	}
	return v.jwks.status()
}

// Run refreshes the JWKS every Config.JWKSRefresh until ctx is done or
// Close is called; without a JWKS URL it returns at once. Between refreshes
// the set is still fetched on demand, for an unknown kid, whether Run runs
// or not.
func (v *Verifier) Run(ctx context.Context) {
	if v.jwks != nil {
		v.jwks.loop(ctx)
	}
}

// Close ends Run and any fetch in flight and waits for the fetches. It is
// idempotent; Verify keeps working on the cached keys afterwards but never
// fetches again.
func (v *Verifier) Close() {
	if v.jwks != nil {
		v.jwks.close()
	}
}

var errSubject = errors.New("sub missing or longer than 256 bytes")

// tokenClaims adds the `sub` rule to the registered claims; jwt calls
// Validate after the signature is verified, with the other claim checks.
type tokenClaims struct {
	jwt.RegisteredClaims
}

// errNumericDate is a time claim that is not a JSON number.
var errNumericDate = errors.New("exp, nbf and iat must be JSON numbers (RFC 7519 NumericDate)")

// UnmarshalJSON refuses time claims given as strings, which jwt's
// NumericDate would otherwise accept ("exp":"1700000000").
func (c *tokenClaims) UnmarshalJSON(b []byte) error {
	var times struct {
		Exp, Nbf, Iat json.RawMessage
	}
	if err := json.Unmarshal(b, &times); err != nil {
		return err
	}
	for _, raw := range []json.RawMessage{times.Exp, times.Nbf, times.Iat} {
		if raw == nil || string(raw) == "null" {
			continue
		}
		if raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
			return errNumericDate
		}
	}
	return json.Unmarshal(b, &c.RegisteredClaims)
}

func (c tokenClaims) Validate() error {
	if c.Subject == "" || len(c.Subject) > MaxSubject {
		return errSubject
	}
	return nil
}

// expiredOnly reports whether err says expired and nothing else, so a token
// that is both expired and wrong in another way counts as invalid.
func expiredOnly(err error) bool {
	if !errors.Is(err, jwt.ErrTokenExpired) {
		return false
	}
	for _, other := range []error{
		jwt.ErrTokenMalformed, jwt.ErrTokenUnverifiable, jwt.ErrTokenSignatureInvalid,
		jwt.ErrTokenRequiredClaimMissing, jwt.ErrTokenInvalidAudience, jwt.ErrTokenInvalidIssuer,
		jwt.ErrTokenInvalidSubject, jwt.ErrTokenUsedBeforeIssued, jwt.ErrTokenNotValidYet,
		jwt.ErrTokenInvalidId, errSubject,
	} {
		if errors.Is(err, other) {
			return false
		}
	}
	return true
}

// staticKey returns a keyfunc for a single configured key that accepts only
// alg, whatever the token's `kid`.
func staticKey(alg string, key any) func(context.Context) jwt.Keyfunc {
	kf := func(t *jwt.Token) (any, error) {
		if t.Method.Alg() != alg {
			return nil, fmt.Errorf("algorithm %q not allowed", t.Method.Alg())
		}
		return key, nil
	}
	return func(context.Context) jwt.Keyfunc { return kf }
}

// algFor returns the only algorithm accepted for key, which also rejects key
// types and sizes agentwire does not support.
func algFor(key crypto.PublicKey) (string, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return "", fmt.Errorf("RSA key of %d bits, want at least %d", k.N.BitLen(), minRSABits)
		}
		return algRS256, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("EC key on curve %s, want P-256", k.Curve.Params().Name)
		}
		return algES256, nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", errors.New("malformed Ed25519 key")
		}
		return algEdDSA, nil
	default:
		return "", fmt.Errorf("unsupported key type %T", key)
	}
}

// readPublicKey reads the first PEM block of path as a public key.
func readPublicKey(path string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: public key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("auth: %s: no PEM block found", path)
	}
	var key crypto.PublicKey
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		if strings.Contains(block.Type, "PRIVATE KEY") {
			return nil, fmt.Errorf("auth: %s holds a private key; give the public key only", path)
		}
		return nil, fmt.Errorf("auth: %s: unsupported PEM block %q", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: %s: %w", path, err)
	}
	return key, nil
}

// jwksURL checks that raw is an absolute http(s) URL with a host.
func jwksURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("auth: JWKS URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("auth: JWKS URL %q: want an absolute http or https URL", raw)
	}
	return nil
}
