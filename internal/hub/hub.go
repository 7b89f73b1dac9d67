// Package hub is the single source of truth for live connections: it indexes
// every connection by user, keeps one stream subscription per user with at
// least one local connection, and delivers each event's already-encoded frame
// to all of that user's connections through their bounded outbound queues.
//
// Nothing here blocks a publisher on a client: delivery only appends to a
// queue under that connection's own mutex, and a connection whose queue grows
// past its bound is closed with 4008 (slow consumer). No lock is ever held
// across socket I/O.
package hub

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// ErrTooManyConnections is returned by Register when the user already has the
// maximum number of connections.
var ErrTooManyConnections = errors.New("hub: too many connections for this user")

// Defaults of the contract.
const (
	DefaultMaxConnsPerUser = 10
	DefaultMaxQueueBytes   = 1 << 20
)

// Config configures a Hub.
type Config struct {
	Stream          stream.Stream
	Metrics         *metrics.Metrics
	Logger          *slog.Logger
	MaxConnsPerUser int // 0 → DefaultMaxConnsPerUser
	MaxQueueBytes   int // 0 → DefaultMaxQueueBytes
}

const shardCount = 64

// Hub indexes live connections by user and delivers stream events to them.
type Hub struct {
	stream     stream.Stream
	metrics    *metrics.Metrics
	log        *slog.Logger
	maxPerUser int
	maxQueue   int
	seed       maphash.Seed
	shards     [shardCount]shard
}

type shard struct {
	mu    sync.RWMutex
	users map[string]*userEntry
}

// userEntry is a user's local connections and the stream subscription that
// feeds them. It exists exactly while the user has a local connection.
type userEntry struct {
	sh    *shard // the shard holding the entry, whose lock guards conns
	conns []*Conn
	// sub is the subscription attempt while it runs, and after it failed;
	// nil once subscribed, so an idle user keeps no channel (96 bytes).
	sub    *subscribing
	cancel func() // set under the shard lock once subscribed
}

// subscribing is a user entry's subscription attempt: ready is closed once
// it finished, err is its error, read after ready is closed.
type subscribing struct {
	ready chan struct{}
	err   error
}

// deliver hands ev to every connection of e. It is the handler of e's
// subscription, called by the stream in seq order, and never blocks on a
// socket. Being e's method, not a closure over the user id, it costs the
// subscription 16 bytes, not 32, and no map lookup per event; an entry
// replaced meanwhile has no connection left, and its subscription is ending.
func (e *userEntry) deliver(ev stream.Event) {
	e.sh.mu.RLock()
	for _, c := range e.conns {
		c.deliver(ev)
	}
	e.sh.mu.RUnlock()
}

