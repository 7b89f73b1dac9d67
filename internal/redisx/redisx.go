// Package redisx is what every Redis backend of agentwire shares: the one
// client a node dials (Dial), the per-user hash tag every user key starts
// with (UserTag), the classification of its errors (Wrap, ErrUnavailable),
// and Slots, the per-user sorted set of expiring entries that the
// cluster-wide connection and run limits are made of. It imports nothing of
// agentwire; the backends that use it live with their concepts
// (stream/redis, auth/tickets/redis, hub/redis, runs/redis).
package redisx

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// DefaultPrefix starts every key and channel name agentwire keeps in Redis.
const DefaultPrefix = "aw"

// DefaultDialTimeout bounds each connection attempt.
const DefaultDialTimeout = 2 * time.Second

// ErrUnavailable wraps errors talking to Redis: the network, or a Redis
// that cannot answer yet.
var ErrUnavailable = errors.New("redis unavailable")

// Dial returns the client for Redis at url (redis://, rediss://, unix://),
// each connection attempt bounded by dialTimeout (DefaultDialTimeout when
// <= 0). A Redis that is down at start is not an error: the client
// reconnects, and calls fail meanwhile. The client sends a command once
// (callers retry where retrying is right), caches nothing, and talks to one
// address (a standalone Redis or a cluster proxy). A Redis unreachable at
// start is logged to log (nil: not logged). One node dials one client and
// shares it; its owner closes it after everything using it.
func Dial(url string, dialTimeout time.Duration, log *slog.Logger) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis: bad URL: %w", err)
	}
	if len(opt.InitAddress) > 1 {
		return nil, errors.New("redis: one address only (standalone or a cluster proxy)")
	}
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	opt.Dialer = net.Dialer{Timeout: dialTimeout, KeepAlive: opt.Dialer.KeepAlive}
	opt.ConnWriteTimeout = max(3*dialTimeout, 5*time.Second)
	opt.DisableCache = true
	opt.DisableRetry = true
	opt.ForceSingleClient = true // a client even while Redis is down
	c, err := rueidis.NewClient(opt)
	if c == nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err != nil && log != nil {
		log.Warn("Redis unreachable at start, will keep trying", "err", err)
	}
	return c, nil
}

// CheckPrefix reports a key prefix that would break the hash tag.
func CheckPrefix(prefix string) error {
	if strings.ContainsAny(prefix, "{}") {
		return errors.New("redis: prefix must not contain '{' or '}'")
	}
	return nil
}

// UserTag is how every key and channel of user starts:
// <prefix>:{u:<base64url(user)>}: . The braces make them one hash slot on
// Redis Cluster; the user id is base64url-encoded (no padding) inside
// them, so ids containing '}' or ':' can neither collide nor move the tag.
func UserTag(prefix, user string) string {
	return prefix + ":{u:" + base64.RawURLEncoding.EncodeToString([]byte(user)) + "}:"
}

// Wrap classifies err from the client: nil and Redis's nil reply as they
// are, an error reply as a Redis error, anything else (the network) as
// ErrUnavailable.
func Wrap(err error) error {
	if err == nil || rueidis.IsRedisNil(err) {
		return err
	}
	var re *rueidis.RedisError
	if errors.As(err, &re) {
		return fmt.Errorf("redis: %w", err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}
