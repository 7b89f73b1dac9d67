package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/loadgen"
	"github.com/agentwire/agentwire/protocol"
)

// The epoll loop answers requests however the bytes arrive: two in one
// write (pipelined) and one a byte per write, each answered once, in order,
// and each delivered in that order.
func TestEpollRelaySplitAndPipelined(t *testing.T) {
	addr := startRelay(t, serveEpoll)
	ws := dialRelay(t, addr, "u1")

	request := func(tick int64) []byte {
		body := loadgen.AppendPublish(nil, "u1", "bench.tick", tick, 0, "xx")
		return fmt.Appendf(nil, "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", apiKey, len(body), body)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(append(request(1), request(2)...)); err != nil {
		t.Fatal(err)
	}
	for _, b := range request(3) {
		if _, err := c.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	br := bufio.NewReader(c)
	for want := uint64(1); want <= 3; want++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var r protocol.PublishResponse
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || r.Seq != want {
			t.Fatalf("answer %d: %d %+v %v", want, resp.StatusCode, r, err)
		}
	}
	for tick := int64(1); tick <= 3; tick++ {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if sent, _, ok := loadgen.ParseTick(msg); !ok || sent != tick {
			t.Errorf("frame %s: want tick %d", msg, tick)
		}
	}

	// What the loop does not parse ends the connection, unanswered.
	if _, err := c.Write([]byte("GET /other HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("after a request it does not parse: read %d bytes, %v; want the connection closed", n, err)
	}
}
