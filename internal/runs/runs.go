// Package runs owns the lifecycle of agent runs: a user_message becomes a
// stored message, its echo on the user's stream, a run, an ack, and an agent
// working in its own context. Whatever the agent does — finish, fail, return
// early, panic, hang, or emit after its end — each run has exactly one
// agent_started first and exactly one terminal event last, and nothing after.
// A run does not depend on the connection that started it.
package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/tracing"
	"github.com/agentwire/agentwire/protocol"
)

// Defaults of the contract.
const (
	DefaultMaxPerUser = 3
	DefaultTimeout    = 5 * time.Minute
	// IdempotencyWindow is how long a client_message_id is remembered.
	IdempotencyWindow = 10 * time.Minute
	// historyLimit bounds the earlier messages given to an agent.
	historyLimit = 50
)

var errRunEnded = errors.New("run ended")

// Errors callers branch on.
var (
	ErrNotFound    = errors.New("runs: no such run")
	ErrNotRunning  = errors.New("runs: run is not running")
	ErrTooManyRuns = errors.New("runs: too many concurrent runs")
)

// Config configures a Manager.
type Config struct {
	Stream     stream.Stream
	Store      store.Store
	Agent      agent.Agent
	Logger     *slog.Logger
	MaxPerUser int           // concurrent runs per user; 0 → DefaultMaxPerUser
	Timeout    time.Duration // per run; 0 → DefaultTimeout
	Now        func() time.Time
	// Node identifies this process in run leases; "" → a random id.
	Node string
	// LeaseTTL, RenewEvery and ReapEvery tune node-loss detection; zero
	// values take the defaults in lease.go.
	LeaseTTL, RenewEvery, ReapEvery time.Duration
	// Slots, when set, holds the per-user run limit for the whole cluster
	// (MaxPerUser runs); the manager still holds it per node. Its entries
	// are run ids, refreshed with the leases.
	Slots Slots
	// Stops, when set, carries a stop for a run of another node to that
	// node.
	Stops Stops
	// NoTranscripts turns off storing run transcripts (store.RunEvent):
	// runs then keep only their outcome and answer, as before.
	NoTranscripts bool
	// TokenQuota, when positive, is the tokens one user's runs may use per
	// UTC day: a user_message once the user's ended runs of the day used
	// that many is answered quota_exceeded. Counted from the store, so
	// across every node sharing it; runs still going count once they end.
	TokenQuota int64
	// Metrics, when set, records the runs, their first events, their tool
	// calls and their tokens (agentwire_runs_total and the others of
	// metrics.Runs).
	Metrics *metrics.Metrics
	// Tracer, when set, traces each run (invoke_agent) and tool call
	// (execute_tool); see trace.go.
	Tracer *tracing.Tracer
	// Inputs, when set, carries a user_input for a run of another node to
	// that node.
	Inputs Inputs
	// InputTimeout bounds a run's wait for its user's answer; 0 →
	// DefaultInputTimeout.
	InputTimeout time.Duration
	// DeltaWindow, when positive, is how long an agent's
	// agent_message_delta text may be held to be appended with the deltas
	// that follow it as one event (deltas.go); 0 appends each delta as it
	// comes.
	DeltaWindow time.Duration

	// crashAfterStore, in tests, makes UserMessage return right after the
	// run is stored, as a node killed at that moment would.
	crashAfterStore func() bool
}

// Slots counts each user's runs across the cluster (runs/redis.NewSlots). An
// entry lives its TTL unless refreshed, so the runs of a node that died
// stop counting by themselves.
type Slots interface {
	Acquire(ctx context.Context, user, runID string, max int) (bool, error)
	Release(ctx context.Context, user, runID string) error
	Refresh(ctx context.Context, held map[string][]string) error
}

// Stops routes stop requests between nodes (runs/redis.Stops): Send delivers
// to the node running the run and reports whether it was listening; Listen
// calls stop for every request sent to node until ctx is done.
type Stops interface {
	Send(ctx context.Context, node, user, runID string) (bool, error)
	Listen(ctx context.Context, node string, stop func(user, runID string))
}

