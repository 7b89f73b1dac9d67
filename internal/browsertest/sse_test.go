package browsertest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/agentwire/agentwire/internal/testserver"
)

// sseJS opens the user's stream with EventSource the way a page behind a
// proxy that blocks WebSocket would: a ticket per connect (EventSource cannot
// send a header), and after a drop a new EventSource with a fresh ticket from
// the id of the last event it has (since and epoch of "<epoch>:<seq>").
const sseJS = `window.sseTest = {events: [], opens: 0, drops: 0, lastId: ""};
window.sseOpen = async function (tok) {
	const r = await fetch("/api/v1/tickets", {method: "POST", headers: {Authorization: "Bearer " + tok}});
	let q = "ticket=" + encodeURIComponent((await r.json()).ticket);
	const last = sseTest.lastId;
	if (last) {
		const i = last.lastIndexOf(":");
		q += "&since=" + last.slice(i + 1) + "&epoch=" + encodeURIComponent(last.slice(0, i));
	}
	const es = new EventSource("/api/v1/stream?" + q);
	es.onopen = () => { sseTest.opens++; };
	es.onmessage = (e) => {
		const f = JSON.parse(e.data);
		sseTest.events.push({type: f.type, seq: f.seq || 0, epoch: f.epoch || "", id: f.seq ? e.lastEventId : ""});
		if (f.seq) sseTest.lastId = e.lastEventId;
	};
	es.onerror = () => {
		es.close();
		sseTest.drops++;
		sseOpen(tok);
	};
};
true`

type sseSeen struct {
	Type  string `json:"type"`
	Seq   uint64 `json:"seq"`
	Epoch string `json:"epoch"`
	ID    string `json:"id"`
}

// TestEventSourceInBrowser: a browser's EventSource gets the stream through
// a proxy that drops it mid-flow, reconnects from the last event id, and
// sees every event exactly once, each with id <epoch>:<seq>.
func TestEventSourceInBrowser(t *testing.T) {
	t.Parallel()
	const apiKey, user, total = "browser-api-key", "sse-dora", 60
	srv := &server{URL: testserver.Start(t, "--dev", "--api-keys", apiKey, "--log-level", "warn").URL}
	px := startProxy(t, srv.URL)
	tok := srv.devToken(t, user)
	publish := func(i int) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"user_id": user, "type": "tick", "data": map[string]any{"i": i}})
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/publish", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("publish %d: %d", i, resp.StatusCode)
		}
	}

	b := newBrowser(t)
	// Any page of the server's origin: the stream is same-origin.
	b.do("open the origin", chromedp.Navigate(px.URL+"/api/v1/config"))
	if !eval[bool](b, sseJS) {
		t.Fatal("sseJS did not load")
	}
	b.do("open the stream", chromedp.Evaluate[chromedp.Void](fmt.Sprintf("sseOpen(%q)", tok)))
	b.waitJS("connection_established", `sseTest.events.length > 0 && sseTest.events[0].type === "connection_established"`, 10*time.Second)

	for i := 1; i <= total/2; i++ {
		publish(i)
	}
	b.waitJS("half the events", fmt.Sprintf(`sseTest.events.filter(e => e.seq).length >= %d`, total/3), 10*time.Second)
	if n := px.dropHTTP(); n == 0 {
		t.Fatal("no SSE connection to drop")
	}
	for i := total/2 + 1; i <= total; i++ {
		publish(i)
	}
	b.waitJS("every event", fmt.Sprintf(`sseTest.events.some(e => e.seq === %d)`, total), 20*time.Second)

	seen := eval[[]sseSeen](b, `sseTest.events`)
	drops, opens := eval[int](b, `sseTest.drops`), eval[int](b, `sseTest.opens`)
	if drops < 1 || opens < 2 {
		t.Fatalf("%d drops, %d opens: the stream was not dropped and reopened", drops, opens)
	}
	next := uint64(1)
	for _, e := range seen {
		if e.Seq == 0 {
			if e.Type != "connection_established" {
				t.Fatalf("unexpected frame %+v", e)
			}
			continue
		}
		if e.Seq != next {
			t.Fatalf("seq %d where %d was due: not every event exactly once: %+v", e.Seq, next, seen)
		}
		if want := e.Epoch + ":" + fmt.Sprint(e.Seq); e.ID != want {
			t.Fatalf("lastEventId %q, want %q", e.ID, want)
		}
		next++
	}
	if next != total+1 {
		t.Fatalf("saw %d events, want %d", next-1, total)
	}
	t.Logf("%d events over %d connections (%d drops)", total, opens, drops)
}
