package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/store/sqlite"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/protocol"
	dto "github.com/prometheus/client_model/go"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// agentFunc adapts a function to agent.Agent.
type agentFunc func(ctx context.Context, run agent.Run, em agent.Emitter) error

func (f agentFunc) Name() string { return "fake" }
func (f agentFunc) Run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	return f(ctx, run, em)
}

type fixture struct {
	m      *Manager
	stream stream.Stream
	store  store.Store
}

// openStore opens a fresh SQLite store, closed when the test ends.
func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "agentwire.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func newFixture(t *testing.T, a agent.Agent, cfg Config) *fixture {
	t.Helper()
	st := memory.New(memory.Options{})
	db := openStore(t)
	cfg.Stream, cfg.Store, cfg.Agent = st, db, a
	m := New(cfg)
	m.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		m.Shutdown(ctx)
		st.Close()
	})
	return &fixture{m: m, stream: st, store: db}
}

func (f *fixture) send(t *testing.T, user, content, cmid string) (protocol.AckFrame, *protocol.Error) {
	t.Helper()
	return f.m.UserMessage(context.Background(), user, &protocol.Frame{Type: protocol.TypeUserMessage, ID: "x", Content: content, ClientMessageID: cmid})
}

type ev struct {
	Type  string
	RunID string
	Data  map[string]any
}

// waitFor runs in a synctest bubble: it lets the bubble's clock run (a
// step at a time, each step once every goroutine of the bubble is blocked)
// until done holds, or fails once a minute of bubble time passed without
// it. The runs package's timers (run timeout, lease loops, retries) fire
// on that clock, so no step waits on the machine's speed.
func waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	const step, bound = 10 * time.Millisecond, time.Minute
	for waited := time.Duration(0); ; waited += step {
		synctest.Wait()
		if done() {
			return
		}
		if waited >= bound {
			t.Fatalf("%s: not within %v of bubble time", what, bound)
		}
		time.Sleep(step)
	}
}

// waitTerminal waits (waitFor) until run has a terminal event and returns
// the run's events.
func (f *fixture) waitTerminal(t *testing.T, user, runID string) []ev {
	t.Helper()
	var evs []ev
	waitFor(t, "run "+runID+" has a terminal event", func() bool {
		evs = f.events(t, user, runID)
		n := len(evs)
		return n > 0 && (evs[n-1].Type == protocol.TypeAgentCompleted || evs[n-1].Type == protocol.TypeAgentError)
	})
	return evs
}

func (f *fixture) events(t *testing.T, user, runID string) []ev {
	t.Helper()
	all, _, err := f.stream.Since(context.Background(), user, protocol.Cursor{}, stream.Limit{})
	if err != nil {
		t.Fatal(err)
	}
	var out []ev
	for _, e := range all {
		if e.RunID != runID {
			continue
		}
		var d map[string]any
		_ = json.Unmarshal(e.Data, &d)
		out = append(out, ev{Type: e.Type, RunID: e.RunID, Data: d})
	}
	return out
}

// checkOrder asserts the contract's per-run order.
func checkOrder(t *testing.T, evs []ev) {
	t.Helper()
	started, terminal := 0, 0
	open := map[string]bool{}
	for i, e := range evs {
		switch e.Type {
		case protocol.TypeAgentStarted:
			started++
			if i != 1 { // after the user_message echo
				t.Fatalf("agent_started at %d: %v", i, evs)
			}
		case protocol.TypeToolExecuting:
			open[e.Data["tool_call_id"].(string)] = true
		case protocol.TypeToolCompleted:
			id := e.Data["tool_call_id"].(string)
			if !open[id] {
				t.Fatalf("tool_completed %s without tool_executing", id)
			}
			delete(open, id)
		case protocol.TypeAgentCompleted, protocol.TypeAgentError:
			terminal++
			if i != len(evs)-1 {
				t.Fatalf("events after the terminal: %v", evs)
			}
		}
	}
	if started != 1 || terminal != 1 {
		t.Fatalf("started %d terminal %d: %v", started, terminal, evs)
	}
}

func TestCompletedRunIsStored(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			_ = em.Thinking("hmm")
			_ = em.ToolExecuting("c1", "calculator", map[string]string{"expression": "1+1"})
			_ = em.ToolCompleted(agent.ToolResult{CallID: "c1", Tool: "calculator", OK: true, Result: 2, Duration: time.Millisecond})
			_ = em.Delta("it is ")
			_ = em.Delta("2")
			return em.Complete("")
		}), Config{})
		ack, perr := f.send(t, "ann", "what is 1+1", "")
		if perr != nil {
			t.Fatal(perr)
		}
		evs := f.waitTerminal(t, "ann", ack.RunID)
		checkOrder(t, evs)
		last := evs[len(evs)-1]
		if last.Type != protocol.TypeAgentCompleted || last.Data["final_response"] != "it is 2" {
			t.Fatalf("terminal %v", last)
		}
		msgs, _, err := f.store.ListMessages(context.Background(), "ann", ack.ThreadID, store.MessageQuery{})
		if err != nil || len(msgs) != 2 || msgs[1].Role != "assistant" || msgs[1].Content != "it is 2" {
			t.Fatalf("messages %+v %v", msgs, err)
		}
		r, err := f.store.GetRun(context.Background(), "ann", ack.RunID)
		if err != nil || r.Status != store.RunCompleted || r.EndedAt.IsZero() {
			t.Fatalf("run %+v %v", r, err)
		}
		threads, _, _ := f.store.ListThreads(context.Background(), "ann", store.ThreadQuery{})
		if len(threads) != 1 || threads[0].Title != "what is 1+1" {
			t.Fatalf("threads %+v", threads)
		}
	})
}

