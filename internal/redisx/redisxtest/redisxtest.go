// Package redisxtest gives the tests of agentwire's Redis backends a client
// of the test Redis and a key prefix of their own.
package redisxtest

import (
	"context"
	"net"
	"os"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/rueidis"

	"github.com/agentwire/agentwire/internal/redisx"
)

// URLEnv names the variable holding the test Redis's URL.
const URLEnv = "AGENTWIRE_TEST_REDIS_URL"

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
	c, err := redisx.Dial(URL(t), 0, nil)
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
