package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/agentwire/agentwire/protocol"
)

// REST shapes of the server endpoints, as in package protocol.
type (
	// PublishRequest is one event to append to a user's stream.
	PublishRequest = protocol.PublishRequest
	// PublishResponse is the position of the appended event.
	PublishResponse = protocol.PublishResponse
	// PublishResult is the outcome of one event of a batch or a stream.
	PublishResult = protocol.PublishResult
	// PublishAck answers one line of a publish stream.
	PublishAck = protocol.PublishAck
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
	base, hc, err := p.base()
	if err != nil {
		return out, err
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return out, err
	}
	err = doJSON(ctx, hc, http.MethodPost, base+"/api/v1/publish", "Bearer "+p.APIKey, body, &out)
	return out, err
}

func (p *Publisher) base() (string, *http.Client, error) {
	base, err := baseURL(p.URL)
	hc := p.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	return base, hc, err
}

// PublishBatch appends up to 1000 events (a body of at most 1 MiB) in one
// request ({"events":[…]}) and returns one result per event, in order:
// its seq and epoch, or its error. One user's events are appended all or
// none: when one is refused, that user's others carry batch_aborted. A
// refusal of the whole batch is a *HTTPError (413 too_large, 401, …).
func (p *Publisher) PublishBatch(ctx context.Context, events []PublishRequest) ([]PublishResult, error) {
	base, hc, err := p.base()
	if err != nil {
		return nil, err
	}
	if events == nil {
		events = []PublishRequest{}
	}
	body, err := json.Marshal(protocol.PublishBatchRequest{Events: events})
	if err != nil {
		return nil, err
	}
	var out protocol.PublishBatchResponse
	if err := doJSON(ctx, hc, http.MethodPost, base+"/api/v1/publish", "Bearer "+p.APIKey, body, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(events) {
		return nil, fmt.Errorf("agentwire: batch publish: %d results for %d events", len(out.Results), len(events))
	}
	return out.Results, nil
}

// PublishStream is an open POST /api/v1/publish/stream: Send writes one
// event per line, Recv reads the acks, one per event in the order sent.
// Send and Recv may be called from two goroutines (one each).
type PublishStream struct {
	pw   *io.PipeWriter
	bw   *bufio.Writer
	resp *http.Response
	acks *bufio.Scanner

	mu   sync.Mutex // guards bw
	line []byte
}

// ErrStreamShuttingDown is Recv's answer when the server ended the stream
// because it drains: events without an ack were not read; publish them
// again (with their idempotency keys) on a new stream.
var ErrStreamShuttingDown = errors.New("agentwire: publish stream: the server is shutting down")

// OpenStream opens a publish stream. ctx bounds the whole stream: cancel it
// (or call Close) to abandon it.
func (p *Publisher) OpenStream(ctx context.Context) (*PublishStream, error) {
	base, hc, err := p.base()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/publish/stream", pr)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.APIKey)
	req.Header.Set("Content-Type", "application/x-ndjson")
	// The request goes out with its first body bytes: a blank line, which
	// the server ignores.
	go func() { _, _ = pw.Write([]byte("\n")) }()
	resp, err := hc.Do(req)
	if err != nil {
		_ = pw.CloseWithError(err)
		return nil, fmt.Errorf("agentwire: POST /api/v1/publish/stream: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		resp.Body.Close()
		_ = pw.Close()
		return nil, httpError(resp.StatusCode, answer)
	}
	acks := bufio.NewScanner(resp.Body)
	acks.Buffer(make([]byte, 4096), 64<<10)
	return &PublishStream{pw: pw, bw: bufio.NewWriterSize(pw, 32<<10), resp: resp, acks: acks}, nil
}

// Send queues ev; Flush (or a full buffer) sends what is queued. Its ack
// comes from Recv.
func (s *PublishStream) Send(ev PublishRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.line, err = json.Marshal(ev); err != nil {
		return err
	}
	s.line = append(s.line, '\n')
	_, err = s.bw.Write(s.line)
	return err
}

// Flush sends the queued events now.
func (s *PublishStream) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bw.Flush()
}

// CloseSend sends what is queued and ends the request: the server acks
// the rest, then Recv returns io.EOF.
func (s *PublishStream) CloseSend() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.bw.Flush()
	return errors.Join(err, s.pw.Close())
}

// Recv returns the next ack: the I-th event sent (from 0) and its seq and
// epoch or its Error. After the last one it returns io.EOF, or
// ErrStreamShuttingDown when the server drained.
func (s *PublishStream) Recv() (PublishAck, error) {
	var a PublishAck
	if !s.acks.Scan() {
		if err := s.acks.Err(); err != nil {
			return a, fmt.Errorf("agentwire: publish stream: %w", err)
		}
		return a, io.EOF
	}
	line := s.acks.Bytes()
	if !strings.Contains(string(line), `"i":`) {
		var e protocol.ErrorBody
		if json.Unmarshal(line, &e) == nil && e.Error.Code == protocol.CodeShuttingDown {
			return a, ErrStreamShuttingDown
		}
		return a, fmt.Errorf("agentwire: publish stream: unexpected line %.200q", line)
	}
	if err := json.Unmarshal(line, &a); err != nil {
		return a, fmt.Errorf("agentwire: publish stream: bad ack: %w", err)
	}
	return a, nil
}

// Close abandons the stream: events without an ack may or may not have
// been appended (publish them again with the same idempotency keys).
func (s *PublishStream) Close() error {
	_ = s.pw.CloseWithError(errors.New("publish stream closed"))
	return s.resp.Body.Close()
}
