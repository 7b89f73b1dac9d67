package app

import (
	"net"
	"testing"
)

func TestDialable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 8080}, "127.0.0.1:8080"},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 9}, "127.0.0.1:9"},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}, "127.0.0.1:8080"},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 8080}, "[::1]:8080"},
	}
	for _, tc := range cases {
		if got := dialable(tc.addr); got != tc.want {
			t.Errorf("dialable(%v) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
