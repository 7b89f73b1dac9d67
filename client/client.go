// Package client is the Go SDK for agentwire's wire contract (agentwire.v1):
// one WebSocket that stays up, with authentication by bearer header or
// single-use ticket, automatic reconnect with exponential backoff and full
// jitter, resume from the last seq and epoch, dedupe by seq, requests matched
// to their answers by id, and small helpers for the HTTP API. With
// Options.SSE the stream is read over Server-Sent Events instead (GET
// /api/v1/stream), and messages and stops go over plain HTTP.
//
// A Conn delivers the user's stream events in seq order, each once, across
// reconnects, on the channel returned by Events. Send starts a run and
// returns a Run handle that has that run's events only, its terminal event
// (Wait) and Stop:
//
//	c, err := client.Dial(ctx, client.Options{URL: "http://127.0.0.1:8080", Token: tokenFunc, RunsOnly: true})
//	if err != nil { … }
//	defer c.Close()
//	run, err := c.Send(ctx, "what is 12*(3+4)?", client.SendOptions{})
//	for ev := range run.Events() { … } // closed after the terminal event
//	final, err := run.Wait(ctx)        // agent_completed or agent_error
//
// Tokens: a function that returns the user's JWT (DevTokens against a
// server started with --dev). Servers publish with a Publisher (API key).
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentwire/agentwire/protocol"
	"github.com/gorilla/websocket"
)

// Defaults of Options.
const (
	DefaultEventBuffer          = 256
	DefaultSlowConsumerTimeout  = 10 * time.Second
	DefaultInitialBackoff       = 500 * time.Millisecond
	DefaultMaxBackoff           = 30 * time.Second
	DefaultTooManyErrorsBackoff = 5 * time.Second
	handshakeTimeout            = 10 * time.Second
	writeTimeout                = 10 * time.Second
	stableAfter                 = 10 * time.Second // a connection up this long resets the backoff
)

// Options configure a Conn. URL and Token are required.
type Options struct {
	// URL is the server's base URL, http://host:port or https://host:port
	// (a path prefix is kept). The socket is URL + "/ws" as ws:// or wss://.
	URL string
	// Token returns the user's JWT. It is called at the first connect, again
	// after close 4001 (token expired) or a 401, and otherwise the token is
	// reused for every reconnect and HTTP call.
	Token func(ctx context.Context) (string, error)
	// UseTicket authenticates each connect with a single-use ticket
	// (POST /api/v1/tickets, then ?ticket=) instead of the Authorization header.
	UseTicket bool
	// SSE reads the stream over Server-Sent Events (GET /api/v1/stream)
	// instead of a WebSocket, for networks that let no WebSocket through;
	// SendMessage and Stop then go over plain HTTP (POST /api/v1/messages,
	// POST /api/v1/runs/{id}/stop), retried with the same client_message_id
	// while the server cannot take them. Resume, dedupe, reconnect and
	// Events are the same. HTTPClient must have no Timeout: the stream is
	// one long response.
	SSE bool
	// HTTPClient makes the HTTP calls; nil means http.DefaultClient. The TLS
	// config of its *http.Transport, if any, is also used for the socket.
	HTTPClient *http.Client
	// Logger receives connection lifecycle records (never a token or a
	// message body); nil discards them.
	Logger *slog.Logger
	// Resume, when set, makes the first connect continue after that
	// position; without it the Conn starts live from the stream's head.
	Resume *Position
	// EventBuffer is the capacity of the Events channel, and of each Run's
	// (default 256).
	EventBuffer int
	// RunsOnly puts no event on Events (it only closes when the Conn
	// stops): for a program that follows its runs through Run handles
	// (Conn.Send) and would otherwise have to drain Events so that it does
	// not hold the connection back.
	RunsOnly bool
	// SlowConsumerTimeout is how long the read loop waits for room in a full
	// Events channel before it drops the connection (default 10 s); see Events.
	SlowConsumerTimeout time.Duration
	// InitialBackoff is the first reconnect delay ceiling (default 500 ms);
	// it doubles per failed attempt up to MaxBackoff (default 30 s). The
	// delay is uniformly random below the ceiling (full jitter).
	InitialBackoff, MaxBackoff time.Duration
	// TooManyErrorsBackoff is the least wait after close 4029 (default 5 s).
	TooManyErrorsBackoff time.Duration
	// OnFrame, when set, is called on the read goroutine with every frame
	// received, in order, before the Conn handles it (for tracing and
	// conformance checks). It must return quickly and not keep raw.
	OnFrame func(raw []byte)
	// OnDisconnect, when set, is called on the read goroutine each time an
	// established connection ends, with the close code (0 when the socket
	// failed without a close frame), the reason and the read error, before
	// the Conn reconnects or stops. It must return quickly.
	OnDisconnect func(code protocol.CloseCode, reason string, err error)
}

