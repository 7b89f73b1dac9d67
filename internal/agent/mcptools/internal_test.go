package mcptools

import (
	"errors"
	"strings"
	"testing"
)

func TestChildEnvDropsAgentwireSecrets(t *testing.T) {
	t.Parallel()
	got := strings.Join(childEnv([]string{"PATH=/bin", "AGENTWIRE_JWT_SECRET=s", "AGENTWIRE_OPENAI_API_KEY=k", "HOME=/h"}), " ")
	if got != "PATH=/bin HOME=/h" {
		t.Errorf("childEnv = %q", got)
	}
}

func TestRedactKeepsCredentialsOutOfLogs(t *testing.T) {
	t.Parallel()
	sv := &server{cfg: Server{Name: "x", URL: "https://user:pw@mcp.example/v1/mcp?token=t0p"}}
	got := sv.redact(errors.New(`Post "https://user:pw@mcp.example/v1/mcp?token=t0p": dial tcp: refused; token=t0p`))
	if strings.Contains(got, "pw") || strings.Contains(got, "t0p") || !strings.Contains(got, "https://mcp.example/v1/mcp") {
		t.Errorf("redact = %q", got)
	}
}