// Manager starts, tracks and ends runs. It implements the ws.Handler frames
// user_message and stop_agent.
type Manager struct {
	stream        stream.Stream
	store         store.Store
	agent         agent.Agent
	log           *slog.Logger
	maxPerUser    int
	timeout       time.Duration
	now           func() time.Time
	node          string
	leaseTTL      time.Duration
	renewEvery    time.Duration
	reapEvery     time.Duration
	slots         Slots
	stops         Stops
	inputs        Inputs
	inputTimeout  time.Duration
	deltaWindow   time.Duration
	tokenQuota    int64
	metrics       *metrics.Runs // nil without Config.Metrics
	tracer        *tracing.Tracer
	noTranscripts bool
	crash         func() bool
	loopCtx       context.Context // done at the end of Shutdown
	stopLoop      context.CancelFunc
	loopWG        sync.WaitGroup // lease loop, stop listener
	resendWG      sync.WaitGroup // resend goroutines

	mu     sync.Mutex
	active map[string]*active // by run id, until the terminal event
	// unfinished are ended runs whose outcome the store has not taken yet
	// (it was unreachable): the lease loop keeps their leases and retries.
	unfinished map[string]finish
	// announced are ended runs whose terminal event the stream took but
	// whose confirmation (Store.ConfirmEnds) the store has not yet: the
	// lease loop confirms them in one batch. Until then a claimer may
	// announce the end again, under the same end key: a no-op.
	announced map[string]struct{}
	perUser   map[string]int // active runs per user, reserved before creation
	closed    bool
	// loopStopped is set when Shutdown stops the loop: no resend may
	// start after it.
	loopStopped bool
	wg          sync.WaitGroup // agent goroutines
}

// active is one running run.
type active struct {
	em     *emitter
	cancel context.CancelCauseFunc
	clock  *clock // the run and input timeouts; nil until execute arms it
}