func TestMisbehavingAgentsAreContained(t *testing.T) {
	t.Parallel()
	{
		lateErr := make(chan error, 1) // buffered: the agent's send never blocks, in or out of a bubble
		cases := []struct {
			name     string
			agent    agentFunc
			wantCode protocol.ErrorCode
			status   store.RunStatus
		}{
			{"returns without finishing", func(ctx context.Context, run agent.Run, em agent.Emitter) error { return nil }, protocol.CodeAgentFailed, store.RunFailed},
			{"returns an error", func(ctx context.Context, run agent.Run, em agent.Emitter) error { return errors.New("model said no") }, protocol.CodeAgentFailed, store.RunFailed},
			{"panics", func(ctx context.Context, run agent.Run, em agent.Emitter) error { panic("boom") }, protocol.CodeAgentFailed, store.RunFailed},
			{"fails with its own code", func(ctx context.Context, run agent.Run, em agent.Emitter) error {
				return em.Fail(protocol.CodeAgentFailed, "no luck")
			}, protocol.CodeAgentFailed, store.RunFailed},
			{"emits after its end", func(ctx context.Context, run agent.Run, em agent.Emitter) error {
				_ = em.Complete("done")
				err := em.Delta("late")
				if err2 := em.Complete("again"); err2 == nil {
					err = nil
				}
				lateErr <- err
				return nil
			}, "", store.RunCompleted},
			{"tool_completed without tool_executing", func(ctx context.Context, run agent.Run, em agent.Emitter) error {
				if err := em.ToolCompleted(agent.ToolResult{CallID: "nope", Tool: "calculator", OK: true, Result: 1}); !errors.Is(err, ErrUnknownToolCall) {
					return errors.New("unannounced tool_completed accepted")
				}
				return em.Complete("ok")
			}, "", store.RunCompleted},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				synctest.Test(t, func(t *testing.T) {
					f := newFixture(t, tc.agent, Config{})
					ack, perr := f.send(t, "bob", "hi", "")
					if perr != nil {
						t.Fatal(perr)
					}
					f.waitTerminal(t, "bob", ack.RunID)
					// Every agent goroutine has returned (the agent's own late emits
					// and the runs package's closing end() happen before): whatever a
					// late emit would append is in the stream now.
					f.m.wg.Wait()
					evs := f.events(t, "bob", ack.RunID)
					checkOrder(t, evs)
					if tc.wantCode != "" && evs[len(evs)-1].Data["code"] != string(tc.wantCode) {
						t.Fatalf("terminal %v", evs[len(evs)-1])
					}
					r, _ := f.store.GetRun(context.Background(), "bob", ack.RunID)
					if r.Status != tc.status {
						t.Fatalf("status %s, want %s", r.Status, tc.status)
					}
					if tc.name == "emits after its end" {
						if err := <-lateErr; !errors.Is(err, agent.ErrRunEnded) {
							t.Fatalf("late emit returned %v, want ErrRunEnded", err)
						}
					}
					if f.m.Running() != 0 {
						t.Fatalf("%d runs still active", f.m.Running())
					}
				})
			})
		}
	}
}

// blocker waits for its context, or forever when ignoreCtx.
func blocker(ignoreCtx bool, release <-chan struct{}) agentFunc {
	return func(ctx context.Context, run agent.Run, em agent.Emitter) error {
		_ = em.Thinking("working")
		if ignoreCtx {
			<-release
			_ = em.Delta("too late")
			return nil
		}
		<-ctx.Done()
		return ctx.Err()
	}
}

func TestStopCancelsEvenAnAgentThatIgnoresIt(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		for _, ignore := range []bool{false, true} {
			f := newFixture(t, blocker(ignore, release), Config{})
			ack, perr := f.send(t, "cid", "go", "")
			if perr != nil {
				t.Fatal(perr)
			}
			if _, perr := f.m.StopAgent(context.Background(), "eve", &protocol.Frame{RunID: ack.RunID}); perr == nil || perr.Code != protocol.CodeNotFound {
				t.Fatalf("another user stopped the run: %v", perr)
			}
			stopAck, perr := f.m.StopAgent(context.Background(), "cid", &protocol.Frame{RunID: ack.RunID, ID: "s"})
			if perr != nil || stopAck.RunID != ack.RunID {
				t.Fatalf("stop: %+v %v", stopAck, perr)
			}
			evs := f.waitTerminal(t, "cid", ack.RunID)
			checkOrder(t, evs)
			if evs[len(evs)-1].Data["code"] != string(protocol.CodeCancelled) {
				t.Fatalf("terminal %v", evs[len(evs)-1])
			}
			r, _ := f.store.GetRun(context.Background(), "cid", ack.RunID)
			if r.Status != store.RunCancelled {
				t.Fatalf("status %s", r.Status)
			}
			// The slot is free again even if the agent has not returned.
			if _, perr := f.send(t, "cid", "again", ""); perr != nil {
				t.Fatalf("after stop: %v", perr)
			}
		}
	})
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, blocker(false, nil), Config{Timeout: 100 * time.Millisecond})
		ack, _ := f.send(t, "tim", "go", "")
		evs := f.waitTerminal(t, "tim", ack.RunID)
		checkOrder(t, evs)
		if evs[len(evs)-1].Data["code"] != string(protocol.CodeTimeout) {
			t.Fatalf("terminal %v", evs[len(evs)-1])
		}
		r, _ := f.store.GetRun(context.Background(), "tim", ack.RunID)
		if r.Status != store.RunTimeout {
			t.Fatalf("status %s", r.Status)
		}
	})
}

