package memory

import (
	"testing"
	"unsafe"
)

// A user record is allocated for every subscribed user, idle or not: it must
// stay within the 64-byte size class (bench/README.md section 2); the
// history (ring and idempotency keys) is allocated on the first append and
// within the 96-byte class.
func TestUserStructSize(t *testing.T) {
	if n := unsafe.Sizeof(user{}); n > 64 {
		t.Fatalf("user is %d bytes, over the 64-byte size class a subscribed user is held to", n)
	}
	if n := unsafe.Sizeof(history{}); n > 96 {
		t.Fatalf("history is %d bytes, over the 96-byte size class", n)
	}
}
