// Package redisx is what every Redis backend of agentwire shares: the one
// client a node dials (ParseURL, Dial: a standalone Redis, a Redis Cluster
// or the master Sentinel names), the per-user hash tag every user key starts
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
	"net/url"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// DefaultPrefix starts every key and channel name agentwire keeps in Redis.
const DefaultPrefix = "aw"

// DefaultDialTimeout bounds each connection attempt.
const DefaultDialTimeout = 2 * time.Second

// ClusterRefresh is how often a Redis Cluster client rescans the topology.
const ClusterRefresh = 5 * time.Second

// ErrUnavailable wraps errors talking to Redis: the network, or a Redis
// that cannot answer yet.
var ErrUnavailable = errors.New("redis unavailable")

// Dial returns the client for the Redis that url names (see ParseURL), each
// connection attempt bounded by dialTimeout (DefaultDialTimeout when <= 0).
// A Redis that is down at start is not an error: the client reconnects, and
// calls fail meanwhile (for a cluster or Sentinel, Dial needs one seed node
// answering, since the client learns the topology from it). The client
// sends a command once (callers retry where retrying is right) and caches
// nothing. A Redis unreachable at start is logged to log (nil: not logged).
// One node dials one client and shares it; its owner closes it after
// everything using it.
func Dial(rawURL string, dialTimeout time.Duration, log *slog.Logger) (rueidis.Client, error) {
	opt, mode, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	opt.Dialer = net.Dialer{Timeout: dialTimeout, KeepAlive: opt.Dialer.KeepAlive}
	opt.Sentinel.Dialer = opt.Dialer
	opt.ConnWriteTimeout = max(3*dialTimeout, 5*time.Second)
	opt.DisableCache = true
	opt.DisableRetry = true
	// A cluster client learns of a failover from a MOVED reply or an error
	// talking to the dead master; one that sees neither (a node only
	// subscribed, say) rescans the topology every ClusterRefresh too.
	opt.ClusterOption.ShardsRefreshInterval = ClusterRefresh
	c, err := rueidis.NewClient(opt)
	if c == nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if err != nil && log != nil {
		log.Warn("Redis unreachable at start, will keep trying", "err", err)
	}
	if mode == Cluster && c.Mode() != rueidis.ClientModeCluster {
		c.Close()
		return nil, errors.New("redis: " + rawURL[:strings.Index(rawURL, "://")] + ":// but the server is not a cluster (cluster-enabled no): use redis://")
	}
	return c, nil
}

// Mode is the kind of Redis deployment a URL names.
type Mode string

// Modes.
const (
	Standalone Mode = "standalone" // redis://, rediss://, unix://: one server or a cluster proxy
	Cluster    Mode = "cluster"    // redis-cluster://: Redis Cluster, any of its nodes as seeds
	Sentinel   Mode = "sentinel"   // redis-sentinel://: the master Sentinel names
)

// ParseURL reads a Redis URL into client options:
//
//	redis://[user:pass@]host:port[/db][?opts]       one server (rediss:// with TLS, unix:///path)
//	redis-cluster://[user:pass@]h1:p1,h2:p2,…[?opts] Redis Cluster; the nodes are seeds
//	redis-sentinel://[user:pass@]h1:p1,…[/db]?master=NAME[&opts]
//	                                                the master of NAME, found through
//	                                                these Sentinels
//
// opts are rueidis.ParseURL's (dial_timeout, write_timeout, …); a cluster
// has no database number. Every error names what is wrong.
func ParseURL(raw string) (rueidis.ClientOption, Mode, error) {
	bad := func(format string, a ...any) (rueidis.ClientOption, Mode, error) {
		return rueidis.ClientOption{}, "", fmt.Errorf("redis: bad URL: "+format, a...)
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return bad("want redis://, rediss://, unix://, redis-cluster:// or redis-sentinel://")
	}
	mode := Standalone
	switch scheme {
	case "redis", "rediss", "unix":
	case "redis-cluster", "rediss-cluster":
		mode = Cluster
	case "redis-sentinel", "rediss-sentinel":
		mode = Sentinel
	default:
		return bad("unknown scheme %q: want redis, rediss, unix, redis-cluster or redis-sentinel", scheme)
	}
	if mode == Standalone {
		opt, err := rueidis.ParseURL(raw)
		if err != nil {
			return bad("%v", err)
		}
		if len(opt.InitAddress) != 1 {
			return bad("one address only (use redis-cluster:// or redis-sentinel:// for several)")
		}
		opt.ForceSingleClient = true // a client even while Redis is down
		return opt, mode, nil
	}
	// host list: everything between an optional userinfo@ and the first '/' or '?'.
	userinfo, hostsEtc := "", rest
	if at := strings.LastIndex(rest[:indexAny(rest, "/?")], "@"); at >= 0 {
		userinfo, hostsEtc = rest[:at+1], rest[at+1:]
	}
	end := indexAny(hostsEtc, "/?")
	hosts, tail := hostsEtc[:end], hostsEtc[end:]
	if strings.HasPrefix(tail, "/?") || tail == "/" {
		tail = tail[1:] // no database number
	}
	var addrs []string
	for _, h := range strings.Split(hosts, ",") {
		if h == "" {
			continue
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" || port == "" {
			return bad("%q is not host:port", h)
		}
		addrs = append(addrs, h)
	}
	if len(addrs) == 0 {
		return bad("no host:port in %s://", scheme)
	}
	base := "redis"
	if strings.HasPrefix(scheme, "rediss") {
		base = "rediss"
	}
	opt, err := rueidis.ParseURL(base + "://" + userinfo + addrs[0] + tail)
	if err != nil {
		return bad("%v", err)
	}
	if opt.Sentinel.MasterSet != "" {
		return bad("use master=NAME, not master_set")
	}
	opt.InitAddress = addrs
	q, _ := urlQuery(tail)
	master := q.Get("master")
	switch mode {
	case Cluster:
		if master != "" {
			return bad("master= is for redis-sentinel://")
		}
		if opt.SelectDB != 0 {
			return bad("a cluster has only database 0")
		}
	case Sentinel:
		if master == "" {
			return bad("redis-sentinel:// needs ?master=NAME (the name the Sentinels monitor)")
		}
		opt.Sentinel.MasterSet = master
		opt.Sentinel.Username, opt.Sentinel.Password = opt.Username, opt.Password
		opt.Sentinel.TLSConfig = opt.TLSConfig
	}
	return opt, mode, nil
}

func indexAny(s, chars string) int {
	if i := strings.IndexAny(s, chars); i >= 0 {
		return i
	}
	return len(s)
}

func urlQuery(tail string) (url.Values, error) {
	_, q, _ := strings.Cut(tail, "?")
	return url.ParseQuery(q)
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
