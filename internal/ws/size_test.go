package ws

import (
	"bytes"
	"testing"
	"unsafe"

	"github.com/agentwire/agentwire/protocol"
)

// An idle connection's struct is allocated once per socket: it must stay
// within the 208-byte size class (bench/README.md section 2). State only an
// active connection needs goes behind session.act, the user id is the hub
// connection's, the bytes behind the handshake and a close before attach
// hang off pointers.
func TestConnStructSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 208 {
		t.Fatalf("conn is %d bytes, over the 208-byte size class an idle connection is held to", n)
	}
}

// A close before attach keeps its frame payload for attach (the first close
// wins); a close after attach keeps none.
func TestCloserBodyBeforeAttach(t *testing.T) {
	var l closer
	body := closeBody(protocol.CloseTokenExpired, "token expired")
	if first, attached := l.begin(body); !first || attached {
		t.Fatalf("first close before attach: first %v attached %v", first, attached)
	}
	if first, _ := l.begin(closeBody(protocol.CloseNormal, "")); first {
		t.Fatal("a second close won")
	}
	if got, closed := l.attach(); !closed || !bytes.Equal(got, body) {
		t.Fatalf("attach after a close: %q closed %v, want %q", got, closed, body)
	}

	var m closer
	if got, closed := m.attach(); closed || got != nil {
		t.Fatalf("attach without a close: %q closed %v", got, closed)
	}
	if first, attached := m.begin(body); !first || !attached {
		t.Fatalf("close after attach: first %v attached %v", first, attached)
	}
	if m.body != nil {
		t.Fatal("a close after attach kept its payload")
	}
}
