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
	"strconv"
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
	// ThreadsPage is one page of GET /api/v1/threads.
	ThreadsPage = protocol.ThreadsPage
	// MessagesPage is one page of GET /api/v1/threads/{id}/messages.
	MessagesPage = protocol.MessagesPage
)

// Page chooses one page of a list: Limit items at most (0: the server's
// default, 100; at most 1000), after the cursor After, or (messages only)
// before the message Before. The answer's Next is the After (or Before) of
// the next page.
type Page struct {
	Limit         int
	After, Before string
}

func (p Page) query() string {
	q := url.Values{}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.After != "" {
		q.Set("after", p.After)
	}
	if p.Before != "" {
		q.Set("before", p.Before)
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// ThreadsPage returns one page of the user's threads, most recently
// updated first.
func (c *Conn) ThreadsPage(ctx context.Context, p Page) (ThreadsPage, error) {
	var out ThreadsPage
	err := c.do(ctx, http.MethodGet, "/api/v1/threads"+p.query(), nil, &out)
	return out, err
}

// MessagesPage returns one page of thread threadID's messages, oldest first
// (with Page.Before: the page right before that message). An unknown or
// foreign thread is a *HTTPError with Status 404.
func (c *Conn) MessagesPage(ctx context.Context, threadID string, p Page) (MessagesPage, error) {
	var out MessagesPage
	err := c.do(ctx, http.MethodGet, "/api/v1/threads/"+url.PathEscape(threadID)+"/messages"+p.query(), nil, &out)
	return out, err
}

// RunEvents returns run runID's transcript (GET /api/v1/runs/{id}/events,
// every page), oldest first from agent_started: its events as the stream
// sent them (but the user_message echo, which is the thread's message), with
// the answer's deltas folded and the terminal event's Seq 0 (see
// docs/PROTOCOL.md, run transcripts). A run that does not exist or belongs
// to someone else is a *HTTPError with Status 404.
func (c *Conn) RunEvents(ctx context.Context, runID string) ([]Event, error) {
	var all []Event
	err := c.pages(ctx, "/api/v1/runs/"+url.PathEscape(runID)+"/events?limit=1000", func(body []byte) (string, error) {
		var out protocol.RunEventsPage
		if err := json.Unmarshal(body, &out); err != nil {
			return "", err
		}
		for _, raw := range out.Events {
			f, err := protocol.DecodeServerFrame(raw)
			if err != nil {
				return "", err
			}
			all = append(all, Event{Event: f.Event()})
		}
		return out.Next, nil
	})
	return all, err
}

// RenameThread sets thread threadID's title (PATCH /api/v1/threads/{id}
// {"title"}; the server trims it, 1 to 80 characters) and returns the
// thread as it now is. A bad title is a *HTTPError with Status 400; an
// unknown or foreign thread, 404.
func (c *Conn) RenameThread(ctx context.Context, threadID, title string) (Thread, error) {
	body, err := json.Marshal(struct {
		Title string `json:"title"`
	}{title})
	if err != nil {
		return Thread{}, err
	}
	var out Thread
	err = c.do(ctx, http.MethodPatch, "/api/v1/threads/"+url.PathEscape(threadID), body, &out)
	return out, err
}

// DeleteThread deletes thread threadID with its messages, runs and their
// transcripts (DELETE /api/v1/threads/{id}). A thread with a run in
// progress is a *HTTPError with Status 409 (Code conflict) and nothing is
// deleted: stop the run, wait for its end, then delete. An unknown or
// foreign thread is a *HTTPError with Status 404.
func (c *Conn) DeleteThread(ctx context.Context, threadID string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/threads/"+url.PathEscape(threadID), nil, nil)
}

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
// decodes a 2xx JSON answer into out (unless out is nil). After a 401 it
// asks Options.Token for a fresh token and tries once more.
func (c *Conn) do(ctx context.Context, method, path string, body []byte, out any) error {
	for try := 0; ; try++ {
		tok, err := c.currentToken(ctx)
		if err != nil {
			return err
		}
		err = doJSON(ctx, c.hc, method, c.base+path, "Bearer "+tok, body, out)
		var he *HTTPError
		if errors.As(err, &he) && he.Status == http.StatusUnauthorized && try == 0 {
			c.invalidateToken(tok)
			continue
		}
		return err
	}
}

// maxAnswer bounds an HTTP answer read into memory.
const maxAnswer = 16 << 20

// doJSON sends one request to u (with body as JSON when not nil, and
// auth as its Authorization header when not empty) and decodes a 2xx
// answer into out (unless out is nil); a non-2xx answer is a *HTTPError.
func doJSON(ctx context.Context, hc *http.Client, method, u, auth string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Accept", "application/json")
	path := req.URL.Path
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("agentwire: %s %s: %w", method, path, err)
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("agentwire: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return httpError(resp.StatusCode, answer)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("agentwire: %s %s: answer is not JSON: %w", method, path, err)
	}
	return nil
}

// httpError builds a *HTTPError from the contract's error body, if any.
func httpError(status int, body []byte) *HTTPError {
	var e protocol.ErrorBody
	_ = json.Unmarshal(body, &e)
	return &HTTPError{Status: status, Code: e.Error.Code, Message: e.Error.Message}
}
