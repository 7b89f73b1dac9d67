package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/agentwire/agentwire/protocol"
)

// REST shapes, as in package protocol.
type (
	// Thread is one conversation of the user (GET /api/v1/threads).
	Thread = protocol.Thread
	// Message is one message of a thread; Role is "user" or "assistant".
	Message = protocol.Message
	// RunInfo is one agent execution as the server stores it (GET
	// /api/v1/runs/{id}); Run is the handle on a run Conn.Send started.
	RunInfo = protocol.Run
)

// Threads lists all the user's threads, most recently updated first,
// following the server's pages. A non-2xx answer is a *HTTPError.
func (c *Conn) Threads(ctx context.Context) ([]Thread, error) {
	var all []Thread
	err := c.pages(ctx, "/api/v1/threads?limit=1000", func(body []byte) (string, error) {
		var out protocol.ThreadsPage
		err := json.Unmarshal(body, &out)
		all = append(all, out.Threads...)
		return out.Next, err
	})
	return all, err
}

// Messages lists all the messages of thread threadID, oldest first,
// following the server's pages. A thread that does not exist or belongs to
// someone else is a *HTTPError with Status 404.
func (c *Conn) Messages(ctx context.Context, threadID string) ([]Message, error) {
	var all []Message
	err := c.pages(ctx, "/api/v1/threads/"+url.PathEscape(threadID)+"/messages?limit=1000", func(body []byte) (string, error) {
		var out protocol.MessagesPage
		err := json.Unmarshal(body, &out)
		all = append(all, out.Messages...)
		return out.Next, err
	})
	return all, err
}

// pages GETs path, then path&after=<next> while the answer has a next,
// giving each answer to page. A 429 (too many list requests in flight for
// this user) waits a second and asks again.
func (c *Conn) pages(ctx context.Context, path string, page func(body []byte) (next string, err error)) error {
	next := ""
	for {
		p := path
		if next != "" {
			p += "&after=" + url.QueryEscape(next)
		}
		var raw json.RawMessage
		err := c.do(ctx, http.MethodGet, p, nil, &raw)
		var he *HTTPError
		if errors.As(err, &he) && he.Status == http.StatusTooManyRequests {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			continue
		}
		if err != nil {
			return err
		}
		if next, err = page(raw); err != nil {
			return fmt.Errorf("agentwire: GET %s: %w", p, err)
		}
		if next == "" {
			return nil
		}
	}
}

// Run returns run runID. A run that does not exist or belongs to someone else
// is a *HTTPError with Status 404.
func (c *Conn) Run(ctx context.Context, runID string) (RunInfo, error) {
	var out RunInfo
	err := c.do(ctx, http.MethodGet, "/api/v1/runs/"+url.PathEscape(runID), nil, &out)
	return out, err
}

// do sends an authenticated request (with body as JSON when not nil) and
// decodes a 2xx JSON answer into out. After a 401 it asks Options.Token for
// a fresh token and tries once more.
func (c *Conn) do(ctx context.Context, method, path string, body []byte, out any) error {
	for try := 0; ; try++ {
		tok, err := c.currentToken(ctx)
		if err != nil {
			return err
		}
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
		if err != nil {
			return err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", "application/json")
		resp, err := c.hc.Do(req)
		if err != nil {
			return fmt.Errorf("agentwire: %s %s: %w", method, path, err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("agentwire: %s %s: %w", method, path, err)
		}
		if resp.StatusCode == http.StatusUnauthorized && try == 0 {
			c.invalidateToken(tok)
			continue
		}
		if resp.StatusCode/100 != 2 {
			return httpError(resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("agentwire: %s %s: answer is not JSON: %w", method, path, err)
		}
		return nil
	}
}

// httpError builds a *HTTPError from the contract's error body, if any.
func httpError(status int, body []byte) *HTTPError {
	var e protocol.ErrorBody
	_ = json.Unmarshal(body, &e)
	return &HTTPError{Status: status, Code: e.Error.Code, Message: e.Error.Message}
}
