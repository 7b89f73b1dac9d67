// Package upstream is what the agents that forward a run to another
// service over HTTP share (httpagent, aguiagent): posting the run, turning
// what goes wrong into an agent_failed message fit for the user, and the
// byte bounds and UTF-8 repair of what the service answers.
package upstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/protocol"
)

// Failure is a reason to end the run with agent_failed; its text is the
// agent_error message.
type Failure struct{ Msg string }

func (f *Failure) Error() string { return f.Msg }

// Failf returns a *Failure.
func Failf(format string, args ...any) error { return &Failure{fmt.Sprintf(format, args...)} }

// ErrEmit marks an Emitter error other than agent.ErrRunEnded: the runs
// package refused an event, which ends the run.
var ErrEmit = errors.New("upstream: emitter refused an event")

// Emitted passes on an Emitter method's error: nil and agent.ErrRunEnded as
// they are, anything else wrapped in ErrEmit.
func Emitted(err error) error {
	if err == nil || errors.Is(err, agent.ErrRunEnded) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrEmit, err)
}

// Finish is what an agent's Run returns for err, the result of forwarding
// the run: a Failure ends the run with agent_failed and its message; a
// cancelled ctx (stop, timeout, shutdown) is returned as is, since the
// runs package ends the run then.
func Finish(ctx context.Context, em agent.Emitter, err error) error {
	var f *Failure
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(err, &f):
		return em.Fail(protocol.CodeAgentFailed, f.Msg)
	default:
		return err
	}
}

// DefaultMaxBytes bounds one run's answer unless a Service says otherwise.
const DefaultMaxBytes = 64 << 20

// MaxEvent bounds one event of an answer (its data over all its data
// lines), and one line of an NDJSON answer: what the agents pass to
// sse.Read.
const MaxEvent = 1 << 20

// Service is one agent service: where runs are posted and how.
type Service struct {
	URL      string
	Client   *http.Client
	Timeout  time.Duration // bounds one run's request, answer included
	MaxBytes int64         // bounds one run's answer (Body)
}

// NewService returns the service at rawURL, which must be an http(s) URL
// (the error names pkg), with client (nil: http.DefaultClient) and timeout
// (not positive: def).
func NewService(pkg, rawURL string, client *http.Client, timeout, def time.Duration) (*Service, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: agent URL %q is not an http(s) URL", pkg, rawURL)
	}
	if client == nil {
		client = http.DefaultClient
	}
	if timeout <= 0 {
		timeout = def
	}
	return &Service{URL: rawURL, Client: client, Timeout: timeout, MaxBytes: DefaultMaxBytes}, nil
}

// Body is resp's body bounded to MaxBytes (Limit).
func (s *Service) Body(resp *http.Response) io.Reader { return Limit(resp.Body, s.MaxBytes) }

// ErrStop is what a reader's callback returns to end reading once the
// terminal event is relayed.
var ErrStop = errors.New("upstream: stop")

// Ended is the result of reading an answer that ended with err (nil: the
// body ended; ErrStop: the terminal event was relayed), ended saying
// whether the terminal event was relayed, terminal naming that event for
// the message when it was not.
func (s *Service) Ended(ctx, rctx context.Context, err error, ended bool, terminal string) error {
	switch {
	case err == nil || errors.Is(err, ErrStop):
	case errors.Is(err, sse.ErrTooLong) || errors.Is(err, bufio.ErrTooLong):
		return Failf("agent service sent an event over %d bytes", MaxEvent)
	case errors.Is(err, ErrTooMuch):
		return Failf("agent service sent more than %d bytes", s.MaxBytes)
	default:
		return s.ReadError(ctx, rctx, err)
	}
	if !ended {
		return Failf("agent service ended without %s", terminal)
	}
	return nil
}

// Post posts body (JSON) to the service with rctx, the run's context
// bounded by Timeout, asking for accept. A 2xx answer is returned for the
// caller to read and close; anything else is an error for ReadError.
func (s *Service) Post(ctx, rctx context.Context, body []byte, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", accept)
	resp, err := s.Client.Do(req)
	if err != nil {
		if ctx.Err() == nil && rctx.Err() == nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			return nil, Failf("cannot reach agent service %s: %v — check --agent-url", s.URL, err)
		}
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		msg := fmt.Sprintf("agent service returned %d", resp.StatusCode)
		if s := Snippet(b); s != "" {
			msg += ": " + s
		}
		return nil, &Failure{msg}
	}
	return resp, nil
}

// ReadError classifies err, met while posting or reading the answer: the
// run's own context ended (returned as is), the request's deadline passed,
// a Failure or an Emitter error (as is), or the stream broke.
func (s *Service) ReadError(ctx, rctx context.Context, err error) error {
	var f *Failure
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case rctx.Err() != nil:
		return Failf("agent service did not finish within %v", s.Timeout)
	case errors.As(err, &f) || errors.Is(err, agent.ErrRunEnded) || errors.Is(err, ErrEmit):
		return err
	default:
		return Failf("agent service stream broke: %v", err)
	}
}

// ValidUTF8 returns b with every byte sequence that is not UTF-8 replaced
// by U+FFFD: encoding/json would carry such bytes into raw values verbatim,
// and from there into text frames that compliant clients must fail (1007),
// on every later resume too.
func ValidUTF8(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	return bytes.ToValidUTF8(b, []byte("\uFFFD"))
}

// ErrTooMuch is returned by a Limit reader past its bound.
var ErrTooMuch = errors.New("upstream: answer over its byte bound")

// Limit returns r bounded to max bytes: reading past them fails with
// ErrTooMuch (not a silent EOF, which would read as a clean end).
func Limit(r io.Reader, max int64) io.Reader { return &limited{r: r, left: max} }

type limited struct {
	r    io.Reader
	left int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, ErrTooMuch
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// ErrorText reads an "error" field: a string, or an object with a message.
func ErrorText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Message
	}
	return ""
}

// Snippet makes an error body printable: its error message when it is
// JSON, else its first 200 characters.
func Snippet(b []byte) string {
	var body struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(b, &body) == nil {
		if s := ErrorText(body.Error); s != "" {
			return s
		}
		if body.Message != "" {
			return body.Message
		}
	}
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
	if utf8.RuneCountInString(s) > 200 {
		s = string([]rune(s)[:200]) + "…"
	}
	return s
}
