package redis

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/redisx"
	"github.com/agentwire/agentwire/internal/redisx/redisxtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, redisxtest.IgnoreClusterRefresh) }

func TestRunSlotsApartFromConns(t *testing.T) { redisxtest.EachTopology(t, testRunSlotsApartFromConns) }

func testRunSlotsApartFromConns(t *testing.T, url string) {
	t.Parallel()
	c, prefix := redisxtest.ClientOf(t, url)
	ctx := context.Background()
	conns, runs := redisx.NewSlots(c, prefix, "conns", time.Minute), NewSlots(c, prefix, time.Minute)
	for i := range 2 {
		if got, err := runs.Acquire(ctx, "u", fmt.Sprintf("r%d", i), 2); err != nil || !got {
			t.Fatalf("run %d: %v %v", i, got, err)
		}
	}
	if got, _ := runs.Acquire(ctx, "u", "r2", 2); got {
		t.Fatal("a third run admitted with max 2")
	}
	if got, _ := conns.Acquire(ctx, "u", "c0", 1); !got {
		t.Fatal("runs count against the connection limit")
	}
	if err := runs.Release(ctx, "u", "r0"); err != nil {
		t.Fatal(err)
	}
	if got, _ := runs.Acquire(ctx, "u", "r2", 2); !got {
		t.Fatal("a released run slot was not given again")
	}
}

func TestStopsReachTheNode(t *testing.T) { redisxtest.EachTopology(t, testStopsReachTheNode) }

func testStopsReachTheNode(t *testing.T, url string) {
	t.Parallel()
	c, prefix := redisxtest.ClientOf(t, url)
	stops := NewStops(c, prefix)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan [2]string, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		stops.Listen(ctx, "n1", func(user, runID string) { got <- [2]string{user, runID} })
	}()
	// Delivered once the listener is subscribed.
	delivered := false
	for deadline := time.Now().Add(30 * time.Second); !delivered && time.Now().Before(deadline); {
		var err error
		if delivered, err = stops.Send(ctx, "n1", "ann", "r1"); err != nil {
			t.Fatal(err)
		}
		if !delivered {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !delivered {
		t.Fatal("no listener of n1 within 30 s")
	}
	if r := <-got; r != [2]string{"ann", "r1"} {
		t.Fatalf("stop for %v, want ann r1", r)
	}
	if ok, err := stops.Send(ctx, "n2", "ann", "r1"); err != nil || ok {
		t.Fatalf("a stop for a node nobody listens for: delivered %v, %v", ok, err)
	}
	cancel()
	<-done
}

func TestInputsAskAndReply(t *testing.T) { redisxtest.EachTopology(t, testInputsAskAndReply) }

func testInputsAskAndReply(t *testing.T, url string) {
	t.Parallel()
	c, prefix := redisxtest.ClientOf(t, url)
	in := NewInputs(c, prefix)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		in.Serve(ctx, "n1", func(req []byte) []byte { return append([]byte("re:"), req...) })
	}()
	var reply []byte
	delivered := false
	for deadline := time.Now().Add(30 * time.Second); !delivered && time.Now().Before(deadline); {
		var err error
		if reply, delivered, err = in.Ask(ctx, "n1", []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if !delivered {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if !delivered || string(reply) != "re:hi" {
		t.Fatalf("reply %q delivered %v, want re:hi", reply, delivered)
	}
	if _, ok, err := in.Ask(ctx, "n2", []byte("x")); err != nil || ok {
		t.Fatalf("an answer for a node nobody serves: delivered %v, %v", ok, err)
	}
	cancel()
	<-done
}
