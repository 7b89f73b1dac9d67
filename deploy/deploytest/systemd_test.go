package deploytest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/config"
)

// unit is a systemd unit file: section → key → values, in order.
type unit map[string]map[string][]string

func readUnit(t *testing.T, file string) unit {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s:%d: %q: want Key=value in a section", file, n, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// readEnvFile reads an EnvironmentFile: KEY=value lines, # comments.
func readEnvFile(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s:%d: %q: want KEY=value", file, i+1, line)
		}
		env[k] = v
	}
	return env
}

// TestSystemdUnit checks deploy/systemd: a hardened service that runs
// serve on its state directory, stops after its drain, and restarts on
// failure; the example environment file holds only serve's variables.
func TestSystemdUnit(t *testing.T) {
	const file = "../systemd/agentwire.service"
	u := readUnit(t, file)
	vars := serveVariables(t)

	exec := strings.Fields(u.get("Service", "ExecStart"))
	if len(exec) < 2 || !filepath.IsAbs(exec[0]) || exec[1] != "serve" {
		t.Errorf("ExecStart %q: want /absolute/path/agentwire serve", u.get("Service", "ExecStart"))
	}
	for key, want := range map[string]string{
		"DynamicUser":     "yes",
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
		"ProtectHome":     "yes",
		"PrivateTmp":      "yes",
		"PrivateDevices":  "yes",
		"Restart":         "on-failure",
		"KillSignal":      "SIGTERM",
	} {
		if got := u.get("Service", key); got != want {
			t.Errorf("[Service] %s=%q, want %q", key, got, want)
		}
	}
	if u.get("Service", "CapabilityBoundingSet") != "" || len(u["Service"]["CapabilityBoundingSet"]) == 0 {
		t.Error("[Service] want an empty CapabilityBoundingSet= (no capabilities)")
	}
	if u.get("Install", "WantedBy") == "" {
		t.Error("[Install] WantedBy is unset: systemctl enable would do nothing")
	}

	// The environment: Environment= lines, then the EnvironmentFile (here
	// the example one), as systemd reads them.
	envFile := u.get("Service", "EnvironmentFile")
	if !filepath.IsAbs(strings.TrimPrefix(envFile, "-")) {
		t.Errorf("EnvironmentFile=%q: want an absolute path", envFile)
	}
	env := map[string]string{}
	for _, line := range u["Service"]["Environment"] {
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	for k, v := range readEnvFile(t, "../systemd/agentwire.env") {
		env[k] = v
	}
	for k := range env {
		if strings.HasPrefix(k, "AGENTWIRE_") && !vars[k] {
			t.Errorf("%s: not a variable of agentwire serve (a typo is silently ignored)", k)
		}
	}
	state := u.get("Service", "StateDirectory")
	if state == "" {
		t.Error("[Service] StateDirectory is unset: DynamicUser can write nowhere lasting")
	}
	if want := "%S/" + state; env["AGENTWIRE_DATA_DIR"] != want {
		t.Errorf("AGENTWIRE_DATA_DIR=%q, want the state directory %s", env["AGENTWIRE_DATA_DIR"], want)
	}
	cfg, err := config.Load(exec[2:], func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("serve with the unit's arguments and the example environment: %v", err)
	}
	stop, err := time.ParseDuration(u.get("Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec=%q: want a duration like 30s: %v", u.get("Service", "TimeoutStopSec"), err)
	}
	if need := drainBound(cfg); stop <= need {
		t.Errorf("TimeoutStopSec=%v: want more than --drain-timeout %v + 2 s + --shutdown-timeout %v = %v", stop, cfg.DrainTimeout, cfg.ShutdownTimeout, need)
	}
}

// TestSystemdAnalyzeVerify has systemd check the unit itself, where
// systemd-analyze exists, with ExecStart pointing at the static build.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("SKIPPED: no systemd-analyze here (TestSystemdUnit still checks the unit)")
	}
	im := readImage(t)
	bin := filepath.Join(buildStatic(t, im), strings.TrimPrefix(im.binary, im.outDir+"/"))
	b, err := os.ReadFile("../systemd/agentwire.service")
	if err != nil {
		t.Fatal(err)
	}
	envFile, err := filepath.Abs("../systemd/agentwire.env")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), "/usr/local/bin/agentwire", bin)
	s = strings.ReplaceAll(s, "/etc/agentwire/agentwire.env", envFile)
	dir := t.TempDir()
	unitFile := filepath.Join(dir, "agentwire.service")
	if err := os.WriteFile(unitFile, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	// Its exit code, and any word about this unit (it may also remark on
	// the machine's own units, which are none of this test's business).
	out, err := exec.Command(analyze, "verify", unitFile).CombinedOutput()
	if err != nil || strings.Contains(string(out), "agentwire") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
