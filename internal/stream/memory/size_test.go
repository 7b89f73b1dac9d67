package memory

import (
	"testing"
	"unsafe"
)

// A user record is allocated for every subscribed user, idle or not: it must
// stay within the 144-byte size class (bench/README.md section 2); the ring
// and the idempotency keys are allocated on the first append.
func TestUserStructSize(t *testing.T) {
	if n := unsafe.Sizeof(user{}); n > 144 {
		t.Fatalf("user is %d bytes, over the 144-byte size class a subscribed user is held to", n)
	}
}
