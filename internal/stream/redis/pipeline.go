package redis

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"

	rueidis "github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/stream"
)

// appendPipe sends the appends of concurrent callers to Redis together: one
// script call for up to maxPerCall appends (appendScript), and one DoMulti
// for all the calls, so one write to each Redis node and one read of its
// replies instead of one each per event, and the script's call and lineage
// check paid once per call (group commit, without a timer).
//
// The first caller to find the queue empty starts a sender for it. The
// sender first yields the processor, so that the callers already runnable
// (other requests' handlers woken by the same poll) queue their appends
// behind it, then takes the queue and sends it; the next caller starts the
// next batch while this one is in flight. Nothing waits for a batch to
// fill: a lone append goes out as soon as its sender runs. On a Redis
// Cluster each append is its own call (keys of different users may not
// share a script there); DoMulti sends each to its slot's node.
//
// A caller whose context ends before its append is taken removes it: it
// was never sent. After that it may have run, as with a single command.
// Each append is atomic for its user alone and gets its own reply; an error
// reply fails only its own caller.
type appendPipe struct {
	s  *Stream
	mu sync.Mutex
	q  []*appendCall
}

// maxPerCall bounds the appends in one script call: Redis runs nothing
// else while a script runs (~20-50 µs per append).
const maxPerCall = 32

// appendCall is one caller's append in the queue.
type appendCall struct {
	keys, args []string // its keys, and its appendArgc arguments
	res        rueidis.RedisMessage
	err        error // instead of res: the call failed, or was never sent
	taken      bool  // under appendPipe.mu: in a batch, maybe sent
	gone       bool  // under appendPipe.mu: the caller left before it was taken
	done       chan struct{}
}

// appendSHA is appendScript's SHA-1, for EVALSHA.
var appendSHA = func() string {
	h := sha1.Sum([]byte(appendLua))
	return hex.EncodeToString(h[:])
}()

// exec runs one append of keys and args (appendArgs). sent is false when
// it was not sent (the caller's context ended first, or the stream was
// closed), so did not run.
func (p *appendPipe) exec(ctx context.Context, keys, args []string) (res rueidis.RedisMessage, sent bool, err error) {
	c := &appendCall{keys: keys, args: args, done: make(chan struct{})}
	p.mu.Lock()
	p.q = append(p.q, c)
	lead := len(p.q) == 1
	p.mu.Unlock()
	if lead && !p.s.spawn(p.send) {
		p.fail() // closed: nothing more is sent
	}
	select {
	case <-c.done:
		return c.res, !errors.Is(c.err, rueidis.ErrClosing), c.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	taken := c.taken
	c.gone = !taken
	p.mu.Unlock()
	return rueidis.RedisMessage{}, taken, ctx.Err()
}

// take empties the queue and returns the appends whose callers still wait,
// marking them taken.
func (p *appendPipe) take() []*appendCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.q[:0:0]
	for _, c := range p.q {
		if !c.gone {
			c.taken = true
			q = append(q, c)
		}
	}
	p.q = nil
	return q
}

// fail answers the queue with the client's closing error (the stream is
// closed).
func (p *appendPipe) fail() {
	for _, c := range p.take() {
		c.err = rueidis.ErrClosing
		close(c.done)
	}
}

// send sends one batch: what is queued once the processor comes back.
func (p *appendPipe) send() {
	runtime.Gosched()
	live := p.take()
	if len(live) == 0 {
		return
	}
	per := maxPerCall
	if p.s.client.Mode() == rueidis.ClientModeCluster {
		per = 1
	}
	var groups [][]*appendCall
	for len(live) > 0 {
		n := min(per, len(live))
		groups, live = append(groups, live[:n]), live[n:]
	}
	cmds := make(rueidis.Commands, len(groups))
	for i, g := range groups {
		keys, args := p.s.scriptArgs(g)
		cmds[i] = p.s.client.B().Evalsha().Sha1(appendSHA).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
	}
	p.s.sends.Add(1)
	res := p.s.client.DoMulti(p.s.ctx, cmds...)
	for i, g := range groups {
		r := res[i]
		if err, ok := rueidis.IsRedisErr(r.Error()); ok && err.IsNoScript() {
			// Not loaded on that node (restarted, failed over, flushed):
			// it did not run; Exec loads it.
			keys, args := p.s.scriptArgs(g)
			r = appendScript.Exec(p.s.ctx, p.s.client, keys, args)
		}
		replies, err := r.ToArray()
		if err == nil && len(replies) != len(g) {
			err = fmt.Errorf("redis stream: %d append replies for %d appends", len(replies), len(g))
		}
		for j, c := range g {
			if err != nil {
				c.err = err
			} else {
				c.res = replies[j]
			}
			close(c.done)
		}
	}
}

// scriptArgs is appendScript's keys and arguments for the appends of g.
func (s *Stream) scriptArgs(g []*appendCall) (keys, args []string) {
	nk := 0
	for _, c := range g {
		nk += len(c.keys)
	}
	keys = make([]string, 0, nk)
	args = make([]string, 0, appendCommon+appendArgc*len(g))
	args = append(args, s.maxEvStr, s.maxAgeUS, s.keyTTL, idemTTL, s.maxBStr, strconv.Itoa(len(g)))
	for _, c := range g {
		keys = append(keys, c.keys...)
		args = append(args, c.args...)
	}
	return keys, args
}

// idemTTL is the idempotency keys' TTL in ms, as a script argument.
var idemTTL = strconv.FormatInt(stream.IdempotencyWindow.Milliseconds(), 10)
