package runs

import (
	"context"
	"errors"
	"time"

	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// Lease defaults: a run's node renews its lease every DefaultRenewEvery for
// DefaultLeaseTTL; every node reaps expired leases every DefaultReapEvery.
// A run of a node that died ends with node_lost within TTL + ReapEvery (20 s).
const (
	DefaultLeaseTTL   = 15 * time.Second
	DefaultRenewEvery = 5 * time.Second
	DefaultReapEvery  = 5 * time.Second
)

// nodeLostMessage is the agent_error message of a reaped run.
const nodeLostMessage = "the server running this run stopped; send the message again"

// leaseLoop renews this node's leases and reaps other nodes' expired ones
// until ctx is done.
func (m *Manager) leaseLoop(ctx context.Context) {
	defer m.loopWG.Done()
	renew := time.NewTicker(m.renewEvery)
	defer renew.Stop()
	reap := time.NewTicker(m.reapEvery)
	defer reap.Stop()
	m.reap(ctx) // runs a previous process left behind
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			m.renew(ctx)
		case <-reap.C:
			m.reap(ctx)
		}
	}
}

// finish is the outcome of an ended run, as the store records it
// (Outcome.Announced: its terminal event is already in the stream).
type finish struct {
	store.Outcome
	answer *store.Message // the assistant message of a completed run
}

// record stores an ended run's outcome. When the store cannot take it, the
// run stays running there, so the lease loop keeps its lease alive and
// retries: otherwise a reaper would announce node_lost after the terminal
// event the user already saw.
func (m *Manager) record(ctx context.Context, f finish) {
	if err := m.store1(ctx, f); err != nil {
		m.log.Warn("store run outcome, will retry", "user", f.UserID, "run", f.RunID, "err", err)
		m.mu.Lock()
		m.unfinished[f.RunID] = f
		m.mu.Unlock()
	}
}

// endAppended notes that the stream has run's terminal event: the lease
// loop confirms it in the store (ConfirmEnds), and an outcome the store has
// not taken yet is stored as announced.
func (m *Manager) endAppended(run string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.unfinished[run]; ok {
		f.Announced = true
		m.unfinished[run] = f
	}
	m.announced[run] = struct{}{}
}

// confirmEnds confirms in the store the ends the stream has taken.
func (m *Manager) confirmEnds(ctx context.Context) {
	m.mu.Lock()
	ids := make([]string, 0, len(m.announced))
	for id := range m.announced {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, m.renewEvery)
	defer cancel()
	if err := m.store.ConfirmEnds(cctx, ids); err != nil {
		m.log.Warn("confirm run ends, will retry", "runs", len(ids), "err", err)
		return
	}
	m.mu.Lock()
	for _, id := range ids {
		delete(m.announced, id)
	}
	m.mu.Unlock()
}

