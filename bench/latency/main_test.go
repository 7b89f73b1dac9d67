package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/agentwire/agentwire/internal/loadgen"
)

// The body published to Centrifugo is its API's publish command for the
// user's personal channel, carrying the tick the readers time.
func TestCentrifugoPublishBody(t *testing.T) {
	body := appendCentrifugoPublish(nil, `user-"7"`, 1234567890123, "xx")
	var cmd struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &cmd); err != nil {
		t.Fatalf("not JSON: %v: %s", err, body)
	}
	if cmd.Channel != `personal:#user-"7"` {
		t.Errorf("channel %q", cmd.Channel)
	}
	sent, _, ok := loadgen.ParseTick(cmd.Data)
	if !ok || sent != 1234567890123 {
		t.Errorf("tick %d %v in %s", sent, ok, cmd.Data)
	}
}

// The configuration is Centrifugo 6's: it listens where the benchmark waits
// for it, subscribes each connection to the channel it publishes to, keeps
// history with recovery, and uses Redis only when asked.
func TestCentrifugoConfig(t *testing.T) {
	dir := t.TempDir()
	for _, redisURL := range []string{"", "redis://127.0.0.1:6379/0"} {
		path, err := centrifugoConfig(filepath.Join(dir, "c.json"), "127.0.0.1:4567", redisURL)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			HTTPServer struct {
				Address string `json:"address"`
				Port    int    `json:"port"`
			} `json:"http_server"`
			Client struct {
				Token struct {
					Key string `json:"hmac_secret_key"`
				} `json:"token"`
				Personal struct {
					Enabled   bool   `json:"enabled"`
					Namespace string `json:"personal_channel_namespace"`
				} `json:"subscribe_to_user_personal_channel"`
			} `json:"client"`
			HTTPAPI struct {
				Key string `json:"key"`
			} `json:"http_api"`
			Channel struct {
				Namespaces []struct {
					Name          string `json:"name"`
					HistorySize   int    `json:"history_size"`
					ForceRecovery bool   `json:"force_recovery"`
				} `json:"namespaces"`
			} `json:"channel"`
			Engine *struct {
				Type  string `json:"type"`
				Redis struct {
					Address []string `json:"address"`
				} `json:"redis"`
			} `json:"engine"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.HTTPServer.Address != "127.0.0.1" || cfg.HTTPServer.Port != 4567 {
			t.Errorf("listens on %s:%d", cfg.HTTPServer.Address, cfg.HTTPServer.Port)
		}
		if cfg.Client.Token.Key != secret || cfg.HTTPAPI.Key != apiKey {
			t.Error("token or API key is not the benchmark's")
		}
		ns := cfg.Channel.Namespaces
		if !cfg.Client.Personal.Enabled || len(ns) != 1 || centrifugoChannel("u") != ns[0].Name+":#u" ||
			cfg.Client.Personal.Namespace != ns[0].Name || ns[0].HistorySize != 1000 || !ns[0].ForceRecovery {
			t.Errorf("personal channel: %+v %+v", cfg.Client.Personal, ns)
		}
		switch {
		case redisURL == "" && cfg.Engine != nil:
			t.Errorf("engine %+v without a Redis URL", cfg.Engine)
		case redisURL != "" && (cfg.Engine == nil || cfg.Engine.Type != "redis" || len(cfg.Engine.Redis.Address) != 1 || cfg.Engine.Redis.Address[0] != redisURL):
			t.Errorf("engine %+v, want Redis at %s", cfg.Engine, redisURL)
		}
	}
}
