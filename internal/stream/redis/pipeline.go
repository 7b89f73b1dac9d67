package redis

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"runtime"
	"sync"

	rueidis "github.com/redis/rueidis"
)

// appendPipe sends the append scripts of concurrent callers to Redis
// together: one DoMulti, so one write to each Redis node and one read of
// its replies, instead of one each per event (group commit, without a timer).
//
// The first caller to find the queue empty starts a sender for it. The
// sender first yields the processor, so that the callers already runnable
// (other requests' handlers woken by the same poll) queue their appends
// behind it, then takes the queue and sends it; the next caller starts the
// next batch while this one is in flight. Nothing waits for a batch to
// fill: a lone append goes out as soon as its sender runs. On a Redis
// Cluster the client splits the batch by slot, each user's script stays in
// its own slot.
//
// A caller whose context ends before its append is taken removes it: it
// was never sent. After that it may have run, as with a single command.
// Each append is its own script call, atomic for its user alone; an error
// reply fails only its own caller.
type appendPipe struct {
	s  *Stream
	mu sync.Mutex
	q  []*appendCall
}

// appendCall is one caller's append in the queue.
type appendCall struct {
	keys, args []string
	res        rueidis.RedisResult
	err        error // instead of res: the stream was closed before it was sent
	taken      bool  // under appendPipe.mu: in a batch, maybe sent
	gone       bool  // under appendPipe.mu: the caller left before it was taken
	done       chan struct{}
}

// appendSHA is appendScript's SHA-1, for EVALSHA.
var appendSHA = func() string {
	h := sha1.Sum([]byte(appendLua))
	return hex.EncodeToString(h[:])
}()

// exec runs the append script with keys and args. sent is false when it was
// not sent (the caller's context ended first, or the stream was closed), so
// did not run.
func (p *appendPipe) exec(ctx context.Context, keys, args []string) (res rueidis.RedisResult, sent bool, err error) {
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
		return c.res, c.err == nil, c.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	taken := c.taken
	c.gone = !taken
	p.mu.Unlock()
	return rueidis.RedisResult{}, taken, ctx.Err()
}

// take empties the queue, marking what it returns taken.
func (p *appendPipe) take() []*appendCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.q
	p.q = nil
	for _, c := range q {
		c.taken = true
	}
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
	q := p.take()
	calls := q[:0:0]
	cmds := make(rueidis.Commands, 0, len(q))
	b := p.s.client.B()
	p.mu.Lock()
	for _, c := range q {
		if c.gone {
			continue
		}
		calls = append(calls, c)
		cmds = append(cmds, b.Evalsha().Sha1(appendSHA).Numkeys(int64(len(c.keys))).Key(c.keys...).Arg(c.args...).Build())
	}
	p.mu.Unlock()
	if len(cmds) == 0 {
		return
	}
	p.s.sends.Add(1)
	res := p.s.client.DoMulti(p.s.ctx, cmds...)
	for i, c := range calls {
		r := res[i]
		if err, ok := rueidis.IsRedisErr(r.Error()); ok && err.IsNoScript() {
			// Not loaded on that node (restarted, failed over, flushed):
			// it did not run; Exec loads it.
			r = appendScript.Exec(p.s.ctx, p.s.client, c.keys, c.args)
		}
		c.res = r
		close(c.done)
	}
}
