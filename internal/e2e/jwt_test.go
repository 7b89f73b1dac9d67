package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwksServer serves a JWKS whose keys can be rotated.
type jwksServer struct {
	mu   sync.Mutex
	keys map[string]*rsa.PrivateKey
	srv  *httptest.Server
}

func newJWKSServer(t *testing.T) *jwksServer {
	t.Helper()
	j := &jwksServer{keys: map[string]*rsa.PrivateKey{}}
	j.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		j.mu.Lock()
		defer j.mu.Unlock()
		var set struct {
			Keys []map[string]string `json:"keys"`
		}
		for kid, k := range j.keys {
			set.Keys = append(set.Keys, map[string]string{
				"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
				"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
				"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
			})
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func (j *jwksServer) rotate(t *testing.T, kid string) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	j.keys = map[string]*rsa.PrivateKey{kid: k}
	j.mu.Unlock()
	return k
}

func rs256(t *testing.T, k *rsa.PrivateKey, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claimsFor(user string) jwt.MapClaims {
	return jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix(), "iss": "https://issuer.example", "aud": "agentwire"}
}

// dialStatus returns the HTTP status of a /ws attempt with bearer tok.
func dialStatus(s *server, tok string) int {
	c, resp, err := s.dial(withBearer(tok))
	if err == nil {
		c.c.Close()
		return 101
	}
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

func TestJWKSRotationWithoutRestart(t *testing.T) {
	t.Parallel()
	j := newJWKSServer(t)
	k1 := j.rotate(t, "k1")
	s := startServer(t, "--jwt-secret", "", "--jwks-url", j.srv.URL, "--jwt-issuer", "https://issuer.example", "--jwt-audience", "agentwire")
	if got := dialStatus(s, rs256(t, k1, "k1", claimsFor("ann"))); got != 101 {
		t.Fatalf("token of k1: %d", got)
	}
	k2 := j.rotate(t, "k2")
	// An unknown kid refetches the set, at most once per 5 s: the new key is
	// picked up within that, without a restart. The deadline bounds a hang
	// on a loaded machine, not the 5 s.
	deadline := time.Now().Add(30 * time.Second)
	for got := dialStatus(s, rs256(t, k2, "k2", claimsFor("ann"))); got != 101; got = dialStatus(s, rs256(t, k2, "k2", claimsFor("ann"))) {
		if got != 401 || time.Now().After(deadline) {
			t.Fatalf("after rotation, token of k2: %d", got)
		}
		time.Sleep(250 * time.Millisecond)
	}
	wrongAud := claimsFor("ann")
	wrongAud["aud"] = "someone-else"
	wrongIss := claimsFor("ann")
	wrongIss["iss"] = "https://evil.example"
	cases := map[string]string{
		"wrong audience": rs256(t, k2, "k2", wrongAud),
		"wrong issuer":   rs256(t, k2, "k2", wrongIss),
		"unknown key":    rs256(t, k1, "k2", claimsFor("ann")),
	}
	for name, tok := range cases {
		if got := dialStatus(s, tok); got != 401 {
			t.Errorf("%s: %d, want 401", name, got)
		}
	}
}

func TestJWTAttacksAreRejected(t *testing.T) {
	t.Parallel()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	keyFile := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "--jwt-secret", "", "--jwt-public-key-file", keyFile)
	good := rs256(t, k, "", jwt.MapClaims{"sub": "ann", "exp": time.Now().Add(time.Hour).Unix()})
	if got := dialStatus(s, good); got != 101 {
		t.Fatalf("valid RS256: %d", got)
	}
	// HS256 signed with the public key's PEM as the secret: the classic confusion.
	confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "ann", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(pemBytes)
	// alg none.
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "ann", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	expired := rs256(t, k, "", jwt.MapClaims{"sub": "ann", "exp": time.Now().Add(-time.Minute).Unix()})
	noExp := rs256(t, k, "", jwt.MapClaims{"sub": "ann"})
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	wrongKey := rs256(t, other, "", jwt.MapClaims{"sub": "ann", "exp": time.Now().Add(time.Hour).Unix()})
	for name, tok := range map[string]string{
		"HS/RS confusion": confused, "alg none": none, "expired": expired, "no exp": noExp,
		"wrong key": wrongKey, "garbage": "a.b.c", "truncated": good[:len(good)-10],
		"not base64": strings.Repeat("!", 40),
	} {
		if got := dialStatus(s, tok); got != 401 {
			t.Errorf("%s: %d, want 401", name, got)
		}
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		if code := s.do("GET", "/api/v1/threads", tok, nil, &e); code != 401 || e.Error.Code != "unauthorized" {
			t.Errorf("%s on REST: %d %q", name, code, e.Error.Code)
		}
	}
}