// SendOptions are the optional fields of a user_message.
type SendOptions struct {
	// ThreadID is the thread to post in; empty starts a new thread.
	ThreadID string
	// ClientMessageID is the idempotency key; generated when empty. The same
	// key within 10 minutes returns the first ack and starts nothing new.
	ClientMessageID string
}

// Conn is a connection to agentwire that keeps itself up until Close. Its
// methods are safe for concurrent use.
type Conn struct {
	opts   Options
	base   string // http(s)://host:port[/prefix], no trailing slash
	wsURL  string
	hc     *http.Client
	dialer *websocket.Dialer
	log    *slog.Logger
	events sink
	slow   chan Event      // the read loop's: the channel that was full too long
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	done   chan struct{} // closed when the Conn has stopped
	ids    atomic.Uint64

	tmu   sync.Mutex // serialises Token calls
	token string

	mu      sync.Mutex
	ws      *websocket.Conn // the current established socket, or nil
	est     ConnectionEstablished
	pos     Position // None until the first connection_established unless Options.Resume
	pending map[string]*pending
	subs    map[string]*runSub // Runs not yet bound, by client_message_id
	runs    map[string]*runSub // Runs by run id
	nextN   uint64
	stopped bool
	err     error

	wmu sync.Mutex // one writer at a time on ws
}

type pending struct {
	sub   *runSub // the Run a user_message starts, bound by its ack
	n     uint64  // send order
	frame []byte
	done  chan result
}

type result struct {
	f   protocol.ServerFrame
	err error
}

// link is one established connection to the user's stream: a
// *websocket.Conn, or an SSE response (*sseLink).
type link interface{ Close() error }

// errSlowConsumer ends a read loop whose consumer left Events full too long.
var errSlowConsumer = errors.New("events consumer too slow")

