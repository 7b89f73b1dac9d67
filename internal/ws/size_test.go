package ws

import (
	"testing"
	"unsafe"
)

// An idle connection's struct is allocated once per socket: it must stay
// within the 224-byte size class (bench/README.md section 2). State only an
// active connection needs goes behind session.act, the user id is the hub
// connection's, the bytes behind the handshake hang off one pointer.
func TestConnStructSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 224 {
		t.Fatalf("conn is %d bytes, over the 224-byte size class an idle connection is held to", n)
	}
}
