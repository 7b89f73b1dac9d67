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
