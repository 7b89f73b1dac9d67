package redis

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/redisx"
	"github.com/agentwire/agentwire/internal/redisx/redisxtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, redisxtest.IgnoreClusterRefresh) }

func TestTicketsAreSingleUseAcrossNodes(t *testing.T) {
	redisxtest.EachTopology(t, testTicketsAreSingleUseAcrossNodes)
}

func testTicketsAreSingleUseAcrossNodes(t *testing.T, url string) {
	t.Parallel()
	c, prefix := redisxtest.ClientOf(t, url)
	// Two "nodes": two stores on two clients sharing the Redis.
	c2, err := redisx.Dial(url, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	a, b := New(c, prefix, 0), New(c2, prefix, 0)
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
	short := New(c, prefix, 100*time.Millisecond)
	tk2, _, _ := short.Issue(ctx, auth.Claims{Subject: "ann"})
	time.Sleep(200 * time.Millisecond)
	if _, err := short.Redeem(ctx, tk2); !errors.Is(err, auth.ErrTicket) {
		t.Fatalf("expired ticket: %v", err)
	}
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	c := redisxtest.Down(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := New(c, "aw", 0).Issue(ctx, auth.Claims{Subject: "a"}); !errors.Is(err, redisx.ErrUnavailable) {
		t.Fatalf("issue with Redis down: %v", err)
	}
}
