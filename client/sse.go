package client

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/agentwire/agentwire/protocol"
)

// sseLink is the user's stream read as Server-Sent Events from GET
// /api/v1/stream (Options.SSE): one frame per event.
type sseLink struct {
	body   io.ReadCloser
	br     *bufio.Reader
	cancel context.CancelFunc
	// code and reason are those of the ": close <code> <reason>" comment
	// the server writes before it ends the response.
	code   protocol.CloseCode
	reason string
	alive  func() // called for every line read (heartbeats included)
}

func (l *sseLink) Close() error {
	l.cancel()
	return l.body.Close()
}

// next returns the data of the next event: a frame. Comments are read for
// the close code; id, event and retry fields are skipped (a frame carries
// its own seq and epoch).
func (l *sseLink) next() ([]byte, error) {
	var data []byte
	has := false
	for {
		line, err := l.br.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		if l.alive != nil {
			l.alive()
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if has {
				return data, nil
			}
		case line[0] == ':':
			if rest, ok := bytes.CutPrefix(line, []byte(": close ")); ok {
				num, reason, _ := bytes.Cut(rest, []byte{' '})
				if n, err := strconv.Atoi(string(num)); err == nil {
					l.code, l.reason = protocol.CloseCode(n), string(reason)
				}
			}
		case bytes.HasPrefix(line, []byte("data:")):
			v := bytes.TrimPrefix(line[len("data:"):], []byte{' '})
			if has {
				data = append(data, '\n')
			}
			data = append(data, v...)
			has = true
		}
	}
}

// connectSSE opens GET /api/v1/stream with the query and headers connect
// prepared, and reads connection_established. ctx bounds the connect only.
func (c *Conn) connectSSE(ctx context.Context, tok string, q url.Values, h http.Header) (link, ConnectionEstablished, error) {
	var est ConnectionEstablished
	endpoint := c.base + "/api/v1/stream"
	u := endpoint
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	lctx, cancel := context.WithCancel(context.Background())
	unhook := context.AfterFunc(ctx, cancel)
	defer unhook()
	req, err := http.NewRequestWithContext(lctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, est, err
	}
	req.Header = h
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		cancel()
		return nil, est, fmt.Errorf("client: connect %s: %w", endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		var body [4096]byte
		n, _ := io.ReadFull(resp.Body, body[:])
		resp.Body.Close()
		cancel()
		he := httpError(resp.StatusCode, body[:n])
		if he.Status == http.StatusUnauthorized {
			c.invalidateToken(tok)
		}
		return nil, est, fmt.Errorf("client: connect %s: %w", endpoint, he)
	}
	l := &sseLink{body: resp.Body, br: bufio.NewReader(resp.Body), cancel: cancel}
	timer := time.AfterFunc(handshakeTimeout, cancel)
	b, err := l.next()
	timer.Stop()
	return c.established(l, b, err)
}

// readSSE handles the frames of l until the response ends, returning the
// close code of its last comment (1006 without one) and the read error. A
// response silent for idle (no heartbeat) is cut.
func (c *Conn) readSSE(l *sseLink, idle time.Duration) (protocol.CloseCode, string, error) {
	watchdog := time.AfterFunc(idle, func() { l.Close() })
	defer watchdog.Stop()
	l.alive = func() { watchdog.Reset(idle) }
	// A gap the contract rules out: reconnect from the position, which
	// fetches it.
	g := gap{resume: func(Position) { l.Close() }}
	for {
		b, err := l.next()
		if err != nil {
			if l.code != 0 {
				return l.code, l.reason, err
			}
			return protocol.CloseAbnormal, "", err
		}
		if err := c.handle(b, &g); err != nil {
			return protocol.CloseSlowConsumer, "slow consumer", err
		}
	}
}