func TestTooManyRunsAndIdempotentResend(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, blocker(false, nil), Config{MaxPerUser: 2})
		a1, _ := f.send(t, "dan", "one", "k1")
		again, perr := f.send(t, "dan", "one", "k1")
		if perr != nil || again.RunID != a1.RunID || again.ThreadID != a1.ThreadID || again.MessageID != a1.MessageID {
			t.Fatalf("resend: %+v %v, first %+v", again, perr, a1)
		}
		if _, perr := f.send(t, "dan", "two", "k2"); perr != nil {
			t.Fatal(perr)
		}
		if _, perr := f.send(t, "dan", "three", "k3"); perr == nil || perr.Code != protocol.CodeTooManyRuns {
			t.Fatalf("third run: %v", perr)
		}
		if _, perr := f.send(t, "other", "mine", ""); perr != nil {
			t.Fatalf("another user is limited by dan's runs: %v", perr)
		}
		if f.m.Running() != 3 {
			t.Fatalf("running %d", f.m.Running())
		}
		// k3 was released when refused: it can be used once a slot frees.
		_, _ = f.m.StopAgent(context.Background(), "dan", &protocol.Frame{RunID: a1.RunID})
		f.waitTerminal(t, "dan", a1.RunID)
		if _, perr := f.send(t, "dan", "three", "k3"); perr != nil {
			t.Fatalf("k3 after a slot freed: %v", perr)
		}
	})
}

func TestUnknownThreadIsNotFound(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, blocker(false, nil), Config{})
		a, _ := f.send(t, "own", "mine", "")
		_, perr := f.m.UserMessage(context.Background(), "thief", &protocol.Frame{Content: "x", ThreadID: a.ThreadID})
		if perr == nil || perr.Code != protocol.CodeNotFound {
			t.Fatalf("another user's thread: %v", perr)
		}
		_, perr = f.m.UserMessage(context.Background(), "own", &protocol.Frame{Content: "x", ThreadID: "missing"})
		if perr == nil || perr.Code != protocol.CodeNotFound {
			t.Fatalf("missing thread: %v", perr)
		}
	})
}

func TestUserMessageInThreadAdoptsTheClientsThreadID(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, blocker(false, nil), Config{MaxPerUser: 10})
		ctx := context.Background()
		in := func(user, thread string) (protocol.AckFrame, *protocol.Error) {
			return f.m.UserMessageInThread(ctx, user, &protocol.Frame{Content: "x", ThreadID: thread})
		}
		a, perr := in("own", "client-thread")
		if perr != nil || a.ThreadID != "client-thread" {
			t.Fatalf("new thread: %+v %v", a, perr)
		}
		if b, perr := in("own", "client-thread"); perr != nil || b.ThreadID != "client-thread" || b.RunID == a.RunID {
			t.Fatalf("same thread again: %+v %v", b, perr)
		}
		msgs, _, err := f.store.ListMessages(ctx, "own", "client-thread", store.MessageQuery{})
		if err != nil || len(msgs) != 2 {
			t.Fatalf("thread messages %d, %v", len(msgs), err)
		}
		// Another user's thread, by its id: not_found, nothing created.
		if _, perr := in("thief", "client-thread"); perr == nil || perr.Code != protocol.CodeNotFound {
			t.Fatalf("another user's thread: %v", perr)
		}
		if _, _, err := f.store.ListMessages(ctx, "thief", "client-thread", store.MessageQuery{}); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("thief's view of the thread: %v", err)
		}
		// No thread id: a new thread, as UserMessage.
		if c, perr := in("own", ""); perr != nil || c.ThreadID == "" || c.ThreadID == "client-thread" {
			t.Fatalf("no thread id: %+v %v", c, perr)
		}
	})
}

func TestPublishToRunningRun(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, blocker(false, nil), Config{})
		a, _ := f.send(t, "pub", "go", "")
		if _, err := f.m.Publish("someone", a.RunID, protocol.TypeAgentThinking, json.RawMessage(`{"text":"x"}`)); !errors.Is(err, ErrNotRunning) {
			t.Fatalf("another user's run: %v", err)
		}
		if _, err := f.m.Publish("pub", a.RunID, protocol.TypeAgentStarted, nil); !errors.Is(err, ErrBadEvent) {
			t.Fatalf("agent_started: %v", err)
		}
		if _, err := f.m.Publish("pub", a.RunID, protocol.TypeAgentThinking, json.RawMessage(`{"text":"external"}`)); err != nil {
			t.Fatal(err)
		}
		ev, err := f.m.Publish("pub", a.RunID, protocol.TypeAgentCompleted, json.RawMessage(`{"final_response":"from outside"}`))
		if err != nil || ev.Type != protocol.TypeAgentCompleted {
			t.Fatalf("complete: %+v %v", ev, err)
		}
		if _, err := f.m.Publish("pub", a.RunID, protocol.TypeAgentMessageDelta, json.RawMessage(`{"delta":"late"}`)); !errors.Is(err, ErrNotRunning) {
			t.Fatalf("after the end: %v", err)
		}
		evs := f.waitTerminal(t, "pub", a.RunID)
		checkOrder(t, evs)
	})
}

func TestManyUsersConcurrently(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			_ = em.Delta(run.UserID)
			return em.Complete("")
		}), Config{})
		var wg sync.WaitGroup
		acks := make([]protocol.AckFrame, 50)
		for i := range acks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a, perr := f.send(t, "u"+strings.Repeat("x", i), "hi", "")
				if perr != nil {
					t.Error(perr)
				}
				acks[i] = a
			}()
		}
		wg.Wait()
		for i, a := range acks {
			user := "u" + strings.Repeat("x", i)
			evs := f.waitTerminal(t, user, a.RunID)
			if evs[len(evs)-1].Data["final_response"] != user {
				t.Fatalf("user %s got %v", user, evs[len(evs)-1])
			}
		}
	})
}