// New returns a Manager; it starts no goroutine (see Start).
func New(cfg Config) *Manager {
	m := &Manager{
		stream: cfg.Stream, store: cfg.Store, agent: cfg.Agent, log: cfg.Logger,
		maxPerUser: cfg.MaxPerUser, timeout: cfg.Timeout, now: cfg.Now,
		slots: cfg.Slots, stops: cfg.Stops, inputs: cfg.Inputs, inputTimeout: cfg.InputTimeout, crash: cfg.crashAfterStore, noTranscripts: cfg.NoTranscripts,
		tokenQuota: cfg.TokenQuota, deltaWindow: cfg.DeltaWindow, tracer: cfg.Tracer,
		active: make(map[string]*active), perUser: make(map[string]int), unfinished: make(map[string]finish), announced: make(map[string]struct{}),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.maxPerUser <= 0 {
		m.maxPerUser = DefaultMaxPerUser
	}
	if m.timeout <= 0 {
		m.timeout = DefaultTimeout
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.inputTimeout <= 0 {
		m.inputTimeout = DefaultInputTimeout
	}
	if cfg.Metrics != nil {
		m.metrics = cfg.Metrics.Runs(m.agent.Name())
	}
	m.node, m.leaseTTL, m.renewEvery, m.reapEvery = cfg.Node, cfg.LeaseTTL, cfg.RenewEvery, cfg.ReapEvery
	if m.node == "" {
		m.node = ulid.Make().String()
	}
	if m.leaseTTL <= 0 {
		m.leaseTTL = DefaultLeaseTTL
	}
	if m.renewEvery <= 0 {
		m.renewEvery = DefaultRenewEvery
	}
	if m.reapEvery <= 0 {
		m.reapEvery = DefaultReapEvery
	}
	m.loopCtx, m.stopLoop = context.WithCancel(context.Background())
	return m
}

// Start starts the manager's loops: the lease loop (renewing this node's
// leases, retrying outcomes the store did not take, reaping the runs of
// dead nodes) and, with Stops, the listener for stops sent by other nodes.
// They run until the end of Shutdown. Without Start, runs still start and
// end, but their leases lapse. Call it once.
func (m *Manager) Start() {
	m.loopWG.Add(1)
	go m.leaseLoop(m.loopCtx)
	if m.stops != nil {
		m.loopWG.Add(1)
		go func() {
			defer m.loopWG.Done()
			m.stops.Listen(m.loopCtx, m.node, m.stopLocal)
		}()
	}
	if m.inputs != nil {
		m.loopWG.Add(1)
		go func() {
			defer m.loopWG.Done()
			m.inputs.Serve(m.loopCtx, m.node, m.serveInput)
		}()
	}
}

// Node returns the id this manager's runs are leased under.
func (m *Manager) Node() string { return m.node }

// ack is what a client_message_id remembers: the first answer.
type ack struct {
	ThreadID  string `json:"thread_id"`
	RunID     string `json:"run_id"`
	MessageID string `json:"message_id"`
	// PendingUntil (unix ms) marks a claim whose run has not started yet:
	// its message may still be refused. Zero once confirmed.
	PendingUntil int64 `json:"pending_until,omitempty"`
}

// pendingClaim bounds how long a client_message_id claim may stay
// unconfirmed: past it, the attempt that took it has either stored its run
// (every store and stream call of a frame is bounded well under it) or
// given up, perhaps with its node.
const pendingClaim = 30 * time.Second

func perr(code protocol.ErrorCode, msg, ref string) *protocol.Error {
	return &protocol.Error{Code: code, Message: msg, Ref: ref}
}

// UserMessage claims the client_message_id, reserves a run slot, stores the
// thread (when new), the message and the run in one store transaction
// (store.StartRun), appends the echo and agent_started, starts the agent
// and returns the ack. A client_message_id seen within IdempotencyWindow
// returns the first ack and starts nothing; one whose message fails is
// released.
func (m *Manager) UserMessage(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	return m.userMessage(ctx, user, f, false)
}

// UserMessageInThread is UserMessage for clients that name their threads
// themselves (AG-UI): a thread_id the user has no thread of becomes a new
// thread of the user with that id; one that is another user's is
// not_found, as for UserMessage.
func (m *Manager) UserMessageInThread(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	return m.userMessage(ctx, user, f, f.ThreadID != "")
}

func (m *Manager) userMessage(ctx context.Context, user string, f *protocol.Frame, adopt bool) (protocol.AckFrame, *protocol.Error) {
	received := m.now()
	a := ack{ThreadID: f.ThreadID, RunID: ulid.Make().String(), MessageID: ulid.Make().String()}
	newThread := a.ThreadID == ""
	if newThread {
		a.ThreadID = ulid.Make().String()
	}
	idemKey := ""
	if f.ClientMessageID != "" {
		idemKey = "client_message_id:" + f.ClientMessageID
		pending := a
		pending.PendingUntil = m.now().Add(pendingClaim).UnixMilli()
		val, _ := json.Marshal(pending)
		if first, e := m.claim(ctx, user, idemKey, val, f.ID); first != nil || e != nil {
			if e != nil {
				return protocol.AckFrame{}, e
			}
			return *first, nil
		}
	}
	fail := func(e *protocol.Error) (protocol.AckFrame, *protocol.Error) {
		if idemKey != "" {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), appendTimeout)
			defer cancel()
			if err := m.store.ReleaseIdempotencyKey(rctx, user, idemKey); err != nil {
				m.log.Error("release client_message_id", "user", user, "err", err)
			}
		}
		return protocol.AckFrame{}, e
	}

	if e := m.checkQuota(ctx, user, f.ID); e != nil {
		return fail(e)
	}
	tooMany := func() (protocol.AckFrame, *protocol.Error) {
		return fail(perr(protocol.CodeTooManyRuns, fmt.Sprintf("at most %d runs at once: wait for one to finish or stop it", m.maxPerUser), f.ID))
	}
	if err := m.reserve(user); err != nil {
		if errors.Is(err, ErrTooManyRuns) {
			return tooMany()
		}
		return fail(perr(protocol.CodeInternal, "server shutting down, retry", f.ID))
	}
	started := false
	defer func() {
		if !started {
			m.unreserve(user)
		}
	}()
	if m.slots != nil {
		ok, err := m.slots.Acquire(ctx, user, a.RunID, m.maxPerUser)
		if err != nil {
			m.log.Error("acquire cluster run slot", "user", user, "err", err)
			return fail(perr(protocol.CodeInternal, "message not accepted: run limit unavailable, retry", f.ID))
		}
		if !ok {
			return tooMany()
		}
		defer func() {
			if !started {
				m.releaseSlot(user, a.RunID)
			}
		}()
	}

	// The thread (new, or the user's: checked inside), the message and the
	// run, in one store transaction; it also reads the agent's context.
	now := m.now()
	var thread *store.Thread
	if newThread {
		thread = &store.Thread{ID: a.ThreadID, UserID: user, Title: store.TitleFrom(f.Content), CreatedAt: now, UpdatedAt: now}
	}
	msg := store.Message{ID: a.MessageID, ThreadID: a.ThreadID, UserID: user, Role: store.RoleUser, Content: f.Content, RunID: a.RunID, CreatedAt: now}
	run := store.Run{ID: a.RunID, ThreadID: a.ThreadID, UserID: user, Agent: m.agent.Name(), Status: store.RunRunning,
		UserMessageID: a.MessageID, StartedAt: now, Node: m.node, LeaseUntil: now.Add(m.leaseTTL)}
	history, err := m.store.StartRun(ctx, thread, msg, run, historyLimit)
	if adopt && errors.Is(err, store.ErrNotFound) {
		// Not a thread of the user: a new one with the client's id, unless
		// the id is taken — by this user's message racing this one (then
		// the thread is there now), or by another user's thread.
		newThread = true
		thread = &store.Thread{ID: a.ThreadID, UserID: user, Title: store.TitleFrom(f.Content), CreatedAt: now, UpdatedAt: now}
		history, err = m.store.StartRun(ctx, thread, msg, run, historyLimit)
		if errors.Is(err, store.ErrConflict) {
			newThread, thread = false, nil
			history, err = m.store.StartRun(ctx, nil, msg, run, historyLimit)
		}
	}
	if err != nil {
		if !newThread && errors.Is(err, store.ErrNotFound) {
			return fail(perr(protocol.CodeNotFound, "no such thread", f.ID))
		}
		m.log.Error("start run", "user", user, "err", err)
		return fail(perr(protocol.CodeInternal, "store unavailable, retry", f.ID))
	}
	if m.crash != nil && m.crash() {
		return protocol.AckFrame{}, perr(protocol.CodeInternal, "crashed (test)", f.ID)
	}
	echo := echoRecord(a.ThreadID, a.RunID, a.MessageID, f.Content, f.ClientMessageID)
	if _, err := m.stream.Append(ctx, user, echo); err != nil {
		m.log.Error("append user message", "user", user, "run", a.RunID, "err", err)
		if !errors.Is(err, stream.ErrMaybeAppended) {
			m.discard(ctx, user, a.RunID, newThread)
			return fail(perr(protocol.CodeInternal, "message not accepted: stream unavailable, retry", f.ID))
		}
		return m.acceptFailed(ctx, user, a, idemKey, echo, f.ID)
	}
	em := &emitter{m: m, user: user, threadID: a.ThreadID, runID: a.RunID, messageID: ulid.Make().String(), started: now, received: received}
	if !m.noTranscripts {
		em.tr = &transcript{messageID: em.messageID, saved: now}
	}
	em.traceStart(ctx, m.agent.Name())
	if err := em.start(m.agent.Name()); err != nil {
		em.mu.Lock()
		em.traceEndLocked(store.RunFailed, protocol.CodeAgentFailed)
		em.mu.Unlock()
		return m.acceptFailed(ctx, user, a, idemKey, echo, f.ID)
	}
	m.metrics.FirstEvent(m.now().Sub(received))
	started = true
	if idemKey != "" {
		// From here on a repeat gets this ack. Should the store not take
		// it, a repeat finds the run itself once the claim stops pending.
		val, _ := json.Marshal(a)
		if err := m.store.ConfirmIdempotencyKey(ctx, user, idemKey, val); err != nil {
			m.log.Warn("confirm client_message_id", "user", user, "run", a.RunID, "err", err)
		}
	}
	m.launch(em, history)
	return protocol.AckFrame{Ref: f.ID, ThreadID: a.ThreadID, RunID: a.RunID, MessageID: a.MessageID}, nil
}

