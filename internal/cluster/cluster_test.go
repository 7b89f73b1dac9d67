package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/auth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client returns a Redis client and a fresh key prefix, or skips loudly.
func client(t *testing.T) (rueidis.Client, string) {
	t.Helper()
	url := os.Getenv("AGENTWIRE_TEST_REDIS_URL")
	if url == "" {
		t.Skip("!!! AGENTWIRE_TEST_REDIS_URL not set: Redis cluster coordination NOT TESTED !!!")
	}
	c, err := Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	prefix := "awtest-" + ulid.Make().String()
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := c.Do(ctx, c.B().Keys().Pattern(prefix+":*").Build()).AsStrSlice()
		for _, k := range keys {
			c.Do(ctx, c.B().Del().Key(k).Build())
		}
		c.Close()
	})
	return c, prefix
}

func TestTicketsAreSingleUseAcrossNodes(t *testing.T) {
	t.Parallel()
	c, prefix := client(t)
	// Two "nodes": two stores on two clients sharing the Redis.
	c2, err := Connect(os.Getenv("AGENTWIRE_TEST_REDIS_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	a, b := NewTickets(c, prefix, 0), NewTickets(c2, prefix, 0)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	tk, until, err := a.Issue(ctx, auth.Claims{Subject: "ann", ExpiresAt: exp})
	if err != nil || time.Until(until) > 31*time.Second {
		t.Fatalf("issue: %v %v", until, err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			cl, err := s.Redeem(ctx, tk)
			switch {
			case err == nil:
				if cl.Subject != "ann" || !cl.ExpiresAt.Equal(exp) {
					t.Errorf("claims %+v", cl)
				}
				wins.Add(1)
			case !errors.Is(err, auth.ErrTicket):
				t.Errorf("redeem: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d redeems of one ticket succeeded", wins.Load())
	}
	if _, err := a.Redeem(ctx, "unknown"); !errors.Is(err, auth.ErrTicket) {
		t.Fatalf("unknown ticket: %v", err)
	}
	if _, err := a.Redeem(ctx, ""); !errors.Is(err, auth.ErrMissing) {
		t.Fatalf("empty ticket: %v", err)
	}
	if _, _, err := a.Issue(ctx, auth.Claims{Subject: "x", ExpiresAt: time.Now().Add(-time.Second)}); !errors.Is(err, auth.ErrExpired) {
		t.Fatalf("expired claims: %v", err)
	}
	short := NewTickets(c, prefix, 100*time.Millisecond)
	tk2, _, _ := short.Issue(ctx, auth.Claims{Subject: "ann"})
	time.Sleep(200 * time.Millisecond)
	if _, err := short.Redeem(ctx, tk2); !errors.Is(err, auth.ErrTicket) {
		t.Fatalf("expired ticket: %v", err)
	}
}

func TestConnLimitAcrossNodes(t *testing.T) {
	t.Parallel()
	c, prefix := client(t)
	conns := NewConns(c, prefix, 300*time.Millisecond)
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
	// Refreshed entries live on; a dead node's entries expire.
	deadline := time.Now().Add(600 * time.Millisecond)
	for time.Now().Before(deadline) {
		if err := conns.Refresh(ctx, map[string][]string{"u:}{odd": held[:2]}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, _ := conns.Acquire(ctx, "u:}{odd", "e1", 3); !got {
		t.Fatal("the unrefreshed entry did not expire")
	}
	if got, _ := conns.Acquire(ctx, "u:}{odd", "e2", 3); got {
		t.Fatal("refreshed entries expired")
	}
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	c, err := Connect("redis://127.0.0.1:1/0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := NewTickets(c, "aw", 0).Issue(ctx, auth.Claims{Subject: "a"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("issue with Redis down: %v", err)
	}
	if _, err := NewConns(c, "aw", 0).Acquire(ctx, "a", "c", 1); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("acquire with Redis down: %v", err)
	}
}

func TestRunSlotsApartFromConns(t *testing.T) {
	t.Parallel()
	c, prefix := client(t)
	ctx := context.Background()
	conns, runs := NewConns(c, prefix, time.Minute), NewRuns(c, prefix, time.Minute)
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

func TestStopsReachTheNode(t *testing.T) {
	t.Parallel()
	c, prefix := client(t)
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