// flakyStore fails FinishRun while failing is set, as a store that went away
// right when a run ended.
type flakyStore struct {
	store.Store
	failing atomic.Bool
}

func (f *flakyStore) FinishRun(ctx context.Context, o store.Outcome) error {
	if f.failing.Load() {
		return store.ErrUnavailable
	}
	return f.Store.FinishRun(ctx, o)
}

// TestOutcomeRetriedAndNeverReapedTwice runs in a synctest bubble: the
// lease loops' tickers run on the bubble's clock, so "three lease TTLs
// with the outcome unstored" and "more reap rounds" are exact counts of
// rounds, not pauses a loaded machine can outrun.
func TestOutcomeRetriedAndNeverReapedTwice(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		st := memory.New(memory.Options{})
		defer st.Close()
		db := openStore(t)
		flaky := &flakyStore{Store: db}
		flaky.failing.Store(true)
		fast := Config{Stream: st, Store: flaky, LeaseTTL: 200 * time.Millisecond, RenewEvery: 40 * time.Millisecond, ReapEvery: 40 * time.Millisecond}
		cfgA := fast
		cfgA.Agent = agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error { return em.Complete("done") })
		a := New(cfgA)
		a.Start()
		cfgB := fast // another node on the same store, reaping
		cfgB.Agent = cfgA.Agent
		b := New(cfgB)
		b.Start()
		defer func() {
			for _, m := range []*Manager{a, b} {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				m.Shutdown(ctx)
				cancel()
			}
		}()
		ack, perr := a.UserMessage(context.Background(), "fay", &protocol.Frame{Content: "hi"})
		if perr != nil {
			t.Fatal(perr)
		}
		f := &fixture{m: a, stream: st, store: db}
		f.waitTerminal(t, "fay", ack.RunID)
		time.Sleep(600 * time.Millisecond) // bubble time: three lease TTLs, 15 renew and reap rounds, the outcome unstored
		synctest.Wait()
		if r, _ := db.GetRun(context.Background(), "fay", ack.RunID); r.Status != store.RunRunning {
			t.Fatalf("status %s while the store refused the outcome: the lease lapsed", r.Status)
		}
		flaky.failing.Store(false)
		time.Sleep(40 * time.Millisecond) // one renew round retries the outcome
		synctest.Wait()
		if r, _ := db.GetRun(context.Background(), "fay", ack.RunID); r.Status != store.RunCompleted {
			t.Fatalf("status %s one renew round after the store came back", r.Status)
		}
		time.Sleep(200 * time.Millisecond) // five more reap rounds on each node
		synctest.Wait()
		evs := f.events(t, "fay", ack.RunID)
		checkOrder(t, evs)
		if msgs, _, _ := db.ListMessages(context.Background(), "fay", ack.ThreadID, store.MessageQuery{}); len(msgs) != 2 {
			t.Fatalf("%d messages: the answer was not stored on retry", len(msgs))
		}
	})
}

// TestRunOfANodeKilledBeforeItsStartReadsWhole: node a stores a run and
// dies before appending its echo and agent_started (fault injection, not
// timing). Node b's reaper ends it: the stream reads echo, agent_started,
// agent_error node_lost, in that order, each once, though b's reaper and a
// retry may both try.
func TestRunOfANodeKilledBeforeItsStartReadsWhole(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		st := memory.New(memory.Options{})
		defer st.Close()
		db := openStore(t)
		never := agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			t.Error("the agent of a run whose node died ran")
			return nil
		})
		fast := Config{Stream: st, Store: db, Agent: never, LeaseTTL: 200 * time.Millisecond, RenewEvery: 40 * time.Millisecond, ReapEvery: 40 * time.Millisecond}
		mb := metrics.New() // both nodes': either may reap the run
		fast.Metrics = mb
		cfgA := fast
		cfgA.crashAfterStore = func() bool { return true }
		a := New(cfgA)
		a.Start()
		defer a.Shutdown(context.Background())
		_, perr := a.UserMessage(context.Background(), "gus", &protocol.Frame{Content: "hello there"})
		if perr == nil {
			t.Fatal("the crashed node answered an ack")
		}
		runs, err := db.ListRunning(context.Background(), "gus")
		if err != nil || len(runs) != 1 {
			t.Fatalf("ListRunning: %v %v, want the one stored run", runs, err)
		}
		b := New(fast) // the survivor, reaping
		b.Start()
		defer b.Shutdown(context.Background())
		f := &fixture{m: b, stream: st, store: db}
		evs := f.waitTerminal(t, "gus", runs[0].ID)
		checkOrder(t, evs)
		if evs[0].Type != protocol.TypeUserMessage || evs[0].Data["content"] != "hello there" {
			t.Fatalf("first event %v, want the user_message echo", evs[0])
		}
		if last := evs[len(evs)-1]; last.Type != protocol.TypeAgentError || last.Data["code"] != string(protocol.CodeNodeLost) {
			t.Fatalf("last event %v, want agent_error node_lost", last)
		}
		// Its reaper counts it, once; it ended nothing else.
		for _, o := range metrics.Outcomes {
			var m dto.Metric
			_ = mb.RunsTotal.WithLabelValues("fake", o).Write(&m)
			if got, want := m.GetCounter().GetValue(), map[bool]float64{true: 1}[o == metrics.OutcomeNodeLost]; got != want {
				t.Errorf("runs_total{outcome=%q} = %v, want %v", o, got, want)
			}
		}
	})
}

// failingStream fails every Append while failing is set, as a stream
// backend that went away.
type failingStream struct {
	stream.Stream
	failing atomic.Bool
	// failAfter lets this many appends through before failing applies.
	failAfter atomic.Int64
}

