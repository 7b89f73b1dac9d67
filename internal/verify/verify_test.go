package verify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/testserver"
	"github.com/agentwire/agentwire/internal/verify"
)

// startVerifyServer runs `agentwire serve --dev` (demo agent) in-process on a
// free port and returns its URL; it stops when the test ends.
func startVerifyServer(t *testing.T) string {
	t.Helper()
	return testserver.Start(t, "--dev", "--log-level", "error").URL
}

func runVerify(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	getenv := func(k string) string { return env[k] }
	err := verify.Run(context.Background(), args, getenv, &out)
	return out.String(), err
}

var summary = regexp.MustCompile(`(?m)^(\d+) passed, (\d+) failed\n\z`)

func TestVerifyPasses(t *testing.T) {
	t.Parallel()
	url := startVerifyServer(t)
	out, err := runVerify(t, map[string]string{"AGENTWIRE_URL": url}, "--dev-user", "verify-alice", "--timeout", "20s")
	t.Logf("\n%s", out)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	m := summary.FindStringSubmatch(out)
	if m == nil || m[2] != "0" || m[1] == "0" {
		t.Fatalf("summary line missing or not N passed, 0 failed")
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "ok   ") && !summary.MatchString(line+"\n") {
			t.Errorf("unexpected line %q", line)
		}
	}
	for _, want := range []string{"GET /healthz", "GET /readyz", "ticket auth", "seq strictly +1", "second tab", "second user sees nothing", "resume with since=", "ping/pong"} {
		if !strings.Contains(out, want) {
			t.Errorf("no check %q", want)
		}
	}
}

func TestVerifyWithToken(t *testing.T) {
	t.Parallel()
	url := startVerifyServer(t)
	// A token from dev-login, given as AGENTWIRE_TOKEN: no isolation check,
	// the same golden path; --expect '' skips the content check.
	resp, err := http.Post(url+"/auth/dev-login", "application/json", strings.NewReader(`{"user_id":"tok-user"}`))
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		Token string `json:"token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if err != nil || login.Token == "" {
		t.Fatalf("dev-login: %v", err)
	}
	out, err := runVerify(t, map[string]string{"AGENTWIRE_TOKEN": login.Token}, "--url", url, "--expect", "", "--message", "hello there")
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	if strings.Contains(out, "contains") || strings.Contains(out, "second user") || !strings.HasSuffix(out, " passed, 0 failed\n") {
		t.Errorf("output:\n%s", out)
	}
}

func TestVerifyFailingAgent(t *testing.T) {
	t.Parallel()
	url := startVerifyServer(t)
	out, err := runVerify(t, nil, "--url", url, "--dev-user", "verify-bob", "--message", "please fail", "--timeout", "20s")
	t.Logf("\n%s", out)
	if err == nil {
		t.Fatalf("verify passed against a failing agent")
	}
	if !strings.Contains(out, "FAIL agent_completed") || !strings.Contains(out, "agent_failed") {
		t.Errorf("no FAIL line naming agent_failed")
	}
	if m := summary.FindStringSubmatch(out); m == nil || m[2] == "0" {
		t.Errorf("summary does not count the failure")
	}
}

func TestVerifyClosedPort(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	out, err := runVerify(t, nil, "--url", "http://"+addr, "--dev-user", "x")
	if err == nil {
		t.Fatalf("verify passed against a closed port:\n%s", out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
	if !strings.Contains(err.Error(), "cannot reach") || !strings.Contains(out, "FAIL GET /healthz") || !strings.HasSuffix(out, "0 passed, 1 failed\n") {
		t.Errorf("err %v, output:\n%s", err, out)
	}
}

func TestVerifyNeedsAUser(t *testing.T) {
	t.Parallel()
	if _, err := runVerify(t, nil, "--url", "http://127.0.0.1:1"); err == nil {
		t.Fatal("verify without --token or --dev-user did not fail")
	}
}
