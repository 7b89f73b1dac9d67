package ws

import (
	"testing"
	"unsafe"
)

// An idle connection's struct is allocated once per socket: it must stay
// within the 256-byte size class (bench/README.md section 2). State only an
// active connection needs goes behind session.act.
func TestConnStructSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 256 {
		t.Fatalf("conn is %d bytes, over the 256-byte size class an idle connection is held to", n)
	}
}