// store1 writes f once. A run already ended in the store (reaped, or a
// retry after a lost answer) counts as done.
func (m *Manager) store1(ctx context.Context, f finish) error {
	if f.answer != nil {
		if err := m.store.AddMessage(ctx, *f.answer); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	err := m.store.FinishRun(ctx, f.Outcome) // the transcript's rest in the same transaction
	if errors.Is(err, store.ErrNotRunning) && len(f.Events) > 0 {
		// Ended elsewhere (reaped) or by an earlier try: the events go
		// on their own (indexes already stored are skipped).
		err = m.store.AppendRunEvents(ctx, f.UserID, f.RunID, f.Events)
	}
	if errors.Is(err, store.ErrNotRunning) || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// retryUnfinished retries the outcomes the store could not take.
func (m *Manager) retryUnfinished(ctx context.Context) {
	m.mu.Lock()
	pending := make([]finish, 0, len(m.unfinished))
	for _, f := range m.unfinished {
		pending = append(pending, f)
	}
	m.mu.Unlock()
	for _, f := range pending {
		cctx, cancel := context.WithTimeout(ctx, m.renewEvery)
		err := m.store1(cctx, f)
		cancel()
		if err != nil {
			return // still unreachable: the leases are renewed below when it answers
		}
		m.mu.Lock()
		delete(m.unfinished, f.RunID)
		m.mu.Unlock()
	}
}

// renew extends the leases (and cluster run slots) of the runs active here,
// and the leases of ended runs whose outcome is not stored yet. A run the store no longer counts as ours
// (reaped as lost while we could not renew) is abandoned silently: another
// node has announced its end.
func (m *Manager) renew(ctx context.Context) {
	m.retryUnfinished(ctx)
	m.confirmEnds(ctx)
	m.mu.Lock()
	ids := make([]string, 0, len(m.active)+len(m.unfinished))
	held := make(map[string][]string)
	for id, a := range m.active {
		ids = append(ids, id)
		held[a.em.user] = append(held[a.em.user], id)
	}
	for id := range m.unfinished {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	if m.slots != nil && len(held) > 0 {
		sctx, scancel := context.WithTimeout(ctx, m.renewEvery)
		if err := m.slots.Refresh(sctx, held); err != nil {
			m.log.Warn("refresh cluster run slots", "runs", len(ids), "err", err)
		}
		scancel()
	}
	cctx, cancel := context.WithTimeout(ctx, m.renewEvery)
	defer cancel()
	lost, err := m.store.RenewLeases(cctx, m.node, ids, m.now().Add(m.leaseTTL))
	if err != nil {
		m.log.Warn("renew run leases", "runs", len(ids), "err", err)
		return
	}
	for _, id := range lost {
		m.mu.Lock()
		a := m.active[id]
		delete(m.unfinished, id) // ended in the store after all
		m.mu.Unlock()
		if a != nil && a.em.abandon() {
			m.log.Warn("run ended elsewhere while running here", "run", id)
			a.cancel(errRunEnded)
		}
	}
}

// announce appends the end of a run the store has ended but whose terminal
// event is not confirmed in the stream: a run reaped as lost, or one whose
// node died (or shut down) before the stream took its end. Its echo and
// agent_started come first, in case its node died between storing the run
// and appending them (under the run's keys, so they are not repeated when
// they are there), then its terminal event, built from the store (the
// answer of a completed run, the code and message of another), under its
// end key: a no-op when the node appended it but died before confirming
// it. All are retried until the stream takes them; then the end is
// confirmed. Should this node die meanwhile, the end is claimed again once
// the lease ClaimEnds or ReapExpired gave it lapses.
func (m *Manager) announce(ctx context.Context, r store.Run) {
	recs := make([]stream.Record, 0, 3)
	// The run's keys are remembered for stream.IdempotencyWindow: a start
	// older than that (less a margin for the node's clock) was appended long
	// before its node died, and appending it again would repeat it.
	window := stream.IdempotencyWindow - time.Minute
	withStart := m.now().Sub(r.StartedAt) < window
	var answer *store.Message
	if withStart || r.Status == store.RunCompleted {
		lctx, cancel := context.WithTimeout(ctx, m.reapEvery)
		// Page through the thread for the run's message and answer.
		q := store.MessageQuery{Limit: 1000}
	pages:
		for {
			msgs, more, err := m.store.ListMessages(lctx, r.UserID, r.ThreadID, q)
			if err != nil {
				m.log.Warn("read an unannounced run's messages", "user", r.UserID, "run", r.ID, "err", err)
				break
			}
			for _, msg := range msgs {
				if withStart && msg.ID == r.UserMessageID {
					recs = append(recs, echoRecord(r.ThreadID, r.ID, msg.ID, msg.Content, ""))
				}
				if msg.RunID == r.ID && msg.Role == store.RoleAssistant {
					answer = &msg
					break pages
				}
			}
			if !more || len(msgs) == 0 {
				break
			}
			q.After = msgs[len(msgs)-1].ID
		}
		cancel()
	}
	if withStart {
		recs = append(recs, startRecord(r.ThreadID, r.ID, r.Agent, ""))
	}
	if m.now().Sub(r.EndedAt) >= window {
		// Its end key may be forgotten: appending the end again could
		// repeat one the stream took. Leave the run as the store has it.
		m.log.Warn("run end left unannounced: older than the stream's idempotency window", "user", r.UserID, "run", r.ID)
		m.endAppended(r.ID)
		return
	}
	dur := r.EndedAt.Sub(r.StartedAt).Milliseconds()
	end := stream.Record{ThreadID: r.ThreadID, RunID: r.ID, IdempotencyKey: endKey(r.ID)}
	if r.Status == store.RunCompleted {
		c := protocol.AgentCompleted{DurationMS: dur}
		if answer != nil {
			c.MessageID, c.FinalResponse = answer.ID, answer.Content
		}
		c.Usage = protocol.UsageOf(r.InputTokens, r.OutputTokens) // as its node would have sent it
		end.Type = protocol.TypeAgentCompleted
		end.Data, _ = protocol.MarshalData(c)
	} else {
		end.Type = protocol.TypeAgentError
		end.Data, _ = protocol.MarshalData(protocol.AgentError{Code: protocol.ErrorCode(r.ErrorCode), Message: r.ErrorMessage, DurationMS: dur})
	}
	recs = append(recs, end)
	if err := m.appendAll(ctx, r.UserID, recs); err != nil {
		m.log.Error("announce a run's end, will retry", "user", r.UserID, "run", r.ID, "err", err)
		m.resend(r.UserID, func() { m.endAppended(r.ID) }, recs...)
		return
	}
	m.endAppended(r.ID)
}

// appendAll appends recs in order, each under its own timeout.
func (m *Manager) appendAll(ctx context.Context, user string, recs []stream.Record) error {
	for _, rec := range recs {
		actx, cancel := context.WithTimeout(ctx, appendTimeout)
		_, err := m.stream.Append(actx, user, rec)
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// Pauses between the tries of resend.
const (
	resendFirstPause = 100 * time.Millisecond
	resendMaxPause   = 2 * time.Second
)

// resend appends recs (each with an idempotency key, so a try the stream
// took but did not confirm is not repeated), in order, in the background,
// until the stream takes them all, then calls done (when not nil); or until
// the manager shuts down, which gives them a short grace: a run's terminal
// event is never dropped because the stream was away for a while.
func (m *Manager) resend(user string, done func(), recs ...stream.Record) {
	m.mu.Lock()
	if m.loopStopped {
		m.mu.Unlock()
		m.log.Error("run events not appended at shutdown: the run is reaped as lost", "user", user, "events", len(recs))
		return
	}
	m.resendWG.Add(1)
	m.mu.Unlock()
	go func() {
		defer m.resendWG.Done()
		pause := resendFirstPause
		for {
			select {
			case <-m.loopCtx.Done():
				m.log.Error("run events not appended at shutdown: the run is reaped as lost", "user", user, "run", recs[0].RunID, "events", len(recs))
				return
			case <-time.After(pause):
			}
			if err := m.appendAll(m.loopCtx, user, recs); err == nil {
				m.log.Info("run events appended after a stream outage", "user", user, "run", recs[0].RunID, "events", len(recs))
				if done != nil {
					done()
				}
				return
			}
			pause = min(2*pause, resendMaxPause)
		}
	}()
}

// reap ends the runs whose node stopped renewing them, and announces the
// ends a node stored but did not see into the stream before it died. The
// store hands each to exactly one reaper at a time.
func (m *Manager) reap(ctx context.Context) {
	if _, err := m.reapBefore(ctx, m.now()); err != nil {
		m.log.Warn("reap expired runs", "err", err)
	}
}

// EndLeftovers ends, as failed with node_lost, every run the store still has
// as running, whatever its lease, and announces each as the reaper does,
// with the ends the previous process stored but did not see into the
// stream. It is for a store no other process shares (SQLite), called at
// start before any run begins: such runs were cut short by the previous
// process, whose leases may not have expired yet (a kill -9 and a quick
// restart).
func (m *Manager) EndLeftovers(ctx context.Context) (int, error) {
	return m.reapBefore(ctx, m.now().Add(100*365*24*time.Hour)) // past every lease a process could take
}

// reapBefore ends the running runs whose lease expires before t, a page at
// a time, and announces each; then it claims and announces the ended runs
// whose end is unannounced and whose lease expires before t.
func (m *Manager) reapBefore(ctx context.Context, t time.Time) (int, error) {
	n, err := m.reapRunning(ctx, t)
	if err != nil {
		return n, err
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, m.reapEvery)
		ends, err := m.store.ClaimEnds(cctx, store.EndClaim{Before: t, Node: m.node, LeaseUntil: m.now().Add(m.leaseTTL), Limit: 100})
		cancel()
		if err != nil {
			return n, err
		}
		for _, r := range ends {
			m.log.Warn("run end not seen into the stream by its node, announcing it", "user", r.UserID, "run", r.ID, "status", r.Status)
			m.announce(ctx, r)
		}
		if len(ends) < 100 {
			return n, nil
		}
	}
}

// reapRunning is reapBefore's first half: the running runs.
func (m *Manager) reapRunning(ctx context.Context, t time.Time) (int, error) {
	n := 0
	for {
		cctx, cancel := context.WithTimeout(ctx, m.reapEvery)
		lost, err := m.store.ReapExpired(cctx, store.Reap{Before: t, ErrorCode: string(protocol.CodeNodeLost), ErrorMessage: nodeLostMessage, Limit: 100,
			Node: m.node, LeaseUntil: m.now().Add(m.leaseTTL)})
		cancel()
		if err != nil {
			return n, err
		}
		for _, r := range lost {
			m.log.Warn("run lost with its node", "user", r.UserID, "run", r.ID, "node", r.Node)
			m.metrics.Lost(r.Agent)
			m.announce(ctx, r)
		}
		n += len(lost)
		if len(lost) < 100 {
			return n, nil
		}
	}
}
