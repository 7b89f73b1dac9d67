package redis

import (
	"context"
	"sync/atomic"
	"time"

	rueidis "github.com/redis/rueidis"
)

// receiveLoop owns u's SSUBSCRIBE: one Receive at a time on the client's
// connection to the node that serves the user's slot (on a cluster the
// client routes it by slot; on a standalone Redis or the master Sentinel
// names there is one). Receive returns when the connection is lost, when
// Redis ends the subscription (Redis Cluster sends sunsubscribe when the
// slot moves or its master fails over) or when the watchdog restarts it;
// while u is wanted the loop subscribes again, and every confirmation after
// the first makes u catch up from the log (pub/sub is at-most-once:
// whatever was published meanwhile is read back with Since). The first
// confirmation, or the first failure, is reported on u.confirmed.
func (s *Stream) receiveLoop(u *userSub) {
	backoff := 50 * time.Millisecond
	var reported atomic.Bool // u.confirmed has its value
	quick := 0               // immediate retries in a row
	for u.ctx.Err() == nil {
		rctx, restart := context.WithCancel(u.ctx)
		u.setRestart(restart)
		var confirmedNow atomic.Bool // this Receive's SSUBSCRIBE was confirmed
		rctx = rueidis.WithOnSubscriptionHook(rctx, func(ps rueidis.PubSubSubscription) {
			// Runs on the connection's reader: no network calls here.
			if ps.Kind != "ssubscribe" || ps.Channel != u.channel || !confirmedNow.CompareAndSwap(false, true) {
				return
			}
			if reported.CompareAndSwap(false, true) {
				u.confirmed <- nil
			} else {
				s.kick(u)
			}
		})
		rctx = rueidis.WithOnReceiveReturnHook(rctx, func(err error, c rueidis.CommandClient) error {
			if u.ctx.Err() != nil && err != nil && confirmedNow.Load() && !s.closed.Load() {
				// Unsubscribed (not a lost connection): tell Redis, so it
				// stops sending the user's events to this node.
				uctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), time.Second)
				c.Do(uctx, c.B().Sunsubscribe().Channel(u.channel).Build())
				cancel()
			}
			return err
		})
		err := s.client.Receive(rctx, s.client.B().Ssubscribe().Channel(u.channel).Build(), func(m rueidis.PubSubMessage) {
			s.onMessage(u, m)
		})
		restart()
		if u.ctx.Err() != nil {
			return
		}
		if err != nil && reported.CompareAndSwap(false, true) {
			// The first SSUBSCRIBE failed: Subscribe fails (and releases u).
			u.confirmed <- err
			return
		}
		// Otherwise subscribe again, also when Redis ended the subscription
		// before confirming it (err nil): the sunsubscribe answering an
		// earlier subscription's SUNSUBSCRIBE of the same channel ends every
		// local subscription of it, and Subscribe waits for this one.
		if confirmedNow.Load() {
			backoff = 50 * time.Millisecond
		}
		if err == nil && !confirmedNow.Load() && quick < 3 {
			quick++ // a stale sunsubscribe: at once, a few times
			continue
		}
		quick = 0
		if err != nil && !s.closed.Load() {
			s.log.Warn("redis stream: subscription lost, subscribing again", "err", err)
		}
		select {
		case <-u.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// maintain keeps subscribed users' keys alive and runs the watchdog, until
// the Stream closes.
func (s *Stream) maintain() {
	keep := time.NewTicker(max((s.maxAge+keyMargin)/3, time.Second))
	defer keep.Stop()
	check := time.NewTicker(s.checkEvery)
	defer check.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-keep.C:
			s.keepAlive()
		case <-check.C:
			s.watchdog()
		}
	}
}

// watchdog compares every subscribed user's head in Redis with the last seq
// delivered here. A user behind is made to catch up from the log; one
// behind at two checks in a row without a single live message received in
// between has a dead subscription (a connection that neither delivers nor
// fails, a slot that moved without a sunsubscribe): its Receive is
// restarted, which subscribes again and catches up. So live delivery never
// stalls for longer than a check, and stays on pub/sub rather than on the
// watchdog's reads.
func (s *Stream) watchdog() {
	s.mu.Lock()
	subs := make([]*userSub, 0, len(s.subs))
	for _, u := range s.subs {
		subs = append(subs, u)
	}
	s.mu.Unlock()
	for len(subs) > 0 {
		n := min(len(subs), 256)
		batch := subs[:n]
		subs = subs[n:]
		cmds := make(rueidis.Commands, n)
		for i, u := range batch {
			cmds[i] = s.client.B().Hmget().Key(s.userTag(u.user)+"meta").Field("e", "h").Build()
		}
		ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
		res := s.client.DoMulti(ctx, cmds...)
		cancel()
		for i, r := range res {
			vals, err := r.ToArray()
			if err != nil || len(vals) != 2 {
				continue // Redis unreachable: the connection's loss restarts what needs it
			}
			epoch, _ := vals[0].ToString()
			head, _ := vals[1].AsUint64()
			batch[i].check(epoch, head)
		}
	}
}

// check is the watchdog's verdict on u given Redis's epoch and head.
func (u *userSub) check(epoch string, head uint64) {
	u.mu.Lock()
	behind := u.inited && ((epoch != "" && epoch != u.epoch) || head > u.last)
	stalled := behind && u.wasBehind && u.recv == u.recvAtCheck
	u.wasBehind, u.recvAtCheck = behind && !stalled, u.recv
	u.mu.Unlock()
	switch {
	case stalled:
		u.s.log.Warn("redis stream: live delivery stalled, subscribing again")
		u.s.stalls.Add(1)
		u.restartReceive()
		u.s.kick(u)
	case behind:
		u.s.kick(u)
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
