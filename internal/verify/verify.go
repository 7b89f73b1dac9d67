// Package verify is `agentwire verify`: the golden path of the wire
// contract, run against a running deployment through the Go SDK, one line
// per check.
package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentwire/agentwire/client"
	"github.com/agentwire/agentwire/internal/config"
	"github.com/agentwire/agentwire/internal/loadgen"
	"github.com/agentwire/agentwire/protocol"
)

// Run is `agentwire verify` with args (without "verify"), its flags also
// read from their AGENTWIRE_… variables through getenv. It prints one line
// per check and a summary on stdout, and fails when a check failed.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	f := config.NewFlagSet("verify", getenv)
	var o verifyOptions
	f.String(&o.url, "url", "AGENTWIRE_URL", "http://127.0.0.1:8080", "base URL of the deployment")
	f.String(&o.token, "token", "AGENTWIRE_TOKEN", "", "JWT of a test user")
	f.StringVar(&o.devUser, "dev-user", "", "test user to log in as with POST /auth/dev-login (servers started with --dev); also checks isolation against a second user")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on the whole verification")
	f.StringVar(&o.message, "message", "what is 12*(3+4)?", "message sent to the agent")
	f.StringVar(&o.expect, "expect", "84", "text the final answer must contain; empty skips the content check")
	if err := f.Parse(args); err != nil {
		return err
	}
	if (o.token == "") == (o.devUser == "") {
		return errors.New("verify needs exactly one of --token and --dev-user")
	}
	o.url = strings.TrimRight(o.url, "/")
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	v := &verifier{verifyOptions: o, out: stdout, hc: &http.Client{Transport: &http.Transport{}}}
	defer v.hc.CloseIdleConnections()
	err := v.run(ctx)
	fmt.Fprintf(stdout, "%d passed, %d failed\n", v.passed, v.failed)
	switch {
	case err != nil:
		return err
	case v.failed > 0:
		return fmt.Errorf("verify: %d of %d checks failed", v.failed, v.passed+v.failed)
	}
	return nil
}

type verifyOptions struct {
	url, token, devUser, message, expect string
	timeout                              time.Duration
}

type verifier struct {
	verifyOptions
	out            io.Writer
	hc             *http.Client
	passed, failed int
}

// check prints one result line; err nil is a pass.
func (v *verifier) check(name string, err error) bool {
	if err != nil {
		v.failed++
		fmt.Fprintf(v.out, "FAIL %s: %v\n", name, err)
		return false
	}
	v.passed++
	fmt.Fprintf(v.out, "ok   %s\n", name)
	return true
}

// trace records the frames a connection received, in order.
type trace struct {
	mu     sync.Mutex
	frames []protocol.ServerFrame
}

func (t *trace) record(raw []byte) {
	f, _ := protocol.DecodeServerFrame(raw)
	t.mu.Lock()
	t.frames = append(t.frames, f)
	t.mu.Unlock()
}

func (t *trace) snapshot() []protocol.ServerFrame {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]protocol.ServerFrame(nil), t.frames...)
}

