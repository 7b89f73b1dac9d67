// Package cluster holds what several agentwire nodes must agree on beyond
// the stream and the store, kept in the Redis they share: single-use connect
// tickets, the per-user connection and run limits, and stop requests for a
// run sent to the node that runs it.
//
// Keys share the stream's layout: <prefix>:{u:<base64url(user)>}:conns for a
// user's connections, <prefix>:{u:<base64url(user)>}:runs for their runs
// (one hash slot per user on Redis Cluster), <prefix>:node:<id>:stop for the
// pub/sub channel of a node's stop requests and
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

// Slots counts what each user holds across the cluster — connections
// (NewConns) or runs (NewRuns) — in a sorted set of ids scored by expiry. A
// node refreshes the entries it holds (Refresh, well within TTL); a node
// that dies leaves entries that expire within TTL, so its users regain
// their full limit by then.
type Slots struct {
	client rueidis.Client
	prefix string
	kind   string // the key's last part: "conns" or "runs"
	ttl    time.Duration
}

// DefaultConnTTL is how long a connection entry lives without a refresh.
const DefaultConnTTL = 90 * time.Second

// NewConns returns the cluster-wide connection counter (DefaultConnTTL when
// ttl <= 0).
func NewConns(client rueidis.Client, prefix string, ttl time.Duration) *Slots {
	if ttl <= 0 {
		ttl = DefaultConnTTL
	}
	return &Slots{client: client, prefix: prefix, kind: "conns", ttl: ttl}
}

// NewRuns returns the cluster-wide run counter: its ids are run ids, which
// the node running them refreshes at every lease renewal; ttl is the run
// lease's.
func NewRuns(client rueidis.Client, prefix string, ttl time.Duration) *Slots {
	if ttl <= 0 {
		ttl = DefaultConnTTL
	}
	return &Slots{client: client, prefix: prefix, kind: "runs", ttl: ttl}
}

// TTL is how long an entry lives without a refresh.
func (c *Slots) TTL() time.Duration { return c.ttl }

func (c *Slots) key(user string) string {
	return c.prefix + ":{u:" + base64.RawURLEncoding.EncodeToString([]byte(user)) + "}:" + c.kind
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

// Acquire records id of user unless the user already holds max live
// entries in the cluster; it reports whether it did.
func (c *Slots) Acquire(ctx context.Context, user, id string, max int) (bool, error) {
	n, err := acquireScript.Exec(ctx, c.client, []string{c.key(user)},
		[]string{id, strconv.Itoa(max), strconv.FormatInt(c.ttl.Milliseconds(), 10)}).AsInt64()
	if err != nil {
		return false, unavailable(err)
	}
	return n == 1, nil
}

// Release forgets id of user.
func (c *Slots) Release(ctx context.Context, user, id string) error {
	return unavailable(c.client.Do(ctx, c.client.B().Zrem().Key(c.key(user)).Member(id).Build()).Error())
}

// Refresh keeps the entries still held, given as user → ids, in one
// pipelined round of script calls.
func (c *Slots) Refresh(ctx context.Context, live map[string][]string) error {
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

// Stops carries stop requests for a run to the node that runs it, over
// Redis pub/sub: each node listens on its own channel (Listen) and any node
// sends to it (Send). A request reaches the node within a round trip; one
// sent while the node is not subscribed is not delivered, which Send
// reports.
type Stops struct {
	client rueidis.Client
	prefix string
}

// NewStops returns the stop channel of the nodes sharing client.
func NewStops(client rueidis.Client, prefix string) *Stops {
	return &Stops{client: client, prefix: prefix}
}

func (s *Stops) channel(node string) string { return s.prefix + ":node:" + node + ":stop" }

type stopRequest struct {
	User  string `json:"u"`
	RunID string `json:"r"`
}

// Send asks node to stop user's run runID. It reports whether a subscriber
// of node's channel received it.
func (s *Stops) Send(ctx context.Context, node, user, runID string) (bool, error) {
	msg, _ := json.Marshal(stopRequest{User: user, RunID: runID})
	n, err := s.client.Do(ctx, s.client.B().Publish().Channel(s.channel(node)).Message(rueidis.BinaryString(msg)).Build()).AsInt64()
	if err != nil {
		return false, unavailable(err)
	}
	return n > 0, nil
}

// Listen calls stop for every request sent to node until ctx is done,
// subscribing again (after 100 ms) whenever the connection is lost.
// It returns when ctx is done.
func (s *Stops) Listen(ctx context.Context, node string, stop func(user, runID string)) {
	for ctx.Err() == nil {
		// Receive returns when the connection is lost (or ctx is done).
		_ = s.client.Receive(ctx, s.client.B().Subscribe().Channel(s.channel(node)).Build(), func(m rueidis.PubSubMessage) {
			var r stopRequest
			if json.Unmarshal([]byte(m.Message), &r) == nil && r.User != "" && r.RunID != "" {
				stop(r.User, r.RunID)
			}
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
