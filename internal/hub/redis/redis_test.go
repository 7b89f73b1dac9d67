package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/redisx"
	"github.com/agentwire/agentwire/internal/redisx/redisxtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, redisxtest.IgnoreClusterRefresh) }

func TestConnLimitAcrossNodes(t *testing.T) { redisxtest.EachTopology(t, testConnLimitAcrossNodes) }

func testConnLimitAcrossNodes(t *testing.T, url string) {
	t.Parallel()
	c, prefix := redisxtest.ClientOf(t, url)
	conns := New(c, prefix, 2*time.Second)
	ctx := context.Background()
	var ok atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := conns.Acquire(ctx, "u:}{odd", fmt.Sprintf("c%d", i), 3)
			if err != nil {
				t.Error(err)
			}
			if got {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 3 {
		t.Fatalf("%d of 20 concurrent connects admitted, want 3", ok.Load())
	}
	if got, _ := conns.Acquire(ctx, "other", "c1", 3); !got {
		t.Fatal("another user is limited by u's connections")
	}
	// Releasing one admits one more.
	held := []string{}
	for i := 0; i < 20; i++ {
		if err := conns.Release(ctx, "u:}{odd", fmt.Sprintf("c%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("d%d", i)
		if got, _ := conns.Acquire(ctx, "u:}{odd", id, 3); !got {
			t.Fatalf("after release, %s refused", id)
		}
		held = append(held, id)
	}
	// Refreshed entries live on; a dead node's entries expire. Progress
	// based: refresh two of the three until the third has expired (the
	// entry TTL is long against a refresh round trip, so a stalled box
	// does not let the refreshed ones lapse).
	admitted := false
	for deadline := time.Now().Add(30 * time.Second); !admitted; {
		if time.Now().After(deadline) {
			t.Fatal("the unrefreshed entry did not expire within 30 s")
		}
		if err := conns.Refresh(ctx, map[string][]string{"u:}{odd": held[:2]}); err != nil {
			t.Fatal(err)
		}
		var err error
		if admitted, err = conns.Acquire(ctx, "u:}{odd", "e1", 3); err != nil {
			t.Fatal(err)
		}
		if !admitted {
			time.Sleep(20 * time.Millisecond) // poll, not a wait for anything not to happen
		}
	}
	if got, _ := conns.Acquire(ctx, "u:}{odd", "e2", 3); got {
		t.Fatal("refreshed entries expired")
	}
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	c := redisxtest.Down(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := New(c, "aw", 0).Acquire(ctx, "a", "c", 1); !errors.Is(err, redisx.ErrUnavailable) {
		t.Fatalf("acquire with Redis down: %v", err)
	}
}
