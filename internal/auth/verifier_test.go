package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var hsSecret = []byte("0123456789abcdef0123456789abcdef")

func TestVerify(t *testing.T) {
	t.Parallel()
	k := getKeys()
	rsaFile := pubPEM(t, &k.rsa.PublicKey)
	rsaPEM, err := os.ReadFile(rsaFile)
	if err != nil {
		t.Fatal(err)
	}
	hs := Config{Secret: hsSecret}
	rs := Config{PublicKeyFile: rsaFile}
	es := Config{PublicKeyFile: pubPEM(t, &k.ec.PublicKey)}
	ed := Config{PublicKeyFile: pubPEM(t, k.ed.Public())}
	pkcs1 := Config{PublicKeyFile: pemFile(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey))}
	withIssAud := Config{Secret: hsSecret, Issuer: "https://idp.example", Audience: "agentwire"}
	withLeeway := Config{Secret: hsSecret, Leeway: 10 * time.Second}

	past := time.Now().Add(-5 * time.Second).Unix()
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	nonePayload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"alice","exp":4102444800}`))

	tests := []struct {
		name  string
		cfg   Config
		token string
		want  error // nil: valid, subject alice
	}{
		{"HS256", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(nil)), nil},
		{"RS256", rs, sign(t, jwt.SigningMethodRS256, k.rsa, "", valid(nil)), nil},
		{"RS256 with any kid", rs, sign(t, jwt.SigningMethodRS256, k.rsa, "whatever", valid(nil)), nil},
		{"RS256 PKCS1 PEM", pkcs1, sign(t, jwt.SigningMethodRS256, k.rsa, "", valid(nil)), nil},
		{"ES256", es, sign(t, jwt.SigningMethodES256, k.ec, "", valid(nil)), nil},
		{"EdDSA", ed, sign(t, jwt.SigningMethodEdDSA, k.ed, "", valid(nil)), nil},
		{"iss and aud", withIssAud, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"iss": "https://idp.example", "aud": "agentwire"})), nil},
		{"aud list", withIssAud, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"iss": "https://idp.example", "aud": []string{"other", "agentwire"}})), nil},
		{"expired within leeway", withLeeway, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"exp": past})), nil},

		{"empty", hs, "", ErrMissing},
		{"blank", hs, "   ", ErrMissing},
		{"expired", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"exp": past})), ErrExpired},
		{"expired RS256", rs, sign(t, jwt.SigningMethodRS256, k.rsa, "", valid(jwt.MapClaims{"exp": past})), ErrExpired},
		{"expired and wrong aud", withIssAud, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"exp": past, "iss": "https://idp.example", "aud": "x"})), ErrInvalid},
		{"expired and wrong key", hs, sign(t, jwt.SigningMethodHS256, []byte("another secret of enough length!"), "", valid(jwt.MapClaims{"exp": past})), ErrInvalid},
		{"missing exp", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"exp": nil})), ErrInvalid},
		{"exp not a number", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"exp": "tomorrow"})), ErrInvalid},
		{"exp a numeric string", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"exp": strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)})), ErrInvalid},
		{"nbf a numeric string", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"nbf": "0"})), ErrInvalid},
		{"iat a numeric string", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"iat": "0"})), ErrInvalid},
		{"exp fractional", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"exp": float64(time.Now().Add(time.Hour).Unix()) + 0.5})), nil},
		{"missing sub", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"sub": nil})), ErrInvalid},
		{"empty sub", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"sub": ""})), ErrInvalid},
		{"sub too long", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"sub": strings.Repeat("a", MaxSubject+1)})), ErrInvalid},
		{"not yet valid", hs, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"nbf": time.Now().Add(time.Hour).Unix()})), ErrInvalid},
		{"wrong secret", hs, sign(t, jwt.SigningMethodHS256, []byte("another secret of enough length!"), "", valid(nil)), ErrInvalid},
		{"wrong RSA key", rs, sign(t, jwt.SigningMethodRS256, k.rsa2, "", valid(nil)), ErrInvalid},
		{"alg none", hs, noneHeader + "." + nonePayload + ".", ErrInvalid},
		{"alg none RSA", rs, noneHeader + "." + nonePayload + ".", ErrInvalid},
		{"HS/RS confusion", rs, sign(t, jwt.SigningMethodHS256, rsaPEM, "", valid(nil)), ErrInvalid},
		{"RS384 for RSA key", rs, sign(t, jwt.SigningMethodRS384, k.rsa, "", valid(nil)), ErrInvalid},
		{"PS256 for RSA key", rs, sign(t, jwt.SigningMethodPS256, k.rsa, "", valid(nil)), ErrInvalid},
		{"HS384 for secret", hs, sign(t, jwt.SigningMethodHS384, hsSecret, "", valid(nil)), ErrInvalid},
		{"ES256 for RSA key", rs, sign(t, jwt.SigningMethodES256, k.ec, "", valid(nil)), ErrInvalid},
		{"RS256 for EC key", es, sign(t, jwt.SigningMethodRS256, k.rsa, "", valid(nil)), ErrInvalid},
		{"EdDSA for secret", hs, sign(t, jwt.SigningMethodEdDSA, k.ed, "", valid(nil)), ErrInvalid},
		{"wrong aud", withIssAud, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"iss": "https://idp.example", "aud": "other"})), ErrInvalid},
		{"missing aud", withIssAud, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"iss": "https://idp.example"})), ErrInvalid},
		{"wrong iss", withIssAud, sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(jwt.MapClaims{"iss": "https://evil.example", "aud": "agentwire"})), ErrInvalid},
		{"garbage", hs, "not a token", ErrInvalid},
		{"three dots", hs, "a.b.c", ErrInvalid},
		{"dots only", hs, "..", ErrInvalid},
		{"bad base64", hs, "!!!.???.***", ErrInvalid},
		{"too long", hs, strings.Repeat("a", maxToken+1), ErrInvalid},
		{"truncated signature", hs, strings.TrimRight(sign(t, jwt.SigningMethodHS256, hsSecret, "", valid(nil)), "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"), ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := NewVerifier(t.Context(), tt.cfg)
			if err != nil {
				t.Fatalf("NewVerifier: %v", err)
			}
			defer v.Close()
			c, err := v.Verify(t.Context(), tt.token)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if c.Subject != "alice" || c.ExpiresAt.IsZero() {
					t.Fatalf("claims = %+v", c)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify error = %v, want %v", err, tt.want)
			}
			if c != (Claims{}) {
				t.Fatalf("claims on error = %+v", c)
			}
		})
	}
}

func TestVerifyExpiresAt(t *testing.T) {
	t.Parallel()
	v, err := NewVerifier(t.Context(), Config{Secret: hsSecret})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	c, err := v.Verify(t.Context(), sign(t, jwt.SigningMethodHS256, hsSecret, "", jwt.MapClaims{"sub": "bob", "exp": exp.Unix()}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "bob" || !c.ExpiresAt.Equal(exp) {
		t.Fatalf("claims = %+v, want bob expiring %v", c, exp)
	}
}

func TestNewVerifierConfig(t *testing.T) {
	t.Parallel()
	k := getKeys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(k.ec)
	if err != nil {
		t.Fatal(err)
	}
	notPEM := pemFile(t, "X", nil)
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no key", Config{}},
		{"secret and file", Config{Secret: hsSecret, PublicKeyFile: pubPEM(t, &k.rsa.PublicKey)}},
		{"secret and JWKS", Config{Secret: hsSecret, JWKSURL: "https://idp.example/jwks"}},
		{"missing file", Config{PublicKeyFile: "/nonexistent/key.pem"}},
		{"not PEM", Config{PublicKeyFile: notPEM}},
		{"private key", Config{PublicKeyFile: pemFile(t, "PRIVATE KEY", privDER)}},
		{"RSA 1024", Config{PublicKeyFile: pubPEM(t, &small.PublicKey)}},
		{"P-384", Config{PublicKeyFile: pubPEM(t, &p384.PublicKey)}},
		{"JWKS not a URL", Config{JWKSURL: "::not a url"}},
		{"JWKS relative", Config{JWKSURL: "/jwks.json"}},
		{"JWKS ftp", Config{JWKSURL: "ftp://idp.example/jwks"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := NewVerifier(t.Context(), tt.cfg)
			if err == nil {
				v.Close()
				t.Fatal("NewVerifier succeeded, want error")
			}
		})
	}
}

func TestSignVerify(t *testing.T) {
	t.Parallel()
	v, err := NewVerifier(t.Context(), Config{Secret: hsSecret, Issuer: "agentwire", Audience: "agentwire"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewSigner(hsSecret)
	tok, exp, err := s.Sign("alice", time.Hour, "agentwire", "agentwire")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("expiresAt %v is not about an hour away", exp)
	}
	c, err := v.Verify(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "alice" || !c.ExpiresAt.Equal(exp) {
		t.Fatalf("claims = %+v, want alice expiring %v", c, exp)
	}

	// The issuer and audience are checked.
	tok, _, err = s.Sign("alice", time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, ErrInvalid) {
		t.Fatalf("token without iss/aud: err = %v, want ErrInvalid", err)
	}
}

func TestSignErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		secret []byte
		user   string
		ttl    time.Duration
	}{
		{"empty secret", nil, "alice", time.Hour},
		{"empty user", hsSecret, "", time.Hour},
		{"long user", hsSecret, strings.Repeat("a", MaxSubject+1), time.Hour},
		{"zero ttl", hsSecret, "alice", 0},
		{"negative ttl", hsSecret, "alice", -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tok, _, err := NewSigner(tt.secret).Sign(tt.user, tt.ttl, "", ""); err == nil {
				t.Fatalf("Sign = %q, want error", tok)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("")
	f.Add("a.b.c")
	f.Add(sign(f, jwt.SigningMethodHS256, hsSecret, "", jwt.MapClaims{"sub": "alice", "exp": 4102444800}))
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.")
	v, err := NewVerifier(context.Background(), Config{Secret: hsSecret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(context.Background(), token)
		if err != nil {
			if r := Reason(err); r != "missing" && r != "invalid" && r != "expired" {
				t.Fatalf("Reason(%v) = %q", err, r)
			}
			return
		}
		if c.Subject == "" || len(c.Subject) > MaxSubject {
			t.Fatalf("accepted subject %q", c.Subject)
		}
	})
}
