package runs

import (
	"sync"
	"time"
)

// clock is a run's two deadlines: the run timeout, which counts only while
// the run is not waiting for its user, and the input timeout, which counts
// while it is. Exactly one timer is armed at a time; its callback ends the
// run. Time is read with time.Now, so tests drive it with testing/synctest.
type clock struct {
	mu      sync.Mutex
	left    time.Duration // run time left at the start of the current stretch
	since   time.Time     // start of the current running stretch
	waiting bool
	stopped bool
	timer   *time.Timer
	onRun   func() // the run timeout passed
	onInput func() // the input timeout passed
}

// startClock arms the run timeout.
func startClock(runTimeout time.Duration, onRun, onInput func()) *clock {
	c := &clock{left: runTimeout, since: time.Now(), onRun: onRun, onInput: onInput}
	c.timer = time.AfterFunc(runTimeout, onRun)
	return c
}

// pause suspends the run timeout and arms the input timeout. It reports
// false when the run timeout has already fired (or the clock is stopped).
func (c *clock) pause(inputTimeout time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || c.waiting || !c.timer.Stop() {
		return false
	}
	c.left -= time.Since(c.since)
	c.waiting = true
	c.timer = time.AfterFunc(inputTimeout, c.onInput)
	return true
}

// resume disarms the input timeout and arms the run timeout for the time
// left. It reports false when the input timeout has already fired.
func (c *clock) resume() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped || !c.waiting || !c.timer.Stop() {
		return false
	}
	c.waiting = false
	c.since = time.Now()
	c.timer = time.AfterFunc(max(c.left, 0), c.onRun)
	return true
}

// stop disarms whichever timer is armed, for good.
func (c *clock) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	c.timer.Stop()
}