// Dial connects to the server and returns once the first
// connection_established has arrived; ctx bounds that first connect only.
// An error means no Conn: a refused handshake is a *HTTPError. After Dial the
// Conn reconnects on its own until Close or a close code that says stop.
func Dial(ctx context.Context, opts Options) (*Conn, error) {
	if opts.Token == nil {
		return nil, errors.New("client: Options.Token is required")
	}
	u, err := url.Parse(strings.TrimRight(opts.URL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: Options.URL %q: want http(s)://host:port", opts.URL)
	}
	c := &Conn{opts: opts, base: u.String(), hc: opts.HTTPClient, log: opts.Logger, pending: map[string]*pending{},
		subs: map[string]*runSub{}, runs: map[string]*runSub{}, done: make(chan struct{})}
	ws := *u
	ws.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	ws.Path += "/ws"
	c.wsURL = ws.String()
	if c.hc == nil {
		c.hc = http.DefaultClient
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.dialer = &websocket.Dialer{Proxy: http.ProxyFromEnvironment, HandshakeTimeout: handshakeTimeout}
	if t, ok := c.hc.Transport.(*http.Transport); ok && t.TLSClientConfig != nil {
		c.dialer.TLSClientConfig = t.TLSClientConfig.Clone()
	}
	defaultDur(&c.opts.SlowConsumerTimeout, DefaultSlowConsumerTimeout)
	defaultDur(&c.opts.InitialBackoff, DefaultInitialBackoff)
	defaultDur(&c.opts.MaxBackoff, DefaultMaxBackoff)
	defaultDur(&c.opts.TooManyErrorsBackoff, DefaultTooManyErrorsBackoff)
	if c.opts.EventBuffer <= 0 {
		c.opts.EventBuffer = DefaultEventBuffer
	}
	c.events = sink{ch: make(chan Event, c.opts.EventBuffer)}
	c.pos = Position{None: true}
	if r := opts.Resume; r != nil {
		c.pos = *r
	}

	conn, est, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.attach(conn, est)
	go c.run(conn, est)
	return c, nil
}

func defaultDur(p *time.Duration, d time.Duration) {
	if *p <= 0 {
		*p = d
	}
}

// Events returns the channel of stream events (and resync_required notices),
// in seq order, each seq once. It is closed when the Conn stops.
//
// Slow consumers: the channel holds Options.EventBuffer events. When it is
// full the read loop waits up to Options.SlowConsumerTimeout for room; after
// that it drops the connection, waits until the channel is half empty, and
// reconnects with resume from the last event it put on the channel. Nothing
// is lost or repeated, provided the server still retains the events (else
// a resync_required notice follows).
//
// With Options.RunsOnly it carries nothing. The events of a run started
// with Send also go to its Run, whose channel follows the same rules.
func (c *Conn) Events() <-chan Event { return c.events.ch }

// Done is closed when the Conn has stopped: after Close, or after the
// server closed with 1000, 1008 or 1009.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the Conn stopped: nil while running, after Close and after a
// 1000 close; a *CloseError after 1008 or 1009.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Position is the last seq put on Events and its epoch; give it as
// Options.Resume to continue elsewhere. It moves just after an event is put
// on Events, so it may briefly lag the event a consumer has just received;
// for an exact hand-over keep the Seq and Epoch of the last event processed.
func (c *Conn) Position() Position {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pos
}

// Established is the connection_established frame of the current (or last)
// connection.
func (c *Conn) Established() ConnectionEstablished {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.est
}

// Close stops the Conn: it closes the socket with 1000, fails pending
// requests with ErrClosed, closes Events and returns once the Conn's
// goroutine has exited. It is safe to call more than once.
func (c *Conn) Close() error {
	c.mu.Lock()
	ws := c.ws
	c.mu.Unlock()
	if ws != nil && c.ctx.Err() == nil {
		// WriteControl may run concurrently with a writer holding wmu.
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(protocol.CloseNormal), ""), time.Now().Add(time.Second))
	}
	c.cancel() // closes the socket, see run
	<-c.done
	return nil
}

// SendMessage sends a user_message and returns its ack. If the connection
// drops before the ack, the same frame (same client_message_id) is sent again
// on the next connection, so the server starts the run once. An error frame
// answering it is a *Error; ctx bounds the wait.
//
// Send does the same and returns a handle on the run.
func (c *Conn) SendMessage(ctx context.Context, content string, opts SendOptions) (Ack, error) {
	return c.sendMessage(ctx, content, opts, nil)
}

// sendMessage is SendMessage; the ack of a WebSocket request binds sub,
// when not nil, to its run on the read goroutine, before any later event.
func (c *Conn) sendMessage(ctx context.Context, content string, opts SendOptions, sub *runSub) (Ack, error) {
	cmid := opts.ClientMessageID
	if cmid == "" {
		cmid = randomID()
	}
	fr := protocol.Frame{Type: protocol.TypeUserMessage, Content: content, ThreadID: opts.ThreadID, ClientMessageID: cmid}
	var f protocol.ServerFrame
	var err error
	if c.opts.SSE {
		f, err = c.post(ctx, "/api/v1/messages", protocol.EncodeFrame(&fr))
	} else {
		f, err = c.request(ctx, fr, sub)
	}
	if err != nil {
		return Ack{}, err
	}
	return Ack{AckFrame: f.Ack(), ClientMessageID: cmid}, nil
}

