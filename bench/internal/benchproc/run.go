package benchproc

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"
)

// Run is one bounded benchmark run: it tracks the subprocesses it starts,
// stops them all on Fail, Close or the hard timeout, and owns a temporary
// directory for builds and data.
type Run struct {
	name string
	Tmp  string

	mu      sync.Mutex
	running []*Server
}

// NewRun starts a run named name (the prefix of its messages) that stops
// everything and exits with status 2 once timeout has passed. It raises the
// open-files limit and returns it.
func NewRun(name string, timeout time.Duration) (*Run, uint64) {
	r := &Run{name: name}
	time.AfterFunc(timeout, func() {
		fmt.Fprintf(os.Stderr, "%s: timeout %v reached, stopping\n", name, timeout)
		r.stopAll()
		os.Exit(2)
	})
	lim, err := RaiseNoFile()
	if err != nil {
		r.Fail(err)
	}
	if r.Tmp, err = os.MkdirTemp("", name+"-"); err != nil {
		r.Fail(err)
	}
	return r, lim
}

// Fail reports err, stops every subprocess and exits with status 1.
func (r *Run) Fail(err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", r.name, err)
	r.Close()
	os.Exit(1)
}

// Binary returns prebuilt, or builds ./cmd/agentwire into the run's
// directory when prebuilt is empty.
func (r *Run) Binary(prebuilt string) string {
	if prebuilt != "" {
		return prebuilt
	}
	bin, err := BuildAgentwire(context.Background(), r.Tmp)
	if err != nil {
		r.Fail(err)
	}
	return bin
}

// Start starts a subprocess (see Start) and tracks it; it fails the run on
// error.
func (r *Run) Start(name, bin string, args []string, timeout time.Duration) *Server {
	return r.StartOn(-1, name, bin, args, timeout)
}

// StartOn is Start with the subprocess bound to cpu (see StartOn).
func (r *Run) StartOn(cpu int, name, bin string, args []string, timeout time.Duration) *Server {
	return r.track(StartOn(cpu, name, bin, args, timeout))
}

// StartOnAt starts a subprocess (see StartOnAt) and tracks it; it fails the
// run on error.
func (r *Run) StartOnAt(cpu int, name, bin string, args []string, addr string, timeout time.Duration) *Server {
	return r.track(StartOnAt(cpu, name, bin, args, addr, timeout))
}

// track fails the run on err, or keeps s to be stopped with the run.
func (r *Run) track(s *Server, err error) *Server {
	if err != nil {
		r.Fail(err)
	}
	r.mu.Lock()
	r.running = append(r.running, s)
	r.mu.Unlock()
	return s
}

func (r *Run) stopAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.running {
		s.Stop()
	}
	r.running = nil
}

// Close stops every subprocess and removes the run's directory.
func (r *Run) Close() {
	r.stopAll()
	if r.Tmp != "" {
		_ = os.RemoveAll(r.Tmp)
	}
}
