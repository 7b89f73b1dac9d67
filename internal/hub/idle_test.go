package hub

import (
	"context"
	"testing"
	"testing/synctest"
)

// An idle user's entry keeps no channel of its own once subscribed: the
// shared closedReady replaces it, and a later connection of the user waits on
// that and registers at once.
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
		ready := sh.users["u"].ready
		sh.mu.RUnlock()
		if ready != closedReady {
			t.Fatal("the subscribed user's entry still holds its own ready channel")
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