// Stop asks the server to stop run runID and returns the ack; the run then
// ends with agent_error code cancelled (a run already ended is acknowledged
// and unchanged). An unknown or foreign run is a *Error with Code not_found.
func (c *Conn) Stop(ctx context.Context, runID string) (Ack, error) {
	var f protocol.ServerFrame
	var err error
	if c.opts.SSE {
		f, err = c.post(ctx, "/api/v1/runs/"+url.PathEscape(runID)+"/stop", nil)
	} else {
		f, err = c.request(ctx, protocol.Frame{Type: protocol.TypeStopAgent, RunID: runID}, nil)
	}
	if err != nil {
		return Ack{}, err
	}
	return Ack{AckFrame: f.Ack()}, nil
}

// AnswerInput answers run runID's input_required requestID with answer
// (exactly one of its fields set, of the request's kind) and returns the
// ack; every connection of the user then gets input_received. The first
// answer from any connection wins: a later one is a *Error with Code
// conflict (so is an answer to a run that has ended). With SSE it is POST
// /api/v1/runs/{id}/input, sent again on a failed request like every send:
// an answer that was taken before its reply was lost then gets conflict.
func (c *Conn) AnswerInput(ctx context.Context, runID, requestID string, answer protocol.InputAnswer) (Ack, error) {
	fr := protocol.Frame{Type: protocol.TypeUserInput, RunID: runID, RequestID: requestID, Answer: answer}
	var f protocol.ServerFrame
	var err error
	if c.opts.SSE {
		f, err = c.post(ctx, "/api/v1/runs/"+url.PathEscape(runID)+"/input", protocol.EncodeFrame(&fr))
	} else {
		f, err = c.request(ctx, fr, nil)
	}
	if err != nil {
		return Ack{}, err
	}
	return Ack{AckFrame: f.Ack()}, nil
}

// Ping sends an application-level ping and waits for its pong (with SSE:
// GET /healthz).
func (c *Conn) Ping(ctx context.Context) error {
	if c.opts.SSE {
		var out json.RawMessage
		return c.do(ctx, http.MethodGet, "/healthz", nil, &out)
	}
	_, err := c.request(ctx, protocol.Frame{Type: protocol.TypePing}, nil)
	return err
}

// post sends a request over plain HTTP (Options.SSE) and returns the ack it
// answers. An answer with one of the error frame's codes is that *Error; a
// failed request or a 5xx is sent again, the same (so with the same
// client_message_id), with backoff, until ctx ends or the Conn stops.
func (c *Conn) post(ctx context.Context, path string, body []byte) (protocol.ServerFrame, error) {
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		stopped, serr := c.stopped, c.err
		c.mu.Unlock()
		if stopped {
			if serr == nil {
				serr = ErrClosed
			}
			return protocol.ServerFrame{}, serr
		}
		var raw json.RawMessage
		err := c.do(ctx, http.MethodPost, path, body, &raw)
		if err == nil {
			return protocol.DecodeServerFrame(raw)
		}
		if ctx.Err() != nil {
			return protocol.ServerFrame{}, ctx.Err()
		}
		var he *HTTPError
		if errors.As(err, &he) && he.Status < 500 {
			if he.Code != "" && he.Status != http.StatusUnauthorized && he.Status != http.StatusForbidden {
				return protocol.ServerFrame{}, &Error{Code: he.Code, Message: he.Message}
			}
			return protocol.ServerFrame{}, err
		}
		c.log.Warn("agentwire: request not taken, retrying", "path", path, "attempt", attempt, "err", err)
		t := time.NewTimer(c.backoff(attempt, 0))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return protocol.ServerFrame{}, ctx.Err()
		case <-c.done:
			t.Stop()
		}
	}
}

