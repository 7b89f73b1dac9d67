package redis

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/redisx"
)

// Inputs carries user_input answers to the node that runs the run
// (runs.Inputs) and brings back that node's verdict: a request is published
// on the node's channel (<prefix>:{n:<id>}:input, sharded pub/sub as the stop channel) with a fresh reply id, the
// node pushes its reply to <prefix>:input:reply:<reply id> (a list that
// expires after a minute), and the asker waits for it with BLPOP. The node
// running the run decides alone, so an answer reaches its agent once.
type Inputs struct {
	client rueidis.Client
	prefix string
}

// NewInputs returns the input channel of the nodes sharing client's Redis.
func NewInputs(client rueidis.Client, prefix string) *Inputs {
	return &Inputs{client: client, prefix: prefix}
}

func (s *Inputs) channel(node string) string { return NodeTag(s.prefix, node) + "input" }
func (s *Inputs) replyKey(id string) string  { return s.prefix + ":input:reply:" + id }

type inputEnvelope struct {
	ID   string `json:"id"`
	Body []byte `json:"b"`
}

// askWait bounds the wait for a node's reply when ctx has no deadline.
const askWait = 5 * time.Second

// Ask sends req to node and returns its reply; delivered is false when no
// subscriber of node's channel received it (then nothing was done).
func (s *Inputs) Ask(ctx context.Context, node string, req []byte) ([]byte, bool, error) {
	id := ulid.Make().String()
	msg, _ := json.Marshal(inputEnvelope{ID: id, Body: req})
	n, err := s.client.Do(ctx, s.client.B().Spublish().Channel(s.channel(node)).Message(rueidis.BinaryString(msg)).Build()).AsInt64()
	if err != nil {
		return nil, false, redisx.Wrap(err)
	}
	if n == 0 {
		return nil, false, nil
	}
	wait := askWait
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	vals, err := s.client.Do(ctx, s.client.B().Blpop().Key(s.replyKey(id)).Timeout(max(wait.Seconds(), 0.01)).Build()).AsStrSlice()
	if err != nil {
		return nil, true, redisx.Wrap(err) // a timeout is rueidis.Nil: no reply
	}
	if len(vals) != 2 {
		return nil, true, redisx.Wrap(rueidis.Nil)
	}
	return []byte(vals[1]), true, nil
}

// Serve calls handle for every request sent to node, each in its own
// goroutine, and pushes its reply back, until ctx is done; it subscribes
// again (after 100 ms) whenever the connection is lost, and returns once
// ctx is done and every handle has returned.
func (s *Inputs) Serve(ctx context.Context, node string, handle func(req []byte) []byte) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		_ = s.client.Receive(ctx, s.client.B().Ssubscribe().Channel(s.channel(node)).Build(), func(m rueidis.PubSubMessage) {
			var env inputEnvelope
			if json.Unmarshal([]byte(m.Message), &env) != nil || env.ID == "" {
				return
			}
			wg.Go(func() {
				reply := handle(env.Body)
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				defer cancel()
				key := s.replyKey(env.ID)
				s.client.DoMulti(rctx,
					s.client.B().Lpush().Key(key).Element(rueidis.BinaryString(reply)).Build(),
					s.client.B().Expire().Key(key).Seconds(60).Build())
			})
		})
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