// acceptFailed answers a message whose echo is, or may yet be, in the
// stream although its run could not start there: refusing it would leave
// the echo of a run that does not exist. The message is accepted (acked,
// its client_message_id confirmed) and its run fails at once; the echo,
// agent_started and agent_error are appended under their run keys, in
// the background until the stream takes them, so the run reads whole (and,
// should this node die first, by whoever claims its unannounced end).
func (m *Manager) acceptFailed(ctx context.Context, user string, a ack, idemKey string, echo stream.Record, ref string) (protocol.AckFrame, *protocol.Error) {
	const msg = "the event stream was unavailable when the message arrived; send the message again"
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), appendTimeout)
	defer cancel()
	if idemKey != "" {
		val, _ := json.Marshal(a)
		if err := m.store.ConfirmIdempotencyKey(bctx, user, idemKey, val); err != nil {
			m.log.Warn("confirm client_message_id", "user", user, "run", a.RunID, "err", err)
		}
	}
	m.record(bctx, finish{Outcome: store.Outcome{UserID: user, RunID: a.RunID, Status: store.RunFailed, EndedAt: m.now(), ErrorCode: string(protocol.CodeAgentFailed), ErrorMessage: msg}})
	m.metrics.Ended(string(store.RunFailed), -1)
	end, _ := protocol.MarshalData(protocol.AgentError{Code: protocol.CodeAgentFailed, Message: msg})
	m.resend(user, func() { m.endAppended(a.RunID) }, echo, startRecord(a.ThreadID, a.RunID, m.agent.Name(), ""),
		stream.Record{Type: protocol.TypeAgentError, ThreadID: a.ThreadID, RunID: a.RunID, Data: end, IdempotencyKey: endKey(a.RunID)})
	return protocol.AckFrame{Ref: ref, ThreadID: a.ThreadID, RunID: a.RunID, MessageID: a.MessageID}, nil
}

