package benchproc

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// CPUTimes reads user and kernel time from the right fields: a loop of pure
// computation grows the first, a loop of syscalls the second, and CPUTime is
// their sum. Each loop runs until its figure has grown by 50 ms (bounded by
// 60 s of wall time), so a slow box only makes it longer.
func TestCPUTimesSplit(t *testing.T) {
	pid := os.Getpid()
	grow := func(what string, which func(user, sys time.Duration) time.Duration, work func()) {
		t.Helper()
		u0, s0, err := CPUTimes(pid)
		if err != nil {
			t.Fatal(err)
		}
		start := which(u0, s0)
		for deadline := time.Now().Add(time.Minute); ; {
			work()
			u, s, err := CPUTimes(pid)
			if err != nil {
				t.Fatal(err)
			}
			if which(u, s)-start >= 50*time.Millisecond {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s time grew by %v in a minute of its loop (user %v→%v, kernel %v→%v)", what, which(u, s)-start, u0, u, s0, s)
			}
		}
	}
	x := uint64(1)
	grow("user", func(u, _ time.Duration) time.Duration { return u }, func() {
		for i := 0; i < 1_000_000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	})
	grow("kernel", func(_, s time.Duration) time.Duration { return s }, func() {
		for i := 0; i < 10_000; i++ {
			syscall.Getppid()
		}
	})
	if x == 0 {
		t.Log(x) // keeps the computation
	}
	u, s, err := CPUTimes(pid)
	if err != nil {
		t.Fatal(err)
	}
	total, err := CPUTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Read after the split, so it can only have grown since.
	if total < u+s {
		t.Errorf("CPUTime %v < user %v + kernel %v", total, u, s)
	}
}
