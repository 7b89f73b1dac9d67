// Package cluster holds what several agentwire nodes must agree on beyond
// the stream and the store, kept in the Redis they share: single-use connect
// tickets and the per-user connection limit.
//
// Keys share the stream's layout: <prefix>:{u:<base64url(user)>}:conns for a
// user's connections (one hash slot per user on Redis Cluster) and
// <prefix>:ticket:<sha256(ticket)> for tickets, so a key dump never holds a
// usable ticket.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/auth"
)

// ErrUnavailable wraps errors talking to Redis.
var ErrUnavailable = errors.New("cluster: redis unavailable")

// Connect dials Redis at url (redis://…). A Redis that is down at start is
// not an error: rueidis reconnects, and calls fail with ErrUnavailable until
// it answers.
func Connect(url string) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("cluster: bad redis URL: %w", err)
	}
	opt.Dialer.Timeout = 2 * time.Second
	opt.DisableCache = true
	opt.ForceSingleClient = true // a standalone Redis or a proxy: a client even while it is down
	c, err := rueidis.NewClient(opt)
	if c == nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return c, nil
}

func unavailable(err error) error {
	if err == nil || rueidis.IsRedisNil(err) {
		return err
	}
	var re *rueidis.RedisError
	if errors.As(err, &re) {
		return fmt.Errorf("cluster: redis: %w", err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// Tickets is an auth.TicketStore shared by every node: a ticket is a key
// that GETDEL consumes, so of any number of concurrent redeems on any nodes
// exactly one succeeds.
type Tickets struct {
	client rueidis.Client
	prefix string
	ttl    time.Duration
}

var _ auth.TicketStore = (*Tickets)(nil)

// NewTickets returns a ticket store whose tickets live ttl (auth.TicketTTL
// when ttl <= 0).
func NewTickets(client rueidis.Client, prefix string, ttl time.Duration) *Tickets {
	if ttl <= 0 {
		ttl = auth.TicketTTL
	}
	return &Tickets{client: client, prefix: prefix, ttl: ttl}
}

type ticketValue struct {
	Sub string `json:"sub"`
	Exp int64  `json:"exp"` // unix ms of the token's exp; 0 when none
}

func (t *Tickets) key(ticket string) string {
	sum := sha256.Sum256([]byte(ticket))
	return t.prefix + ":ticket:" + hex.EncodeToString(sum[:])
}

// Issue implements auth.TicketStore.
func (t *Tickets) Issue(ctx context.Context, c auth.Claims) (string, time.Time, error) {
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
	val, _ := json.Marshal(v)
	cmd := t.client.B().Set().Key(t.key(ticket)).Value(rueidis.BinaryString(val)).Nx().Px(t.ttl).Build()
	if err := t.client.Do(ctx, cmd).Error(); err != nil {
		return "", time.Time{}, unavailable(err)
	}
	return ticket, now.Add(t.ttl), nil
}

// Redeem implements auth.TicketStore.
func (t *Tickets) Redeem(ctx context.Context, ticket string) (auth.Claims, error) {
	return t.read(ctx, ticket, true)
}

// Peek implements auth.TicketStore.
func (t *Tickets) Peek(ctx context.Context, ticket string) (auth.Claims, error) {
	return t.read(ctx, ticket, false)
}

// read reads ticket's claims, consuming the ticket (GETDEL) when consume.
func (t *Tickets) read(ctx context.Context, ticket string, consume bool) (auth.Claims, error) {
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
		return auth.Claims{}, unavailable(err)
	}
	var v ticketValue
	if err := json.Unmarshal(raw, &v); err != nil || v.Sub == "" {
		return auth.Claims{}, auth.ErrTicket
	}
	c := auth.Claims{Subject: v.Sub}
	if v.Exp != 0 {
		c.ExpiresAt = time.UnixMilli(v.Exp)
		if !time.Now().Before(c.ExpiresAt) {
			return auth.Claims{}, auth.ErrExpired
		}
	}
	return c, nil
}

// Conns counts each user's connections across the cluster in a sorted set
// of connection ids scored by expiry. A node refreshes the entries of its
// live connections (Refresh, every TTL/3); a node that dies leaves entries
// that expire within TTL, so its users regain their full limit by then.
type Conns struct {
	client rueidis.Client
	prefix string
	ttl    time.Duration
}

// DefaultConnTTL is how long a connection entry lives without a refresh.
const DefaultConnTTL = 90 * time.Second

// NewConns returns the cluster-wide connection counter.
func NewConns(client rueidis.Client, prefix string, ttl time.Duration) *Conns {
	if ttl <= 0 {
		ttl = DefaultConnTTL
	}
	return &Conns{client: client, prefix: prefix, ttl: ttl}
}

// TTL is how long an entry lives without a refresh.
func (c *Conns) TTL() time.Duration { return c.ttl }

func (c *Conns) key(user string) string {
	return c.prefix + ":{u:" + base64.RawURLEncoding.EncodeToString([]byte(user)) + "}:conns"
}

// acquireScript drops expired entries, then adds the connection unless the
// user is at max. Redis's clock scores the entries, so node clocks may differ.
var acquireScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
`)

// refreshScript moves the given entries' expiry forward, only for entries
// that still exist (XX), and keeps the key alive.
var refreshScript = rueidis.NewLuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
`)

// Acquire records connection id of user unless the user already has max
// live connections in the cluster; it reports whether it did.
func (c *Conns) Acquire(ctx context.Context, user, id string, max int) (bool, error) {
	n, err := acquireScript.Exec(ctx, c.client, []string{c.key(user)},
		[]string{id, strconv.Itoa(max), strconv.FormatInt(c.ttl.Milliseconds(), 10)}).AsInt64()
	if err != nil {
		return false, unavailable(err)
	}
	return n == 1, nil
}

// Release forgets connection id of user.
func (c *Conns) Release(ctx context.Context, user, id string) error {
	return unavailable(c.client.Do(ctx, c.client.B().Zrem().Key(c.key(user)).Member(id).Build()).Error())
}

// Refresh keeps the entries of live connections, given as user → ids, in
// one pipelined round of script calls.
func (c *Conns) Refresh(ctx context.Context, live map[string][]string) error {
	if len(live) == 0 {
		return nil
	}
	ttl := strconv.FormatInt(c.ttl.Milliseconds(), 10)
	execs := make([]rueidis.LuaExec, 0, len(live))
	for user, ids := range live {
		execs = append(execs, rueidis.LuaExec{Keys: []string{c.key(user)}, Args: append([]string{ttl}, ids...)})
	}
	for _, r := range refreshScript.ExecMulti(ctx, c.client, execs...) {
		if err := r.Error(); err != nil {
			return unavailable(err)
		}
	}
	return nil
}
