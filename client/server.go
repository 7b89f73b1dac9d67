package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/agentwire/agentwire/protocol"
)

// REST shapes of the server endpoints, as in package protocol.
type (
	// PublishRequest is one event to append to a user's stream.
	PublishRequest = protocol.PublishRequest
	// PublishResponse is the position of the appended event.
	PublishResponse = protocol.PublishResponse
	// DevLoginResponse is a development token and its expiry.
	DevLoginResponse = protocol.DevLoginResponse
)

// baseURL checks and trims a server's base URL, http(s)://host:port[/prefix].
func baseURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("client: URL %q: want http(s)://host:port", raw)
	}
	return u.String(), nil
}

// DevLogin asks a server started with --dev for a token of userID (POST
// /auth/dev-login). hc nil means http.DefaultClient. A server without
// --dev answers 404: a *HTTPError.
func DevLogin(ctx context.Context, hc *http.Client, serverURL, userID string) (DevLoginResponse, error) {
	var out DevLoginResponse
	base, err := baseURL(serverURL)
	if err != nil {
		return out, err
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	body, err := json.Marshal(protocol.DevLoginRequest{UserID: userID})
	if err != nil {
		return out, err
	}
	err = doJSON(ctx, hc, http.MethodPost, base+"/auth/dev-login", "", body, &out)
	return out, err
}

// DevTokens is an Options.Token for development: each call logs userID in
// with DevLogin (a Conn calls it at the first connect, and again only after
// a 401 or close 4001, when it needs a fresh token).
func DevTokens(hc *http.Client, serverURL, userID string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		r, err := DevLogin(ctx, hc, serverURL, userID)
		return r.Token, err
	}
}

// Publisher appends events to users' streams from a server program (POST
// /api/v1/publish with an API key of --api-keys). Its methods are safe for
// concurrent use.
type Publisher struct {
	// URL is the server's base URL, http(s)://host:port[/prefix].
	URL string
	// APIKey is one of the server's --api-keys.
	APIKey string
	// HTTPClient makes the calls; nil means http.DefaultClient.
	HTTPClient *http.Client
}

// Publish appends ev to the stream of ev.UserID and returns its seq and
// epoch (with ev.IdempotencyKey seen within 10 minutes: those of the first
// one, appending nothing). A refusal is a *HTTPError (401 unauthorized,
// 400 invalid_request, 409 reserved_type or run_not_running, …).
func (p *Publisher) Publish(ctx context.Context, ev PublishRequest) (PublishResponse, error) {
	var out PublishResponse
	base, err := baseURL(p.URL)
	if err != nil {
		return out, err
	}
	hc := p.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return out, err
	}
	err = doJSON(ctx, hc, http.MethodPost, base+"/api/v1/publish", "Bearer "+p.APIKey, body, &out)
	return out, err
}
