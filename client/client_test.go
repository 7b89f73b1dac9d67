package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/client"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/testserver"
	"github.com/agentwire/agentwire/protocol"
)

const testSecret = "client-test-secret-0123456789abcdef"

// server is `agentwire serve` running in this test process (as in internal/e2e).
type server struct {
	t      testing.TB
	URL    string
	signer *auth.Signer
	stop   func() error
}

func startServer(t testing.TB, args ...string) *server {
	t.Helper()
	ts := testserver.Start(t, append([]string{"--dev", "--jwt-secret", testSecret, "--log-level", "error"}, args...)...)
	return &server{t: t, URL: ts.URL, signer: auth.NewSigner([]byte(testSecret)), stop: ts.Stop}
}

func (s *server) tokenTTL(user string, ttl time.Duration) string {
	tok, _, err := s.signer.Sign(user, ttl, "", "")
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

// tokenFunc returns a Token option for user that counts its calls.
func (s *server) tokenFunc(user string, calls *atomic.Int32) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		if calls != nil {
			calls.Add(1)
		}
		return s.tokenTTL(user, time.Hour), nil
	}
}

// dial connects with a private HTTP transport, closed with the Conn.
func dial(t *testing.T, opts client.Options) *client.Conn {
	t.Helper()
	tr := &http.Transport{}
	opts.HTTPClient = &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, opts)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		tr.CloseIdleConnections()
	})
	return c
}

// untilTerminal collects events of run runID (and every event before the
// run's, with allSeq) until its terminal event. It fails when no event
// comes for 10 s: a slow machine may take as long as events keep coming.
func untilTerminal(t *testing.T, c *client.Conn, runID string) (run, all []client.Event) {
	t.Helper()
	const idle = 10 * time.Second
	timeout := time.NewTimer(idle)
	defer timeout.Stop()
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("events closed: %v", c.Err())
			}
			timeout.Reset(idle)
			all = append(all, ev)
			if ev.RunID != runID {
				continue
			}
			run = append(run, ev)
			if ev.Terminal() {
				return run, all
			}
		case <-timeout.C:
			t.Fatalf("no event for %v and no terminal event for run %s; got %d events", idle, runID, len(run))
		}
	}
}

// ctxT is a test's request context; its deadline only guards against a
// hang, not a slow machine.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func checkContiguous(t *testing.T, evs []client.Event) {
	t.Helper()
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != evs[i-1].Seq+1 {
			t.Fatalf("seq %d follows %d (%s after %s)", evs[i].Seq, evs[i-1].Seq, evs[i].Type, evs[i-1].Type)
		}
	}
}

func TestGoldenPath(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, ticket := range []bool{false, true} {
		t.Run(fmt.Sprintf("ticket=%v", ticket), func(t *testing.T) {
			user := fmt.Sprintf("golden-%v", ticket)
			c := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc(user, nil), UseTicket: ticket})
			if est := c.Established(); est.UserID != user || est.Protocol != protocol.Version || est.Epoch == "" {
				t.Fatalf("established %+v", est)
			}
			ctx := ctxT(t)
			ack, err := c.SendMessage(ctx, "what is 12*(3+4)?", client.SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ack.RunID == "" || ack.ThreadID == "" || ack.MessageID == "" || ack.ClientMessageID == "" {
				t.Fatalf("ack %+v", ack)
			}
			_, all := untilTerminal(t, c, ack.RunID)
			checkContiguous(t, all)
			var types []string
			for _, ev := range all {
				types = append(types, ev.Type)
				if ev.Epoch == "" || ev.TS.IsZero() || ev.ThreadID != ack.ThreadID {
					t.Errorf("event %+v lacks epoch, ts or thread", ev)
				}
			}
			if types[0] != protocol.TypeUserMessage || types[1] != protocol.TypeAgentStarted {
				t.Fatalf("types %v", types)
			}
			if um, ok := all[0].UserMessage(); !ok || um.ClientMessageID != ack.ClientMessageID || um.Content != "what is 12*(3+4)?" {
				t.Fatalf("echo %+v", um)
			}
			done, ok := all[len(all)-1].AgentCompleted()
			if !ok || !strings.Contains(done.FinalResponse, "84") {
				t.Fatalf("last event %s %s", all[len(all)-1].Type, all[len(all)-1].Data)
			}
			var tool client.ToolCompleted
			for _, ev := range all {
				if tc, ok := ev.ToolCompleted(); ok {
					tool = tc
				}
			}
			if tool.Tool != "calculator" || !tool.OK || string(tool.Result) == "" {
				t.Fatalf("tool_completed %+v", tool)
			}
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}

			threads, err := c.Threads(ctx)
			if err != nil || len(threads) != 1 || threads[0].ID != ack.ThreadID {
				t.Fatalf("threads %+v, %v", threads, err)
			}
			msgs, err := c.Messages(ctx, ack.ThreadID)
			if err != nil || len(msgs) != 2 || msgs[1].Role != "assistant" || !strings.Contains(msgs[1].Content, "84") {
				t.Fatalf("messages %+v, %v", msgs, err)
			}
			run, err := c.Run(ctx, ack.RunID)
			if err != nil || run.Status != "completed" || run.ThreadID != ack.ThreadID {
				t.Fatalf("run %+v, %v", run, err)
			}
			var he *client.HTTPError
			if _, err := c.Run(ctx, "no-such-run"); !errors.As(err, &he) || he.Status != 404 {
				t.Fatalf("unknown run: %v", err)
			}

			// The same client_message_id again: the first ack, no new run.
			again, err := c.SendMessage(ctx, "what is 12*(3+4)?", client.SendOptions{ClientMessageID: ack.ClientMessageID})
			if err != nil || again.RunID != ack.RunID {
				t.Fatalf("resend: %+v, %v (first %+v)", again, err, ack)
			}
		})
	}
}

