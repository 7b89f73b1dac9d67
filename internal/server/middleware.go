package server

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentwire/agentwire/internal/admin"
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
// it is missing, invalid or revoked by an admin (rv, nil: not checked), and
// otherwise passes the request on with the claims in its context (see
// claimsFrom).
func requireUser(v Verifier, rv admin.Revocations, failures *prometheus.CounterVec) func(http.Handler) http.Handler {
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
			if rv != nil {
				revoked, err := rv.Revoked(r.Context(), c.Subject, c.IssuedAt)
				if err != nil {
					httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "cluster coordination unavailable, retry")
					return
				}
				if revoked {
					failures.WithLabelValues("revoked").Inc()
					httpx.Error(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "token revoked")
					return
				}
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

// allowCORS returns the middleware of the endpoints browsers call from
// other origins (the AG-UI endpoints, the SSE stream and sending over plain
// HTTP), answering preflights for method: allowed reports whether a request's
// Origin may call (the --allowed-origins policy of /ws; nil: only requests
// without Origin and same-host ones). A request from an origin not allowed
// is 403 forbidden_origin, counted in failures as "origin"; one from an
// allowed origin gets Access-Control-Allow-Origin, and its preflight
// (OPTIONS) is answered 204 with the method and the headers the endpoint
// takes (Authorization, Content-Type, Accept, Last-Event-ID).
func allowCORS(method string, allowed func(*http.Request) bool, failures *prometheus.CounterVec) func(http.Handler) http.Handler {
	if allowed == nil {
		allowed = sameOrigin
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			origin := r.Header.Get("Origin")
			if origin == "" {
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Add("Vary", "Origin")
			if !allowed(r) {
				failures.WithLabelValues("origin").Inc()
				httpx.Error(w, http.StatusForbidden, protocol.CodeForbiddenOrigin, "origin not allowed (see --allowed-origins)")
				return
			}
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			if r.Method == http.MethodOptions {
				h.Set("Access-Control-Allow-Methods", method)
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, Last-Event-ID")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// sameOrigin allows an Origin whose host is the request's.
func sameOrigin(r *http.Request) bool {
	u, err := url.Parse(r.Header.Get("Origin"))
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}