// Pauses while a repeat waits for the attempt that claimed its
// client_message_id first.
const (
	claimFirstPause = 10 * time.Millisecond
	claimMaxPause   = 200 * time.Millisecond
)

// claim takes the client_message_id key for this attempt (nil, nil: go on
// and start the run), or answers a repeat of a message another attempt
// claimed: the first ack once that attempt's run has started (the claim is
// confirmed). While the other attempt is still placing its run, which may
// yet be refused, the repeat waits, within ctx, rather than be acked for a
// run that might never exist: if that attempt is refused it releases the
// key and this one claims it. A claim left pending past its bound belongs
// to an attempt that is over (its node died): acked if its run was stored
// (the reaper ends it whole), else released and claimed here.
func (m *Manager) claim(ctx context.Context, user, key string, val []byte, ref string) (*protocol.AckFrame, *protocol.Error) {
	unavailable := perr(protocol.CodeInternal, "message not accepted: store unavailable, retry", ref)
	pause := claimFirstPause
	for {
		prev, claimed, err := m.store.ClaimIdempotencyKey(ctx, store.Claim{UserID: user, Key: key, Value: val, TTL: IdempotencyWindow, At: m.now()})
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, perr(protocol.CodeInternal, "the same client_message_id is still being accepted on another connection, retry", ref)
		case err != nil:
			m.log.Error("claim client_message_id", "user", user, "err", err)
			return nil, unavailable
		case claimed:
			return nil, nil
		}
		var first ack
		if err := json.Unmarshal(prev, &first); err != nil {
			return nil, perr(protocol.CodeInternal, "stored ack unreadable", ref)
		}
		acked := &protocol.AckFrame{Ref: ref, ThreadID: first.ThreadID, RunID: first.RunID, MessageID: first.MessageID}
		if first.PendingUntil == 0 {
			return acked, nil
		}
		if m.now().UnixMilli() >= first.PendingUntil {
			_, err := m.store.GetRun(ctx, user, first.RunID)
			switch {
			case err == nil:
				return acked, nil
			case !errors.Is(err, store.ErrNotFound):
				m.log.Error("read the run of a repeated client_message_id", "user", user, "run", first.RunID, "err", err)
				return nil, unavailable
			}
			if err := m.store.ReleaseIdempotencyKey(ctx, user, key); err != nil {
				m.log.Error("release client_message_id", "user", user, "err", err)
				return nil, unavailable
			}
			continue // claim it for this attempt
		}
		select {
		case <-ctx.Done():
			return nil, perr(protocol.CodeInternal, "the same client_message_id is still being accepted on another connection, retry", ref)
		case <-time.After(pause):
		}
		pause = min(2*pause, claimMaxPause)
	}
}

