package benchcmd_test

import (
	"bytes"
	"context"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/benchcmd"
	"github.com/agentwire/agentwire/internal/testserver"
)

const (
	benchKey    = "bench-test-key"
	benchSecret = "bench-test-secret-0123456789abcdef"
)

// startBenchServer runs a --dev server with an API key and a known JWT
// secret.
func startBenchServer(t *testing.T) string {
	t.Helper()
	return testserver.Start(t, "--dev", "--log-level", "error", "--api-keys", benchKey, "--jwt-secret", benchSecret).URL
}

func runBench(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	getenv := func(k string) string { return env[k] }
	err := benchcmd.Run(context.Background(), args, getenv, &out)
	return out.String(), err
}

// figure reads the number after label at the start of a summary line.
func figure(t *testing.T, out, label string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(label) + `\s+([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line in:\n%s", label, out)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var latencyLine = regexp.MustCompile(`p50 \S+  p90 \S+  p99 \S+  max \S+`)

func TestBenchPublish(t *testing.T) {
	t.Parallel()
	url := startBenchServer(t)
	env := map[string]string{"AGENTWIRE_URL": url, "AGENTWIRE_API_KEY": benchKey}
	out, err := runBench(t, env, "--dev", "--users", "5", "--conns-per-user", "2", "--rate", "200",
		"--duration", "1s", "--warmup", "200ms", "--publishers", "4", "--max-duration", "30s")
	t.Logf("\n%s", out)
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if e, l := figure(t, out, "errors"), figure(t, out, "lost"); e != 0 || l != 0 {
		t.Errorf("errors %v, lost %v", e, l)
	}
	// The rate never passes the target (how close it gets depends on how
	// busy the machine is: that is a benchmark's figure, not a test's), and
	// each event reaches both tabs.
	pub, del := figure(t, out, "publishes/s"), figure(t, out, "delivered/s")
	if pub <= 0 || pub > 220 {
		t.Errorf("publishes/s %v, want above 0 and at most the target 200", pub)
	}
	if del < 1.9*pub || del > 2.1*pub {
		t.Errorf("delivered/s %v, want 2 × publishes/s %v", del, pub)
	}
	if !latencyLine.MatchString(out) {
		t.Errorf("no latency quantiles")
	}
}

func TestBenchRuns(t *testing.T) {
	t.Parallel()
	url := startBenchServer(t)
	out, err := runBench(t, map[string]string{"AGENTWIRE_JWT_SECRET": benchSecret}, "--url", url, "--mode", "runs",
		"--users", "3", "--conns-per-user", "2", "--duration", "1s", "--warmup", "200ms", "--max-duration", "30s")
	t.Logf("\n%s", out)
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if e, l := figure(t, out, "errors"), figure(t, out, "lost"); e != 0 || l != 0 {
		t.Errorf("errors %v, lost %v", e, l)
	}
	// The demo agent takes about 330 ms a run: 3 users, one run each at a
	// time, make at most about 9 in 1 s (fewer on a busy machine).
	if r := figure(t, out, "runs/s"); r <= 0 || r > 15 {
		t.Errorf("runs/s %v, want above 0 and at most about 9", r)
	}
	for _, l := range []string{"ack", "started", "completed"} {
		if !regexp.MustCompile(`(?m)^` + l + `\s+p50 `).MatchString(out) {
			t.Errorf("no %s latency line", l)
		}
	}
}

func TestBenchWrongAPIKey(t *testing.T) {
	t.Parallel()
	url := startBenchServer(t)
	start := time.Now()
	out, err := runBench(t, nil, "--url", url, "--dev", "--api-key", "not-the-key", "--users", "2", "--duration", "1s")
	if err == nil {
		t.Fatalf("bench passed with a wrong API key:\n%s", out)
	}
	if !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "--api-key") {
		t.Errorf("error %q does not say the API key was refused", err)
	}
	if d := time.Since(start); d > 30*time.Second { // fails at once, not after --max-duration (about a minute here); generous for a busy machine
		t.Errorf("took %v", d)
	}
}

func TestBenchWrongSecret(t *testing.T) {
	t.Parallel()
	url := startBenchServer(t)
	_, err := runBench(t, nil, "--url", url, "--token-secret", "not-the-secret", "--mode", "runs", "--users", "2", "--duration", "1s")
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "--token-secret") {
		t.Fatalf("error %v, want a refused connect naming --token-secret", err)
	}
}

func TestBenchClosedPort(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	out, err := runBench(t, nil, "--url", "http://"+addr, "--dev", "--api-key", "k")
	if err == nil {
		t.Fatalf("bench passed against a closed port:\n%s", out)
	}
	if d := time.Since(start); d > 30*time.Second { // fails at once, not after --max-duration (about a minute here); generous for a busy machine
		t.Errorf("took %v", d)
	}
	if !strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("error %q", err)
	}
}

func TestBenchFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--api-key", "k"}, // no way to get tokens
		{"--api-key", "k", "--dev", "--token-secret", "s"}, // two ways
		{"--dev"}, // publish mode without an API key
		{"--dev", "--mode", "nope"},
		{"--dev", "--api-key", "k", "--duration", "10s", "--max-duration", "5s"},
	} {
		if _, err := runBench(t, nil, append([]string{"--url", "http://127.0.0.1:1"}, args...)...); err == nil || strings.Contains(err.Error(), "cannot reach") {
			t.Errorf("%v: error %v, want a flag error", args, err)
		}
	}
}

func TestBenchFailsOnErrors(t *testing.T) {
	t.Parallel()
	url := startBenchServer(t)
	// The demo agent ends every run with agent_error: a soak test must fail.
	out, err := runBench(t, nil, "--url", url, "--dev", "--mode", "runs", "--message", "please fail",
		"--users", "2", "--duration", "500ms", "--warmup", "0s")
	if err == nil {
		t.Fatalf("bench passed with failing runs:\n%s", out)
	}
	if figure(t, out, "errors") == 0 || !strings.Contains(out, "agent_error agent_failed") {
		t.Errorf("errors not counted or not shown:\n%s", out)
	}
}
