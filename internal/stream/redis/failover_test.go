package redis

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	rueidis "github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/auth"
	ticketsredis "github.com/agentwire/agentwire/internal/auth/tickets/redis"
	"github.com/agentwire/agentwire/internal/redisx"
	"github.com/agentwire/agentwire/internal/redisx/redisxtest"
	runsredis "github.com/agentwire/agentwire/internal/runs/redis"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// TestFailover kills, on a topology of its own, the master serving the
// first user while node A appends to several users and node B delivers
// them live. Afterwards: B's live delivery went on; within each epoch B
// delivered consecutive seqs; a client resuming from the last event it had
// before the kill, and one resuming from the last it had at the end, gets
// either every event it lacks (the same bytes B delivered for any seq it
// already had) or resync_required — never a gap under the same epoch; the
// killed shard's users moved to a new epoch; tickets, limits and stop
// requests work on the new master.
func TestFailover(t *testing.T) {
	for _, which := range []string{"cluster", "sentinel"} {
		t.Run(which, func(t *testing.T) { testFailover(t, which) })
	}
}

func testFailover(t *testing.T, which string) {
	url, dir := redisxtest.Own(t, which)
	prefix := testPrefix(t)
	adm := adminOf(t, url, prefix)
	a := newNodeOn(t, url, prefix, stream.Retention{})
	b := newNodeWith(t, Options{Client: dial(t, url, 0), Prefix: prefix, CheckEvery: 500 * time.Millisecond})
	c := newNodeOn(t, url, prefix, stream.Retention{})
	users := []string{"fo-1", "fo-2", "fo-3", "fo-4", "fo-5", "fo-6"}
	cols := subscribeAll(t, b, users)

	// Appenders: each user's acknowledged events, in order.
	var (
		mu     sync.Mutex
		acked  = make([][]stream.Event, len(users))
		killed atomic.Bool
		after  = make([]atomic.Int64, len(users)) // acknowledged after the kill
		stop   = make(chan struct{})
		wg     sync.WaitGroup
	)
	for i, u := range users {
		wg.Go(func() {
			for j := 1; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				ev, err := a.Append(ctx, u, rec(j))
				cancel()
				if err != nil {
					// Unavailable while the master fails over: try again,
					// paced so a dead master is not hammered.
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					continue
				}
				mu.Lock()
				acked[i] = append(acked[i], ev)
				mu.Unlock()
				if killed.Load() {
					after[i].Add(1)
				}
			}
		})
	}
	stopAppends := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopAppends()

	// Let every user have some history delivered, then kill the master.
	for i := range users {
		cols[i].waitLen(t, 20, 30*time.Second)
	}
	before := make([]stream.Event, len(users))
	for i := range users {
		evs := cols[i].events()
		before[i] = evs[len(evs)-1]
	}
	port := masterPort(t, adm, which, a.userTag(users[0])+"meta")
	killServer(t, dir, which, port)
	killed.Store(true)
	t.Logf("killed the %s master on port %d", which, port)

	// Wait until every user had 30 events acknowledged by the new master.
	deadline := time.Now().Add(60 * time.Second)
	for i := range users {
		for after[i].Load() < 30 {
			if time.Now().After(deadline) {
				t.Fatalf("user %s: %d appends succeeded after the kill within 60 s", users[i], after[i].Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	stopAppends()

	var re *stream.ResyncError
	for i, u := range users {
		mu.Lock()
		last := acked[i][len(acked[i])-1]
		mu.Unlock()
		// Live delivery on B went on after the failover: B delivers the
		// last event appended.
		waitFor(t, 30*time.Second, fmt.Sprintf("user %s: B delivers seq %d of epoch %s", u, last.Seq, last.Epoch), func() bool {
			evs := cols[i].events()
			return len(evs) > 0 && string(evs[len(evs)-1].Frame) == string(last.Frame)
		})
		live := cols[i].events()
		delivered := map[string]string{} // epoch/seq → frame
		for k, ev := range live {
			delivered[ev.Epoch+"/"+strconv.FormatUint(ev.Seq, 10)] = string(ev.Frame)
			if k > 0 && live[k-1].Epoch == ev.Epoch && ev.Seq != live[k-1].Seq+1 {
				t.Errorf("user %s: B delivered seq %d after %d under the same epoch: a gap", u, ev.Seq, live[k-1].Seq)
			}
		}
		if i == 0 && live[len(live)-1].Epoch == before[0].Epoch {
			t.Errorf("user %s (on the killed master): epoch %s unchanged across the failover", u, before[0].Epoch)
		}
		// Clients resuming: from the last event before the kill, and from
		// the last one delivered.
		for _, from := range []stream.Event{before[i], live[len(live)-1]} {
			var (
				evs []stream.Event
				pos stream.Position
				err error
			)
			// Node C has not talked to Redis since the failover: like a
			// client, it retries while its client learns the new topology.
			eventually(t, "resume on node C", func() error {
				evs, pos, err = c.Since(t.Context(), u, protocol.Cursor{Seq: from.Seq, Epoch: from.Epoch}, stream.Limit{MaxEvents: 1 << 20, MaxBytes: 1 << 30})
				if errors.Is(err, stream.ErrUnavailable) {
					return err
				}
				return nil
			})
			switch {
			case errors.As(err, &re):
				continue // resync_required: the client starts over, knowingly
			case err != nil:
				t.Fatalf("user %s: Since(%d, %s): %v", u, from.Seq, from.Epoch, err)
			}
			want := from.Seq + 1
			for _, ev := range evs {
				if ev.Epoch != from.Epoch || ev.Seq != want {
					t.Fatalf("user %s: resuming from %d/%s got seq %d/%s, want %d: a gap", u, from.Seq, from.Epoch, ev.Seq, ev.Epoch, want)
				}
				if f, ok := delivered[ev.Epoch+"/"+strconv.FormatUint(ev.Seq, 10)]; ok && f != string(ev.Frame) {
					t.Fatalf("user %s: seq %d of epoch %s is not the event B delivered under that number", u, ev.Seq, ev.Epoch)
				}
				want++
			}
			if want-1 != pos.Head {
				t.Fatalf("user %s: resuming from %d got up to %d, head %d", u, from.Seq, want-1, pos.Head)
			}
		}
	}

	// Tickets, limits and stop requests on the new topology.
	ctx := t.Context()
	tix := ticketsredis.New(adm, prefix, time.Minute)
	eventually(t, "ticket issue and redeem", func() error {
		tk, _, err := tix.Issue(ctx, auth.Claims{Subject: users[0]})
		if err != nil {
			return err
		}
		cl, err := tix.Redeem(ctx, tk)
		if err == nil && cl.Subject != users[0] {
			err = fmt.Errorf("redeemed subject %q", cl.Subject)
		}
		return err
	})
	slots := redisx.NewSlots(adm, prefix, "conns", time.Minute)
	eventually(t, "limits", func() error {
		ok1, err1 := slots.Acquire(ctx, users[0], "c1", 1)
		ok2, err2 := slots.Acquire(ctx, users[0], "c2", 1)
		err3 := slots.Release(ctx, users[0], "c1")
		if err := errors.Join(err1, err2, err3); err != nil {
			return err
		}
		if !ok1 || ok2 {
			return fmt.Errorf("acquire at max 1: %v then %v", ok1, ok2)
		}
		return nil
	})
	stopsA, stopsB := runsredis.NewStops(a.client, prefix), runsredis.NewStops(b.client, prefix)
	got := make(chan string, 16)
	lctx, lcancel := context.WithCancel(ctx)
	var lwg sync.WaitGroup
	lwg.Go(func() { stopsB.Listen(lctx, "node-b", func(user, run string) { got <- user + "/" + run }) })
	defer func() { lcancel(); lwg.Wait() }()
	eventually(t, "stop request routed to node B", func() error {
		ok, err := stopsA.Send(ctx, "node-b", users[1], "run-1")
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("node B not listening yet")
		}
		select {
		case r := <-got:
			if r != users[1]+"/run-1" {
				return fmt.Errorf("node B got %q", r)
			}
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("sent, not received")
		}
	})
	t.Logf("B restarted %d stalled subscriptions, filled from the log %d times", b.stalls.Load(), b.fills.Load())
}

// waitFor polls cond until it holds, failing t after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventually retries fn until it succeeds (the client learning the new
// topology), failing t after 30 s with its last error.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after the failover: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// masterPort is the port of the master serving key: on a cluster the one
// whose slots hold it, under Sentinel the one the Sentinels name.
func masterPort(t *testing.T, c rueidis.Client, which, key string) int {
	t.Helper()
	ctx := t.Context()
	if which == "sentinel" {
		// The client talks to the master only.
		info, err := c.Do(ctx, c.B().Info().Section("server").Build()).ToString()
		if err != nil {
			t.Fatal(err)
		}
		return infoInt(t, info, "tcp_port")
	}
	slot, err := c.Do(ctx, c.B().ClusterKeyslot().Key(key).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := c.Do(ctx, c.B().ClusterNodes().Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "master") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, _ := strings.Cut(r, "-")
			l, err1 := strconv.ParseInt(lo, 10, 64)
			h, err2 := strconv.ParseInt(hi, 10, 64)
			if hi == "" {
				h, err2 = l, nil
			}
			if err1 == nil && err2 == nil && l <= slot && slot <= h {
				addr, _, _ := strings.Cut(f[1], "@")
				_, p, _ := strings.Cut(addr, ":")
				port, err := strconv.Atoi(p)
				if err != nil {
					t.Fatalf("CLUSTER NODES address %q", f[1])
				}
				return port
			}
		}
	}
	t.Fatalf("no master serves slot %d:\n%s", slot, nodes)
	return 0
}

func infoInt(t *testing.T, info, field string) int {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), field+":"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("INFO %s: %q", field, v)
			}
			return n
		}
	}
	t.Fatalf("INFO has no %s", field)
	return 0
}

// killServer kills the redis-server on port (SIGKILL: no chance to hand
// anything over), found by the pid file scripts/redis-topologies keeps.
func killServer(t *testing.T, dir, which string, port int) {
	t.Helper()
	pattern := filepath.Join(dir, "cluster-"+strconv.Itoa(port), "redis.pid")
	if which == "sentinel" {
		pattern = filepath.Join(dir, "sentinel-*-"+strconv.Itoa(port), "redis.pid")
	}
	files, _ := filepath.Glob(pattern)
	if len(files) != 1 {
		t.Fatalf("pid file %s: found %v", pattern, files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %q", files[0], b)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %d: %v", pid, err)
	}
}
