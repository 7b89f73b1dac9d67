package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Signer makes HS256 tokens that a Verifier configured with the same secret
// accepts. It is safe for concurrent use.
type Signer struct {
	secret []byte
	now    func() time.Time
}

// NewSigner returns a Signer for secret, which it copies.
func NewSigner(secret []byte) *Signer {
	return &Signer{secret: append([]byte(nil), secret...), now: time.Now}
}

// Sign returns an HS256 token for user valid for ttl, with `sub`, `iat` and
// `exp`, and `iss` and `aud` when non-empty. expiresAt is the token's `exp`
// (whole seconds). It fails for an empty secret, an empty user or one longer
// than MaxSubject bytes, or a ttl that is not positive.
func (s *Signer) Sign(user string, ttl time.Duration, issuer, audience string) (token string, expiresAt time.Time, err error) {
	switch {
	case len(s.secret) == 0:
		return "", time.Time{}, errors.New("auth: sign: empty secret")
	case user == "" || len(user) > MaxSubject:
		return "", time.Time{}, fmt.Errorf("auth: sign: user must be 1 to %d bytes", MaxSubject)
	case ttl <= 0:
		return "", time.Time{}, errors.New("auth: sign: ttl must be positive")
	}
	now := s.now()
	claims := jwt.RegisteredClaims{
		Subject:   user,
		Issuer:    issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	if audience != "" {
		claims.Audience = jwt.ClaimStrings{audience}
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(s.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: sign: %w", err)
	}
	return token, claims.ExpiresAt.Time, nil
}
