// Package admin is the cluster-wide side of the admin API (docs/PROTOCOL.md
// section 16): the actions every node applies to its own connections
// (disconnect a user, close the connections of revoked tokens, report a
// user's connections), the Bus that carries them to every node, and the
// Revocations every connect and request is checked against.
//
// A single node uses the in-process Memory; nodes sharing Redis use
// admin/redis, where the actions are a capped Redis stream every node tails
// (so a node whose connection to Redis broke for a moment reads what it
// missed, in order) and revocations are per-user keys.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/protocol"
)

// Kinds of Action.
const (
	// KindDisconnect closes every connection of User with 4003.
	KindDisconnect = "disconnect"
	// KindRevoke closes the connections of User whose token was issued
	// before Before (or has no iat) with 4003; the revocation itself is
	// already stored (Revocations) when it is published.
	KindRevoke = "revoke"
	// KindListConns asks every node for its connections of User; each
	// answers on Reply (Bus.Reply), even with none.
	KindListConns = "list_connections"
)

// Action is one admin action every node applies.
type Action struct {
	Kind   string `json:"kind"`
	User   string `json:"user"`
	Before int64  `json:"before,omitempty"` // KindRevoke: unix ms
	Reply  string `json:"reply,omitempty"`  // KindListConns: where to answer
	By     string `json:"by,omitempty"`     // the admin key's name, for the logs
}

// Bus carries actions to every node of the cluster, the publisher's own
// included, and brings answers back.
type Bus interface {
	// Publish sends a to every node.
	Publish(ctx context.Context, a Action) error
	// Run calls apply for every action published from now on, in order,
	// until ctx is done.
	Run(ctx context.Context, apply func(Action))
	// Reply sends one node's answer to the request that named to.
	Reply(ctx context.Context, to string, body []byte) error
	// Collect waits for n answers to to, or until ctx is done, and returns
	// those that came.
	Collect(ctx context.Context, to string, n int) ([][]byte, error)
	// Announce keeps node listed among the live nodes until ctx is done;
	// Nodes lists them.
	Announce(ctx context.Context, node string)
	Nodes(ctx context.Context) ([]string, error)
}

// Revocations stores, per user, the time before which the user's tokens
// are revoked.
type Revocations interface {
	// Revoke refuses user's tokens issued before before (a later call
	// with an earlier time changes nothing).
	Revoke(ctx context.Context, user string, before time.Time) error
	// Revoked reports whether a token of user issued at issuedAt (zero:
	// without iat) is revoked.
	Revoked(ctx context.Context, user string, issuedAt time.Time) (bool, error)
}

// DefaultRevocationTTL is how long a revocation is kept: tokens that live
// longer than this after their revocation must be revoked again.
const DefaultRevocationTTL = 30 * 24 * time.Hour

// RevokedAt reports whether a token issued at issuedAt (zero: no iat) falls
// under a revocation of the tokens issued before before (zero: none).
func RevokedAt(issuedAt, before time.Time) bool {
	if before.IsZero() {
		return false
	}
	return issuedAt.IsZero() || issuedAt.UnixMilli() < before.UnixMilli()
}

// Conn is one connection as the admin API lists it: the wire shape itself.
type Conn = protocol.AdminConnection

// NodeReply is a node's answer to KindListConns.
type NodeReply struct {
	Node  string `json:"node"`
	Conns []Conn `json:"connections"`
}

// Node applies the actions of the Bus to this node's connections.
type Node struct {
	ID  string
	Hub *hub.Hub
	Bus Bus
	Log *slog.Logger
}

// Run applies every action published from now on until ctx is done.
func (n *Node) Run(ctx context.Context) {
	n.Bus.Run(ctx, func(a Action) { n.apply(ctx, a) })
}

func (n *Node) apply(ctx context.Context, a Action) {
	switch a.Kind {
	case KindDisconnect:
		if k := n.Hub.CloseUser(a.User, nil, protocol.CloseDisconnected, "disconnected by admin"); k > 0 {
			n.Log.Info("admin: connections closed", "user", a.User, "count", k, "reason", "disconnect", "by", a.By)
		}
	case KindRevoke:
		before := time.UnixMilli(a.Before)
		if k := n.Hub.CloseUser(a.User, func(c *hub.Conn) bool { return c.IssuedBefore(before) },
			protocol.CloseDisconnected, "token revoked"); k > 0 {
			n.Log.Info("admin: connections closed", "user", a.User, "count", k, "reason", "revoke", "by", a.By)
		}
	case KindListConns:
		if a.Reply == "" {
			return
		}
		rep := NodeReply{Node: n.ID, Conns: []Conn{}}
		for _, c := range n.Hub.UserConns(a.User) {
			i := c.Info()
			rep.Conns = append(rep.Conns, Conn{ID: i.ID, Node: n.ID, Transport: i.Transport, ConnectedAt: i.Since, LastSeq: i.LastSeq, Epoch: i.Epoch})
		}
		body, _ := json.Marshal(rep)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if err := n.Bus.Reply(rctx, a.Reply, body); err != nil {
			n.Log.Warn("admin: answer connection list", "err", err)
		}
	}
}

// ErrNoNodes means no live node is listed (none announced itself).
var ErrNoNodes = errors.New("admin: no live node listed")

// ListConns asks every live node for its connections of user and returns
// them, with the nodes asked and those that answered within ctx.
func ListConns(ctx context.Context, bus Bus, user, replyTo string) (conns []Conn, asked, answered []string, err error) {
	asked, err = bus.Nodes(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(asked) == 0 {
		return nil, nil, nil, ErrNoNodes
	}
	if err := bus.Publish(ctx, Action{Kind: KindListConns, User: user, Reply: replyTo}); err != nil {
		return nil, asked, nil, err
	}
	bodies, err := bus.Collect(ctx, replyTo, len(asked))
	if err != nil && len(bodies) == 0 {
		return nil, asked, nil, err
	}
	conns = []Conn{}
	for _, b := range bodies {
		var r NodeReply
		if json.Unmarshal(b, &r) != nil {
			continue
		}
		answered = append(answered, r.Node)
		conns = append(conns, r.Conns...)
	}
	return conns, asked, answered, nil
}
