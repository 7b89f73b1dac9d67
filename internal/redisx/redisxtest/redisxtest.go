// Package redisxtest gives the tests of agentwire's Redis backends a client
// of the test Redis and a key prefix of their own.
package redisxtest

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/redisx"
)

// The variables holding the test Redis URLs: a standalone Redis (always set
// in CI), and the Redis Cluster and Sentinel setups scripts/redis-topologies
// starts.
const (
	URLEnv         = "AGENTWIRE_TEST_REDIS_URL"
	ClusterURLEnv  = "AGENTWIRE_TEST_REDIS_CLUSTER_URL"
	SentinelURLEnv = "AGENTWIRE_TEST_REDIS_SENTINEL_URL"
)

// IgnoreClusterRefresh is the goleak option for the goroutine rueidis'
// cluster client starts when its topology changes: it closes the
// connections to nodes that left the topology 5 s later, on its own, also
// after Close.
var IgnoreClusterRefresh = goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2")

// Topology is one kind of Redis deployment the tests run on.
type Topology struct {
	Name string // "standalone", "cluster", "sentinel"
	Env  string // the variable holding its URL
}

// Topologies are every deployment the Redis backends support.
var Topologies = []Topology{
	{"standalone", URLEnv},
	{"cluster", ClusterURLEnv},
	{"sentinel", SentinelURLEnv},
}

// URLOf returns the URL in env, or skips t loudly when env is unset.
func URLOf(t testing.TB, env string) string {
	t.Helper()
	u := os.Getenv(env)
	if u == "" {
		t.Skip("!!! " + env + " not set: this Redis topology NOT TESTED (scripts/redis-topologies starts one) !!!")
	}
	return u
}

// EachTopology runs fn as a subtest per topology, with its URL; each
// subtest skips loudly when its variable is unset.
func EachTopology(t *testing.T, fn func(t *testing.T, url string)) {
	t.Helper()
	for _, top := range Topologies {
		t.Run(top.Name, func(t *testing.T) { fn(t, URLOf(t, top.Env)) })
	}
}

// DeletePrefix deletes every key starting with prefix+":", on every node
// of a cluster.
func DeletePrefix(ctx context.Context, c rueidis.Client, prefix string) error {
	for _, n := range c.Nodes() {
		var cursor uint64
		for {
			res, err := n.Do(ctx, n.B().Scan().Cursor(cursor).Match(prefix+":*").Count(1000).Build()).AsScanEntry()
			if err != nil {
				break // a node that is down or a replica being resynced: its master is scanned too
			}
			for _, k := range res.Elements {
				// Retried while the client learns a topology that changed
				// (a test killed a master), until ctx ends.
				for {
					err := c.Do(ctx, c.B().Del().Key(k).Build()).Error()
					if err == nil {
						break
					}
					if ctx.Err() != nil {
						return err
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			if cursor = res.Cursor; cursor == 0 {
				break
			}
		}
	}
	return nil
}

// URL returns the test Redis's URL, or skips t loudly when URLEnv is unset.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(URLEnv)
	if u == "" {
		t.Skip("!!! " + URLEnv + " not set: Redis backend NOT TESTED !!!")
	}
	return u
}

// Client returns a client of the test Redis (see URL) and a fresh key
// prefix; when t ends, the prefix's keys are deleted and the client closed.
func Client(t testing.TB) (rueidis.Client, string) {
	t.Helper()
	return ClientOf(t, URL(t))
}

// ClientOf is Client on the Redis at url (any topology).
func ClientOf(t testing.TB, url string) (rueidis.Client, string) {
	t.Helper()
	c, err := redisx.Dial(url, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	prefix := "awtest-" + ulid.Make().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = DeletePrefix(ctx, c, prefix)
		c.Close()
	})
	return c, prefix
}

// Down returns a client of a Redis that is not there (a port nobody
// listens on), each dial bounded by dialTimeout; it is closed when t ends.
func Down(t testing.TB, dialTimeout time.Duration) rueidis.Client {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := redisx.Dial("redis://"+addr+"/0", dialTimeout, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// Own starts a topology of t's own with scripts/redis-topologies (which is
// "cluster" or "sentinel") for a test that breaks it (kills a master), and
// stops it when t ends; it returns its URL and the directory holding each
// server's data and pid file (<dir>/<name>/redis.pid). It runs only where
// the shared topology of that kind is configured (its variable set, as in
// CI), and skips loudly otherwise.
func Own(t testing.TB, which string) (url, dir string) {
	t.Helper()
	env := map[string]string{"cluster": ClusterURLEnv, "sentinel": SentinelURLEnv}[which]
	if env == "" {
		t.Fatalf("Own(%q): want cluster or sentinel", which)
	}
	URLOf(t, env)
	script, err := findScript()
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script, "start", dir, which).CombinedOutput()
	t.Cleanup(func() {
		if out, err := exec.Command(script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("stopping the topology: %v\n%s", err, out)
		}
	})
	if err != nil {
		t.Fatalf("starting a %s topology: %v\n%s", which, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, env+"="); ok {
			return v, dir
		}
	}
	t.Fatalf("scripts/redis-topologies printed no %s:\n%s", env, out)
	return "", ""
}

// findScript finds scripts/redis-topologies above the working directory.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "redis-topologies")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/redis-topologies not found above the working directory")
		}
		dir = parent
	}
}
