package redis

import (
	"context"
	"time"

	rueidis "github.com/redis/rueidis"
)

// subscribeBatch bounds the channels of one SSUBSCRIBE when resubscribing.
const subscribeBatch = 512

// runPubSub owns the node's pub/sub connection: it (re)connects, sends the
// queued (un)subscriptions in order, resubscribes every channel after a
// reconnect and then makes every subscription catch up from the log (pub/sub
// is at-most-once: whatever was published while the connection was down is
// read back with Since). It also keeps subscribed users' keys alive.
func (s *Stream) runPubSub() {
	var (
		dc      rueidis.DedicatedClient
		release func()
		lost    <-chan error
	)
	drop := func() {
		if release != nil {
			release()
		}
		dc, release, lost = nil, nil, nil
	}
	defer drop()
	keepEvery := max((s.maxAge+keyMargin)/3, time.Second)
	keep := time.NewTicker(keepEvery)
	defer keep.Stop()
	backoff := 50 * time.Millisecond
	for {
		if dc == nil {
			if s.connectPubSub(&dc, &release, &lost) {
				backoff = 50 * time.Millisecond
			} else {
				drop()
				s.failOps()
				select {
				case <-s.done:
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 2*time.Second)
				continue
			}
		}
		select {
		case <-s.done:
			return
		case err := <-lost:
			if s.closed.Load() {
				return
			}
			s.log.Warn("redis stream: pub/sub connection lost, reconnecting", "err", err)
			drop()
		case <-s.opWake:
			if !s.sendOps(dc) {
				drop()
			}
		case <-keep.C:
			s.keepAlive()
		}
	}
}

// connectPubSub makes a new dedicated connection, subscribes every channel
// of the map and kicks every subscription to catch up.
func (s *Stream) connectPubSub(dc *rueidis.DedicatedClient, release *func(), lost *<-chan error) bool {
	c, cancel := s.client.Dedicate()
	*dc, *release = c, cancel
	*lost = c.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: s.onMessage})

	s.mu.Lock()
	ops := s.ops
	s.ops = nil
	chans := make([]string, 0, len(s.subs))
	subs := make([]*userSub, 0, len(s.subs))
	for ch, u := range s.subs {
		chans = append(chans, ch)
		subs = append(subs, u)
	}
	s.mu.Unlock()

	var err error
	for i := 0; i < len(chans) && err == nil; i += subscribeBatch {
		ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
		err = c.Do(ctx, c.B().Ssubscribe().Channel(chans[i:min(i+subscribeBatch, len(chans))]...).Build()).Error()
		cancel()
	}
	if err == nil {
		// Every channel in the map is subscribed: queued unsubscriptions are
		// moot on a fresh connection, queued subscriptions are done.
		err = c.Do(s.ctx, c.B().Ping().Build()).Error()
	}
	for _, op := range ops {
		if op.done != nil {
			op.done <- err
		}
	}
	if err != nil {
		if !s.closed.Load() {
			s.log.Warn("redis stream: pub/sub connect failed", "err", err)
		}
		return false
	}
	for _, u := range subs {
		s.kick(u)
	}
	return true
}

// sendOps sends the queued (un)subscriptions in one pipeline, in order.
func (s *Stream) sendOps(c rueidis.DedicatedClient) bool {
	s.mu.Lock()
	ops := s.ops
	s.ops = nil
	s.mu.Unlock()
	if len(ops) == 0 {
		return true
	}
	cmds := make(rueidis.Commands, len(ops))
	for i, op := range ops {
		if op.unsub {
			cmds[i] = c.B().Sunsubscribe().Channel(op.channel).Build()
		} else {
			cmds[i] = c.B().Ssubscribe().Channel(op.channel).Build()
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	ok := true
	for i, r := range c.DoMulti(ctx, cmds...) {
		err := r.Error()
		if err != nil {
			if _, isRedis := rueidis.IsRedisErr(err); !isRedis {
				ok = false
			}
		}
		if ops[i].done != nil {
			ops[i].done <- err
		}
	}
	return ok
}

// failOps fails queued subscriptions while there is no connection.
func (s *Stream) failOps() {
	s.mu.Lock()
	ops := s.ops
	s.ops = nil
	s.mu.Unlock()
	for _, op := range ops {
		if op.done != nil {
			op.done <- errNoPubSub
		}
	}
}

// keepAlive refreshes the TTL of subscribed users' keys, so that a user with
// a live connection keeps its epoch (and seq numbering) however idle it is,
// as the memory backend keeps the record of a subscribed user.
func (s *Stream) keepAlive() {
	s.mu.Lock()
	users := make([]string, 0, len(s.subs))
	for _, u := range s.subs {
		users = append(users, u.user)
	}
	s.mu.Unlock()
	for len(users) > 0 {
		n := min(len(users), 256)
		cmds := make(rueidis.Commands, 0, 2*n)
		for _, user := range users[:n] {
			tag := s.userTag(user)
			cmds = append(cmds,
				s.client.B().Pexpire().Key(tag+"meta").Milliseconds(s.keyTTLms()).Build(),
				s.client.B().Pexpire().Key(tag+"log").Milliseconds(s.keyTTLms()).Build())
		}
		users = users[n:]
		ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
		for _, r := range s.client.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				s.log.Warn("redis stream: keepalive failed", "err", err)
				break
			}
		}
		cancel()
	}
}

func (s *Stream) keyTTLms() int64 { return (s.maxAge + keyMargin).Milliseconds() }