func (v *verifier) run(ctx context.Context) error {
	if err := v.probe(ctx, "/healthz"); err != nil {
		v.check("GET /healthz", err)
		var he *client.HTTPError
		if !errors.As(err, &he) {
			return fmt.Errorf("verify: cannot reach %s: %w", v.url, err)
		}
	} else {
		v.check("GET /healthz", nil)
	}
	v.check("GET /readyz", v.probe(ctx, "/readyz"))

	tok := v.token
	if v.devUser != "" {
		var err error
		tok, err = v.devLogin(ctx, v.devUser)
		if !v.check("POST /auth/dev-login", err) {
			return nil
		}
	}
	token := func(context.Context) (string, error) { return tok, nil }

	// Tab 1: bearer header, every frame traced.
	var tr trace
	a, err := v.dial(ctx, client.Options{Token: token, OnFrame: tr.record})
	if !v.check("connect (connection_established)", err) {
		return nil
	}
	defer a.Close()
	user := a.Established().UserID
	v.check("connection_established fields", checkEstablished(a.Established(), v.devUser))

	// Tab 2: ticket auth, same user.
	b, err := v.dial(ctx, client.Options{Token: token, UseTicket: true})
	if v.check("ticket auth (POST /api/v1/tickets, ?ticket=)", err) {
		defer b.Close()
		if b.Established().UserID != user {
			v.check("ticket auth user", fmt.Errorf("user_id %q, want %q", b.Established().UserID, user))
			b = nil
		}
	}

	// Another user, for isolation.
	var other *client.Conn
	if v.devUser != "" {
		otherTok, err := v.devLogin(ctx, v.devUser+"-verify-other")
		if err == nil {
			other, err = v.dial(ctx, client.Options{Token: func(context.Context) (string, error) { return otherTok, nil }})
		}
		if v.check("connect as a second user", err) {
			defer other.Close()
		}
	}

	// The golden path.
	ack, err := a.SendMessage(ctx, v.message, client.SendOptions{})
	if !v.check("user_message acked (thread_id, run_id, message_id)", errOr(err, func() error {
		if ack.ThreadID == "" || ack.RunID == "" || ack.MessageID == "" || ack.Ref == "" {
			return fmt.Errorf("ack %+v lacks a field", ack)
		}
		return nil
	})) {
		return nil
	}
	all, err := collectRun(ctx, a, ack.RunID)
	if !v.check("run ends with a terminal event", err) {
		return nil
	}
	run := eventsOf(all, ack.RunID)
	v.check("ack before the user_message echo", ackFirst(tr.snapshot(), ack))
	v.check("seq strictly +1", contiguous(all))
	v.check("every event has epoch, ts, thread_id, run_id", eventFields(run, ack))
	v.check("run events in order (user_message, agent_started, agent_thinking, tools, deltas, terminal)", runOrder(run, ack))
	final := run[len(run)-1]
	v.check("agent_completed"+expectSuffix(v.expect), completed(final, v.expect))

	// REST.
	v.check("REST thread listed", errOr(nil, func() error {
		threads, err := a.Threads(ctx)
		if err != nil {
			return err
		}
		for _, t := range threads {
			if t.ID == ack.ThreadID {
				return nil
			}
		}
		return fmt.Errorf("thread %s not in GET /api/v1/threads (%d threads)", ack.ThreadID, len(threads))
	}))
	v.check("REST messages (user and assistant)", errOr(nil, func() error {
		msgs, err := a.Messages(ctx, ack.ThreadID)
		if err != nil {
			return err
		}
		var sawUser, sawAssistant bool
		for _, m := range msgs {
			switch {
			case m.Role == "user" && m.ID == ack.MessageID:
				if m.Content != v.message {
					return fmt.Errorf("user message content %q, want %q", m.Content, v.message)
				}
				sawUser = true
			case m.Role == "assistant" && m.RunID == ack.RunID:
				if !strings.Contains(m.Content, v.expect) {
					return fmt.Errorf("assistant message %q does not contain %q", loadgen.Clip(m.Content), v.expect)
				}
				sawAssistant = true
			}
		}
		if !sawUser || !sawAssistant {
			return fmt.Errorf("user message found: %v, assistant message of the run found: %v (%d messages)", sawUser, sawAssistant, len(msgs))
		}
		return nil
	}))
	v.check("REST run completed", errOr(nil, func() error {
		r, err := a.Run(ctx, ack.RunID)
		if err != nil {
			return err
		}
		if r.Status != "completed" || r.ThreadID != ack.ThreadID || r.EndedAt == nil {
			return fmt.Errorf("run status %q (error_code %q), thread %q, ended_at set %v", r.Status, r.ErrorCode, r.ThreadID, r.EndedAt != nil)
		}
		return nil
	}))

	if b != nil {
		v.check("second tab sees the same run", errOr(nil, func() error {
			seen, err := collectRun(ctx, b, ack.RunID)
			if err != nil {
				return err
			}
			return sameEvents(eventsOf(seen, ack.RunID), run)
		}))
	}
	if other != nil {
		v.check("second user sees nothing of the run", isolated(ctx, other, ack))
	}

	// Resume from a middle seq.
	mid := run[len(run)/2].Seq
	last := run[len(run)-1].Seq
	v.check(fmt.Sprintf("resume with since=%d gets exactly the rest", mid), v.resume(ctx, token, mid, last, all))

	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v.check("ping/pong", a.Ping(pctx))
	return nil
}

