// Package redis is the admin API's Bus and Revocations for nodes sharing
// Redis (admin.Memory is the single node's):
//
//   - actions are entries of one capped stream, <prefix>:admin:log (XADD
//     MAXLEN ~ 1000), which every node tails with a blocking XREAD from the
//     last id it read: an action reaches every node at once, in order, and
//     a node whose connection broke for a moment reads what it missed;
//   - answers to a request are pushed on <prefix>:admin:reply:<id>, a list
//     that expires after a minute, and collected with BLPOP;
//   - live nodes are the members of the sorted set <prefix>:admin:nodes,
//     scored by when their listing expires (each node refreshes its own);
//   - a user's revocation is <prefix>:{u:<id>}:revoked, the unix ms before
//     which the user's tokens are refused, kept for the revocation TTL.
//
// Every command names one key, so it runs unchanged on Redis Cluster.
package redis

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/admin"
	"github.com/agentwire/agentwire/internal/redisx"
)

// Listing bounds.
const (
	logMaxLen = 1000
	nodeTTL   = 15 * time.Second
	replyTTL  = 60 // seconds
	readBlock = time.Second
)

// Bus is admin.Bus and admin.Revocations on Redis.
type Bus struct {
	client rueidis.Client
	prefix string
	ttl    time.Duration
	log    *slog.Logger
}

// New returns the admin Bus on client, revocations kept ttl
// (admin.DefaultRevocationTTL when <= 0).
func New(client rueidis.Client, prefix string, ttl time.Duration, log *slog.Logger) *Bus {
	if ttl <= 0 {
		ttl = admin.DefaultRevocationTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Bus{client: client, prefix: prefix, ttl: ttl, log: log}
}

func (b *Bus) logKey() string             { return b.prefix + ":admin:log" }
func (b *Bus) nodesKey() string           { return b.prefix + ":admin:nodes" }
func (b *Bus) replyKey(id string) string  { return b.prefix + ":admin:reply:" + id }
func (b *Bus) revokedKey(u string) string { return redisx.UserTag(b.prefix, u) + "revoked" }

// Publish implements admin.Bus.
func (b *Bus) Publish(ctx context.Context, a admin.Action) error {
	msg, err := json.Marshal(a)
	if err != nil {
		return err
	}
	cmd := b.client.B().Xadd().Key(b.logKey()).Maxlen().Almost().Threshold(strconv.Itoa(logMaxLen)).Id("*").
		FieldValue().FieldValue("a", rueidis.BinaryString(msg)).Build()
	return redisx.Wrap(b.client.Do(ctx, cmd).Error())
}

// Run implements admin.Bus: it tails the log from its current end.
func (b *Bus) Run(ctx context.Context, apply func(admin.Action)) {
	last := ""
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		if last == "" {
			// Start at the log's current end: earlier actions are older
			// than this node's connections.
			id, err := b.lastID(ctx)
			if err != nil {
				b.wait(ctx, &backoff, err)
				continue
			}
			last = id
		}
		res, err := b.client.Do(ctx, b.client.B().Xread().Count(100).Block(readBlock.Milliseconds()).Streams().
			Key(b.logKey()).Id(last).Build()).AsXRead()
		if rueidis.IsRedisNil(err) {
			continue // nothing within the block time
		}
		if err != nil {
			b.wait(ctx, &backoff, err)
			continue
		}
		backoff = 50 * time.Millisecond
		for _, e := range res[b.logKey()] {
			last = e.ID
			var a admin.Action
			if json.Unmarshal([]byte(e.FieldValues["a"]), &a) != nil {
				continue
			}
			apply(a)
		}
	}
}

// lastID is the id of the log's newest entry, "0-0" when it is empty.
func (b *Bus) lastID(ctx context.Context) (string, error) {
	es, err := b.client.Do(ctx, b.client.B().Xrevrange().Key(b.logKey()).End("+").Start("-").Count(1).Build()).AsXRange()
	if err != nil {
		return "", err
	}
	if len(es) == 0 {
		return "0-0", nil
	}
	return es[0].ID, nil
}

