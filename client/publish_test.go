package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/agentwire/agentwire/client"
	"github.com/agentwire/agentwire/protocol"
)

// TestPublishBatchAndStream: a backend publishes a batch, then a stream of
// events; the user's Conn receives every one at the seq its result or ack
// gave, in order.
func TestPublishBatchAndStream(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-keys", "test-publish-key")
	hc := &http.Client{Transport: &http.Transport{}}
	ctx := ctxT(t)
	c := dial(t, client.Options{URL: s.URL, Token: client.DevTokens(hc, s.URL, "pub-user")})
	pub := &client.Publisher{URL: s.URL, APIKey: "test-publish-key", HTTPClient: hc}

	note := func(i int) client.PublishRequest {
		return client.PublishRequest{UserID: "pub-user", Type: "app.note", Data: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
			IdempotencyKey: fmt.Sprintf("k%d", i)}
	}
	res, err := pub.PublishBatch(ctx, []client.PublishRequest{note(0), note(1), note(2)})
	if err != nil || len(res) != 3 {
		t.Fatalf("PublishBatch: %+v, %v", res, err)
	}
	var want []uint64
	for i, r := range res {
		if r.Error != nil || r.Seq == 0 || r.Epoch != c.Established().Epoch || (i > 0 && r.Seq != res[i-1].Seq+1) {
			t.Fatalf("batch result %d: %+v", i, r)
		}
		want = append(want, r.Seq)
	}
	// One bad event of the user: nothing of the user's is appended.
	res, err = pub.PublishBatch(ctx, []client.PublishRequest{note(3), {UserID: "pub-user", Type: "Bad"}})
	if err != nil || res[0].Error == nil || res[0].Error.Code != protocol.CodeBatchAborted || res[1].Error.Code != protocol.CodeInvalidRequest {
		t.Fatalf("batch with a bad event: %+v, %v", res, err)
	}
	var he *client.HTTPError
	if _, err := pub.PublishBatch(ctx, nil); !errors.As(err, &he) || he.Code != protocol.CodeTooLarge {
		t.Fatalf("empty batch: %v", err)
	}

	st, err := pub.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const n = 200
	go func() {
		for i := range n {
			if err := st.Send(note(10 + i)); err != nil {
				t.Errorf("Send: %v", err)
				return
			}
			if i%50 == 49 {
				if err := st.Flush(); err != nil {
					t.Errorf("Flush: %v", err)
					return
				}
			}
		}
		if err := st.CloseSend(); err != nil {
			t.Errorf("CloseSend: %v", err)
		}
	}()
	for i := range n {
		a, err := st.Recv()
		if err != nil || a.I != i || a.Error != nil || a.Seq != want[len(want)-1]+1 {
			t.Fatalf("ack %d: %+v, %v", i, a, err)
		}
		want = append(want, a.Seq)
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("after the last ack: %v, want io.EOF", err)
	}

	got := 0
	for ev := range c.Events() {
		if ev.Type != "app.note" {
			continue
		}
		if ev.Seq != want[got] {
			t.Fatalf("event %d received with seq %d, want %d", got, ev.Seq, want[got])
		}
		if got++; got == len(want) {
			break
		}
	}
}