func expectSuffix(expect string) string {
	if expect == "" {
		return ""
	}
	return fmt.Sprintf(" contains %q", expect)
}

func errOr(err error, f func() error) error {
	if err != nil {
		return err
	}
	return f()
}

// probe GETs path and wants a 200.
func (v *verifier) probe(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.url+path, nil)
	if err != nil {
		return err
	}
	resp, err := v.hc.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &client.HTTPError{Status: resp.StatusCode, Message: loadgen.Clip(string(bytes.TrimSpace(body)))}
	}
	return nil
}

func (v *verifier) devLogin(ctx context.Context, user string) (string, error) {
	body, _ := json.Marshal(protocol.DevLoginRequest{UserID: user})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.url+"/auth/dev-login", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := v.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out protocol.DevLoginResponse
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d (is the server started with --dev?)", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Token == "" {
		return "", fmt.Errorf("answer has no token: %v", err)
	}
	return out.Token, nil
}

func (v *verifier) dial(ctx context.Context, opts client.Options) (*client.Conn, error) {
	opts.URL = v.url
	opts.HTTPClient = v.hc
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return client.Dial(dctx, opts)
}

func checkEstablished(e client.ConnectionEstablished, devUser string) error {
	var bad []string
	if e.ConnectionID == "" {
		bad = append(bad, "connection_id empty")
	}
	if e.UserID == "" || (devUser != "" && e.UserID != devUser) {
		bad = append(bad, fmt.Sprintf("user_id %q", e.UserID))
	}
	if e.Protocol != protocol.Version {
		bad = append(bad, fmt.Sprintf("protocol %q", e.Protocol))
	}
	if e.Epoch == "" {
		bad = append(bad, "epoch empty")
	}
	if e.HeartbeatIntervalMS <= 0 {
		bad = append(bad, "heartbeat_interval_ms not positive")
	}
	if e.MaxMessageBytes <= 0 {
		bad = append(bad, "max_message_bytes not positive")
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, ", "))
	}
	return nil
}

// collectRun reads c's events until the terminal event of run runID and
// returns every event read, from the first.
func collectRun(ctx context.Context, c *client.Conn, runID string) ([]client.Event, error) {
	var all []client.Event
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				return all, fmt.Errorf("connection stopped: %v", c.Err())
			}
			all = append(all, ev)
			if ev.RunID == runID && ev.Terminal() {
				return all, nil
			}
		case <-ctx.Done():
			return all, fmt.Errorf("no agent_completed or agent_error within --timeout (%d events of the run: %s)", len(eventsOf(all, runID)), typesOf(eventsOf(all, runID)))
		}
	}
}

func eventsOf(all []client.Event, runID string) []client.Event {
	var out []client.Event
	for _, ev := range all {
		if ev.RunID == runID {
			out = append(out, ev)
		}
	}
	return out
}

func typesOf(evs []client.Event) string {
	ts := make([]string, len(evs))
	for i, ev := range evs {
		ts[i] = ev.Type
	}
	return strings.Join(ts, " ")
}

// ackFirst: on the wire, the ack (ref = the frame's id) came before the
// run's user_message echo.
func ackFirst(frames []protocol.ServerFrame, ack client.Ack) error {
	ackAt, echoAt := -1, -1
	for i, f := range frames {
		if f.Type == protocol.TypeAck && f.Ref == ack.Ref && ackAt < 0 {
			ackAt = i
		}
		if f.Type == protocol.TypeUserMessage && f.RunID == ack.RunID && echoAt < 0 {
			echoAt = i
		}
	}
	switch {
	case ackAt < 0:
		return fmt.Errorf("no ack with ref %q on the wire", ack.Ref)
	case echoAt < 0:
		return errors.New("no user_message echo for the run")
	case echoAt < ackAt:
		return errors.New("the user_message echo came before the ack")
	}
	return nil
}