// request sends f with a fresh id (now if connected, else on the next
// connection, and again after every reconnect until answered) and waits for
// the ack, pong or error frame whose ref is that id.
func (c *Conn) request(ctx context.Context, f protocol.Frame, sub *runSub) (protocol.ServerFrame, error) {
	f.ID = "g" + strconv.FormatUint(c.ids.Add(1), 36) + "-" + randomID()[:8]
	p := &pending{sub: sub, frame: protocol.EncodeFrame(&f), done: make(chan result, 1)}
	c.mu.Lock()
	if c.stopped {
		err := c.stoppedErr()
		c.mu.Unlock()
		return protocol.ServerFrame{}, err
	}
	c.nextN++
	p.n = c.nextN
	c.pending[f.ID] = p
	ws := c.ws
	c.mu.Unlock()
	if ws != nil {
		c.write(ws, p.frame)
	}
	select {
	case r := <-p.done:
		return r.f, r.err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, f.ID)
		c.mu.Unlock()
		return protocol.ServerFrame{}, ctx.Err()
	}
}

// stoppedErr is what a request on the stopped Conn fails with; c.mu is held.
func (c *Conn) stoppedErr() error {
	if c.err != nil {
		return c.err
	}
	return ErrClosed
}

// write sends one text frame; a failure shows up in the read loop as a close.
func (c *Conn) write(ws *websocket.Conn, b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.log.Debug("agentwire: write failed", "err", err)
	}
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// currentToken returns the cached token, asking Options.Token when there is none.
func (c *Conn) currentToken(ctx context.Context) (string, error) {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if c.token != "" {
		return c.token, nil
	}
	tok, err := c.opts.Token(ctx)
	if err != nil {
		return "", fmt.Errorf("client: token: %w", err)
	}
	if tok == "" {
		return "", errors.New("client: token: Options.Token returned an empty token")
	}
	c.token = tok
	return tok, nil
}

// invalidateToken makes the next currentToken call Options.Token, unless
// another caller has already replaced tok.
func (c *Conn) invalidateToken(tok string) {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if c.token == tok {
		c.token = ""
	}
}

// connect opens one socket (or SSE response) and reads its
// connection_established.
func (c *Conn) connect(ctx context.Context) (link, ConnectionEstablished, error) {
	var est ConnectionEstablished
	tok, err := c.currentToken(ctx)
	if err != nil {
		return nil, est, err
	}
	q := url.Values{}
	h := http.Header{}
	c.mu.Lock()
	if pos := c.pos; c.opts.SSE && !pos.None && pos.Epoch != "" {
		h.Set("Last-Event-ID", protocol.EventID(pos.Epoch, pos.Seq))
	} else {
		pos.SetQuery(q)
	}
	c.mu.Unlock()
	if c.opts.UseTicket {
		var t protocol.Ticket
		if err := c.do(ctx, http.MethodPost, "/api/v1/tickets", nil, &t); err != nil {
			return nil, est, fmt.Errorf("client: ticket: %w", err)
		}
		q.Set("ticket", t.Ticket)
	} else {
		h.Set("Authorization", "Bearer "+tok)
	}
	if c.opts.SSE {
		return c.connectSSE(ctx, tok, q, h)
	}
	u := c.wsURL
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	ws, resp, err := c.dialer.DialContext(ctx, u, h)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body [4096]byte
			n, _ := resp.Body.Read(body[:])
			he := httpError(resp.StatusCode, body[:n])
			if he.Status == http.StatusUnauthorized {
				c.invalidateToken(tok)
			}
			return nil, est, fmt.Errorf("client: connect %s: %w", c.wsURL, he)
		}
		return nil, est, fmt.Errorf("client: connect %s: %w", c.wsURL, err)
	}
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	_ = ws.SetReadDeadline(time.Now().Add(handshakeTimeout))
	_, b, err := ws.ReadMessage()
	return c.established(ws, b, err)
}