// New returns a Hub delivering events of cfg.Stream.
func New(cfg Config) *Hub {
	h := &Hub{
		stream:     cfg.Stream,
		metrics:    cfg.Metrics,
		log:        cfg.Logger,
		maxPerUser: cfg.MaxConnsPerUser,
		maxQueue:   cfg.MaxQueueBytes,
		seed:       maphash.MakeSeed(),
	}
	if h.maxPerUser <= 0 {
		h.maxPerUser = DefaultMaxConnsPerUser
	}
	if h.maxQueue <= 0 {
		h.maxQueue = DefaultMaxQueueBytes
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.metrics == nil {
		h.metrics = metrics.New()
	}
	for i := range h.shards {
		h.shards[i].users = make(map[string]*userEntry)
	}
	return h
}

func (h *Hub) shard(user string) *shard {
	return &h.shards[maphash.String(h.seed, user)%shardCount]
}

// NewConn returns a connection of user, not yet registered, that writes
// through t. It starts in the joining state: live events are held until Join
// has placed the replay before them.
func (h *Hub) NewConn(id, user string, t Transport) *Conn {
	c := &Conn{ID: id, User: user, hub: h, t: t, joining: true}
	c.flushFn = c.flush
	return c
}

// Register adds c to its user's connections, subscribing the user's stream
// when c is the user's first local connection. It fails with
// ErrTooManyConnections when the user is at the limit, or with the stream's
// error when the subscription cannot be made.
func (h *Hub) Register(ctx context.Context, c *Conn) error {
	sh := h.shard(c.User)
	sh.mu.Lock()
	e := sh.users[c.User]
	first := e == nil
	if first {
		e = &userEntry{sh: sh, sub: &subscribing{ready: make(chan struct{})}}
		sh.users[c.User] = e
	}
	if len(e.conns) >= h.maxPerUser {
		sh.mu.Unlock()
		return ErrTooManyConnections
	}
	e.conns = append(e.conns, c)
	sub := e.sub // nil: subscribed
	sh.mu.Unlock()

	if first {
		user := c.User
		cancel, err := h.stream.Subscribe(ctx, user, e.deliver)
		sh.mu.Lock()
		e.cancel, sub.err = cancel, err
		orphan := sh.users[user] != e
		close(sub.ready)
		if err == nil {
			// Waiters took sub under the lock: the entry drops it, so an
			// idle user does not keep it for the connection's life.
			e.sub = nil
		}
		sh.mu.Unlock()
		if orphan && cancel != nil {
			cancel()
		}
	}
	if sub != nil {
		select {
		case <-sub.ready:
		case <-ctx.Done():
			h.Unregister(c)
			return ctx.Err()
		}
		if sub.err != nil {
			h.Unregister(c)
			return sub.err
		}
	}
	h.metrics.Connections.Inc()
	h.metrics.ConnectionsTotal.Inc()
	c.registered.Store(true)
	return nil
}

// Unregister removes c; the user's subscription ends with its last local
// connection, so a user with no connection costs the hub nothing.
func (h *Hub) Unregister(c *Conn) {
	sh := h.shard(c.User)
	var cancel func()
	sh.mu.Lock()
	e := sh.users[c.User]
	if e != nil {
		for i, x := range e.conns {
			if x == c {
				last := len(e.conns) - 1
				e.conns[i] = e.conns[last]
				e.conns[last] = nil
				e.conns = e.conns[:last]
				break
			}
		}
		if len(e.conns) == 0 {
			delete(sh.users, c.User)
			cancel = e.cancel // nil while still subscribing: Register cancels the orphan
		}
	}
	sh.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if c.registered.CompareAndSwap(true, false) {
		h.metrics.Connections.Dec()
	}
}

// Count returns the number of local connections of user.
func (h *Hub) Count(user string) int {
	sh := h.shard(user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if e := sh.users[user]; e != nil {
		return len(e.conns)
	}
	return 0
}

// ConnIDs returns the ids of every local connection, by user.
func (h *Hub) ConnIDs() map[string][]string {
	out := make(map[string][]string)
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for user, e := range sh.users {
			ids := make([]string, len(e.conns))
			for j, c := range e.conns {
				ids[j] = c.ID
			}
			out[user] = ids
		}
		sh.mu.RUnlock()
	}
	return out
}

// Users returns the number of users with at least one local connection.
func (h *Hub) Users() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		n += len(sh.users)
		sh.mu.RUnlock()
	}
	return n
}

// Settle waits until every local connection has received (queued) the events
// its user's stream held when Settle was called, or ctx ends. Before a
// shutdown it lets events this node appended, which come back through the
// stream's live delivery (Redis pub/sub), reach its own sockets before they
// close.
func (h *Hub) Settle(ctx context.Context) {
	type target struct {
		c    *Conn
		head uint64
	}
	byUser := map[string][]*Conn{}
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for user, e := range sh.users {
			byUser[user] = append([]*Conn(nil), e.conns...)
		}
		sh.mu.RUnlock()
	}
	var targets []target
	for user, conns := range byUser {
		pos, err := h.stream.Head(ctx, user)
		if err != nil {
			return // the backend is gone: nothing more will come anyway
		}
		for _, c := range conns {
			targets = append(targets, target{c, pos.Head})
		}
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for len(targets) > 0 {
		left := targets[:0]
		for _, tg := range targets {
			tg.c.mu.Lock()
			behind := !tg.c.closing && tg.c.epoch != "" && tg.c.lastSeq < tg.head
			tg.c.mu.Unlock()
			if behind {
				left = append(left, tg)
			}
		}
		targets = left
		if len(targets) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CloseAll closes every connection with code after its queued frames are
// written. It does not wait for the sockets to finish closing.
func (h *Hub) CloseAll(code protocol.CloseCode, reason string) {
	var all []*Conn
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, e := range sh.users {
			all = append(all, e.conns...)
		}
		sh.mu.RUnlock()
	}
	for _, c := range all {
		c.Close(code, reason)
	}
}
