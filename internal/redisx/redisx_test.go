package redisx

import (
	"strings"
	"testing"
)

func TestUserTag(t *testing.T) {
	t.Parallel()
	users := []string{"a", "a}", "a}:x", "a:b", "{u:a}", "", "ü}{"}
	seen := map[string]string{}
	for _, u := range users {
		tag := UserTag("aw", u)
		if !strings.HasPrefix(tag, "aw:{u:") || !strings.HasSuffix(tag, "}:") || strings.Count(tag, "{") != 1 || strings.Count(tag, "}") != 1 {
			t.Errorf("UserTag(%q) = %q: not one hash tag", u, tag)
		}
		if other, ok := seen[tag]; ok {
			t.Errorf("users %q and %q share the tag %q", other, u, tag)
		}
		seen[tag] = u
	}
	if CheckPrefix("aw") != nil || CheckPrefix("a{b") == nil || CheckPrefix("a}") == nil {
		t.Error("CheckPrefix accepts only prefixes without braces")
	}
}

func TestParseURL(t *testing.T) {
	t.Parallel()
	good := []struct {
		url    string
		mode   Mode
		addrs  []string
		master string
		db     int
	}{
		{"redis://127.0.0.1:6379/2", Standalone, []string{"127.0.0.1:6379"}, "", 2},
		{"redis-cluster://a:7000,b:7001,[::1]:7002", Cluster, []string{"a:7000", "b:7001", "[::1]:7002"}, "", 0},
		{"redis-cluster://u:p@a:7000,b:7001/?dial_timeout=1s", Cluster, []string{"a:7000", "b:7001"}, "", 0},
		{"redis-sentinel://s1:26379,s2:26379/?master=mymaster", Sentinel, []string{"s1:26379", "s2:26379"}, "mymaster", 0},
		{"redis-sentinel://s1:26379/3?master=m", Sentinel, []string{"s1:26379"}, "m", 3},
	}
	for _, g := range good {
		opt, mode, err := ParseURL(g.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", g.url, err)
			continue
		}
		if mode != g.mode || strings.Join(opt.InitAddress, " ") != strings.Join(g.addrs, " ") || opt.Sentinel.MasterSet != g.master || opt.SelectDB != g.db {
			t.Errorf("ParseURL(%q) = %s %v master %q db %d, want %s %v %q %d", g.url, mode, opt.InitAddress, opt.Sentinel.MasterSet, opt.SelectDB, g.mode, g.addrs, g.master, g.db)
		}
	}
	if opt, _, _ := ParseURL("redis-cluster://u:p@a:7000"); opt.Username != "u" || opt.Password != "p" {
		t.Errorf("credentials not kept: %q %q", opt.Username, opt.Password)
	}
	bad := map[string]string{
		"127.0.0.1:6379":                                "want redis://",
		"http://a:1":                                    "unknown scheme",
		"redis://a:1?addr=b:2":                          "one address only",
		"redis-cluster://":                              "no host:port",
		"redis-cluster://a:7000,b":                      `"b" is not host:port`,
		"redis-cluster://a:7000/2":                      "only database 0",
		"redis-cluster://a:7000/?master=m":              "master= is for redis-sentinel",
		"redis-sentinel://s:26379":                      "needs ?master=NAME",
		"redis-sentinel://s:26379/?master_set=m":        "use master=NAME",
		"redis-sentinel://s:1/?master=m&dial_timeout=x": "dial timeout",
	}
	for u, want := range bad {
		_, _, err := ParseURL(u)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURL(%q) = %v, want an error containing %q", u, err, want)
		}
	}
}