func (s *failingStream) Append(ctx context.Context, user string, rec stream.Record) (stream.Event, error) {
	if s.failAfter.Load() > 0 {
		s.failAfter.Add(-1)
		return s.Stream.Append(ctx, user, rec)
	}
	if s.failing.Load() {
		return stream.Event{}, errors.New("dial tcp 127.0.0.1:6390: connect: connection refused")
	}
	return s.Stream.Append(ctx, user, rec)
}

// TestTerminalEventRetriedUntilTheStreamTakesIt: the stream fails while a
// run ends; the terminal event arrives, once, when it is back, and no
// user-visible message carries the driver's error. The store has the run
// ended from the start, its end unannounced until the stream takes it, then
// confirmed. A message refused while the stream is down leaves no row
// behind.
func TestTerminalEventRetriedUntilTheStreamTakesIt(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New(memory.Options{})
		defer mem.Close()
		fs := &failingStream{Stream: mem}
		db := openStore(t)
		release, returned := make(chan struct{}), make(chan struct{})
		ag := agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			defer close(returned)
			<-release
			if err := em.Thinking("still here"); err != nil {
				return err
			}
			return em.Complete("done")
		})
		m := New(Config{Stream: fs, Store: db, Agent: ag, LeaseTTL: 3 * time.Second, RenewEvery: time.Second, ReapEvery: time.Second})
		m.Start()
		defer m.Shutdown(context.Background())
		ack, perr := m.UserMessage(context.Background(), "hal", &protocol.Frame{Content: "hi"})
		if perr != nil {
			t.Fatal(perr)
		}
		fs.failing.Store(true)
		close(release)
		<-returned
		// Several lease lifetimes later (the node's own reaper claims the
		// unannounced end meanwhile: one more resend under the same key).
		time.Sleep(10 * time.Second)
		if r, _ := db.GetRun(context.Background(), "hal", ack.RunID); r.Status != store.RunFailed || r.EndAnnounced {
			t.Fatalf("stored run %+v while its terminal event is not in the stream, want failed, end unannounced", r)
		}
		// Refused while the stream is down: nothing stored.
		if _, perr := m.UserMessage(context.Background(), "hal", &protocol.Frame{Content: "refused"}); perr == nil {
			t.Fatal("a message was accepted while the stream was down")
		}
		if threads, _, _ := db.ListThreads(context.Background(), "hal", store.ThreadQuery{}); len(threads) != 1 {
			t.Fatalf("%d threads after a refused message, want 1", len(threads))
		}
		if running, _ := db.ListRunning(context.Background(), "hal"); len(running) != 0 {
			t.Fatalf("running runs after a refused message: %v", running)
		}
		fs.failing.Store(false)
		f := &fixture{m: m, stream: mem, store: db}
		evs := f.waitTerminal(t, "hal", ack.RunID)
		checkOrder(t, evs)
		last := evs[len(evs)-1]
		if strings.Contains(last.Data["message"].(string), "127.0.0.1") {
			t.Fatalf("terminal event carries the driver's error: %v", last)
		}
		var r store.Run
		waitFor(t, "the end confirmed once the stream has the terminal event", func() bool {
			r, _ = db.GetRun(context.Background(), "hal", ack.RunID)
			return r.EndAnnounced
		})
		if r.Status != store.RunFailed || r.ErrorCode != last.Data["code"] {
			t.Fatalf("stored run %+v, terminal event %v", r, last)
		}
		if strings.Contains(r.ErrorMessage, "127.0.0.1") || strings.Contains(r.ErrorMessage, "dial") {
			t.Fatalf("the run's error message carries the driver's error: %q", r.ErrorMessage)
		}
	})
}

// gatedStream holds every Append of a user_message until the test answers
// it with an error (or nil: let it through).
type gatedStream struct {
	stream.Stream
	echo chan chan error
}

func (s *gatedStream) Append(ctx context.Context, user string, rec stream.Record) (stream.Event, error) {
	if rec.Type == protocol.TypeUserMessage {
		answer := make(chan error)
		s.echo <- answer
		if err := <-answer; err != nil {
			return stream.Event{}, err
		}
	}
	return s.Stream.Append(ctx, user, rec)
}