func (b *Bus) wait(ctx context.Context, backoff *time.Duration, err error) {
	if ctx.Err() != nil {
		return
	}
	b.log.Warn("admin: reading the action log, retrying", "err", err)
	select {
	case <-ctx.Done():
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, 2*time.Second)
}

// Reply implements admin.Bus.
func (b *Bus) Reply(ctx context.Context, to string, body []byte) error {
	key := b.replyKey(to)
	for _, r := range b.client.DoMulti(ctx,
		b.client.B().Rpush().Key(key).Element(rueidis.BinaryString(body)).Build(),
		b.client.B().Expire().Key(key).Seconds(replyTTL).Build()) {
		if err := r.Error(); err != nil {
			return redisx.Wrap(err)
		}
	}
	return nil
}

// Collect implements admin.Bus.
func (b *Bus) Collect(ctx context.Context, to string, n int) ([][]byte, error) {
	key := b.replyKey(to)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		b.client.Do(dctx, b.client.B().Del().Key(key).Build())
	}()
	var out [][]byte
	for len(out) < n {
		wait := time.Second
		if d, ok := ctx.Deadline(); ok {
			wait = time.Until(d)
		}
		if wait <= 0 {
			return out, context.DeadlineExceeded
		}
		vals, err := b.client.Do(ctx, b.client.B().Blpop().Key(key).Timeout(max(wait.Seconds(), 0.01)).Build()).AsStrSlice()
		if rueidis.IsRedisNil(err) {
			continue // timed out: the deadline check above ends the wait
		}
		if err != nil {
			return out, redisx.Wrap(err)
		}
		if len(vals) == 2 {
			out = append(out, []byte(vals[1]))
		}
	}
	return out, nil
}

// Announce implements admin.Bus: node is listed until nodeTTL after its
// last refresh, refreshed every third of it, and unlisted when ctx ends.
func (b *Bus) Announce(ctx context.Context, node string) {
	t := time.NewTicker(nodeTTL / 3)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, nodeTTL/3)
		exp := time.Now().Add(nodeTTL).UnixMilli()
		for _, r := range b.client.DoMulti(rctx,
			b.client.B().Zadd().Key(b.nodesKey()).ScoreMember().ScoreMember(float64(exp), node).Build(),
			b.client.B().Zremrangebyscore().Key(b.nodesKey()).Min("-inf").Max(strconv.FormatInt(time.Now().UnixMilli(), 10)).Build()) {
			if err := r.Error(); err != nil && ctx.Err() == nil {
				b.log.Warn("admin: list this node", "err", err)
				break
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			b.client.Do(dctx, b.client.B().Zrem().Key(b.nodesKey()).Member(node).Build())
			cancel()
			return
		case <-t.C:
		}
	}
}

// Nodes implements admin.Bus.
func (b *Bus) Nodes(ctx context.Context) ([]string, error) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	nodes, err := b.client.Do(ctx, b.client.B().Zrangebyscore().Key(b.nodesKey()).Min("("+now).Max("+inf").Build()).AsStrSlice()
	return nodes, redisx.Wrap(err)
}

// revokeScript keeps the later of the stored and the given time, and
// extends the key's life.
var revokeScript = rueidis.NewLuaScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = tonumber(ARGV[1])
if t > cur then cur = t end
redis.call('SET', KEYS[1], cur, 'PX', ARGV[2])
return cur
`)

// Revoke implements admin.Revocations.
func (b *Bus) Revoke(ctx context.Context, user string, before time.Time) error {
	return redisx.Wrap(revokeScript.Exec(ctx, b.client, []string{b.revokedKey(user)},
		[]string{strconv.FormatInt(before.UnixMilli(), 10), strconv.FormatInt(b.ttl.Milliseconds(), 10)}).Error())
}

// Revoked implements admin.Revocations.
func (b *Bus) Revoked(ctx context.Context, user string, issuedAt time.Time) (bool, error) {
	ms, err := b.client.Do(ctx, b.client.B().Get().Key(b.revokedKey(user)).Build()).AsInt64()
	if rueidis.IsRedisNil(err) {
		return false, nil
	}
	if err != nil {
		return false, redisx.Wrap(err)
	}
	return admin.RevokedAt(issuedAt, time.UnixMilli(ms)), nil
}
