package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/protocol"
)

// claimsKey is the context key of the claims requireUser verified.
type claimsKey struct{}

// claimsFrom returns the claims requireUser put in the request's context:
// every handler behind requireUser has them.
func claimsFrom(ctx context.Context) auth.Claims {
	c, _ := ctx.Value(claimsKey{}).(auth.Claims)
	return c
}

// requireUser returns the middleware of the user endpoints: it verifies the
// bearer JWT, answers 401 unauthorized (counted in failures by reason) when
// it is missing or invalid, and otherwise passes the request on with the
// claims in its context (see claimsFrom).
func requireUser(v Verifier, failures *prometheus.CounterVec) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok, ok := auth.BearerToken(r)
			if !ok {
				failures.WithLabelValues("missing").Inc()
				httpx.Error(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "send Authorization: Bearer <JWT>")
				return
			}
			c, err := v.Verify(r.Context(), tok)
			if err != nil {
				failures.WithLabelValues(auth.Reason(err)).Inc()
				msg := "invalid token"
				if errors.Is(err, auth.ErrExpired) {
					msg = "token expired"
				}
				httpx.Error(w, http.StatusUnauthorized, protocol.CodeUnauthorized, msg)
				return
			}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, c)))
		})
	}
}

// requireAPIKey returns the middleware of the endpoints for servers (agents,
// backends): the bearer token must be one of keys (nil: none is), or the
// answer is 401 unauthorized, counted in failures as "api_key".
func requireAPIKey(keys *auth.APIKeys, failures *prometheus.CounterVec) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key, ok := auth.BearerToken(r)
			if !ok || keys == nil || !keys.Check(key) {
				failures.WithLabelValues("api_key").Inc()
				httpx.Error(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "send Authorization: Bearer <API key> with a key from --api-keys")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