// Idempotency keys of a run's start and end on the stream: the node that
// runs it, a retry and a reaper append them under the same keys, so each is
// in the stream once, whoever gets there first.
func echoKey(runID string) string  { return "agentwire:run:" + runID + ":echo" }
func startKey(runID string) string { return "agentwire:run:" + runID + ":start" }
func endKey(runID string) string   { return "agentwire:run:" + runID + ":end" }

// echoRecord is the user_message event that starts a run.
func echoRecord(threadID, runID, messageID, content, clientMessageID string) stream.Record {
	echo, _ := protocol.MarshalData(protocol.UserMessage{MessageID: messageID, Content: content, ClientMessageID: clientMessageID})
	return stream.Record{Type: protocol.TypeUserMessage, ThreadID: threadID, RunID: runID, Data: echo, IdempotencyKey: echoKey(runID)}
}

// startRecord is a run's agent_started event.
// traceID is the run's trace when tracing is on (see trace.go), else "".
func startRecord(threadID, runID, agentName, traceID string) stream.Record {
	data, _ := protocol.MarshalData(protocol.AgentStarted{Agent: agentName, TraceID: traceID})
	return stream.Record{Type: protocol.TypeAgentStarted, ThreadID: threadID, RunID: runID, Data: data, IdempotencyKey: startKey(runID)}
}

// discard forgets a run stored by StartRun whose start could not be
// appended: the message was refused, so its run, the message and a thread
// made for it go. When the store cannot take that either, the run stays
// running without a lease renewal, and a reaper later appends its start
// and node_lost: it reads whole.
func (m *Manager) discard(ctx context.Context, user, runID string, withThread bool) {
	// Not the frame's context, which may be spent by the refusal itself.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), appendTimeout)
	defer cancel()
	if err := m.store.DiscardRun(dctx, user, runID, withThread); err != nil {
		m.log.Error("discard refused run", "user", user, "run", runID, "err", err)
	}
}

// StopAgent cancels a running run of user: it ends at once with agent_error
// code cancelled, and the agent's context is cancelled. Stopping a run that
// already ended is acknowledged and changes nothing.
func (m *Manager) StopAgent(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	r, err := m.store.GetRun(ctx, user, f.RunID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return protocol.AckFrame{}, perr(protocol.CodeNotFound, "no such run", f.ID)
		}
		return protocol.AckFrame{}, perr(protocol.CodeInternal, "store unavailable, retry", f.ID)
	}
	if !m.end(user, f.RunID, protocol.CodeCancelled, stoppedMessage) && !r.Status.Terminal() && r.Node != m.node && m.stops != nil {
		if err := m.sendStop(ctx, r); err != nil {
			m.log.Error("send stop to the run's node", "user", user, "run", r.ID, "node", r.Node, "err", err)
			return protocol.AckFrame{}, perr(protocol.CodeInternal, "stop not delivered, retry", f.ID)
		}
	}
	return protocol.AckFrame{Ref: f.ID, ThreadID: r.ThreadID, RunID: r.ID}, nil
}

