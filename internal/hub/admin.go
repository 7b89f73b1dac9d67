package hub

import (
	"sync"
	"time"

	"github.com/agentwire/agentwire/protocol"
)

// ConnInfo is what the admin API shows of one connection.
type ConnInfo struct {
	ID        string
	User      string
	Transport string
	Since     time.Time
	// LastSeq and Epoch are the newest event placed on the connection
	// (queued for it or written): what its client has been sent or is
	// about to be.
	LastSeq uint64
	Epoch   string
}

// Info returns what the admin API shows of c.
func (c *Conn) Info() ConnInfo {
	c.mu.Lock()
	seq, epoch := c.lastSeq, c.epoch
	c.mu.Unlock()
	info := ConnInfo{ID: c.ID, User: c.User, Transport: transportName(c.transport), LastSeq: seq, Epoch: epoch}
	if c.Since != 0 {
		info.Since = time.Unix(0, c.Since).UTC()
	}
	return info
}

// UserConns returns the local connections of user, a copy.
func (h *Hub) UserConns(user string) []*Conn {
	sh := h.shard(user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if e := sh.users[user]; e != nil {
		return append([]*Conn(nil), e.conns...)
	}
	return nil
}

// CloseUser closes every local connection of user that match accepts (nil:
// all) with code, after what is already queued, and returns how many.
func (h *Hub) CloseUser(user string, match func(*Conn) bool, code protocol.CloseCode, reason string) int {
	n := 0
	for _, c := range h.UserConns(user) {
		if match == nil || match(c) {
			c.Close(code, reason)
			n++
		}
	}
	return n
}

// Describe sets what the admin API shows of c and checks against
// revocations: its transport, the time it connected (now) and its token's
// issue time (zero: the token had no iat). Call it before Register.
func (c *Conn) Describe(transport string, issuedAt time.Time) {
	c.transport, c.Since = transportIndex(transport), time.Now().UnixNano()
	if !issuedAt.IsZero() {
		c.IssuedAt = issuedAt.UnixMilli()
	}
}

// IssuedBefore reports whether c's token was issued before t, or had no
// iat: what a revocation at t closes.
func (c *Conn) IssuedBefore(t time.Time) bool {
	return c.IssuedAt == 0 || c.IssuedAt < t.UnixMilli()
}

// transportNames interns the transport names given to Describe, a handful
// of constants ("websocket", "sse" …): a connection keeps its name's index
// in one byte beside its flags, not a 16-byte string, which keeps Conn in a
// smaller size class. Index 0 is the empty name; past 255 names (not
// expected: they are the transports' own constants) a name is not kept.
var transportNames struct {
	mu    sync.Mutex
	names []string
}

func transportIndex(name string) uint8 {
	if name == "" {
		return 0
	}
	t := &transportNames
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, n := range t.names {
		if n == name {
			return uint8(i + 1)
		}
	}
	if len(t.names) == 255 {
		return 0
	}
	t.names = append(t.names, name)
	return uint8(len(t.names))
}

func transportName(i uint8) string {
	if i == 0 {
		return ""
	}
	t := &transportNames
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.names[i-1]
}
