// Package auth decides who a request is: it verifies JWTs (HS256 secret,
// RS256/ES256/EdDSA public key, or a remote JWKS), signs HS256 tokens for
// development, issues single-use connect tickets and checks server API keys.
//
// Every failure a caller branches on is one of four sentinel errors, and
// Reason maps any error to the metric label of its kind. Error messages never
// contain a token, a ticket or a key.
package auth

import (
	"errors"
	"net/http"
	"strings"
	"time"
)

// MaxSubject is the longest accepted `sub` claim, in bytes.
const MaxSubject = 256

// Claims are the facts taken from a verified token.
type Claims struct {
	// Subject is the `sub` claim: the user. Never empty, at most MaxSubject bytes.
	Subject string
	// ExpiresAt is the `exp` claim: the token is not valid at or after it.
	ExpiresAt time.Time
	// IssuedAt is the `iat` claim, zero when the token has none. An
	// admin's revocation (POST /api/v1/admin/users/{user}/revoke) refuses
	// the tokens issued before a time, and those without iat.
	IssuedAt time.Time
}

// Sentinel errors. Every error returned by Verify, Redeem and the ticket
// stores wraps exactly one of them; test with errors.Is.
var (
	// ErrMissing means no credential was presented.
	ErrMissing = errors.New("auth: missing credential")
	// ErrExpired means a correctly signed token whose `exp` has passed.
	ErrExpired = errors.New("auth: token expired")
	// ErrInvalid means a credential that is malformed, wrongly signed, or
	// fails a claim check (sub, iss, aud, nbf, algorithm).
	ErrInvalid = errors.New("auth: invalid credential")
	// ErrTicket means a ticket that is unknown, already used or expired.
	ErrTicket = errors.New("auth: invalid ticket")
)

// Reason maps err to the metric label of its kind: "missing", "expired",
// "ticket" or "invalid". Any other non-nil error is "invalid"; nil is "".
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrMissing):
		return "missing"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrTicket):
		return "ticket"
	default:
		return "invalid"
	}
}

// BearerToken returns the credential of an `Authorization: Bearer <x>`
// header. The scheme is matched case-insensitively and surrounding spaces are
// trimmed; ok is false when the header is absent, has another scheme, or
// carries an empty credential.
func BearerToken(r *http.Request) (token string, ok bool) {
	scheme, rest, found := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(rest)
	return token, token != ""
}
