package auth

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
)

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	keys := NewAPIKeys([]string{" key-one ", "", "   ", "key-two"})
	if keys.Len() != 2 {
		t.Fatalf("Len = %d, want 2", keys.Len())
	}
	tests := []struct {
		key  string
		want bool
	}{
		{"key-one", true},
		{"key-two", true},
		{"key-three", false},
		{"key-on", false},
		{"key-one-and-more", false},
		{"KEY-ONE", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			if got := keys.Check(tt.key); got != tt.want {
				t.Fatalf("Check(%q) = %v, want %v", tt.key, got, tt.want)
			}
		})
	}
	if none := NewAPIKeys(nil); none.Len() != 0 || none.Check("") || none.Check("x") {
		t.Fatal("an empty set accepted a key")
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		header string
		want   string
		ok     bool
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", true},
		{"bearer abc", "abc", true},
		{"BEARER abc", "abc", true},
		{"Bearer   abc  ", "abc", true},
		{"  Bearer abc", "abc", true},
		{"", "", false},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearer    ", "", false},
		{"Basic dXNlcjpwYXNz", "", false},
		{"Bearerabc", "", false},
		{"abc", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("GET", "/", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			got, ok := BearerToken(r)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("BearerToken = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{ErrMissing, "missing"},
		{ErrExpired, "expired"},
		{ErrInvalid, "invalid"},
		{ErrTicket, "ticket"},
		{fmt.Errorf("%w: detail", ErrExpired), "expired"},
		{errors.New("something else"), "invalid"},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
