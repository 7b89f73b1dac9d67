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

// finish is the outcome of an ended run, as the store records it.
type finish struct {
	store.Outcome
	answer *store.Message // the assistant message of a completed run
}

// record stores an ended run's outcome and reports whether the store took
// it. When it cannot, the run stays running there, so the lease loop keeps
// its lease alive and retries: otherwise a reaper would announce node_lost
// after the terminal event the user already saw.
func (m *Manager) record(ctx context.Context, f finish) bool {
	if err := m.store1(ctx, f); err != nil {
		m.log.Warn("store run outcome, will retry", "user", f.UserID, "run", f.RunID, "err", err)
		m.mu.Lock()
		m.unfinished[f.RunID] = f
		m.mu.Unlock()
		return false
	}
	return true
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
	for id := range m.ending {
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
		delete(m.ending, id)     // reaped: its end key now holds node_lost
		m.mu.Unlock()
		if a != nil && a.em.abandon() {
			m.log.Warn("run ended elsewhere while running here", "run", id)
			a.cancel(errRunEnded)
		}
	}
}

// announceLost appends the end of a reaped run: its echo and agent_started
// first, in case its node died between storing the run and appending them
// (under the run's keys, so they are not repeated when they are there),
// then agent_error node_lost under its end key (a no-op when the node
// appended its terminal event but died before storing the outcome). The
// three are retried until the stream takes them.
func (m *Manager) announceLost(ctx context.Context, r store.Run) {
	recs := make([]stream.Record, 0, 3)
	// The start's keys are remembered for stream.IdempotencyWindow: a run
	// older than that (less a margin for the node's clock) was started long
	// before its node died, and appending its start again would repeat it.
	if m.now().Sub(r.StartedAt) < stream.IdempotencyWindow-time.Minute {
		lctx, cancel := context.WithTimeout(ctx, m.reapEvery)
		// Page through the thread until the run's message.
		q := store.MessageQuery{Limit: 1000}
	pages:
		for {
			msgs, more, err := m.store.ListMessages(lctx, r.UserID, r.ThreadID, q)
			if err != nil {
				m.log.Warn("read a lost run's message", "user", r.UserID, "run", r.ID, "err", err)
				break
			}
			for _, msg := range msgs {
				if msg.ID == r.UserMessageID {
					recs = append(recs, echoRecord(r.ThreadID, r.ID, msg.ID, msg.Content, ""))
					break pages
				}
			}
			if !more || len(msgs) == 0 {
				break
			}
			q.After = msgs[len(msgs)-1].ID
		}
		cancel()
		recs = append(recs, startRecord(r.ThreadID, r.ID, r.Agent))
	}
	data, _ := protocol.MarshalData(protocol.AgentError{Code: protocol.CodeNodeLost, Message: nodeLostMessage,
		DurationMS: m.now().Sub(r.StartedAt).Milliseconds()})
	recs = append(recs, stream.Record{Type: protocol.TypeAgentError, ThreadID: r.ThreadID, RunID: r.ID, Data: data, IdempotencyKey: endKey(r.ID)})
	if err := m.appendAll(ctx, r.UserID, recs); err != nil {
		m.log.Error("announce lost run, will retry", "user", r.UserID, "run", r.ID, "err", err)
		m.resend(r.UserID, nil, recs...)
	}
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

// endWhenAppended ends a run whose terminal event (the last of recs) the
// stream did not take: recs are resent until it does, and only then is the
// outcome f stored. Meanwhile the run is running in the store (reopened,
// when stored says its outcome was already stored) with its lease renewed
// by this node, so REST agrees with the stream; should this node die or
// shut down first, the lease expires and a reaper appends whatever of the
// run's start is missing and node_lost under the same end key, so the run
// still reads whole.
func (m *Manager) endWhenAppended(f finish, stored bool, recs ...stream.Record) {
	m.mu.Lock()
	delete(m.unfinished, f.RunID) // stored after the stream takes the end
	m.ending[f.RunID] = f
	m.mu.Unlock()
	if stored {
		ctx, cancel := context.WithTimeout(m.loopCtx, appendTimeout)
		err := m.store.ReopenRun(ctx, f.Outcome, m.node, m.now().Add(m.leaseTTL))
		cancel()
		if err != nil {
			// The store says ended, so no reaper will announce the run:
			// its end now rests on this node's resend alone.
			m.log.Error("reopen a run whose end the stream refused", "user", f.UserID, "run", f.RunID, "err", err)
		}
	}
	m.resend(f.UserID, func() {
		m.mu.Lock()
		_, mine := m.ending[f.RunID]
		delete(m.ending, f.RunID)
		m.mu.Unlock()
		if !mine {
			return // reaped meanwhile: the store has its outcome
		}
		ctx, cancel := context.WithTimeout(m.loopCtx, appendTimeout)
		defer cancel()
		m.record(ctx, f)
	}, recs...)
}

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

// reap ends the runs whose node stopped renewing them. The store hands each
// expired run to exactly one reaper, which announces its end.
func (m *Manager) reap(ctx context.Context) {
	if _, err := m.reapBefore(ctx, m.now()); err != nil {
		m.log.Warn("reap expired runs", "err", err)
	}
}

// EndLeftovers ends, as failed with node_lost, every run the store still has
// as running, whatever its lease, and announces each as the reaper does. It
// is for a store no other process shares (SQLite), called at start before
// any run begins: such runs were cut short by the previous process, whose
// leases may not have expired yet (a kill -9 and a quick restart).
func (m *Manager) EndLeftovers(ctx context.Context) (int, error) {
	return m.reapBefore(ctx, m.now().Add(100*365*24*time.Hour)) // past every lease a process could take
}

// reapBefore ends the running runs whose lease expires before t, a page at
// a time, and announces each.
func (m *Manager) reapBefore(ctx context.Context, t time.Time) (int, error) {
	n := 0
	for {
		cctx, cancel := context.WithTimeout(ctx, m.reapEvery)
		lost, err := m.store.ReapExpired(cctx, store.Reap{Before: t, ErrorCode: string(protocol.CodeNodeLost), ErrorMessage: nodeLostMessage, Limit: 100})
		cancel()
		if err != nil {
			return n, err
		}
		for _, r := range lost {
			m.log.Warn("run lost with its node", "user", r.UserID, "run", r.ID, "node", r.Node)
			m.announceLost(ctx, r)
		}
		n += len(lost)
		if len(lost) < 100 {
			return n, nil
		}
	}
}
