// Package redisxtest gives the tests of agentwire's Redis backends a client
// of the test Redis and a key prefix of their own.
package redisxtest

import (
	"context"
	"os"
	"testing"

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
