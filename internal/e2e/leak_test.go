package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/testproc"
	"go.uber.org/goleak"
)

// TestNoGoroutineLeftAfterShutdown: after the server has stopped (as on
// SIGTERM) and its clients are closed, no goroutine it started is left.
//
// This test is deliberately not parallel. Go runs every non-parallel
// top-level test before it releases any parallel one (those stay parked in
// t.Parallel), so while this test runs no other test's server is doing
// anything: the goroutines that exist at its start (parked parallel tests,
// the testing framework) are recorded by IgnoreCurrent, and anything else
// alive at the end was started by this test. goleak retries for a while,
// which covers sockets and timers that are still winding down.
func TestNoGoroutineLeftAfterShutdown(t *testing.T) {
	ignore := goleak.IgnoreCurrent()

	s := startServer(t)
	api := newAPIClient(t, s)
	var clients []*client
	for _, u := range []string{"leak-a", "leak-a", "leak-b"} {
		c, _, err := dialWS(nil, s, s.token(u), "")
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, &client{t: t, c: c})
	}
	for i := 0; i < 5; i++ {
		for _, u := range []string{"leak-a", "leak-b"} {
			if _, _, err := api.publish(u, "note", map[string]int{"i": i}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range clients {
		c.readUntil("note")
	}
	clients[0].send(`{"type":"ping","id":"p"}`)
	clients[0].readUntil("pong")
	// A resumed socket exercises that path too.
	c, _, err := dialWS(nil, s, s.token("leak-b"), "since=0")
	if err != nil {
		t.Fatal(err)
	}
	clients = append(clients, &client{t: t, c: c})

	if err := s.stop(); err != nil {
		t.Fatalf("serve returned %v", err)
	}
	for _, c := range clients {
		if code := c.expectClose(5 * time.Second); code != 1001 {
			t.Errorf("close code %d, want 1001", code)
		}
		c.c.Close()
	}
	api.tr.CloseIdleConnections()
	goleak.VerifyNone(t, ignore)
}

// TestBinarySIGTERMAndToken builds the real binary and runs it: serve prints
// "listening on http://…", a token from `agentwire token` with the same data
// dir is accepted (the generated secret is kept with mode 0600), SIGTERM
// closes the socket with 1001 and the process exits 0 within 10 s.
func TestBinarySIGTERMAndToken(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go command")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "agentwire")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.CommandContext(ctx, goBin, append(args, "./cmd/agentwire")...)
	build.Dir = "../.." // the module root, from internal/e2e
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	dataDir := filepath.Join(tmp, "data")
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AGENTWIRE_") {
			env = append(env, kv)
		}
	}
	srv := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir, "--dev")
	srv.Env = env
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testproc.SyncBuffer{}
	srv.Stderr = stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, br)
		exited <- srv.Wait()
	}()
	t.Cleanup(func() {
		_ = srv.Process.Kill()
	})
	var line string
	select {
	case line = <-lines:
	case <-time.After(20 * time.Second):
		t.Fatalf("no 'listening on' line within 20 s; stderr:\n%s", stderr.String())
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on http://")
	if !ok {
		t.Fatalf("first line %q, want 'listening on http://HOST:PORT'; stderr:\n%s", line, stderr.String())
	}

	fi, err := os.Stat(filepath.Join(dataDir, "jwt-secret"))
	if err != nil {
		t.Fatalf("generated secret: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("jwt-secret has mode %04o, want 0600", perm)
	}

	tokCmd := exec.CommandContext(ctx, bin, "token", "--user", "u", "--data-dir", dataDir)
	tokCmd.Env = env
	out, err := tokCmd.Output()
	if err != nil {
		t.Fatalf("agentwire token: %v", err)
	}
	tok := strings.TrimSpace(string(out))

	s := &server{t: t, URL: "http://" + addr, WSURL: "ws://" + addr + "/ws"}
	c, est, err := dialWS(nil, s, tok, "")
	if err != nil {
		t.Fatalf("the token of `agentwire token` is refused: %v", err)
	}
	defer c.Close()
	if est.UserID != "u" {
		t.Fatalf("connected as %q", est.UserID)
	}
	// A token signed with another secret is refused: the server really
	// verifies with the generated one.
	if _, _, err := dialWS(nil, s, mustSign(t), ""); !isStatus(err, 401) {
		t.Fatalf("a token signed with another secret: %v, want 401", err)
	}

	start := time.Now()
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := readFrame(c, 10*time.Second); closeCode(err) != 1001 {
		t.Errorf("after SIGTERM the socket ended with %v, want close 1001", err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Fatalf("process exited with %v, want status 0; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(10*time.Second - time.Since(start)):
		t.Fatalf("process still running 10 s after SIGTERM; stderr:\n%s", stderr.String())
	}
}

func mustSign(t *testing.T) string {
	t.Helper()
	tok, err := signRaw(map[string]any{"sub": "u", "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func isStatus(err error, code int) bool {
	var es *errStatus
	return errors.As(err, &es) && es.code == code
}