// established checks the first frame read from l (b, or the read's error
// err), which must be connection_established; on failure it closes l.
func (c *Conn) established(l link, b []byte, err error) (link, ConnectionEstablished, error) {
	var est ConnectionEstablished
	if err != nil {
		l.Close()
		return nil, est, fmt.Errorf("client: connect: reading connection_established: %w", err)
	}
	if c.opts.OnFrame != nil {
		c.opts.OnFrame(b)
	}
	var typ struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(b, &typ) != nil || typ.Type != protocol.TypeConnectionEstablished || json.Unmarshal(b, &est) != nil {
		l.Close()
		return nil, est, fmt.Errorf("client: connect: first frame %.200q is not connection_established", b)
	}
	return l, est, nil
}

// attach makes l the current connection and sends every unanswered request
// on it (a socket's; requests go over HTTP with SSE).
func (c *Conn) attach(l link, est ConnectionEstablished) {
	c.mu.Lock()
	c.est = est
	if c.pos.None {
		c.pos = Position{Seq: est.HeadSeq, Epoch: est.Epoch}
	} else if c.pos.Epoch == "" {
		c.pos.Epoch = est.Epoch
	}
	ws, _ := l.(*websocket.Conn)
	if ws == nil {
		c.mu.Unlock()
		c.log.Info("agentwire: connected (SSE)", "conn", est.ConnectionID, "user", est.UserID, "head_seq", est.HeadSeq)
		return
	}
	c.ws = ws
	resend := make([]*pending, 0, len(c.pending))
	for _, p := range c.pending {
		resend = append(resend, p)
	}
	c.mu.Unlock()
	sortPending(resend)
	for _, p := range resend {
		c.write(ws, p.frame)
	}
	c.log.Info("agentwire: connected", "conn", est.ConnectionID, "user", est.UserID, "head_seq", est.HeadSeq)
}

func sortPending(ps []*pending) {
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && ps[j].n < ps[j-1].n; j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}

// detach forgets l as the current connection and closes it.
func (c *Conn) detach(l link) {
	c.mu.Lock()
	if ws, ok := l.(*websocket.Conn); ok && c.ws == ws {
		c.ws = nil
	}
	c.mu.Unlock()
	l.Close()
}

// run is the Conn's one goroutine: it reads the current socket, and when it
// ends decides, from the close code, to stop or to reconnect with resume.
func (c *Conn) run(l link, est ConnectionEstablished) {
	defer close(c.done)
	attempt := 0
	for {
		upAt := time.Now()
		unhook := context.AfterFunc(c.ctx, func() { l.Close() })
		code, reason, err := c.read(l, est)
		unhook()
		c.detach(l)
		if c.ctx.Err() != nil {
			c.stop(nil)
			return
		}
		if time.Since(upAt) > stableAfter {
			attempt = 0
		}
		c.log.Info("agentwire: disconnected", "conn", est.ConnectionID, "code", code, "reason", reason, "err", err)
		if c.opts.OnDisconnect != nil {
			c.opts.OnDisconnect(code, reason, err)
		}
		var delay time.Duration
		switch code {
		case protocol.CloseNormal:
			c.stop(nil)
			return
		case protocol.ClosePolicyViolation, protocol.CloseTooLarge:
			c.stop(&CloseError{Code: code, Reason: reason})
			return
		case protocol.CloseTokenExpired:
			c.invalidateToken(c.cachedToken())
			if attempt > 0 { // a repeat backs off; the first reconnects at once
				delay = c.backoff(attempt, code)
			}
			attempt++
		default:
			if errors.Is(err, errSlowConsumer) {
				if !c.waitForRoom() {
					c.stop(nil)
					return
				}
				break // reconnect at once: the server is fine, we were slow
			}
			delay = c.backoff(attempt, code)
			attempt++
		}
		for {
			if !c.sleep(delay) {
				c.stop(nil)
				return
			}
			l, est, err = c.connect(c.ctx)
			if err == nil {
				break
			}
			if c.ctx.Err() != nil {
				c.stop(nil)
				return
			}
			c.log.Warn("agentwire: reconnect failed", "attempt", attempt, "err", err)
			var he *HTTPError
			code = protocol.CloseAbnormal
			if errors.As(err, &he) && he.Status == http.StatusTooManyRequests {
				code = protocol.CloseTooManyErrors
			}
			delay = c.backoff(attempt, code)
			attempt++
		}
		c.attach(l, est)
	}
}

