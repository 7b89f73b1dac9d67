package admin

import (
	"context"
	"sync"
	"time"
)

// Memory is the Bus and the Revocations of a single node: actions go to
// this process's Run, revocations live in a map until their TTL.
type Memory struct {
	node string
	ttl  time.Duration
	now  func() time.Time

	mu       sync.Mutex
	subs     map[*memSub]struct{}
	replies  map[string]chan []byte
	revoked  map[string]revocation
	lastScan time.Time
}

type memSub struct {
	mu      sync.Mutex
	pending []Action
	wake    chan struct{}
}

type revocation struct {
	before, until time.Time
}

// NewMemory returns the Bus and Revocations of the single node node,
// revocations kept ttl (DefaultRevocationTTL when <= 0).
func NewMemory(node string, ttl time.Duration) *Memory {
	if ttl <= 0 {
		ttl = DefaultRevocationTTL
	}
	return &Memory{node: node, ttl: ttl, now: time.Now, subs: map[*memSub]struct{}{},
		replies: map[string]chan []byte{}, revoked: map[string]revocation{}}
}

// Publish implements Bus.
func (m *Memory) Publish(ctx context.Context, a Action) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.subs {
		s.mu.Lock()
		s.pending = append(s.pending, a)
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// Run implements Bus.
func (m *Memory) Run(ctx context.Context, apply func(Action)) {
	s := &memSub{wake: make(chan struct{}, 1)}
	m.mu.Lock()
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.subs, s)
		m.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		s.mu.Unlock()
		for _, a := range batch {
			apply(a)
		}
	}
}

func (m *Memory) replyChan(to string) chan []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := m.replies[to]
	if ch == nil {
		ch = make(chan []byte, 1) // one node answers
		m.replies[to] = ch
	}
	return ch
}

// Reply implements Bus.
func (m *Memory) Reply(ctx context.Context, to string, body []byte) error {
	select {
	case m.replyChan(to) <- body:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Collect implements Bus.
func (m *Memory) Collect(ctx context.Context, to string, n int) ([][]byte, error) {
	ch := m.replyChan(to)
	defer func() {
		m.mu.Lock()
		delete(m.replies, to)
		m.mu.Unlock()
	}()
	var out [][]byte
	for len(out) < n {
		select {
		case b := <-ch:
			out = append(out, b)
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	return out, nil
}

// Announce implements Bus: the single node is always listed.
func (m *Memory) Announce(ctx context.Context, node string) { <-ctx.Done() }

// Nodes implements Bus.
func (m *Memory) Nodes(ctx context.Context) ([]string, error) { return []string{m.node}, nil }

// Revoke implements Revocations.
func (m *Memory) Revoke(ctx context.Context, user string, before time.Time) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.purgeLocked(now)
	if r, ok := m.revoked[user]; ok && !r.before.Before(before) {
		return nil
	}
	m.revoked[user] = revocation{before: before, until: now.Add(m.ttl)}
	return nil
}

// Revoked implements Revocations.
func (m *Memory) Revoked(ctx context.Context, user string, issuedAt time.Time) (bool, error) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.revoked[user]
	if !ok || !now.Before(r.until) {
		return false, nil
	}
	return RevokedAt(issuedAt, r.before), nil
}

// purgeLocked drops expired revocations, at most once a minute.
func (m *Memory) purgeLocked(now time.Time) {
	if now.Sub(m.lastScan) < time.Minute {
		return
	}
	m.lastScan = now
	for u, r := range m.revoked {
		if !now.Before(r.until) {
			delete(m.revoked, u)
		}
	}
}
