package config_test

import (
	"errors"
	"flag"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/config"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	got, err := config.Load(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := config.Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Load with nothing set:\n got %+v\nwant %+v", got, want)
	}
	if got.Addr != "127.0.0.1:8080" || got.Keys.DataDir != "./data" || got.Agent != config.AgentDemo || got.LogLevel != slog.LevelInfo ||
		got.DeltaWindow != 15*time.Millisecond {
		t.Errorf("defaults changed: %+v", got)
	}
}

func TestLoadEnvAndFlags(t *testing.T) {
	t.Parallel()
	e := env(map[string]string{
		"AGENTWIRE_ADDR":            ":9000",
		"AGENTWIRE_DEV":             "yes",
		"AGENTWIRE_PING_INTERVAL":   "5s",
		"AGENTWIRE_MAX_QUEUE_BYTES": "4096",
		"AGENTWIRE_RATE_LIMIT":      "2.5",
		"AGENTWIRE_API_KEYS":        " k1, ,k2 ",
		"AGENTWIRE_ALLOWED_ORIGINS": "https://a.example",
		"AGENTWIRE_LOG_LEVEL":       "debug",
		"AGENTWIRE_JWT_SECRET":      "short",
		"AGENTWIRE_DATA_DIR":        "/tmp/x",
		"AGENTWIRE_DELTA_WINDOW":    "0s",
	})
	// A flag wins over its variable.
	got, err := config.Load([]string{"--addr", ":9001", "--retention-age", "1h"}, e)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.Addr, want.Dev, want.PingInterval, want.MaxQueueBytes, want.RateLimit = ":9001", true, 5*time.Second, 4096, 2.5
	want.APIKeys, want.AllowedOrigins, want.LogLevel = []string{"k1", "k2"}, []string{"https://a.example"}, slog.LevelDebug
	want.Keys.Secret, want.Keys.DataDir, want.RetentionAge = "short", "/tmp/x", time.Hour
	want.DeltaWindow = 0 // off
	if !reflect.DeepEqual(got, want) {
		t.Errorf("\n got %+v\nwant %+v", got, want)
	}
	if !got.ShortSecret() {
		t.Error("a 5-byte secret is not short")
	}
}

// TestLoadErrorsNameTheFlag: every refused value is named by its flag or
// variable, so the user knows what to change.
func TestLoadErrorsNameTheFlag(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args  []string
		env   map[string]string
		names []string
		usage bool // a UsageError: exit code 2
	}{
		{args: []string{"--ping-interval", "5"}, names: []string{"-ping-interval", "5s", "unit"}, usage: true},
		{env: map[string]string{"AGENTWIRE_PING_INTERVAL": "5"}, names: []string{"AGENTWIRE_PING_INTERVAL", "unit"}, usage: true},
		{env: map[string]string{"AGENTWIRE_DEV": "maybe"}, names: []string{"AGENTWIRE_DEV"}, usage: true},
		{env: map[string]string{"AGENTWIRE_MAX_RUNS_PER_USER": "many"}, names: []string{"AGENTWIRE_MAX_RUNS_PER_USER"}, usage: true},
		{args: []string{"--no-such-flag"}, names: []string{"-no-such-flag", "agentwire serve -h"}, usage: true},
		{args: []string{"stray"}, names: []string{`"stray"`, "agentwire serve -h"}, usage: true},
		{args: []string{"--max-runs-per-user", "0"}, names: []string{"--max-runs-per-user 0"}},
		{args: []string{"--rate-limit", "-1"}, names: []string{"--rate-limit -1"}},
		{args: []string{"--pong-timeout", "0s"}, names: []string{"--pong-timeout 0s"}},
		{args: []string{"--drain-timeout", "-1s"}, names: []string{"--drain-timeout -1s"}},
		{args: []string{"--user-token-quota", "-5"}, names: []string{"--user-token-quota -5"}},
		{args: []string{"--log-level", "loud"}, names: []string{"--log-level", "loud"}},
		{args: []string{"--agent", "magic"}, names: []string{"--agent", "magic"}},
		{args: []string{"--agent", "openai"}, names: []string{"--openai-model"}},
		{args: []string{"--agent", "http"}, names: []string{"--agent-url"}},
		{args: []string{"--agent", "agui"}, names: []string{"--agent agui", "--agent-url"}},
		{args: []string{"--database-url", "mysql://x"}, names: []string{"--database-url"}},
		{args: []string{"--redis-url", "127.0.0.1:6379"}, names: []string{"--redis-url"}},
		{args: []string{"--redis-url", "redis-sentinel://127.0.0.1:26379"}, names: []string{"--redis-url", "master=NAME"}},
		{args: []string{"--redis-url", "redis-cluster://a:1,b"}, names: []string{"--redis-url", "host:port"}},
		{args: []string{"--agent", "openai", "--openai-model", "m", "--mcp-server", "files"}, names: []string{"--mcp-server", "NAME=URL"}, usage: true},
		{args: []string{"--mcp-server", "files=http://127.0.0.1:1/mcp"}, names: []string{"--mcp-server", "--agent openai"}},
		{args: []string{"--jwt-secret", "s", "--jwks-url", "http://x"}, names: []string{"--jwt-secret", "--jwks-url"}},
		{args: []string{"--jwt-secret", strings.Repeat("s", 31)}, names: []string{"--jwt-secret", "at least 32"}},
		{args: []string{"--admin-keys", "ops"}, names: []string{"--admin-keys", "name:key"}, usage: true},
		{args: []string{"--admin-keys", "ops:short"}, names: []string{"--admin-keys", `"ops"`, "at least 16"}, usage: true},
		{args: []string{"--admin-keys", "o p:0123456789abcdef"}, names: []string{"--admin-keys", `"o p"`}, usage: true},
		{args: []string{"--admin-keys", "ops:0123456789abcdef,ops:fedcba9876543210"}, names: []string{"--admin-keys", `"ops"`, "twice"}, usage: true},
		{args: []string{"--admin-keys", "ops:0123456789abcdef", "--api-keys", "0123456789abcdef"}, names: []string{"--admin-keys", `"ops"`, "--api-keys"}},
		{args: []string{"--revocation-ttl", "0s"}, names: []string{"--revocation-ttl 0s"}},
		{args: []string{"--delta-window", "2s"}, names: []string{"--delta-window 2s", "1s"}, usage: true},
		{args: []string{"--delta-window", "-1ms"}, names: []string{"--delta-window -1ms"}, usage: true},
		{env: map[string]string{"AGENTWIRE_DELTA_WINDOW": "15"}, names: []string{"AGENTWIRE_DELTA_WINDOW", "unit"}, usage: true},
	}
	for _, tc := range cases {
		_, err := config.Load(tc.args, env(tc.env))
		if err == nil {
			t.Errorf("%v %v: no error", tc.args, tc.env)
			continue
		}
		for _, n := range tc.names {
			if !strings.Contains(err.Error(), n) {
				t.Errorf("%v %v: error %q does not name %q", tc.args, tc.env, err, n)
			}
		}
		if got := errors.As(err, new(config.UsageError)); got != tc.usage {
			t.Errorf("%v %v: UsageError %v, want %v", tc.args, tc.env, got, tc.usage)
		}
	}
	// Admin keys by name.
	if c, err := config.Load([]string{"--admin-keys", " ops:0123456789abcdef , ci-bot:fedcba9876543210fedcba"}, env(nil)); err != nil ||
		len(c.AdminKeys) != 2 || c.AdminKeys["ops"] != "0123456789abcdef" || c.AdminKeys["ci-bot"] != "fedcba9876543210fedcba" {
		t.Errorf("--admin-keys: %v, %v", c.AdminKeys, err)
	}
	// A short secret is accepted with --dev.
	if _, err := config.Load([]string{"--dev", "--jwt-secret", "short"}, env(nil)); err != nil {
		t.Errorf("--dev with a short secret: %v", err)
	}
}