const stoppedMessage = "stopped by the user"

// sendStopTries bounds the attempts at reaching a run's node that is not
// listening (its subscription is being restored): one every
// sendStopPause, for about a second; after that the node is taken for dead
// and its reaper ends the run.
const (
	sendStopTries = 10
	sendStopPause = 100 * time.Millisecond
)

// sendStop delivers a stop to the node running r.
func (m *Manager) sendStop(ctx context.Context, r store.Run) error {
	for i := range sendStopTries {
		delivered, err := m.stops.Send(ctx, r.Node, r.UserID, r.ID)
		if err != nil || delivered {
			return err
		}
		if i == sendStopTries-1 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(sendStopPause):
		}
	}
	m.log.Warn("stop: the run's node is not listening", "user", r.UserID, "run", r.ID, "node", r.Node)
	return nil
}

// stopLocal ends a run of this node at another node's request.
func (m *Manager) stopLocal(user, runID string) {
	m.end(user, runID, protocol.CodeCancelled, stoppedMessage)
}

// end ends a local running run with code; false when it was not running here.
func (m *Manager) end(user, runID string, code protocol.ErrorCode, msg string) bool {
	m.mu.Lock()
	a := m.active[runID]
	m.mu.Unlock()
	if a == nil || a.em.user != user {
		return false
	}
	ended := a.em.end(code, msg)
	a.cancel(errors.New(string(code)))
	return ended
}

// Publish appends an event an external agent sent for a run of user that is
// still running here, and returns it. It fails with ErrNotRunning otherwise.
func (m *Manager) Publish(user, runID, typ string, data json.RawMessage) (stream.Event, error) {
	m.mu.Lock()
	a := m.active[runID]
	m.mu.Unlock()
	if a == nil || a.em.user != user {
		return stream.Event{}, ErrNotRunning
	}
	ev, err := a.em.publish(typ, data)
	if errors.Is(err, agent.ErrRunEnded) {
		return ev, ErrNotRunning
	}
	return ev, err
}

func (m *Manager) reserve(user string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("runs: closed")
	}
	if m.perUser[user] >= m.maxPerUser {
		return ErrTooManyRuns
	}
	m.perUser[user]++
	return nil
}

// releaseSlot frees a run's entry in the cluster-wide count. When Redis
// does not answer, the entry expires with the lease TTL.
func (m *Manager) releaseSlot(user, runID string) {
	if m.slots == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := m.slots.Release(ctx, user, runID); err != nil {
		m.log.Warn("release cluster run slot", "user", user, "run", runID, "err", err)
	}
}

func (m *Manager) unreserve(user string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.perUser[user] <= 1 {
		delete(m.perUser, user)
	} else {
		m.perUser[user]--
	}
}

// release is called once per run, by its terminal event.
func (m *Manager) release(e *emitter) {
	m.mu.Lock()
	a := m.active[e.runID]
	delete(m.active, e.runID)
	m.mu.Unlock()
	if a != nil {
		if a.clock != nil {
			a.clock.stop()
		}
		a.cancel(errRunEnded) // the agent has nothing left to do
	}
	m.unreserve(e.user)
}

// launch starts the agent of a started run in its own context, which does
// not derive from the request: the run outlives the connection.
func (m *Manager) launch(em *emitter, history []store.Message) {
	ctx, cancel := context.WithCancelCause(em.traceContext(context.Background()))
	act := &active{em: em, cancel: cancel}
	m.mu.Lock()
	m.active[em.runID] = act
	m.wg.Add(1)
	m.mu.Unlock()

	msgs := history
	if len(msgs) > historyLimit {
		msgs = msgs[len(msgs)-historyLimit:]
	}
	run := agent.Run{ID: em.runID, ThreadID: em.threadID, UserID: em.user}
	go m.execute(ctx, act, run, msgs)
}

