package hub

import (
	"testing"
	"unsafe"
)

// A connection's struct is allocated once per socket, idle or not: it must
// stay within the 224-byte size class (bench/README.md section 2). State
// only a joining, replaying or closing connection needs goes behind
// Conn.rare.
func TestConnStructSize(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 224 {
		t.Fatalf("Conn is %d bytes, over the 224-byte size class an idle connection is held to", n)
	}
}

// A user entry is allocated for every user with a local connection: it must
// stay within the 48-byte size class.
func TestUserEntryStructSize(t *testing.T) {
	if n := unsafe.Sizeof(userEntry{}); n > 48 {
		t.Fatalf("userEntry is %d bytes, over the 48-byte size class", n)
	}
}
