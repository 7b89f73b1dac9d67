package hub

import (
	"testing"
	"time"
	"unsafe"
)

// A connection's struct is allocated once per socket, idle or not: it must
// stay within the 208-byte size class (bench/README.md section 2). State
// only a joining, replaying or closing connection needs goes behind
// Conn.rare; the transport name is a byte.
func TestConnStructSize(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 208 {
		t.Fatalf("Conn is %d bytes, over the 208-byte size class an idle connection is held to", n)
	}
}

// A user entry is allocated for every user with a local connection: it must
// stay within the 48-byte size class.
func TestUserEntryStructSize(t *testing.T) {
	if n := unsafe.Sizeof(userEntry{}); n > 48 {
		t.Fatalf("userEntry is %d bytes, over the 48-byte size class", n)
	}
}

// The transport name given to Describe is what Info shows, however many
// connections share it.
func TestDescribeTransport(t *testing.T) {
	h := New(Config{})
	names := []string{"websocket", "sse", "websocket", "agui", ""}
	conns := make([]*Conn, len(names))
	for i, n := range names {
		conns[i] = h.NewConn("c", "u", nil)
		conns[i].Describe(n, time.Time{})
	}
	for i, c := range conns {
		if got := c.Info().Transport; got != names[i] {
			t.Fatalf("connection %d: transport %q, want %q", i, got, names[i])
		}
	}
}
