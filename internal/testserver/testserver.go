// Package testserver runs `agentwire serve` inside a test process, on a free
// loopback port, the way the tests of several packages need it: through
// cli.Run, as a user would start it, stopped like SIGTERM when the test ends.
package testserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/cli"
	"github.com/agentwire/agentwire/internal/testproc"
)

// Server is one running `agentwire serve`.
type Server struct {
	// URL is http://127.0.0.1:PORT, from the "listening on" line.
	URL string

	t      testing.TB // nil after StartMain
	cancel context.CancelFunc
	done   chan error
	stderr testproc.SyncBuffer
}

// Start runs `agentwire serve --addr 127.0.0.1:0 --data-dir <temp dir>` plus
// args (later flags win) with an empty environment, waits for its
// "listening on" line, and stops it when the test ends.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	s, err := start(t.TempDir(), args)
	if err != nil {
		t.Fatal(err)
	}
	s.t = t
	t.Cleanup(func() { _ = s.Stop() })
	return s
}

// StartMain is Start for code that has no testing.TB (a TestMain, the
// server of runnable examples): the caller calls Stop and removes dataDir.
func StartMain(dataDir string, args ...string) (*Server, error) {
	return start(dataDir, args)
}

func start(dataDir string, args []string) (*Server, error) {
	argv := append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir}, args...)
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{cancel: cancel, done: make(chan error, 1)}
	pr, pw := io.Pipe()
	go func() {
		err := cli.Run(ctx, argv, func(string) string { return "" }, pw, &s.stderr)
		pw.CloseWithError(fmt.Errorf("server exited: %v", err))
		s.done <- err
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		return nil, fmt.Errorf("server did not start: %v\n%s", err, s.Stderr())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	s.URL = strings.TrimSpace(strings.TrimPrefix(line, "listening on "))
	if !strings.HasPrefix(s.URL, "http://") {
		cancel()
		return nil, fmt.Errorf("first line %q is not 'listening on http://…'", line)
	}
	return s, nil
}

// Stop cancels the server as SIGTERM does and returns what serve returned
// (nil for a clean shutdown). Calling it again returns the same.
func (s *Server) Stop() error {
	s.cancel()
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(20 * time.Second):
		err := errors.New("server did not stop within 20 s")
		if s.t != nil {
			s.t.Error(err)
			return nil
		}
		return err
	}
}

// Stderr returns what the server logged so far.
func (s *Server) Stderr() string { return s.stderr.String() }