// TestRepeatWhileFirstAttemptPending: a user_message repeated (same
// client_message_id, say from another tab or node after a drop) while the
// first attempt is still placing its run waits for it instead of being
// acked at once: the first attempt may yet be refused, and an early ack
// would name a run that never exists. Refused, the first releases the key
// and the repeat starts the run itself; started, the repeat gets its ack.
func TestRepeatWhileFirstAttemptPending(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New(memory.Options{})
		defer mem.Close()
		gs := &gatedStream{Stream: mem, echo: make(chan chan error)}
		db := openStore(t)
		m := New(Config{Stream: gs, Store: db, Agent: agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error { return em.Complete("ok") })})
		m.Start()
		defer m.Shutdown(context.Background())
		type result struct {
			ack  protocol.AckFrame
			perr *protocol.Error
		}
		send := func(cmid string) chan result {
			out := make(chan result, 1)
			go func() {
				a, e := m.UserMessage(context.Background(), "ivy", &protocol.Frame{Content: "hi", ClientMessageID: cmid})
				out <- result{a, e}
			}()
			return out
		}

		nextEcho := func() chan error {
			t.Helper()
			select {
			case a := <-gs.echo:
				return a
			case <-time.After(time.Minute): // bubble time: the echo comes within the repeat's pauses or never
				t.Fatal("no user_message echo was appended")
				return nil
			}
		}

		// The first attempt is refused while a repeat waits: the repeat places
		// the run itself (its own echo is the next to arrive) and is acked.
		first := send("cm-1")
		answer := nextEcho() // the first attempt's echo is in flight
		repeat := send("cm-1")
		synctest.Wait() // the repeat has done all it can before the first attempt ends
		select {
		case r := <-repeat:
			t.Fatalf("a repeat answered while the first attempt was pending: %+v %v", r.ack, r.perr)
		default:
		}
		answer <- errors.New("stream down")
		if r := <-first; r.perr == nil {
			t.Fatalf("the first attempt was acked (%+v) though its echo was refused", r.ack)
		}
		nextEcho() <- nil // the repeat's own echo
		r := <-repeat
		if r.perr != nil {
			t.Fatalf("repeat after the refusal: %v", r.perr)
		}
		if _, err := db.GetRun(context.Background(), "ivy", r.ack.RunID); err != nil {
			t.Fatalf("the acked run is not stored: %v", err)
		}
		again, e := m.UserMessage(context.Background(), "ivy", &protocol.Frame{Content: "hi", ClientMessageID: "cm-1"})
		if e != nil || again.RunID != r.ack.RunID {
			t.Fatalf("repeat after the start: %+v %v, want the ack of run %s", again, e, r.ack.RunID)
		}

		// The first attempt starts while a repeat waits: the repeat gets its ack.
		first = send("cm-2")
		answer = nextEcho()
		repeat = send("cm-2")
		synctest.Wait() // the repeat is waiting for the first attempt
		answer <- nil
		r1, r2 := <-first, <-repeat
		if r1.perr != nil || r2.perr != nil || r2.ack.RunID != r1.ack.RunID {
			t.Fatalf("first %+v %v, repeat %+v %v: want the same ack", r1.ack, r1.perr, r2.ack, r2.perr)
		}
		f := &fixture{m: m, stream: mem, store: db}
		checkOrder(t, f.waitTerminal(t, "ivy", r.ack.RunID))
		checkOrder(t, f.waitTerminal(t, "ivy", r1.ack.RunID))
	})
}

// unsureStream takes a run's echo but answers failure for it (as Redis
// paused past the client's timeout runs the command when it resumes), or
// takes the echo and fails agent_started, while failing is set.
type unsureStream struct {
	stream.Stream
	failing atomic.Bool
	echoErr bool // fail the echo (taken) instead of agent_started
}

func (s *unsureStream) Append(ctx context.Context, user string, rec stream.Record) (stream.Event, error) {
	if !s.failing.Load() {
		return s.Stream.Append(ctx, user, rec)
	}
	switch {
	case rec.Type == protocol.TypeUserMessage && s.echoErr:
		if _, err := s.Stream.Append(ctx, user, rec); err != nil {
			return stream.Event{}, err
		}
		return stream.Event{}, fmt.Errorf("%w: %w: redis append: EOF", stream.ErrMaybeAppended, stream.ErrUnavailable)
	case rec.Type == protocol.TypeUserMessage:
		return s.Stream.Append(ctx, user, rec)
	}
	return stream.Event{}, fmt.Errorf("%w: redis append: connection refused", stream.ErrUnavailable)
}

// TestEchoInTheStreamMeansTheRunReadsWhole: once a message's echo is (or
// may be) in the stream, its run cannot be refused away: the message is
// acked, a repeat gets the same ack, and the run ends with agent_error
// after agent_started once the stream is back, stored as failed.
func TestEchoInTheStreamMeansTheRunReadsWhole(t *testing.T) {
	t.Parallel()
	for _, echoErr := range []bool{true, false} {
		t.Run(fmt.Sprintf("echo_unconfirmed=%v", echoErr), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) { echoInTheStream(t, echoErr) })
		})
	}
}

func echoInTheStream(t *testing.T, echoErr bool) {
	mem := memory.New(memory.Options{})
	defer mem.Close()
	us := &unsureStream{Stream: mem, echoErr: echoErr}
	db := openStore(t)
	ran := make(chan struct{}, 1)
	m := New(Config{Stream: us, Store: db, Agent: agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
		ran <- struct{}{}
		return em.Complete("no")
	})})
	m.Start()
	defer m.Shutdown(context.Background())
	us.failing.Store(true)
	frame := &protocol.Frame{ID: "m1", Content: "hi", ClientMessageID: "c1"}
	ack, perr := m.UserMessage(context.Background(), "hal", frame)
	if perr != nil {
		t.Fatalf("message whose echo is in the stream refused: %v", perr)
	}
	again, perr := m.UserMessage(context.Background(), "hal", frame)
	if perr != nil || again.RunID != ack.RunID {
		t.Fatalf("repeat: %+v %v, want the first ack %+v", again, perr, ack)
	}
	us.failing.Store(false)
	f := &fixture{m: m, stream: mem, store: db}
	evs := f.waitTerminal(t, "hal", ack.RunID)
	checkOrder(t, evs)
	if last := evs[len(evs)-1]; last.Type != protocol.TypeAgentError || last.Data["code"] != string(protocol.CodeAgentFailed) {
		t.Fatalf("last event %v, want agent_error agent_failed", last)
	}
	waitFor(t, "the run stored as failed once the stream has its end", func() bool {
		r, err := db.GetRun(context.Background(), "hal", ack.RunID)
		return err == nil && r.Status == store.RunFailed
	})
	select {
	case <-ran:
		t.Fatal("the agent ran for a run that could not start")
	default:
	}
	if running := m.Running(); running != 0 {
		t.Fatalf("%d runs still counted as running", running)
	}
}

