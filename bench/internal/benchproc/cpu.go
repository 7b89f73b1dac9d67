package benchproc

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The comparison this repository's figures are made by pins the server to
// one core and the load generator to the other, so that "server CPU per
// publish" is the server's own time, not what the scheduler lent it from the
// load generator's core.

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100
// on every Linux architecture Go supports (it is part of the ABI).
const clockTick = 10 * time.Millisecond

// PinSelf binds every thread of this process to cpu (threads created later
// inherit the mask of the thread that creates them). cpu < 0 does nothing.
func PinSelf(cpu int) error {
	if cpu < 0 {
		return nil
	}
	var set unix.CPUSet
	set.Set(cpu)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	// Twice: a thread started while the first pass ran may have copied an
	// unpinned creator's mask.
	for pass := 0; pass < 2; pass++ {
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("pin thread %d to cpu %d: %w", tid, cpu, err)
			}
		}
		if tasks, err = os.ReadDir("/proc/self/task"); err != nil {
			return err
		}
	}
	return nil
}

// onCPU runs start with the calling OS thread bound to cpu, so that a child
// process forked by start inherits that one-CPU mask from its first
// instruction (and the Go runtime in it sizes GOMAXPROCS to 1); the thread's
// previous mask is restored afterwards. cpu < 0 just calls start.
func onCPU(cpu int, start func() error) error {
	if cpu < 0 {
		return start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to cpu %d: %w", cpu, err)
	}
	defer func() { _ = unix.SchedSetaffinity(0, &old) }()
	return start()
}

// CPUTime is the user + system CPU time pid has used so far, summed over its
// threads (utime and stime of /proc/<pid>/stat; 10 ms resolution, so measure
// over seconds).
func CPUTime(pid int) (time.Duration, error) {
	user, sys, err := CPUTimes(pid)
	return user + sys, err
}

// CPUTimes is CPUTime split into the time pid spent in user space and in the
// kernel. On loopback the kernel share includes the receiving side's TCP work
// for every byte pid writes, so it is the part no change to pid's own code
// can remove.
func CPUTimes(pid int) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing parenthesis. utime and stime are
	// fields 14 and 15, so the 12th and 13th after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(ut) * clockTick, time.Duration(st) * clockTick, nil
}

// CPUs is the number of CPUs this process may run on.
func CPUs() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return runtime.NumCPU()
	}
	return set.Count()
}

// StartCmdOn starts cmd with it bound to cpu from its first instruction (see
// StartOn); cpu < 0: not bound.
func StartCmdOn(cpu int, cmd *exec.Cmd) error { return onCPU(cpu, cmd.Start) }
