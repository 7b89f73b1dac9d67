package store_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/agentwire/agentwire/internal/store"
)

func TestTitleFrom(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 200)
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", store.DefaultTitle},
		{"blank", " \n\t\r\n ", store.DefaultTitle},
		{"simple", "hello", "hello"},
		{"trimmed", "  hello  ", "hello"},
		{"first line", "first\nsecond", "first"},
		{"crlf", "first\r\nsecond", "first"},
		{"skips blank lines", "\n\n  \n  third  \nfourth", "third"},
		{"exactly max", strings.Repeat("a", store.MaxTitleRunes), strings.Repeat("a", store.MaxTitleRunes)},
		{"cut", strings.Repeat("a", store.MaxTitleRunes+1), strings.Repeat("a", store.MaxTitleRunes-1) + "…"},
		{"cut runes not bytes", long, strings.Repeat("é", store.MaxTitleRunes-1) + "…"},
		{"no space before ellipsis", strings.Repeat("a", store.MaxTitleRunes-2) + "  bbbb", strings.Repeat("a", store.MaxTitleRunes-2) + "…"},
		{"emoji", "👋🏽 hi", "👋🏽 hi"},
		{"invalid utf8", "a\xffb", "a\uFFFDb"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := store.TitleFrom(tc.in)
			if got != tc.want {
				t.Fatalf("TitleFrom(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if n := utf8.RuneCountInString(got); n > store.MaxTitleRunes {
				t.Fatalf("TitleFrom(%q) has %d runes, want at most %d", tc.in, n, store.MaxTitleRunes)
			}
		})
	}
}

func TestRunStatusTerminal(t *testing.T) {
	t.Parallel()
	for s, want := range map[store.RunStatus]bool{
		store.RunRunning: false, store.RunCompleted: true, store.RunFailed: true,
		store.RunCancelled: true, store.RunTimeout: true, "": false, "done": false,
	} {
		if got := s.Terminal(); got != want {
			t.Errorf("%q.Terminal() = %v, want %v", s, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	errs := map[string]error{
		"thread without user":   store.Thread{ID: "t", Title: "x"}.Validate(),
		"thread without title":  store.Thread{ID: "t", UserID: "u"}.Validate(),
		"message bad role":      store.Message{ID: "m", ThreadID: "t", UserID: "u", Role: "system"}.Validate(),
		"message without id":    store.Message{ThreadID: "t", UserID: "u", Role: store.RoleUser}.Validate(),
		"run without agent":     store.Run{ID: "r", ThreadID: "t", UserID: "u"}.Validate(),
		"run without thread id": store.Run{ID: "r", UserID: "u", Agent: "demo"}.Validate(),
	}
	for name, err := range errs {
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	oks := []error{
		store.Thread{ID: "t", UserID: "u", Title: "x"}.Validate(),
		store.Message{ID: "m", ThreadID: "t", UserID: "u", Role: store.RoleAssistant}.Validate(),
		store.Run{ID: "r", ThreadID: "t", UserID: "u", Agent: "demo"}.Validate(),
	}
	for i, err := range oks {
		if err != nil {
			t.Errorf("valid #%d: %v", i, err)
		}
	}
}
