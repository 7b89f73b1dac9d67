// Package redis is the per-user connection limit for the whole cluster
// (ws.ConnLimiter), beside the hub's limit on one node: a user's
// connections are a sorted set of connection ids, <prefix>:{u:<id>}:conns
// (redisx.Slots), scored by expiry on Redis's clock. Each node refreshes
// its entries (Keep); those of a node that died expire within the TTL.
package redis

import (
	"context"
	"log/slog"
	"time"

	"github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/redisx"
)

// DefaultTTL is how long a connection entry lives without a refresh.
const DefaultTTL = 90 * time.Second

// Conns counts each user's connections across the cluster: Acquire,
// Release and Refresh are redisx.Slots'.
type Conns struct {
	*redisx.Slots
}

// New returns the cluster-wide connection count on client, entries living
// ttl (DefaultTTL when ttl <= 0) without a refresh.
func New(client rueidis.Client, prefix string, ttl time.Duration) *Conns {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return &Conns{redisx.NewSlots(client, prefix, "conns", ttl)}
}

// Keep refreshes this node's entries, held() (user → connection ids),
// every third of their TTL until ctx is done.
func (c *Conns) Keep(ctx context.Context, held func() map[string][]string, log *slog.Logger) {
	every := c.TTL() / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, every)
			if err := c.Refresh(rctx, held()); err != nil {
				log.Warn("refresh cluster connection counts", "err", err)
			}
			cancel()
		}
	}
}