// TestNodeGoneBeforeTheStreamTookTheEnd: a node whose run's terminal event
// the stream refused goes away (here: shuts down while the stream is still
// down) before the stream takes it. The store has the run completed, its
// end unannounced, so once the lease lapses another node claims the end and
// appends it from the store: the run reads whole (agent_started first, one
// agent_completed last with the stored answer) and agrees with REST.
func TestNodeGoneBeforeTheStreamTookTheEnd(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New(memory.Options{})
		defer mem.Close()
		fs := &failingStream{Stream: mem}
		db := openStore(t)
		returned := make(chan struct{})
		ag := agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			defer close(returned)
			_ = em.AddUsage(protocol.Usage{InputTokens: 7, OutputTokens: 2})
			return em.Complete("done")
		})
		lease := Config{Store: db, Agent: ag, LeaseTTL: 3 * time.Second, RenewEvery: time.Second, ReapEvery: time.Second}
		a := lease
		a.Stream, a.Node = fs, "a"
		m := New(a)
		m.Start()
		fs.failing.Store(true)
		fs.failAfter.Store(2) // the echo and agent_started go through
		ack, perr := m.UserMessage(context.Background(), "hal", &protocol.Frame{Content: "hi"})
		if perr != nil {
			t.Fatal(perr)
		}
		<-returned
		m.Shutdown(context.Background())
		if r, _ := db.GetRun(context.Background(), "hal", ack.RunID); r.Status != store.RunCompleted || r.EndAnnounced {
			t.Fatalf("stored run %+v whose terminal event the stream never took, want completed, end unannounced", r)
		}
		fs.failing.Store(false)
		b := lease
		b.Stream, b.Node = mem, "b"
		other := New(b)
		other.Start()
		defer other.Shutdown(context.Background())
		f := &fixture{m: other, stream: mem, store: db}
		evs := f.waitTerminal(t, "hal", ack.RunID)
		checkOrder(t, evs)
		last := evs[len(evs)-1]
		if last.Type != protocol.TypeAgentCompleted || last.Data["final_response"] != "done" || last.Data["message_id"] == "" ||
			fmt.Sprint(last.Data["usage"]) != "map[input_tokens:7 output_tokens:2]" {
			t.Fatalf("last event %v, want agent_completed with the stored answer and usage", last)
		}
		waitFor(t, "the claimed end confirmed", func() bool {
			r, _ := db.GetRun(context.Background(), "hal", ack.RunID)
			return r.EndAnnounced && r.Status == store.RunCompleted
		})
	})
}

// TestRelayedEvents: Event appends a relayed type in the run's order with
// its data as given, refuses every other type and data that is not an
// object, and emits nothing after the end. The agent sees the stored
// message ids in its history.
func TestRelayedEvents(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var refused []error
		var history []agent.Message
		var late error
		ended := make(chan agent.Emitter, 1)
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			history = run.Messages
			_ = em.Event(protocol.TypeStateSnapshot, protocol.StateSnapshot{Snapshot: json.RawMessage(`[1,"<b>"]`)})
			refused = append(refused,
				em.Event(protocol.TypeAgentCompleted, map[string]string{"final_response": "sneaky"}),
				em.Event("my.type", map[string]int{}),
				em.Event(protocol.TypeCustom, []int{1}))
			_ = em.Event(protocol.TypeCustom, protocol.Custom{Name: "n", Value: json.RawMessage(`{"v":1}`)})
			_ = em.Delta("ok")
			err := em.Complete("")
			ended <- em
			return err
		}), Config{})
		ack, perr := f.send(t, "ann", "hello", "")
		if perr != nil {
			t.Fatal(perr)
		}
		evs := f.waitTerminal(t, "ann", ack.RunID)
		late = (<-ended).Event(protocol.TypeCustom, protocol.Custom{Name: "late", Value: json.RawMessage(`1`)})
		checkOrder(t, evs)
		var types []string
		for _, e := range evs {
			types = append(types, e.Type)
		}
		want := []string{protocol.TypeUserMessage, protocol.TypeAgentStarted, protocol.TypeStateSnapshot, protocol.TypeCustom,
			protocol.TypeAgentMessageDelta, protocol.TypeAgentCompleted}
		if strings.Join(types, " ") != strings.Join(want, " ") {
			t.Fatalf("types %v, want %v", types, want)
		}
		if s := fmt.Sprint(evs[2].Data); s != "map[snapshot:[1 <b>]]" {
			t.Errorf("state_snapshot data %s", s)
		}
		for i, err := range refused {
			if err == nil {
				t.Errorf("refused[%d] accepted", i)
			}
		}
		if !errors.Is(late, agent.ErrRunEnded) {
			t.Errorf("Event after the end: %v", late)
		}
		if len(history) != 1 || history[0].ID == "" || history[0].ID != evs[0].Data["message_id"] {
			t.Errorf("history %+v, echo %v", history, evs[0].Data)
		}
	})
}

// storeFirstStream records, as each terminal event is appended, what the
// store says of its run then.
type storeFirstStream struct {
	stream.Stream
	db     store.Store
	mu     sync.Mutex
	status map[string]store.RunStatus
}

func (s *storeFirstStream) Append(ctx context.Context, user string, rec stream.Record) (stream.Event, error) {
	if rec.Type == protocol.TypeAgentCompleted || rec.Type == protocol.TypeAgentError {
		r, _ := s.db.GetRun(ctx, user, rec.RunID)
		s.mu.Lock()
		s.status[rec.RunID] = r.Status
		s.mu.Unlock()
	}
	return s.Stream.Append(ctx, user, rec)
}

