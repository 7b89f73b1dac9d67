package redisx

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// Slots counts what each user holds across the cluster — connections or
// runs — in a sorted set of ids scored by expiry on Redis's clock, at
// UserTag(prefix, user)+kind. A node refreshes the entries it holds
// (Refresh, well within TTL); a node that dies leaves entries that expire
// within TTL, so its users regain their full limit by then.
type Slots struct {
	client rueidis.Client
	prefix string
	kind   string // the key's last part, e.g. "conns" or "runs"
	ttl    time.Duration
}

// NewSlots returns the slots of kind whose entries live ttl without a
// refresh.
func NewSlots(client rueidis.Client, prefix, kind string, ttl time.Duration) *Slots {
	return &Slots{client: client, prefix: prefix, kind: kind, ttl: ttl}
}

// TTL is how long an entry lives without a refresh.
func (s *Slots) TTL() time.Duration { return s.ttl }

func (s *Slots) key(user string) string { return UserTag(s.prefix, user) + s.kind }

// acquireScript drops expired entries, then adds the id unless the user is
// at max. Redis's clock scores the entries, so node clocks may differ.
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
func (s *Slots) Acquire(ctx context.Context, user, id string, max int) (bool, error) {
	n, err := acquireScript.Exec(ctx, s.client, []string{s.key(user)},
		[]string{id, strconv.Itoa(max), strconv.FormatInt(s.ttl.Milliseconds(), 10)}).AsInt64()
	if err != nil {
		return false, Wrap(err)
	}
	return n == 1, nil
}

// Release forgets id of user.
func (s *Slots) Release(ctx context.Context, user, id string) error {
	return Wrap(s.client.Do(ctx, s.client.B().Zrem().Key(s.key(user)).Member(id).Build()).Error())
}

// Refresh keeps the entries still held, given as user → ids, in one
// pipelined round of script calls.
func (s *Slots) Refresh(ctx context.Context, held map[string][]string) error {
	if len(held) == 0 {
		return nil
	}
	ttl := strconv.FormatInt(s.ttl.Milliseconds(), 10)
	execs := make([]rueidis.LuaExec, 0, len(held))
	for user, ids := range held {
		execs = append(execs, rueidis.LuaExec{Keys: []string{s.key(user)}, Args: append([]string{ttl}, ids...)})
	}
	for _, r := range refreshScript.ExecMulti(ctx, s.client, execs...) {
		if err := r.Error(); err != nil {
			return Wrap(err)
		}
	}
	return nil
}
