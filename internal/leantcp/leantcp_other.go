//go:build !linux

// Package leantcp accepts TCP connections that cost the heap half what
// net's do: on Linux (leantcp_linux.go); elsewhere Wrap changes nothing.
package leantcp

import "net"

// Wrap returns ln: the lean listener is Linux's.
func Wrap(ln net.Listener) net.Listener { return ln }
