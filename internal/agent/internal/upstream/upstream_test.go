package upstream

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestLimit(t *testing.T) {
	t.Parallel()
	b, err := io.ReadAll(Limit(strings.NewReader("hello"), 10))
	if err != nil || string(b) != "hello" {
		t.Errorf("under the bound: %q %v", b, err)
	}
	b, err = io.ReadAll(Limit(strings.NewReader("hello, world"), 5))
	if !errors.Is(err, ErrTooMuch) || string(b) != "hello" {
		t.Errorf("over the bound: %q %v", b, err)
	}
}

func TestNewService(t *testing.T) {
	t.Parallel()
	s, err := NewService("x", "https://agent.example/run", nil, 0, time.Minute)
	if err != nil || s.Client == nil || s.Timeout != time.Minute || s.MaxBytes != DefaultMaxBytes {
		t.Errorf("%+v %v", s, err)
	}
	for _, u := range []string{"", "ftp://x", "http://", "::"} {
		if _, err := NewService("x", u, nil, 0, time.Minute); err == nil || !strings.HasPrefix(err.Error(), "x: ") {
			t.Errorf("NewService(%q): %v", u, err)
		}
	}
}

func TestValidUTF8(t *testing.T) {
	t.Parallel()
	if got := string(ValidUTF8([]byte("a\xffb"))); got != "a\uFFFDb" {
		t.Errorf("%q", got)
	}
}
