// Package redis is what the runs of several nodes agree on in Redis: the
// per-user run limit for the whole cluster (NewSlots; a user's runs are a
// sorted set of run ids, <prefix>:{u:<id>}:runs) and the stop requests
// routed to the node that runs a run (Stops, sharded pub/sub on
// <prefix>:{n:<id>}:stop).
//
// The node channels are sharded (SPUBLISH/SSUBSCRIBE) and carry the node's
// hash tag, so on Redis Cluster each lives in one slot: SPUBLISH's count of
// receivers is then the whole cluster's (PUBLISH counts only the
// subscribers of the node it reached), and a subscription follows its
// slot's master through a failover (Redis ends it with sunsubscribe and
// Listen subscribes again).
package redis

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/redisx"
)

// NewSlots returns the cluster-wide run count (runs.Slots) on client: its
// ids are run ids, which the node running them refreshes at every lease
// renewal, so ttl is the run lease's: a dead node's runs stop counting
// about when a reaper may end them.
func NewSlots(client rueidis.Client, prefix string, ttl time.Duration) *redisx.Slots {
	return redisx.NewSlots(client, prefix, "runs", ttl)
}

// Stops carries stop requests for a run to the node that runs it
// (runs.Stops), over Redis pub/sub: each node listens on its own channel
// (Listen) and any node sends to it (Send). A request reaches the node
// within a round trip; one sent while the node is not subscribed is not
// delivered, which Send reports.
type Stops struct {
	client rueidis.Client
	prefix string
}

// NewStops returns the stop channel of the nodes sharing client's Redis.
func NewStops(client rueidis.Client, prefix string) *Stops {
	return &Stops{client: client, prefix: prefix}
}

func (s *Stops) channel(node string) string { return NodeTag(s.prefix, node) + "stop" }

// NodeTag is how the channels of node start: <prefix>:{n:<base64url(node)>}:
// (one hash slot per node, whatever the node id holds).
func NodeTag(prefix, node string) string {
	return prefix + ":{n:" + base64.RawURLEncoding.EncodeToString([]byte(node)) + "}:"
}

type stopRequest struct {
	User  string `json:"u"`
	RunID string `json:"r"`
}

// Send asks node to stop user's run runID. It reports whether a subscriber
// of node's channel received it.
func (s *Stops) Send(ctx context.Context, node, user, runID string) (bool, error) {
	msg, _ := json.Marshal(stopRequest{User: user, RunID: runID})
	n, err := s.client.Do(ctx, s.client.B().Spublish().Channel(s.channel(node)).Message(rueidis.BinaryString(msg)).Build()).AsInt64()
	if err != nil {
		return false, redisx.Wrap(err)
	}
	return n > 0, nil
}

// Listen calls stop for every request sent to node until ctx is done,
// subscribing again (after 100 ms) whenever the connection is lost.
// It returns when ctx is done.
func (s *Stops) Listen(ctx context.Context, node string, stop func(user, runID string)) {
	for ctx.Err() == nil {
		// Receive returns when the connection is lost (or ctx is done).
		_ = s.client.Receive(ctx, s.client.B().Ssubscribe().Channel(s.channel(node)).Build(), func(m rueidis.PubSubMessage) {
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
