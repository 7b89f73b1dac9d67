package runs

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/protocol"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/stream"
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
	user, runID string
	status      store.RunStatus
	at          time.Time
	code, msg   string
	answer      *store.Message // the assistant message of a completed run
}

// record stores an ended run's outcome. When the store cannot take it, the
// run stays running there, so the lease loop keeps its lease alive and
// retries: otherwise a reaper would announce node_lost after the terminal
// event the user already saw.
func (m *Manager) record(ctx context.Context, f finish) {
	if err := m.store1(ctx, f); err != nil {
		m.log.Warn("store run outcome, will retry", "user", f.user, "run", f.runID, "err", err)
		m.mu.Lock()
		m.unfinished[f.runID] = f
		m.mu.Unlock()
	}
}

// store1 writes f once. A run already ended in the store (reaped, or a
// retry after a lost answer) counts as done.
func (m *Manager) store1(ctx context.Context, f finish) error {
	if f.answer != nil {
		if err := m.store.AddMessage(ctx, *f.answer); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	err := m.store.FinishRun(ctx, f.user, f.runID, f.status, f.at, f.code, f.msg)
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
		delete(m.unfinished, f.runID)
		m.mu.Unlock()
	}
}

// renew extends the leases of the runs active here and of ended runs whose
// outcome is not stored yet. A run the store no longer counts as ours
// (reaped as lost while we could not renew) is abandoned silently: another
// node has announced its end.
func (m *Manager) renew(ctx context.Context) {
	m.retryUnfinished(ctx)
	m.mu.Lock()
	ids := make([]string, 0, len(m.active)+len(m.unfinished))
	for id := range m.active {
		ids = append(ids, id)
	}
	for id := range m.unfinished {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	if len(ids) == 0 {
		return
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

// reap ends the runs whose node stopped renewing them. The store hands each
// expired run to exactly one reaper, which announces its end.
func (m *Manager) reap(ctx context.Context) {
	for {
		cctx, cancel := context.WithTimeout(ctx, m.reapEvery)
		lost, err := m.store.ReapExpired(cctx, m.now(), agent.CodeNodeLost, nodeLostMessage, 100)
		cancel()
		if err != nil {
			m.log.Warn("reap expired runs", "err", err)
			return
		}
		for _, r := range lost {
			announceLost(ctx, m.stream, m.log, r, m.now())
		}
		if len(lost) < 100 {
			return
		}
	}
}

// announceLost appends the agent_error node_lost of a reaped run.
func announceLost(ctx context.Context, s stream.Stream, log *slog.Logger, r store.Run, now time.Time) {
	data, _ := json.Marshal(struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		DurationMS int64  `json:"duration_ms"`
	}{agent.CodeNodeLost, nodeLostMessage, now.Sub(r.StartedAt).Milliseconds()})
	actx, acancel := context.WithTimeout(ctx, appendTimeout)
	_, err := s.Append(actx, r.UserID, stream.Record{Type: protocol.TypeAgentError, ThreadID: r.ThreadID, RunID: r.ID, Data: data})
	acancel()
	if err != nil {
		log.Error("announce lost run", "user", r.UserID, "run", r.ID, "err", err)
	} else {
		log.Warn("run lost with its node", "user", r.UserID, "run", r.ID, "node", r.Node)
	}
}

// EndLeftovers ends, as failed with node_lost, every run st still has as
// running, whatever its lease, and announces each on s. It is for a store
// no other process shares (SQLite), called at start before any run begins:
// such runs were cut short by the previous process, whose leases may not
// have expired yet (a kill -9 and a quick restart).
func EndLeftovers(ctx context.Context, st store.Store, s stream.Stream, log *slog.Logger) (int, error) {
	// Past every lease a process could have taken.
	later := time.Now().Add(100 * 365 * 24 * time.Hour)
	n := 0
	for {
		lost, err := st.ReapExpired(ctx, later, agent.CodeNodeLost, nodeLostMessage, 100)
		if err != nil {
			return n, err
		}
		for _, r := range lost {
			announceLost(ctx, s, log, r, time.Now())
		}
		n += len(lost)
		if len(lost) < 100 {
			return n, nil
		}
	}
}