func (c *Conn) cachedToken() string {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	return c.token
}

// backoff is full jitter over an exponential ceiling; after 4029 (or a 429)
// at least TooManyErrorsBackoff.
func (c *Conn) backoff(attempt int, code protocol.CloseCode) time.Duration {
	ceiling := c.opts.MaxBackoff
	if attempt < 30 {
		ceiling = min(c.opts.MaxBackoff, c.opts.InitialBackoff<<attempt)
	}
	d := time.Duration(mrand.Int64N(int64(ceiling) + 1))
	if code == protocol.CloseTooManyErrors {
		floor := c.opts.TooManyErrorsBackoff
		d = floor + time.Duration(mrand.Int64N(int64(max(floor, ceiling))+1))
	}
	return d
}

// sleep waits d; false when Close came first.
func (c *Conn) sleep(d time.Duration) bool {
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// waitForRoom waits until the channel that was full too long (Events or a
// Run's) is at most half full; false when Close came first.
func (c *Conn) waitForRoom() bool {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	defer func() { c.slow = nil }()
	for ch := c.slow; ch != nil && len(ch) > cap(ch)/2; {
		select {
		case <-t.C:
		case <-c.ctx.Done():
			return false
		}
	}
	return true
}

// stop ends the Conn: pending requests fail, Events closes.
func (c *Conn) stop(err error) {
	c.cancel()
	c.mu.Lock()
	c.stopped = true
	c.err = err
	if err == nil {
		err = ErrClosed
	}
	for id, p := range c.pending {
		p.done <- result{err: err}
		delete(c.pending, id)
	}
	c.mu.Unlock()
	for _, sub := range c.allSubs() {
		c.endRun(sub, Event{}, err)
	}
	close(c.events.ch)
	c.log.Info("agentwire: stopped", "err", c.err)
}

// read handles frames from l until it ends, returning the close code
// (1006 without one), its reason and the read error.
func (c *Conn) read(l link, est ConnectionEstablished) (protocol.CloseCode, string, error) {
	idle := 2*time.Duration(est.HeartbeatIntervalMS)*time.Millisecond + 10*time.Second
	if est.HeartbeatIntervalMS <= 0 {
		idle = 70 * time.Second
	}
	if s, ok := l.(*sseLink); ok {
		return c.readSSE(s, idle)
	}
	ws := l.(*websocket.Conn)
	ws.SetPingHandler(func(data string) error {
		_ = ws.SetReadDeadline(time.Now().Add(idle))
		err := ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeTimeout))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	g := gap{resume: func(pos Position) {
		c.write(ws, protocol.EncodeFrame(&protocol.Frame{Type: protocol.TypeResume, Cursor: pos}))
	}}
	for {
		_ = ws.SetReadDeadline(time.Now().Add(idle))
		_, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return protocol.CloseCode(ce.Code), ce.Text, err
			}
			return protocol.CloseAbnormal, "", err
		}
		if err := c.handle(b, &g); err != nil {
			return protocol.CloseSlowConsumer, "slow consumer", err
		}
	}
}

// gap asks, once per gap, for the events of a gap in seq the contract rules
// out rather than lose them.
type gap struct {
	asked  bool
	resume func(Position)
}

