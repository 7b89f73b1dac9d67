// Package aguitest runs the Node AG-UI agent server the tests of the agui
// upstream agent speak to (aguiagent/testdata/upstream/server.mjs, written
// with the real @ag-ui/encoder): aguiagent's own tests and the end-to-end
// suite use it. Test support only.
package aguitest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Dir is the server's directory (its package.json, package-lock.json and,
// after npm ci, node_modules), found from this file's location.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "upstream")
}

// Server is a running server.mjs. Its scenarios are picked by a keyword in
// the run's last user message (text, reasoning, tool, state, echo, error,
// cut, drop, slow: see server.mjs); it prints "request <runId>" when a run
// arrives and "closed <runId>" when the client closed the connection before
// the answer ended.
type Server struct {
	// URL is where runs are POSTed (--agent-url).
	URL string

	mu    sync.Mutex
	lines []string
	more  chan struct{} // closed and replaced on each new line
}

// Start starts server.mjs for the test, or skips loudly (fails under
// CI=true) when node or the server's node_modules are missing. The server
// is killed when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	dir := Dir()
	node, err := exec.LookPath("node")
	missing := ""
	switch {
	case err != nil:
		missing = "no node on PATH"
	default:
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "@ag-ui", "encoder")); err != nil {
			missing = "no node_modules (run: cd internal/agent/aguiagent/testdata/upstream && npm ci)"
		}
	}
	if missing != "" {
		msg := "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n" +
			"!!! AG-UI UPSTREAM TESTS (real @ag-ui/encoder server) NOT RUN: " + missing + "\n" +
			"!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "CI=true: these tests must run in CI")
		}
		fmt.Fprint(os.Stderr, msg)
		t.Skip(msg)
	}
	cmd := exec.Command(node, "server.mjs")
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &Server{more: make(chan struct{})}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.mu.Lock()
			s.lines = append(s.lines, sc.Text())
			close(s.more)
			s.more = make(chan struct{})
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-read
		_ = cmd.Wait()
	})
	line := s.Wait(t, "listening ", 10*time.Second)
	s.URL = "http://127.0.0.1:" + strings.TrimPrefix(line, "listening ") + "/agui"
	return s
}

// Wait returns the first line the server printed that starts with prefix,
// waiting up to d for it (the test fails after).
func (s *Server) Wait(t testing.TB, prefix string, d time.Duration) string {
	t.Helper()
	deadline := time.After(d)
	for {
		s.mu.Lock()
		for _, l := range s.lines {
			if strings.HasPrefix(l, prefix) {
				s.mu.Unlock()
				return l
			}
		}
		more := s.more
		s.mu.Unlock()
		select {
		case <-more:
		case <-deadline:
			s.mu.Lock()
			lines := append([]string(nil), s.lines...)
			s.mu.Unlock()
			t.Fatalf("the AG-UI server printed no %q line within %v; it printed %q", prefix, d, lines)
		}
	}
}
