package agui_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/agentwire/agentwire/internal/testserver"
)

// jsSecret is the HS256 secret clients/js/test/helpers.mjs signs with
// (the Node tests import its sign).
const jsSecret = "js-test-secret-0123456789abcdef-0123456789"

// TestNodeAGUIClient runs the real @ag-ui/client 1.0.0 (testdata/node,
// installed by npm ci there: scripts/test does it) against a server started
// here: HttpAgent's golden path under its own event verifier, slow, fail,
// stop, a retried request, a cut connection resumed with /connect, and
// isolation. It skips, loudly, when node or the packages are missing.
func TestNodeAGUIClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("SKIPPED: node is not installed: the @ag-ui/client tests did not run")
	}
	dir := filepath.Join("testdata", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@ag-ui", "client")); err != nil {
		t.Skip("SKIPPED: internal/agui/testdata/node/node_modules is missing (run npm ci there): the @ag-ui/client tests did not run")
	}
	srv := testserver.Start(t, "--dev", "--jwt-secret", jsSecret, "--log-level", "warn")
	cmd := exec.Command(node, "--test", "--test-concurrency=1", "--test-timeout=60000", "test/")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "AGENTWIRE_URL="+srv.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s\nserver log:\n%s", err, out, srv.Stderr())
	}
	t.Logf("%s", out)
}