// TestOutcomeStoredBeforeTheEndIsAppended: when a client sees a run's
// terminal event, REST already says how the run ended and the thread has
// its answer (agentwire verify checks this right after agent_completed).
func TestOutcomeStoredBeforeTheEndIsAppended(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		mem := memory.New(memory.Options{})
		defer mem.Close()
		db := openStore(t)
		ss := &storeFirstStream{Stream: mem, db: db, status: map[string]store.RunStatus{}}
		m := New(Config{Stream: ss, Store: db, Agent: agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			if strings.Contains(run.Messages[len(run.Messages)-1].Content, "fail") {
				return em.Fail(protocol.CodeAgentFailed, "no")
			}
			return em.Complete("yes")
		})})
		m.Start()
		defer m.Shutdown(context.Background())
		f := &fixture{m: m, stream: mem, store: db}
		for content, want := range map[string]store.RunStatus{"please": store.RunCompleted, "fail": store.RunFailed} {
			ack, perr := m.UserMessage(context.Background(), "hal", &protocol.Frame{Content: content})
			if perr != nil {
				t.Fatal(perr)
			}
			f.waitTerminal(t, "hal", ack.RunID)
			ss.mu.Lock()
			got := ss.status[ack.RunID]
			ss.mu.Unlock()
			if got != want {
				t.Fatalf("%q: the store said %q as the terminal event was appended, want %q", content, got, want)
			}
		}
	})
}

// TestToolProgressAndUsage: tool_progress is taken only inside its call,
// and agent_completed carries the usage the agent added up.
func TestToolProgressAndUsage(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var outside, after, negative error
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			outside = em.ToolProgress(agent.Progress{CallID: "c1", Progress: 1})
			_ = em.ToolExecuting("c1", "srv.count", map[string]any{})
			_ = em.ToolProgress(agent.Progress{CallID: "c1", Progress: 1, Total: 3, Message: "step 1"})
			_ = em.ToolProgress(agent.Progress{CallID: "c1", Progress: 2})
			_ = em.ToolCompleted(agent.ToolResult{CallID: "c1", Tool: "srv.count", OK: true, Result: "counted"})
			after = em.ToolProgress(agent.Progress{CallID: "c1", Progress: 3})
			_ = em.AddUsage(protocol.Usage{InputTokens: 10, OutputTokens: 4})
			_ = em.AddUsage(protocol.Usage{InputTokens: 20, OutputTokens: 6})
			negative = em.AddUsage(protocol.Usage{InputTokens: -1})
			return em.Complete("counted")
		}), Config{})
		ack, perr := f.send(t, "ann", "count", "")
		if perr != nil {
			t.Fatal(perr)
		}
		evs := f.waitTerminal(t, "ann", ack.RunID)
		checkOrder(t, evs)
		if !errors.Is(outside, ErrUnknownToolCall) || !errors.Is(after, ErrUnknownToolCall) || negative == nil {
			t.Errorf("refusals: outside %v, after %v, negative %v", outside, after, negative)
		}
		var prog []string
		for _, e := range evs {
			if e.Type == protocol.TypeToolProgress {
				prog = append(prog, fmt.Sprint(e.Data))
			}
		}
		if want := "[map[message:step 1 progress:1 tool_call_id:c1 total:3] map[progress:2 tool_call_id:c1]]"; fmt.Sprint(prog) != want {
			t.Errorf("tool_progress %v, want %v", prog, want)
		}
		if u := fmt.Sprint(evs[len(evs)-1].Data["usage"]); u != "map[input_tokens:30 output_tokens:10]" {
			t.Errorf("usage %s", u)
		}
		// The transcript leaves the progress out; its end carries the usage.
		tr := f.transcriptOf(t, "ann", ack.RunID)
		if got, want := types(tr), "agent_started tool_executing tool_completed agent_completed"; got != want {
			t.Errorf("transcript %q, want %q", got, want)
		}
		if last := tr[len(tr)-1]; !strings.Contains(string(last.Data), `"usage":{"input_tokens":30,"output_tokens":10}`) {
			t.Errorf("stored terminal %s", last.Data)
		}
	})
}

// TestTokenQuota: a run's usage is stored with it and counted in the
// metric; once the user's runs of the day used the quota, the next message
// is answered quota_exceeded and starts nothing, while another user is not
// affected.
func TestTokenQuota(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		mt := metrics.New()
		f := newFixture(t, agentFunc(func(ctx context.Context, run agent.Run, em agent.Emitter) error {
			_ = em.AddUsage(protocol.Usage{InputTokens: 50, OutputTokens: 10})
			return em.Complete("ok")
		}), Config{TokenQuota: 100, Metrics: mt})
		for range 2 { // 60, then 120 tokens: the second run starts under the quota
			ack, perr := f.send(t, "ann", "hi", "")
			if perr != nil {
				t.Fatal(perr)
			}
			f.waitTerminal(t, "ann", ack.RunID)
			r, err := f.store.GetRun(context.Background(), "ann", ack.RunID)
			if err != nil || r.InputTokens != 50 || r.OutputTokens != 10 {
				t.Fatalf("stored run %+v, %v", r, err)
			}
		}
		before, _, _ := f.stream.Since(context.Background(), "ann", protocol.Cursor{}, stream.Limit{})
		_, perr := f.send(t, "ann", "more", "")
		if perr == nil || perr.Code != protocol.CodeQuotaExceeded || !strings.Contains(perr.Message, "120") {
			t.Fatalf("over the quota: %+v", perr)
		}
		after, _, _ := f.stream.Since(context.Background(), "ann", protocol.Cursor{}, stream.Limit{})
		if len(after) != len(before) {
			t.Errorf("a refused message appended %d events", len(after)-len(before))
		}
		bob, perr := f.send(t, "bob", "hi", "")
		if perr != nil {
			t.Fatalf("another user: %+v", perr)
		}
		f.waitTerminal(t, "bob", bob.RunID)
		value := func(direction string) float64 {
			var m dto.Metric
			_ = mt.Tokens.WithLabelValues("fake", direction).Write(&m)
			return m.GetCounter().GetValue()
		}
		if in, out := value("input"), value("output"); in != 150 || out != 30 { // three runs
			t.Errorf("metric input %v output %v", in, out)
		}
	})
}
