package hub

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
)

// An idle user's entry keeps no channel of its own once subscribed: it drops
// its subscription attempt, and a later connection of the user registers at
// once.
func TestSubscribedUserEntryDropsItsReadyChannel(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h, _ := newHub(t, Config{})
		ctx := context.Background()
		a, b := h.NewConn("a", "u", newFake()), h.NewConn("b", "u", newFake())
		if err := h.Register(ctx, a); err != nil {
			t.Fatal(err)
		}
		sh := h.shard("u")
		sh.mu.RLock()
		sub := sh.users["u"].sub
		sh.mu.RUnlock()
		if sub != nil {
			t.Fatal("the subscribed user's entry still holds its subscription attempt and ready channel")
		}
		if err := h.Register(ctx, b); err != nil {
			t.Fatal(err)
		}
		if h.Count("u") != 2 {
			t.Fatalf("count %d, want 2", h.Count("u"))
		}
		h.Unregister(a)
		h.Unregister(b)
	})
}

// failingStream's Subscribe waits for gate, then fails.
type failingStream struct {
	stream.Stream
	gate chan struct{}
}

var errSubscribe = errors.New("subscribe failed")

func (f *failingStream) Subscribe(ctx context.Context, user string, h stream.Handler) (func(), error) {
	<-f.gate
	return nil, errSubscribe
}

// A failed subscription fails the connection that made it and every other
// connection of the user that waited for it, and leaves no entry behind.
func TestFailedSubscriptionFailsEveryWaiter(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		st := memory.New(memory.Options{})
		defer st.Close()
		fs := &failingStream{Stream: st, gate: make(chan struct{})}
		h := New(Config{Stream: fs})
		ctx := context.Background()
		errs := make(chan error, 2)
		for _, id := range []string{"a", "b"} {
			go func() { errs <- h.Register(ctx, h.NewConn(id, "u", newFake())) }()
			synctest.Wait() // a subscribes, b waits for it
		}
		close(fs.gate)
		for range 2 {
			if err := <-errs; !errors.Is(err, errSubscribe) {
				t.Fatalf("Register: %v, want %v", err, errSubscribe)
			}
		}
		if n := h.Users(); n != 0 {
			t.Fatalf("%d user entries left after the failed subscription", n)
		}
	})
}