func (m *Manager) execute(ctx context.Context, act *active, run agent.Run, history []store.Message) {
	defer m.wg.Done()
	em := act.em
	defer act.cancel(nil)
	// Read here, not before the ack: the earlier runs' tool calls.
	run.Messages = m.agentMessages(ctx, em.user, run.ID, history)
	m.mu.Lock()
	if m.active[run.ID] == act { // not already ended by a stop
		act.clock = startClock(m.timeout, func() {
			if em.end(protocol.CodeTimeout, fmt.Sprintf("the run took longer than %s", m.timeout)) {
				act.cancel(errors.New(string(protocol.CodeTimeout)))
			}
		}, func() {
			if em.end(protocol.CodeInputTimeout, fmt.Sprintf("no answer to the run's question within %s", m.inputTimeout)) {
				act.cancel(errors.New(string(protocol.CodeInputTimeout)))
			}
		})
	}
	m.mu.Unlock()

	err := m.safeRun(ctx, run, em)
	switch {
	case ctx.Err() != nil:
		// Ended by stop, timeout or shutdown: the terminal event is out.
		em.end(protocol.CodeCancelled, "cancelled")
	case errors.Is(err, errStream):
		m.log.Warn("run cut short by the stream", "user", em.user, "run", run.ID, "err", err)
		em.end(protocol.CodeAgentFailed, streamLostMessage)
	case err != nil:
		// The error may carry an agent service's address or a driver's
		// words: it goes to the log, not to the user.
		m.log.Warn("agent failed", "user", em.user, "run", run.ID, "err", err)
		em.end(protocol.CodeAgentFailed, "the agent failed")
	default:
		em.end(protocol.CodeAgentFailed, "the agent returned without finishing")
	}
}

// safeRun runs the agent, turning a panic into an error.
func (m *Manager) safeRun(ctx context.Context, run agent.Run, em agent.Emitter) (err error) {
	defer func() {
		if p := recover(); p != nil {
			m.log.Error("agent panicked", "run", run.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = errors.New("internal error in the agent")
		}
	}()
	return m.agent.Run(ctx, run, em)
}

// shutdownResendGrace is how long Shutdown lets run events the stream
// refused be retried before it gives them up.
const shutdownResendGrace = 2 * time.Second

// Running returns the number of runs in progress on this manager.
func (m *Manager) Running() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.active)
}

// Shutdown refuses new runs, waits for running ones until ctx is done, then
// ends the rest with agent_error code cancelled, waits for their agents to
// return (bounded by a short grace) and stops the lease loop.
func (m *Manager) Shutdown(ctx context.Context) {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	defer func() {
		// Terminal events still waiting for the stream get a short grace.
		resent := make(chan struct{})
		go func() { m.resendWG.Wait(); close(resent) }()
		select {
		case <-resent:
		case <-time.After(shutdownResendGrace):
		}
		m.mu.Lock()
		m.loopStopped = true
		m.mu.Unlock()
		m.stopLoop()
		m.loopWG.Wait()
		m.resendWG.Wait() // no resend starts any more; the rest give up now
		// Ends the stream took are confirmed now rather than claimed and
		// appended again (a no-op) by another node later.
		cctx, cancel := context.WithTimeout(context.Background(), shutdownResendGrace)
		m.confirmEnds(cctx)
		cancel()
	}()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	m.mu.Lock()
	left := make([]*active, 0, len(m.active))
	for _, a := range m.active {
		left = append(left, a)
	}
	m.mu.Unlock()
	for _, a := range left {
		a.em.end(protocol.CodeCancelled, "the server shut down during the run")
		a.cancel(errors.New("shutdown"))
	}
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		m.log.Warn("agents still running after shutdown", "runs", len(left))
	}
}