// proxy is a TCP relay that can cut every connection through it.
type proxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	conns    []net.Conn
	accepted atomic.Int32
	wg       sync.WaitGroup
}

func newProxy(t *testing.T, upstream string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		upstream := p.upstream
		p.mu.Unlock()
		up, err := net.Dial("tcp", upstream)
		if err != nil {
			down.Close()
			continue
		}
		p.accepted.Add(1)
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); _, _ = io.Copy(up, down); up.Close() }()
		go func() { defer p.wg.Done(); _, _ = io.Copy(down, up); down.Close() }()
	}
}

// to makes the proxy relay new connections to upstream (host:port).
func (p *proxy) to(upstream string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.upstream = upstream
}

// cut closes every connection through the proxy, as a network failure would.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func TestResumeAfterCutMidRun(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	p := newProxy(t, strings.TrimPrefix(s.URL, "http://"))
	c := dial(t, client.Options{URL: p.URL(), Token: s.tokenFunc("cut", nil), InitialBackoff: 50 * time.Millisecond})
	ctx := ctxT(t)
	ack, err := c.SendMessage(ctx, "slow: what is 12*(3+4)?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var all []client.Event
	for len(all) < 3 {
		select {
		case ev := <-c.Events():
			all = append(all, ev)
		case <-ctx.Done():
			t.Fatal("no events")
		}
	}
	p.cut()
	_, rest := untilTerminal(t, c, ack.RunID)
	all = append(all, rest...)
	checkContiguous(t, all)
	if p.accepted.Load() < 2 {
		t.Fatalf("%d connections through the proxy, want a reconnect", p.accepted.Load())
	}
	if all[0].Type != protocol.TypeUserMessage || all[len(all)-1].Type != protocol.TypeAgentCompleted {
		t.Fatalf("first %s, last %s", all[0].Type, all[len(all)-1].Type)
	}
	// The Conn moves its position right after the event is taken: a hang
	// guard, not a measure.
	for deadline := time.Now().Add(10 * time.Second); c.Position().Seq != all[len(all)-1].Seq; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("position %d, last seq %d", c.Position().Seq, all[len(all)-1].Seq)
		}
	}

	// A request sent while the connection is down is answered after the reconnect.
	p.cut()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping across a cut: %v", err)
	}
}

