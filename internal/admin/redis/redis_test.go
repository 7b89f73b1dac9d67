package redis

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/admin"
	"github.com/agentwire/agentwire/internal/redisx/redisxtest"
	"github.com/agentwire/agentwire/internal/testproc"
)

// Two nodes' buses on one Redis: an action published by either reaches
// both, in order; answers come back to the collector; both nodes are
// listed while they announce themselves and unlisted when they stop;
// revocations are shared.
func TestBusAcrossNodes(t *testing.T) { redisxtest.EachTopology(t, testBusAcrossNodes) }

func testBusAcrossNodes(t *testing.T, url string) {
	client, prefix := redisxtest.ClientOf(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := New(client, prefix, time.Hour, nil), New(client, prefix, time.Hour, nil)

	gotA, gotB := make(chan admin.Action, 16), make(chan admin.Action, 16)
	go a.Run(ctx, func(x admin.Action) { gotA <- x })
	go b.Run(ctx, func(x admin.Action) { gotB <- x })
	// Each Run starts at the log's end: probe until both see a publish.
	for _, got := range []chan admin.Action{gotA, gotB} {
		deadline := time.After(10 * time.Second)
	probe:
		for {
			if err := a.Publish(ctx, admin.Action{Kind: "probe"}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-got:
				break probe
			case <-time.After(20 * time.Millisecond):
			case <-deadline:
				t.Fatal("a node's Run never sees the log")
			}
		}
	}
	want := []admin.Action{{Kind: admin.KindDisconnect, User: "u1", By: "ops"}, {Kind: admin.KindRevoke, User: "u2", Before: 42}}
	for _, x := range want {
		if err := b.Publish(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	for name, got := range map[string]chan admin.Action{"a": gotA, "b": gotB} {
		var seen []admin.Action
		for len(seen) < len(want) {
			select {
			case x := <-got:
				if x.Kind != "probe" {
					seen = append(seen, x)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("node %s saw %v of %v", name, seen, want)
			}
		}
		if !slices.Equal(seen, want) {
			t.Fatalf("node %s saw %+v, want %+v in order", name, seen, want)
		}
	}

	// Answers.
	_ = a.Reply(ctx, "req1", []byte(`{"node":"a"}`))
	_ = b.Reply(ctx, "req1", []byte(`{"node":"b"}`))
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	bodies, err := a.Collect(cctx, "req1", 2)
	ccancel()
	if err != nil || len(bodies) != 2 {
		t.Fatalf("Collect = %q, %v", bodies, err)
	}
	short, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	bodies, err = a.Collect(short, "req2", 1)
	scancel()
	if err == nil || len(bodies) != 0 {
		t.Fatalf("Collect of an unanswered request = %q, %v; want the deadline", bodies, err)
	}

	// Live nodes.
	actx, acancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { a.Announce(actx, "node-a"); close(done) }()
	go b.Announce(ctx, "node-b")
	listed := func(want ...string) bool {
		nodes, err := a.Nodes(ctx)
		slices.Sort(nodes)
		return err == nil && slices.Equal(nodes, want)
	}
	waitFor(t, "both nodes listed", func() bool { return listed("node-a", "node-b") })
	acancel()
	<-done
	waitFor(t, "node-a unlisted after it stopped", func() bool { return listed("node-b") })

	// Revocations, shared; the later time wins.
	now := time.Now()
	if err := a.Revoke(ctx, "u3", now); err != nil {
		t.Fatal(err)
	}
	_ = b.Revoke(ctx, "u3", now.Add(-time.Hour))
	for _, tc := range []struct {
		issued time.Time
		want   bool
	}{{now.Add(-time.Minute), true}, {time.Time{}, true}, {now.Add(time.Second), false}} {
		if got, err := b.Revoked(ctx, "u3", tc.issued); err != nil || got != tc.want {
			t.Errorf("Revoked(u3, %v) = %v, %v; want %v", tc.issued, got, err, tc.want)
		}
	}
	if got, err := b.Revoked(ctx, "u4", time.Time{}); err != nil || got {
		t.Errorf("Revoked of a user never revoked = %v, %v", got, err)
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	// Announce and the listing's expiry are timer driven: the bound is plain
	// time, far above a refresh round.
	if !testproc.WaitFor(10*time.Second, ok) {
		t.Fatalf("%s: not within 10 s", what)
	}
}
