package main

import (
	"bytes"
	"testing"
)

func TestFrameParsesLengthsAndPartials(t *testing.T) {
	small := append([]byte{0x81, 5}, "hello"...)
	mid := append([]byte{0x81, 126, 0x01, 0x00}, bytes.Repeat([]byte("x"), 256)...)
	ping := []byte{0x89, 0}
	for _, c := range []struct {
		name string
		b    []byte
		op   byte
		n    int
	}{{"small", small, 0x1, 5}, {"16-bit length", mid, 0x1, 256}, {"empty ping", ping, 0x9, 0}} {
		p, op, ok := frame(c.b)
		if !ok || op != c.op || len(p) != c.n || headerLen(c.b)+len(p) != len(c.b) {
			t.Errorf("%s: payload %d op %x complete %v", c.name, len(p), op, ok)
		}
		for cut := 0; cut < len(c.b); cut++ {
			if _, _, ok := frame(c.b[:cut]); ok {
				t.Errorf("%s: complete with %d of %d bytes", c.name, cut, len(c.b))
			}
		}
	}
}

func TestSourceAddrSpreadsOverLoopback(t *testing.T) {
	seen := map[[4]byte]int{}
	for g := 0; g < 300_000; g += 1000 {
		a := sourceAddr(g)
		if a[0] != 127 || a[3] == 0 || a[3] == 255 {
			t.Fatalf("connection %d: source %v", g, a)
		}
		seen[a]++
	}
	for a, n := range seen {
		if n*1000 > connsPerSource {
			t.Fatalf("%v carries %d connections, over %d", a, n*1000, connsPerSource)
		}
	}
	if len(seen) != 30 {
		t.Fatalf("%d source addresses for 300k connections, want 30", len(seen))
	}
}