// handle acts on one frame received; an error (the consumer too slow) ends
// the connection.
func (c *Conn) handle(b []byte, g *gap) error {
	if c.opts.OnFrame != nil {
		c.opts.OnFrame(b)
	}
	f, err := protocol.DecodeServerFrame(b)
	if err != nil {
		c.log.Warn("agentwire: frame is not JSON", "err", err)
		return nil
	}
	switch f.Type {
	case protocol.TypeAck, protocol.TypePong, protocol.TypeError:
		c.answer(&f)
	case protocol.TypeResyncRequired:
		rr := f.Resync()
		c.log.Warn("agentwire: resync required", "epoch", f.Epoch, "head_seq", f.HeadSeq, "reason", f.Reason)
		ev := Event{Event: protocol.Event{Type: protocol.TypeResyncRequired, Epoch: f.Epoch}, Resync: &rr}
		return c.deliver(ev, Position{Seq: f.HeadSeq, Epoch: f.Epoch})
	case protocol.TypeDeprecation:
		c.log.Warn("agentwire: deprecated frame type", "alias", f.Alias)
	default:
		if f.Seq == 0 {
			c.log.Debug("agentwire: frame ignored", "type", f.Type)
			return nil
		}
		pos := c.Position()
		switch {
		case f.Epoch == pos.Epoch && f.Seq <= pos.Seq:
			return nil // seen
		case f.Epoch == pos.Epoch && f.Seq > pos.Seq+1:
			if !g.asked {
				g.asked = true
				g.resume(pos)
			}
			return nil
		}
		g.asked = false
		return c.deliver(Event{Event: f.Event()}, Position{Seq: f.Seq, Epoch: f.Epoch})
	}
	return nil
}

// deliver puts ev on Events and on its Run's channel (a resync_required
// notice on every Run's, which it ends) and then moves the position to pos.
func (c *Conn) deliver(ev Event, pos Position) error {
	if !c.opts.RunsOnly {
		if err := c.put(&c.events, ev, pos); err != nil {
			return err
		}
	}
	if ev.Resync != nil {
		for _, sub := range c.allSubs() {
			if err := c.put(&sub.sink, ev, pos); err != nil {
				return err // the notice comes again after the reconnect
			}
			c.endRun(sub, Event{}, ErrResync)
		}
	} else if sub := c.subFor(&ev); sub != nil {
		if err := c.put(&sub.sink, ev, pos); err != nil {
			return err
		}
		if ev.Terminal() {
			c.endRun(sub, ev, nil)
		}
	}
	c.mu.Lock()
	c.pos = pos
	c.mu.Unlock()
	return nil
}

// put puts ev on s's channel unless it is there already (delivered before
// a slow consumer drop), waiting up to Options.SlowConsumerTimeout for room.
func (c *Conn) put(s *sink, ev Event, pos Position) error {
	if s.has && s.last.Epoch == pos.Epoch && pos.Seq <= s.last.Seq {
		return nil
	}
	select {
	case s.ch <- ev:
	default:
		t := time.NewTimer(c.opts.SlowConsumerTimeout)
		defer t.Stop()
		select {
		case s.ch <- ev:
		case <-c.ctx.Done():
			return ErrClosed
		case <-t.C:
			c.log.Warn("agentwire: events consumer too slow, reconnecting", "seq", c.Position().Seq)
			c.slow = s.ch
			return errSlowConsumer
		}
	}
	s.last, s.has = pos, true
	return nil
}

// answer completes the request that f references.
func (c *Conn) answer(f *protocol.ServerFrame) {
	c.mu.Lock()
	p := c.pending[f.Ref]
	delete(c.pending, f.Ref)
	c.mu.Unlock()
	if p == nil {
		if f.Type == protocol.TypeError {
			c.log.Warn("agentwire: error frame", "code", f.Code, "message", f.Message, "ref", f.Ref)
		}
		return
	}
	if f.Type == protocol.TypeError {
		p.done <- result{err: f.Err()}
		return
	}
	if p.sub != nil {
		c.bind(p.sub, f.RunID)
	}
	p.done <- result{f: *f}
}
