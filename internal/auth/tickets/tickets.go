// Package tickets issues and redeems the single-use connect tickets of
// POST /api/v1/ws-ticket: the Store interface and Memory, the store of one
// node. The store many nodes share is in redis/.
package tickets

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"github.com/agentwire/agentwire/internal/auth"
)

// TTL is how long a ticket is valid, per the wire contract.
const TTL = 30 * time.Second

// ticketBytes is the entropy of a ticket; its text is base64url without
// padding, 43 characters.
const ticketBytes = 32

// Store issues and redeems single-use connect tickets. Implementations
// must be safe for concurrent use and consume a ticket atomically: of any
// number of concurrent Redeem calls for one ticket, at most one succeeds.
type Store interface {
	// Issue returns a new ticket standing for c and the time it stops being
	// valid. It fails with auth.ErrExpired when c has already expired and with
	// auth.ErrInvalid when c has no subject.
	Issue(ctx context.Context, c auth.Claims) (ticket string, expiresAt time.Time, err error)
	// Redeem consumes ticket and returns the claims it was issued for. The
	// error wraps auth.ErrMissing for an empty ticket, auth.ErrTicket when the ticket is
	// unknown, used or expired, and auth.ErrExpired when the token behind it has
	// expired since.
	Redeem(ctx context.Context, ticket string) (auth.Claims, error)
	// Peek returns the claims of ticket without consuming it, with Redeem's
	// errors, so that a connect can run the checks that may refuse it
	// before it spends the ticket.
	Peek(ctx context.Context, ticket string) (auth.Claims, error)
}

// Memory is the in-memory Store. Expired tickets are purged as new
// ones are issued, so memory is bounded by the tickets issued in one TTL;
// no goroutine is started.
type Memory struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	tickets map[string]entry
	queue   []issued // in issue order, hence in expiry order
}

type entry struct {
	claims  auth.Claims
	expires time.Time
}

type issued struct {
	ticket  string
	expires time.Time
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty store whose tickets live for ttl (TTL
// when ttl <= 0), reading the time from now (time.Now when nil).
func NewMemory(ttl time.Duration, now func() time.Time) *Memory {
	if ttl <= 0 {
		ttl = TTL
	}
	if now == nil {
		now = time.Now
	}
	return &Memory{ttl: ttl, now: now, tickets: make(map[string]entry)}
}

// Issue returns a new random ticket for c, valid until expiresAt. The claims
// are kept as they are: a connection made with the ticket expires with the
// token, not with the ticket.
func (t *Memory) Issue(ctx context.Context, c auth.Claims) (ticket string, expiresAt time.Time, err error) {
	if c.Subject == "" {
		return "", time.Time{}, fmt.Errorf("%w: no subject", auth.ErrInvalid)
	}
	now := t.now()
	if !now.Before(c.ExpiresAt) {
		return "", time.Time{}, fmt.Errorf("%w: cannot issue a ticket for an expired token", auth.ErrExpired)
	}
	b := make([]byte, ticketBytes)
	if _, err := rand.Read(b); err != nil {
		return "", time.Time{}, fmt.Errorf("auth: ticket: %w", err)
	}
	ticket = base64.RawURLEncoding.EncodeToString(b)
	expiresAt = now.Add(t.ttl)

	t.mu.Lock()
	defer t.mu.Unlock()
	t.purge(now)
	t.tickets[ticket] = entry{claims: c, expires: expiresAt}
	t.queue = append(t.queue, issued{ticket: ticket, expires: expiresAt})
	return ticket, expiresAt, nil
}

// Redeem consumes ticket; see Store.
func (t *Memory) Redeem(ctx context.Context, ticket string) (auth.Claims, error) {
	return t.read(ticket, true)
}

// Peek returns ticket's claims without consuming it; see Store.
func (t *Memory) Peek(ctx context.Context, ticket string) (auth.Claims, error) {
	return t.read(ticket, false)
}

// read returns ticket's claims, consuming the ticket when consume.
func (t *Memory) read(ticket string, consume bool) (auth.Claims, error) {
	if ticket == "" {
		return auth.Claims{}, auth.ErrMissing
	}
	now := t.now()
	t.mu.Lock()
	e, ok := t.tickets[ticket]
	if consume {
		delete(t.tickets, ticket)
	}
	t.mu.Unlock()
	switch {
	case !ok || !now.Before(e.expires):
		return auth.Claims{}, auth.ErrTicket
	case !now.Before(e.claims.ExpiresAt):
		return auth.Claims{}, fmt.Errorf("%w: the token behind the ticket expired", auth.ErrExpired)
	}
	return e.claims, nil
}

// purge drops expired tickets from the head of the queue. Each ticket is
// queued once and dropped once, so the cost is amortised O(1) per Issue.
// t.mu must be held.
func (t *Memory) purge(now time.Time) {
	n := 0
	for n < len(t.queue) && !now.Before(t.queue[n].expires) {
		delete(t.tickets, t.queue[n].ticket)
		n++
	}
	if n == 0 {
		return
	}
	clear(t.queue[:n]) // let the strings go
	t.queue = t.queue[n:]
	if len(t.queue) == 0 {
		t.queue = nil
	}
}
