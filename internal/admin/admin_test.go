package admin

import (
	"context"
	"testing"
	"time"
)

// RevokedAt: a token issued before the revocation, or without iat, is
// revoked; one issued at or after it is not; no revocation revokes nothing.
func TestRevokedAt(t *testing.T) {
	t.Parallel()
	before := time.UnixMilli(1_700_000_000_500)
	for _, tc := range []struct {
		issued time.Time
		want   bool
	}{
		{time.Time{}, true},
		{before.Add(-time.Millisecond), true},
		{before.Add(-time.Hour), true},
		{before, false},
		{before.Add(time.Second), false},
	} {
		if got := RevokedAt(tc.issued, before); got != tc.want {
			t.Errorf("RevokedAt(%v, %v) = %v, want %v", tc.issued, before, got, tc.want)
		}
	}
	if RevokedAt(time.Time{}, time.Time{}) {
		t.Error("no revocation revokes a token without iat")
	}
}

// Memory's revocations keep the latest time, concern one user, and end
// after their TTL.
func TestMemoryRevocations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	m := NewMemory("n1", time.Hour)
	m.now = func() time.Time { return now }
	check := func(user string, issued time.Time, want bool) {
		t.Helper()
		got, err := m.Revoked(ctx, user, issued)
		if err != nil || got != want {
			t.Fatalf("Revoked(%s, %v) = %v, %v; want %v", user, issued, got, err, want)
		}
	}
	check("ann", now.Add(-time.Minute), false)
	if err := m.Revoke(ctx, "ann", now); err != nil {
		t.Fatal(err)
	}
	check("ann", now.Add(-time.Minute), true)
	check("ann", time.Time{}, true)
	check("ann", now, false)
	check("bob", now.Add(-time.Minute), false)
	// An earlier revocation changes nothing; a later one moves the time.
	_ = m.Revoke(ctx, "ann", now.Add(-time.Hour))
	check("ann", now.Add(-time.Minute), true)
	_ = m.Revoke(ctx, "ann", now.Add(time.Minute))
	check("ann", now.Add(30*time.Second), true)
	// Past the TTL the revocation is gone, and purged from memory.
	now = now.Add(time.Hour + time.Second)
	check("ann", now.Add(-2*time.Hour), false)
	_ = m.Revoke(ctx, "bob", now)
	m.mu.Lock()
	n := len(m.revoked)
	m.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d revocations kept after ann's expired, want 1 (bob's)", n)
	}
}

// Memory's bus: every Run gets every action published after it started,
// in order; a reply reaches the collector, who stops at n answers or at
// its context's end.
func TestMemoryBus(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := NewMemory("n1", 0)
	got := make(chan Action, 10)
	started := make(chan struct{})
	go m.Run(ctx, func(a Action) { got <- a })
	// Run registers before it blocks: wait until a publish is seen.
	go func() {
		for {
			_ = m.Publish(ctx, Action{Kind: "probe"})
			select {
			case <-started:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	for a := range got {
		if a.Kind == "probe" {
			close(started)
			break
		}
	}
	_ = m.Publish(ctx, Action{Kind: KindDisconnect, User: "a"})
	_ = m.Publish(ctx, Action{Kind: KindRevoke, User: "b", Before: 5})
	var seen []Action
	for len(seen) < 2 {
		if a := <-got; a.Kind != "probe" {
			seen = append(seen, a)
		}
	}
	if seen[0].Kind != KindDisconnect || seen[0].User != "a" || seen[1].Kind != KindRevoke || seen[1].Before != 5 {
		t.Fatalf("actions %+v, want the disconnect then the revoke", seen)
	}
	if err := m.Reply(ctx, "r1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	bodies, err := m.Collect(ctx, "r1", 1)
	if err != nil || len(bodies) != 1 || string(bodies[0]) != "x" {
		t.Fatalf("Collect = %q, %v", bodies, err)
	}
	short, cancelShort := context.WithCancel(ctx)
	cancelShort()
	if bodies, err := m.Collect(short, "r2", 1); err == nil || len(bodies) != 0 {
		t.Fatalf("Collect with no answer = %q, %v; want the context's error", bodies, err)
	}
	if nodes, _ := m.Nodes(ctx); len(nodes) != 1 || nodes[0] != "n1" {
		t.Fatalf("Nodes = %v", nodes)
	}
}
