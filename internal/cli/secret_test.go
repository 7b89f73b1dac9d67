package cli_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/agentwire/agentwire/internal/cli"
	"github.com/agentwire/agentwire/internal/testserver"
)

// TestServeRefusesShortSecret: an HS256 secret under 32 bytes stops serve
// before it listens, unless --dev (then it is only a warning).
func TestServeRefusesShortSecret(t *testing.T) {
	t.Parallel()
	short := strings.Repeat("s", 31)
	// A serve that listens prints its line, which stops it at once.
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	stdout := stopOnWrite{stop: stop}
	var stderr bytes.Buffer
	err := cli.Run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--jwt-secret", short},
		func(string) string { return "" }, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("serve with a 31-byte secret: %v, want a refusal", err)
	}
	if stdout.Len() != 0 {
		t.Fatalf("serve listened: %q", stdout.String())
	}
	if strings.Contains(err.Error(), short) || strings.Contains(stderr.String(), short) {
		t.Fatal("the secret was printed")
	}

	ts := testserver.Start(t, "--dev", "--jwt-secret", short)
	if !strings.Contains(ts.Stderr(), "shorter than 32 bytes") {
		t.Errorf("--dev with a short secret: no warning in %q", ts.Stderr())
	}
	// 32 bytes is enough without --dev.
	testserver.Start(t, "--jwt-secret", strings.Repeat("s", 32))
}

type stopOnWrite struct {
	bytes.Buffer
	stop func()
}

func (w *stopOnWrite) Write(p []byte) (int, error) {
	w.stop()
	return w.Buffer.Write(p)
}