func contiguous(evs []client.Event) error {
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != evs[i-1].Seq+1 || evs[i].Epoch != evs[i-1].Epoch {
			return fmt.Errorf("seq %d (%s) follows %d (%s)", evs[i].Seq, evs[i].Type, evs[i-1].Seq, evs[i-1].Type)
		}
	}
	return nil
}

func eventFields(run []client.Event, ack client.Ack) error {
	for _, ev := range run {
		if ev.Epoch == "" || ev.TS.IsZero() || ev.ThreadID != ack.ThreadID || ev.RunID == "" {
			return fmt.Errorf("seq %d (%s): epoch %q, ts set %v, thread_id %q (want %q), run_id %q", ev.Seq, ev.Type, ev.Epoch, !ev.TS.IsZero(), ev.ThreadID, ack.ThreadID, ev.RunID)
		}
	}
	return nil
}

// runOrder checks the shape of a run whatever the agent: echo, exactly one
// agent_started, at least one agent_thinking, each tool_completed after its
// tool_executing, at least one delta on success, one terminal event last.
func runOrder(run []client.Event, ack client.Ack) error {
	if len(run) < 2 {
		return fmt.Errorf("only %s", typesOf(run))
	}
	if um, ok := run[0].UserMessage(); !ok || um.MessageID != ack.MessageID || um.ClientMessageID != ack.ClientMessageID {
		return fmt.Errorf("first event is %s, want the user_message echo with the ack's message_id and client_message_id", run[0].Type)
	}
	if run[1].Type != protocol.TypeAgentStarted {
		return fmt.Errorf("second event is %s, want agent_started", run[1].Type)
	}
	thinking, deltas := 0, 0
	open := map[string]bool{}
	for i, ev := range run[2:] {
		last := i == len(run)-3
		if ev.Terminal() != last {
			return fmt.Errorf("%s at position %d of %d", ev.Type, i+3, len(run))
		}
		switch ev.Type {
		case protocol.TypeUserMessage, protocol.TypeAgentStarted:
			return fmt.Errorf("a second %s", ev.Type)
		case protocol.TypeAgentThinking:
			thinking++
		case protocol.TypeAgentMessageDelta:
			deltas++
		case protocol.TypeToolExecuting:
			te, ok := ev.ToolExecuting()
			if !ok || te.ToolCallID == "" || te.Tool == "" {
				return fmt.Errorf("seq %d: malformed tool_executing %s", ev.Seq, ev.Data)
			}
			open[te.ToolCallID] = true
		case protocol.TypeToolCompleted:
			tc, ok := ev.ToolCompleted()
			if !ok || !open[tc.ToolCallID] {
				return fmt.Errorf("seq %d: tool_completed %s without its tool_executing", ev.Seq, ev.Data)
			}
			delete(open, tc.ToolCallID)
		}
	}
	if thinking == 0 {
		return fmt.Errorf("no agent_thinking (%s)", typesOf(run))
	}
	if len(open) > 0 {
		return fmt.Errorf("%d tool_executing without tool_completed", len(open))
	}
	if run[len(run)-1].Type == protocol.TypeAgentCompleted && deltas == 0 {
		return errors.New("no agent_message_delta before agent_completed")
	}
	return nil
}

func completed(final client.Event, expect string) error {
	if e, ok := final.AgentError(); ok {
		return fmt.Errorf("the run ended with agent_error %s: %s", e.Code, e.Message)
	}
	done, ok := final.AgentCompleted()
	if !ok {
		return fmt.Errorf("the run ended with %s %s", final.Type, final.Data)
	}
	if !strings.Contains(done.FinalResponse, expect) {
		return fmt.Errorf("final_response %q does not contain %q", loadgen.Clip(done.FinalResponse), expect)
	}
	return nil
}

