package chaos

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/testproc"
)

// TestChaosCluster soaks two nodes (three with a duration over 3 minutes) on
// a private Redis (append-only file, fsync always) reached through
// cuttable proxies and a fresh PostgreSQL schema, under a seeded schedule of
// Redis kill -9 and restart, node kill -9 and restart, PostgreSQL backends
// terminated, Redis paused past the client timeouts and one node
// partitioned from Redis; then checks every invariant.
func TestChaosCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite: builds and starts the binary")
	}
	durl := os.Getenv(databaseURLEnv)
	if os.Getenv(redisURLEnv) == "" || durl == "" {
		t.Skipf("!!! %s and %s must both be set: the CLUSTER CHAOS suite is NOT RUN !!!", redisURLEnv, databaseURLEnv)
	}
	d := *flagDuration
	if d == 0 {
		d = 60 * time.Second
	}
	nNodes := 2
	if d > 3*time.Minute {
		nNodes = 3
	}
	s := newSoak(t, "cluster", ciLoad())
	pg := newPGEnv(t, durl)
	red := startRedis(t)
	var proxies []*proxy
	for i := range nNodes {
		p := startProxy(t, red.Addr())
		proxies = append(proxies, p)
		s.nodes = append(s.nodes, startNode(t, fmt.Sprintf("n%d", i+1),
			"--redis-url", p.url(), "--database-url", pg.URL, "--database-schema", pg.Schema,
			"--run-lease-ttl", "3s", "--run-lease-renew", "1s",
			"--retention-events", "1000000", "--retention-bytes", "1073741824", "--retention-age", "2h"))
	}
	s.addTabs()

	kinds := []string{"redis_kill", "node_kill", "pg_terminate", "redis_pause", "partition"}
	if *flagFaults != "" {
		kinds = strings.Split(*flagFaults, ",")
	}
	plan := schedule(s.rng(1), kinds, nNodes, d-3*time.Second, func(kind string, r *rand.Rand) time.Duration {
		switch kind {
		case "pg_terminate":
			return 0
		case "redis_pause": // past the Redis client's write timeout (6 s)
			return time.Duration(8000+r.IntN(2000)) * time.Millisecond
		case "partition":
			return time.Duration(3000+r.IntN(4000)) * time.Millisecond
		}
		return time.Duration(1000+r.IntN(2000)) * time.Millisecond
	})
	t.Logf("fault plan: %v", plan)
	inject := func(f fault) (string, error) {
		switch f.kind {
		case "redis_kill":
			red.Kill()
			time.Sleep(f.hold)
			return "redis", red.Restart()
		case "node_kill":
			n := s.nodes[f.target]
			n.Kill()
			time.Sleep(f.hold)
			return n.name, n.Restart()
		case "pg_terminate":
			k, err := pg.Terminate()
			return fmt.Sprintf("%dconns", k), err
		case "redis_pause":
			if err := red.Signal(syscall.SIGSTOP); err != nil {
				return "redis", err
			}
			time.Sleep(f.hold)
			return "redis", red.Signal(syscall.SIGCONT)
		case "partition":
			proxies[f.target].setCut(true)
			time.Sleep(f.hold)
			proxies[f.target].setCut(false)
			return s.nodes[f.target].name, nil
		}
		return "", errors.New("unknown fault " + f.kind)
	}
	s.play(plan, inject, d)
	s.finish(s.stopTabs, pg.runs, false, s.start)
	for _, n := range s.nodes {
		if !n.Alive() {
			t.Errorf("node %s exited on its own; stderr tail:\n%s", n.name, testproc.Tail(n.Stderr.String(), 3000))
		}
	}
}

// TestChaosSQLiteDiskFull soaks one node on its embedded defaults (SQLite,
// in-memory streams) whose data dir is a small tmpfs that the schedule fills
// to the last byte and frees again; then checks every invariant.
func TestChaosSQLiteDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite: builds and starts the binary")
	}
	d := *flagDuration / 4
	if d < 15*time.Second {
		d = 15 * time.Second
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("!!! cannot mount a tmpfs (%v: %s): the SQLite FULL-DISK chaos test is NOT RUN !!!", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v %s", dir, err, out)
		}
	})
	l := ciLoad()
	l.users, l.pubRate = max(l.users/2, 1), max(l.pubRate/2, 1)
	s := newSoak(t, "sqlite-disk-full", l)
	s.nodes = append(s.nodes, startNode(t, "n1", "--data-dir", dir,
		"--retention-events", "1000000", "--retention-bytes", "1073741824", "--retention-age", "2h"))
	s.addTabs()
	filler := filepath.Join(dir, "filler")
	plan := schedule(s.rng(1), []string{"disk_full"}, 1, d-3*time.Second, func(_ string, r *rand.Rand) time.Duration {
		return time.Duration(2000+r.IntN(3000)) * time.Millisecond
	})
	t.Logf("fault plan: %v", plan)
	inject := func(f fault) (string, error) {
		if err := fillDisk(filler); err != nil {
			return "", err
		}
		time.Sleep(f.hold)
		return "sqlite", os.Remove(filler)
	}
	s.play(plan, inject, d)
	s.finish(s.stopTabs, s.restStored, false, s.start)
	if !s.nodes[0].Alive() {
		t.Errorf("node exited on its own; stderr tail:\n%s", testproc.Tail(s.nodes[0].Stderr.String(), 3000))
	}
}

// fillDisk writes path until the file system is full.
func fillDisk(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil
			}
			return err
		}
	}
}