// TestLoadMCPServers: --mcp-server repeats; its variable holds several,
// separated by semicolons, and the flags replace them.
func TestLoadMCPServers(t *testing.T) {
	t.Parallel()
	e := env(map[string]string{"AGENTWIRE_AGENT": "openai", "AGENTWIRE_OPENAI_MODEL": "m",
		"AGENTWIRE_MCP_SERVER": "a=http://127.0.0.1:1/mcp; b=stdio:mcp-b --flag"})
	got, err := config.Load(nil, e)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.MCPServers) != 2 || got.MCPServers[0].URL != "http://127.0.0.1:1/mcp" || strings.Join(got.MCPServers[1].Command, " ") != "mcp-b --flag" {
		t.Errorf("from the variable: %+v", got.MCPServers)
	}
	got, err = config.Load([]string{"--mcp-server", "c=https://x.example/mcp", "--mcp-server", "d=stdio:d"}, e)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.MCPServers) != 2 || got.MCPServers[0].Name != "c" || got.MCPServers[1].Name != "d" {
		t.Errorf("from the flags: %+v", got.MCPServers)
	}
}

func TestLoadHelpListsFlags(t *testing.T) {
	t.Parallel()
	_, err := config.Load([]string{"-h"}, env(map[string]string{"AGENTWIRE_ADDR": ":7000"}))
	var help *config.HelpError
	if !errors.As(err, &help) || !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want a HelpError wrapping flag.ErrHelp", err)
	}
	for _, want := range []string{"-addr", `(default ":7000")`, "[AGENTWIRE_ADDR]", "-ping-interval duration", "(default 25s)"} {
		if !strings.Contains(help.Usage, want) {
			t.Errorf("usage does not contain %q:\n%s", want, help.Usage)
		}
	}
}

// TestLoadTracing: tracing is off unless an OTEL_… variable asks for it,
// and a choice agentwire cannot honour is an error naming the variable.
func TestLoadTracing(t *testing.T) {
	t.Parallel()
	got, err := config.Load(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got.Tracing.On {
		t.Fatal("tracing on with no OTEL_ variable set")
	}
	for _, tc := range []struct {
		env map[string]string
		on  bool
	}{
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_SERVICE_NAME": "gw"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, false},
	} {
		got, err := config.Load(nil, env(tc.env))
		if err != nil {
			t.Errorf("%v: %v", tc.env, err)
			continue
		}
		if got.Tracing.On != tc.on {
			t.Errorf("%v: tracing on = %v, want %v", tc.env, got.Tracing.On, tc.on)
		}
	}
	for v, e := range map[string]map[string]string{
		"OTEL_TRACES_EXPORTER":               {"OTEL_TRACES_EXPORTER": "zipkin"},
		"OTEL_EXPORTER_OTLP_PROTOCOL":        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
	} {
		_, err := config.Load(nil, env(e))
		var ue config.UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), v) {
			t.Errorf("%v: error %v, want a usage error naming %s", e, err, v)
		}
	}
}