func TestResyncOnWrongEpoch(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc("resync", nil), Resume: &client.Position{Seq: 3, Epoch: "not-the-epoch"}})
	select {
	case ev := <-c.Events():
		if ev.Type != protocol.TypeResyncRequired || ev.Resync == nil || ev.Resync.Epoch != c.Established().Epoch {
			t.Fatalf("first event %+v, want resync_required", ev)
		}
		if pos := c.Position(); pos.Epoch != ev.Resync.Epoch || pos.Seq != ev.Resync.HeadSeq {
			t.Fatalf("position %+v after %+v", pos, ev.Resync)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no resync_required")
	}
	// Live events continue after it.
	ack, err := c.SendMessage(ctxT(t), "hello", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	untilTerminal(t, c, ack.RunID)
}

func TestTokenExpiredGetsFreshToken(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	var calls atomic.Int32
	token := func(context.Context) (string, error) {
		if calls.Add(1) == 1 {
			return s.tokenTTL("expiring", 2*time.Second), nil // closed with 4001 within about 2 s
		}
		return s.tokenTTL("expiring", time.Hour), nil
	}
	c := dial(t, client.Options{URL: s.URL, Token: token})
	first := c.Established().ConnectionID
	deadline := time.Now().Add(30 * time.Second) // a hang bound, not the 2 s
	for c.Established().ConnectionID == first {
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect after the token expired (Token called %d times)", calls.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("Token called %d times, want 2", n)
	}
	ack, err := c.SendMessage(ctxT(t), "what is 1+1?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	untilTerminal(t, c, ack.RunID)
}

func TestErrorFrameIsTypedError(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc("errors", nil)})
	ctx := ctxT(t)
	for name, call := range map[string]func() error{
		"unknown thread": func() error {
			_, err := c.SendMessage(ctx, "hi", client.SendOptions{ThreadID: "no-such-thread"})
			return err
		},
		"unknown run": func() error { _, err := c.Stop(ctx, "no-such-run"); return err },
	} {
		var fe *client.Error
		if err := call(); !errors.As(err, &fe) || fe.Code != "not_found" || fe.Ref == "" {
			t.Errorf("%s: %v, want *client.Error not_found", name, err)
		}
	}
	var fe *client.Error
	if _, err := c.SendMessage(ctx, "", client.SendOptions{}); !errors.As(err, &fe) || fe.Code != "invalid_message" {
		t.Errorf("empty content: %v, want invalid_message", err)
	}
	// The connection stays usable.
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc("stopper", nil)})
	ctx := ctxT(t)
	ack, err := c.SendMessage(ctx, "slow please", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stop(ctx, ack.RunID); err != nil {
		t.Fatal(err)
	}
	run, _ := untilTerminal(t, c, ack.RunID)
	if e, ok := run[len(run)-1].AgentError(); !ok || e.Code != "cancelled" {
		t.Fatalf("terminal %s %s", run[len(run)-1].Type, run[len(run)-1].Data)
	}
}

// The demo agent asks for approval; one connection (WebSocket) and one
// over SSE see the question, the SSE one answers, the second answer is
// conflict, and the run completes.
func TestAnswerInput(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	ws := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc("asker", nil)})
	sse := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc("asker", nil), SSE: true})
	ctx := ctxT(t)
	ack, err := ws.SendMessage(ctx, "approve 2+3", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var req protocol.InputRequired
	for ev := range sse.Events() {
		if d, ok := ev.InputRequired(); ok && ev.RunID == ack.RunID {
			req = d
			break
		}
	}
	yes := true
	if _, err := sse.AnswerInput(ctx, ack.RunID, req.RequestID, protocol.InputAnswer{Approved: &yes}); err != nil {
		t.Fatal(err)
	}
	var pe *client.Error
	if _, err := ws.AnswerInput(ctx, ack.RunID, req.RequestID, protocol.InputAnswer{Approved: &yes}); !errors.As(err, &pe) || pe.Code != protocol.CodeConflict {
		t.Fatalf("second answer: %v, want conflict", err)
	}
	run, _ := untilTerminal(t, ws, ack.RunID)
	if d, ok := run[len(run)-1].AgentCompleted(); !ok || !strings.Contains(d.FinalResponse, "5") {
		t.Fatalf("terminal %s %s", run[len(run)-1].Type, run[len(run)-1].Data)
	}
}