func sameEvents(got, want []client.Event) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d events (%s), want %d (%s)", len(got), typesOf(got), len(want), typesOf(want))
	}
	for i := range got {
		if got[i].Seq != want[i].Seq || got[i].Type != want[i].Type || got[i].Epoch != want[i].Epoch || !bytes.Equal(got[i].Data, want[i].Data) {
			return fmt.Errorf("event %d: seq %d %s, want seq %d %s", i, got[i].Seq, got[i].Type, want[i].Seq, want[i].Type)
		}
	}
	return nil
}

// isolated: the other user received nothing of the run and gets 404 or
// not_found for it everywhere.
func isolated(ctx context.Context, other *client.Conn, ack client.Ack) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := other.Ping(pctx); err != nil { // anything sent before the pong has arrived
		return fmt.Errorf("ping: %w", err)
	}
	for {
		select {
		case ev := <-other.Events():
			if ev.RunID == ack.RunID || ev.ThreadID == ack.ThreadID {
				return fmt.Errorf("received %s seq %d of the run", ev.Type, ev.Seq)
			}
			continue
		default:
		}
		break
	}
	var he *client.HTTPError
	if _, err := other.Run(ctx, ack.RunID); !errors.As(err, &he) || he.Status != http.StatusNotFound {
		return fmt.Errorf("GET /api/v1/runs/{id}: %v, want 404", orOK(err))
	}
	if _, err := other.Messages(ctx, ack.ThreadID); !errors.As(err, &he) || he.Status != http.StatusNotFound {
		return fmt.Errorf("GET /api/v1/threads/{id}/messages: %v, want 404", orOK(err))
	}
	threads, err := other.Threads(ctx)
	if err != nil {
		return err
	}
	for _, t := range threads {
		if t.ID == ack.ThreadID {
			return errors.New("the thread is in the other user's GET /api/v1/threads")
		}
	}
	var fe *client.Error
	if _, err := other.Stop(pctx, ack.RunID); !errors.As(err, &fe) || fe.Code != protocol.CodeNotFound {
		return fmt.Errorf("stop_agent: %v, want error not_found", orOK(err))
	}
	return nil
}

func orOK(err error) any {
	if err == nil {
		return "200 OK"
	}
	return err
}

// resume connects again with since=mid and wants exactly the events after
// mid up to last, each once, on the wire.
func (v *verifier) resume(ctx context.Context, token func(context.Context) (string, error), mid, last uint64, all []client.Event) error {
	var tr trace
	epoch := all[len(all)-1].Epoch
	c, err := v.dial(ctx, client.Options{Token: token, Resume: &client.Position{Seq: mid, Epoch: epoch}, OnFrame: tr.record})
	if err != nil {
		return err
	}
	defer c.Close()
	var got []client.Event
	for len(got) == 0 || got[len(got)-1].Seq < last {
		select {
		case ev := <-c.Events():
			if ev.Type == protocol.TypeResyncRequired {
				return fmt.Errorf("resync_required (%s) instead of a replay", ev.Resync.Reason)
			}
			got = append(got, ev)
		case <-ctx.Done():
			return fmt.Errorf("replay stopped after %d events", len(got))
		}
	}
	var want []client.Event
	for _, ev := range all {
		if ev.Seq > mid {
			want = append(want, ev)
		}
	}
	if len(got) > len(want) {
		got = got[:len(want)] // later events are not the run's business
	}
	if err := sameEvents(got, want); err != nil {
		return err
	}
	var wire []uint64
	for _, f := range tr.snapshot() {
		if f.Seq > 0 && f.Seq <= last {
			wire = append(wire, f.Seq)
		}
	}
	for i, s := range wire {
		if s != mid+1+uint64(i) {
			return fmt.Errorf("seqs on the wire %v, want %d…%d once each", wire, mid+1, last)
		}
	}
	return nil
}
