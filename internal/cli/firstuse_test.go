package cli_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/cli"
)

// runCLI runs agentwire with args and an environment of env only, and returns
// what it printed on stdout and stderr and its error. ctx bounds serve.
func runCLI(t *testing.T, ctx context.Context, env map[string]string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = cli.Run(ctx, args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), errOut.String(), err
}

// shown is what a user sees in the terminal: stderr, then the error as
// cmd/agentwire prints it.
func shown(stderr string, err error) string {
	if err != nil {
		stderr += "agentwire: " + err.Error() + "\n"
	}
	return stderr
}

func lines(s string) int { return strings.Count(strings.TrimRight(s, "\n"), "\n") + 1 }

func TestUnknownFlagIsShort(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"serve", "token", "verify", "bench"} {
		_, stderr, err := runCLI(t, context.Background(), nil, cmd, "--no-such-flag")
		if err == nil {
			t.Fatalf("%s --no-such-flag: no error", cmd)
		}
		got := shown(stderr, err)
		if n := lines(got); n > 2 {
			t.Errorf("%s --no-such-flag printed %d lines, want the error and one hint:\n%s", cmd, n, got)
		}
		if !strings.Contains(got, "-no-such-flag") || !strings.Contains(got, "agentwire "+cmd+" -h") {
			t.Errorf("%s --no-such-flag: want the flag named and a hint to run agentwire %s -h, got:\n%s", cmd, cmd, got)
		}
		if code := cli.ExitCode(err); code != 2 {
			t.Errorf("%s --no-such-flag: exit code %d, want 2", cmd, code)
		}
	}
}

func TestHelpStillListsFlags(t *testing.T) {
	t.Parallel()
	_, stderr, err := runCLI(t, context.Background(), nil, "serve", "-h")
	if cli.ExitCode(err) != 0 && !strings.Contains(err.Error(), "help requested") {
		t.Fatalf("serve -h: %v", err)
	}
	for _, want := range []string{"-addr", "-ping-interval", "AGENTWIRE_DATA_DIR"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("serve -h does not list %s:\n%s", want, stderr)
		}
	}
}

func TestDurationNeedsUnit(t *testing.T) {
	t.Parallel()
	_, stderr, err := runCLI(t, context.Background(), nil, "serve", "--ping-interval", "5")
	got := shown(stderr, err)
	if err == nil || !strings.Contains(got, "unit") || !strings.Contains(got, "5s") {
		t.Errorf("--ping-interval 5: want a message saying a unit is needed (e.g. 5s), got:\n%s", got)
	}
	if n := lines(got); n > 2 {
		t.Errorf("--ping-interval 5 printed %d lines:\n%s", n, got)
	}
	_, stderr, err = runCLI(t, context.Background(), map[string]string{"AGENTWIRE_PING_INTERVAL": "5"}, "serve")
	got = shown(stderr, err)
	if err == nil || !strings.Contains(got, "AGENTWIRE_PING_INTERVAL") || !strings.Contains(got, "unit") {
		t.Errorf("AGENTWIRE_PING_INTERVAL=5: want a message naming the variable and the missing unit, got:\n%s", got)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		out, _, err := runCLI(t, context.Background(), nil, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !strings.HasPrefix(out, "agentwire ") || !strings.Contains(out, runtime.Version()) || lines(out) != 1 {
			t.Errorf("%v printed %q, want one line: agentwire <version> (%s)", args, out, runtime.Version())
		}
	}
}

func TestTokenRefusesToCreateSecret(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	out, stderr, err := runCLI(t, context.Background(), nil, "token", "--user", "alice", "--data-dir", dir)
	if err == nil {
		t.Fatalf("token with no secret anywhere printed %q and no error", out)
	}
	if got := shown(stderr, err); !strings.Contains(got, filepath.Join(dir, auth.SecretFile)) || !strings.Contains(got, "--jwt-secret") {
		t.Errorf("want the error to name the missing secret file and --jwt-secret, got:\n%s", got)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token created %s (stat: %v); it must not create anything", dir, err)
	}
}

func TestTokenNamesItsSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	secret, err := auth.LoadOrCreateSecret(dir) // as serve does on its first start
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runCLI(t, context.Background(), nil, "token", "--user", "alice", "--data-dir", dir)
	if err != nil {
		t.Fatalf("token: %v\n%s", err, stderr)
	}
	tok := strings.TrimSpace(out)
	if lines(out) != 1 || tok == "" {
		t.Fatalf("stdout must be the token alone, got %q", out)
	}
	if !strings.Contains(stderr, filepath.Join(dir, auth.SecretFile)) {
		t.Errorf("stderr should name the secret file it signed with, got %q", stderr)
	}
	v, err := auth.NewVerifier(context.Background(), auth.Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if c, err := v.Verify(context.Background(), tok); err != nil || c.Subject != "alice" {
		t.Errorf("the token does not verify with the data dir's secret: %v", err)
	}

	_, stderr, err = runCLI(t, context.Background(), map[string]string{"AGENTWIRE_JWT_SECRET": "a-secret-of-at-least-thirty-two-bytes!!"}, "token", "--user", "alice")
	if err != nil {
		t.Fatalf("token with AGENTWIRE_JWT_SECRET: %v", err)
	}
	if !strings.Contains(stderr, "--jwt-secret") || !strings.Contains(stderr, "AGENTWIRE_JWT_SECRET") {
		t.Errorf("stderr should say it signed with --jwt-secret [AGENTWIRE_JWT_SECRET], got %q", stderr)
	}
}

func TestDataDirNotWritableNamesFlag(t *testing.T) {
	t.Parallel()
	// A regular file where a directory is needed: unwritable even for root.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, stderr, err := runCLI(t, ctx, nil, "serve", "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(file, "data"))
	if err == nil || !strings.Contains(shown(stderr, err), "--data-dir") {
		t.Errorf("serve with an unwritable data dir: want an error naming --data-dir, got %v", err)
	}
}

func TestPortInUseNamesAddr(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, stderr, err := runCLI(t, ctx, nil, "serve", "--addr", ln.Addr().String(), "--data-dir", t.TempDir(), "--log-level", "error")
	got := shown(stderr, err)
	if err == nil || !strings.Contains(got, "--addr") || !strings.Contains(got, "in use") {
		t.Errorf("serve on a port in use: want an error saying it is in use and naming --addr, got:\n%s", got)
	}
}
