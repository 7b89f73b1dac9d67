// Package redis is the tickets.Store every node shares: a ticket is a key
// that GETDEL consumes, so of any number of concurrent redeems on any nodes
// exactly one succeeds. The key is <prefix>:ticket:<sha256(ticket)>, so a
// key dump never holds a usable ticket.
package redis

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/auth/tickets"
	"github.com/agentwire/agentwire/internal/redisx"
)

// Store is a tickets.Store on Redis. Errors talking to Redis wrap
// redisx.ErrUnavailable.
type Store struct {
	client rueidis.Client
	prefix string
	ttl    time.Duration
}

var _ tickets.Store = (*Store)(nil)

// New returns a ticket store on client whose tickets live ttl (tickets.TTL
// when ttl <= 0). The client stays its owner's to close.
func New(client rueidis.Client, prefix string, ttl time.Duration) *Store {
	if ttl <= 0 {
		ttl = tickets.TTL
	}
	return &Store{client: client, prefix: prefix, ttl: ttl}
}

type ticketValue struct {
	Sub string `json:"sub"`
	Exp int64  `json:"exp"`           // unix ms of the token's exp; 0 when none
	Iat int64  `json:"iat,omitempty"` // unix ms of the token's iat; 0 when none
}

func (t *Store) key(ticket string) string {
	sum := sha256.Sum256([]byte(ticket))
	return t.prefix + ":ticket:" + hex.EncodeToString(sum[:])
}

// Issue implements tickets.Store.
func (t *Store) Issue(ctx context.Context, c auth.Claims) (string, time.Time, error) {
	now := time.Now()
	switch {
	case c.Subject == "":
		return "", time.Time{}, fmt.Errorf("%w: no subject", auth.ErrInvalid)
	case !c.ExpiresAt.IsZero() && !now.Before(c.ExpiresAt):
		return "", time.Time{}, auth.ErrExpired
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", time.Time{}, err
	}
	ticket := base64.RawURLEncoding.EncodeToString(b[:])
	v := ticketValue{Sub: c.Subject}
	if !c.ExpiresAt.IsZero() {
		v.Exp = c.ExpiresAt.UnixMilli()
	}
	if !c.IssuedAt.IsZero() {
		v.Iat = c.IssuedAt.UnixMilli()
	}
	val, _ := json.Marshal(v)
	cmd := t.client.B().Set().Key(t.key(ticket)).Value(rueidis.BinaryString(val)).Nx().Px(t.ttl).Build()
	if err := t.client.Do(ctx, cmd).Error(); err != nil {
		return "", time.Time{}, redisx.Wrap(err)
	}
	return ticket, now.Add(t.ttl), nil
}

// Redeem implements tickets.Store.
func (t *Store) Redeem(ctx context.Context, ticket string) (auth.Claims, error) {
	return t.read(ctx, ticket, true)
}

// Peek implements tickets.Store.
func (t *Store) Peek(ctx context.Context, ticket string) (auth.Claims, error) {
	return t.read(ctx, ticket, false)
}

// read reads ticket's claims, consuming the ticket (GETDEL) when consume.
func (t *Store) read(ctx context.Context, ticket string, consume bool) (auth.Claims, error) {
	if ticket == "" {
		return auth.Claims{}, auth.ErrMissing
	}
	if len(ticket) > 128 {
		return auth.Claims{}, auth.ErrTicket
	}
	cmd := t.client.B().Get().Key(t.key(ticket)).Build()
	if consume {
		cmd = t.client.B().Getdel().Key(t.key(ticket)).Build()
	}
	raw, err := t.client.Do(ctx, cmd).AsBytes()
	if rueidis.IsRedisNil(err) {
		return auth.Claims{}, auth.ErrTicket
	}
	if err != nil {
		return auth.Claims{}, redisx.Wrap(err)
	}
	var v ticketValue
	if err := json.Unmarshal(raw, &v); err != nil || v.Sub == "" {
		return auth.Claims{}, auth.ErrTicket
	}
	c := auth.Claims{Subject: v.Sub}
	if v.Iat != 0 {
		c.IssuedAt = time.UnixMilli(v.Iat)
	}
	if v.Exp != 0 {
		c.ExpiresAt = time.UnixMilli(v.Exp)
		if !time.Now().Before(c.ExpiresAt) {
			return auth.Claims{}, auth.ErrExpired
		}
	}
	return c, nil
}
