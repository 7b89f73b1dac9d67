package runs

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestClockSuspendsRunTimeoutWhileWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ranOut, inputOut time.Time
		start := time.Now()
		c := startClock(10*time.Second, func() { ranOut = time.Now() }, func() { inputOut = time.Now() })
		time.Sleep(4 * time.Second)
		if !c.pause(time.Hour) {
			t.Fatal("pause refused")
		}
		time.Sleep(30 * time.Minute) // waiting: neither deadline passes
		synctest.Wait()
		if !ranOut.IsZero() || !inputOut.IsZero() {
			t.Fatalf("a timeout fired while waiting: run %v input %v", ranOut, inputOut)
		}
		if !c.resume() {
			t.Fatal("resume refused")
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if got, want := ranOut.Sub(start), 4*time.Second+30*time.Minute+6*time.Second; got != want {
			t.Fatalf("run timeout after %v, want %v (the waiting time not counted)", got, want)
		}
		if !inputOut.IsZero() {
			t.Fatal("input timeout fired after the answer")
		}
	})
}

func TestClockInputTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ranOut, inputOut time.Time
		start := time.Now()
		c := startClock(time.Minute, func() { ranOut = time.Now() }, func() { inputOut = time.Now() })
		time.Sleep(time.Second)
		c.pause(5 * time.Minute)
		time.Sleep(time.Hour)
		synctest.Wait()
		if got, want := inputOut.Sub(start), time.Second+5*time.Minute; got != want {
			t.Fatalf("input timeout after %v, want %v", got, want)
		}
		if !ranOut.IsZero() {
			t.Fatal("the run timeout fired while waiting")
		}
		if c.resume() {
			t.Fatal("resume after the input timeout fired: want false")
		}
	})
}

func TestClockRunTimeoutBeforePause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fired := 0
		c := startClock(time.Second, func() { fired++ }, func() { t.Error("input timeout") })
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if c.pause(time.Minute) {
			t.Fatal("pause after the run timeout fired: want false")
		}
		c.stop()
		if fired != 1 {
			t.Fatalf("run timeout fired %d times", fired)
		}
	})
}