func TestDialRefused(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	ctx := ctxT(t)
	_, err := client.Dial(ctx, client.Options{URL: s.URL, Token: func(context.Context) (string, error) { return "not-a-jwt", nil }})
	var he *client.HTTPError
	if !errors.As(err, &he) || he.Status != 401 || he.Code != "unauthorized" {
		t.Fatalf("bad token: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	if _, err := client.Dial(ctx, client.Options{URL: "http://" + addr, Token: s.tokenFunc("x", nil)}); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("closed port: %v after %v", err, time.Since(start))
	}
}

// TestNoGoroutineLeft is not parallel: while it runs, parallel tests are
// parked, so goroutines it did not start are recorded by IgnoreCurrent.
func TestNoGoroutineLeft(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	s := startServer(t)
	p := newProxy(t, strings.TrimPrefix(s.URL, "http://"))
	tr := &http.Transport{}
	ctx := ctxT(t)
	c, err := client.Dial(ctx, client.Options{URL: p.URL(), Token: s.tokenFunc("leak", nil), UseTicket: true,
		HTTPClient: &http.Client{Transport: tr}, InitialBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := c.SendMessage(ctx, "slow 1+1", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	<-c.Events()
	p.cut() // a reconnect happens too
	untilTerminal(t, c, ack.RunID)
	if _, err := c.Threads(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close()
	if _, ok := <-c.Events(); ok {
		t.Fatal("events still open after Close")
	}
	if err := c.Ping(ctx); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("ping after Close: %v", err)
	}
	tr.CloseIdleConnections()
	s.stop()
	p.ln.Close()
	p.cut()
	p.wg.Wait()
	goleak.VerifyNone(t, ignore)
}

func TestSlowConsumerLosesNothing(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	dropped := &logSignal{msg: "events consumer too slow", ch: make(chan struct{})}
	c := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc("slowpoke", nil), EventBuffer: 2, SlowConsumerTimeout: 50 * time.Millisecond,
		Logger: slog.New(dropped)})
	first := c.Established().ConnectionID
	ctx := ctxT(t)
	ack, err := c.SendMessage(ctx, "what is 12*(3+4)?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads until the Conn has given up on this reader (its 2-event
	// buffer stayed full for 50 ms): its log record is the signal, where a
	// pause of 800 ms assumed the run and the drop would fit in it.
	select {
	case <-dropped.ch:
	case <-ctx.Done():
		t.Fatal("the Conn did not drop the connection of a consumer that does not read")
	}
	_, all := untilTerminal(t, c, ack.RunID)
	checkContiguous(t, all)
	if all[0].Type != protocol.TypeUserMessage {
		t.Fatalf("first event %s", all[0].Type)
	}
	if c.Established().ConnectionID == first {
		t.Fatal("the slow consumer did not make the Conn reconnect")
	}
}

// Messages and Threads follow the server's pages: a thread of over 1 MiB
// comes back whole, in order.
func TestRESTFollowsPages(t *testing.T) {
	s := startServer(t, "--max-runs-per-user", "100", "--rate-burst", "100")
	c := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc("pager", nil)})
	go func() {
		for range c.Events() { // keep the bounded channel from holding acks back
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 34 // 34 x 32000 bytes: over one page's 1 MiB
	thread := ""
	var want []string
	for i := range n {
		content := fmt.Sprintf("%04d", i) + strings.Repeat("x", 32000-4)
		ack, err := c.SendMessage(ctx, content, client.SendOptions{ThreadID: thread})
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		thread = ack.ThreadID
		want = append(want, ack.MessageID)
	}
	var msgs []client.Message
	for {
		var err error
		if msgs, err = c.Messages(ctx, thread); err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 2*n { // every answer stored
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d messages, want %d", len(msgs), 2*n)
		case <-time.After(50 * time.Millisecond):
		}
	}
	var got []string
	for _, m := range msgs {
		if m.Role == "user" {
			got = append(got, m.ID)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("user messages %v, want %v", got, want)
	}
	if threads, err := c.Threads(ctx); err != nil || len(threads) != 1 || threads[0].ID != thread {
		t.Fatalf("threads %+v, %v", threads, err)
	}
}

// logSignal is a slog.Handler that closes ch at the first record whose
// message contains msg: a test waits on what the Conn reports, not on time.
type logSignal struct {
	msg  string
	once sync.Once
	ch   chan struct{}
}

func (h *logSignal) Enabled(context.Context, slog.Level) bool { return true }

func (h *logSignal) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.msg) {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}

func (h *logSignal) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logSignal) WithGroup(string) slog.Handler      { return h }
