package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Reads of a user's history: bounded in memory whatever the client does.

// backends are the stream backends the read suites run against: memory
// always, Redis when AGENTWIRE_TEST_REDIS_URL is set (loudly skipped
// otherwise). Users carry a random suffix, so a shared Redis is fine.
func backends(t *testing.T) map[string][]string {
	b := map[string][]string{"memory": nil}
	if url := os.Getenv("AGENTWIRE_TEST_REDIS_URL"); url != "" {
		b["redis"] = []string{"--redis-url", url}
	} else {
		t.Log("SKIPPING the Redis backend: AGENTWIRE_TEST_REDIS_URL is not set")
	}
	return b
}

// publishHistory appends n events of about size bytes each for user and
// returns the epoch.
func publishHistory(t *testing.T, api *apiClient, user string, n, size int) string {
	t.Helper()
	pad := strings.Repeat("x", size)
	var epoch string
	for i := 0; i < n; i++ {
		var err error
		if _, epoch, err = api.publish(user, "bulk", map[string]any{"pad": pad}); err != nil {
			t.Fatal(err)
		}
	}
	return epoch
}

// TestResumeFloodBounded is the attack of the hardening issue: two sockets
// that never read send resume 20 times a second against a user with a
// ~4 MB history. Before, every resume queued a whole copy of the history
// outside the queue bound (with Redis a fresh copy each time: 753 MB RSS).
// Now the server holds about a queue per socket, refuses a resume while the
// previous replay is unwritten (rate_limited), and the flood ends with the
// socket closed (4029 for too many errors, or 4008).
//
// Not parallel: it measures the heap of this process, which hosts the
// server.
func TestResumeFloodBounded(t *testing.T) {
	for name, args := range backends(t) {
		t.Run(name, func(t *testing.T) {
			s := startServer(t, args...)
			api := newAPIClient(t, s)
			user := "flood-" + randID()
			publishHistory(t, api, user, 100, 40<<10)

			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)

			const conns, resumes = 2, 40
			cs := make([]*websocket.Conn, conns)
			for i := range cs {
				c, _, err := dialWS(nil, s, s.token(user), "")
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				cs[i] = c
			}
			// 20 frames a second: under the generic rate limit (20/s,
			// burst 40), so only the replay rule can refuse them.
			tick := time.NewTicker(50 * time.Millisecond)
			for i := 0; i < resumes; i++ {
				<-tick.C
				for j, c := range cs {
					msg := fmt.Sprintf(`{"type":"resume","id":"r%d-%d","since":0}`, j, i)
					_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
						t.Logf("conn %d: write after %d resumes: %v", j, i, err)
					}
				}
			}
			tick.Stop()

			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("live heap grew by %.1f MB during the flood", float64(grown)/(1<<20))
			if grown > 64<<20 {
				t.Fatalf("live heap grew by %.0f MB while two sockets sent %d resumes each without reading (want < 64 MB)",
					float64(grown)/(1<<20), resumes)
			}

			// What each socket got: at most a few replays, then refusals
			// and a close.
			for j, c := range cs {
				var limited, events int
				code := 0
				for {
					f, err := readFrame(c, 10*time.Second)
					if err != nil {
						code = closeCode(err)
						if code == 0 {
							t.Logf("conn %d: read: %v", j, err)
						}
						break
					}
					switch {
					case f.Type == "error" && f.Code == "rate_limited":
						if !strings.HasPrefix(f.Ref, fmt.Sprintf("r%d-", j)) {
							t.Errorf("conn %d: rate_limited with ref %q", j, f.Ref)
						}
						limited++
					case f.Type == "bulk":
						events++
					}
				}
				t.Logf("conn %d: %d events replayed, %d rate_limited, close %d", j, events, limited, code)
				if limited == 0 && code != 4008 {
					t.Errorf("conn %d: no rate_limited and no 4008 after %d resumes without reading (close %d, %d events replayed)",
						j, resumes, code, events)
				}
				if events >= resumes*100 {
					t.Errorf("conn %d: every resume was replayed (%d events)", j, events)
				}
			}
		})
	}
}

// TestSlowReaderGetsLargeReplay: a history four times the queue bound
// reaches a client that reads slowly, whole and in order, followed by the
// events published while it read; the socket is not closed (the replay is
// paced on the socket, it does not overflow the queue).
func TestSlowReaderGetsLargeReplay(t *testing.T) {
	t.Parallel()
	for name, args := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, append([]string{"--max-queue-bytes", "262144"}, args...)...)
			api := newAPIClient(t, s)
			user := "slowreader-" + randID()
			epoch := publishHistory(t, api, user, 100, 10<<10) // ~1 MB, 4 queues
			c, est, err := dialWS(wsDialer(16<<10), s, s.token(user), "since=0&epoch="+epoch)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if est.HeadSeq != 100 {
				t.Fatalf("connection_established head_seq %d, want 100", est.HeadSeq)
			}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // live events during the replay
				defer wg.Done()
				for i := 0; i < 20; i++ {
					if _, _, err := api.publish(user, "bulk", map[string]any{"live": i}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			for want := uint64(1); want <= 120; want++ {
				if want%10 == 0 {
					time.Sleep(20 * time.Millisecond) // a slow reader
				}
				f, err := readFrame(c, 10*time.Second)
				if err != nil {
					t.Fatalf("after seq %d: %v (close %d)", want-1, err, closeCode(err))
				}
				if f.Type != "bulk" || f.Seq != want {
					t.Fatalf("got %.100s, want seq %d", f.raw, want)
				}
			}
			wg.Wait()
		})
	}
}

// TestEventsPaged: GET /api/v1/events answers at most limit events (default
// 100, at most 1000) and next, the since of the following page, while more
// remain; bad limits are 400 invalid_request; the data is not HTML-escaped.
func TestEventsPaged(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	user := "pager-" + randID()
	tok := s.token(user)
	var epoch string
	for i := 1; i <= 250; i++ {
		// A raw body: encoding/json on this side would escape < & > itself.
		body := fmt.Sprintf(`{"user_id":%q,"type":"note","data":{"i":%d,"s":"a<b&c>d"}}`, user, i)
		var out struct{ Epoch string }
		if code := s.do("POST", "/api/v1/publish", testAPIKey, body, &out); code != 200 {
			t.Fatalf("publish: %d", code)
		}
		epoch = out.Epoch
	}
	type page struct {
		Epoch          string  `json:"epoch"`
		HeadSeq        uint64  `json:"head_seq"`
		Events         []frame `json:"events"`
		Next           *uint64 `json:"next"`
		ResyncRequired bool    `json:"resync_required"`
	}
	get := func(q string) (page, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.URL+"/api/v1/events?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET events?%s: %d %s", q, resp.StatusCode, b)
		}
		var p page
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("GET events?%s: %q is not JSON: %v", q, b, err)
		}
		return p, string(b)
	}

	p, raw := get("since=0&epoch=" + epoch)
	if len(p.Events) != 100 || p.Events[0].Seq != 1 || p.Events[99].Seq != 100 || p.Next == nil || *p.Next != 100 || p.HeadSeq != 250 {
		t.Fatalf("default page: %d events, next %v, head %d; want 1..100, next 100, head 250", len(p.Events), p.Next, p.HeadSeq)
	}
	if !strings.Contains(raw, `"a<b&c>d"`) {
		t.Fatalf("events are HTML-escaped: %.200s", raw)
	}
	var got []uint64
	next := uint64(0)
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p, _ := get(fmt.Sprintf("since=%d&epoch=%s&limit=70", next, epoch))
		for _, e := range p.Events {
			got = append(got, e.Seq)
		}
		if p.Next == nil {
			break
		}
		if len(p.Events) != 70 {
			t.Fatalf("a page with next has %d events, want 70", len(p.Events))
		}
		next = *p.Next
	}
	if len(got) != 250 || got[0] != 1 || got[249] != 250 {
		t.Fatalf("pages gave %d events (%v…)", len(got), got[:min(len(got), 5)])
	}
	if p, _ := get("since=0&limit=1000"); len(p.Events) != 250 || p.Next != nil {
		t.Fatalf("limit=1000: %d events, next %v; want 250 and no next", len(p.Events), p.Next)
	}
	if p, _ := get("since=250&epoch=" + epoch); len(p.Events) != 0 || p.Next != nil {
		t.Fatalf("at head: %d events, next %v", len(p.Events), p.Next)
	}
	if p, _ := get("since=0&epoch=other"); !p.ResyncRequired || len(p.Events) != 0 || p.Next != nil {
		t.Fatalf("other epoch: %+v, want resync_required without events or next", p)
	}
	for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "limit=-1"} {
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		if code := s.do("GET", "/api/v1/events?since=0&"+bad, tok, nil, &e); code != 400 || e.Error.Code != "invalid_request" {
			t.Errorf("%s: %d %q, want 400 invalid_request", bad, code, e.Error.Code)
		}
	}
}

// TestRetentionBytes: --retention-bytes drops the oldest events first; a
// resume from before what is kept gets resync_required history_expired, one
// within it gets the rest.
func TestRetentionBytes(t *testing.T) {
	t.Parallel()
	for name, args := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, append([]string{"--retention-bytes", "100000"}, args...)...)
			api := newAPIClient(t, s)
			user := "retbytes-" + randID()
			epoch := publishHistory(t, api, user, 50, 10<<10) // ~500 KB, 5x the bound
			c, _, err := dialWS(nil, s, s.token(user), "since=0&epoch="+epoch)
			if err != nil {
				t.Fatal(err)
			}
			f, err := readFrame(c, 5*time.Second)
			c.Close()
			if err != nil || f.Type != "resync_required" || f.Reason != "history_expired" || f.HeadSeq != 50 {
				t.Fatalf("resume from 0: %.200s %v; want resync_required history_expired at 50", f.raw, err)
			}
			c, _, err = dialWS(nil, s, s.token(user), "since=45&epoch="+epoch)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for want := uint64(46); want <= 50; want++ {
				f, err := readFrame(c, 5*time.Second)
				if err != nil || f.Seq != want {
					t.Fatalf("resume from 45: %.100s %v, want seq %d", f.raw, err, want)
				}
			}
		})
	}
}

// TestNoHTMLEscaping: frames and API answers carry < > & as they are (an
// HTML-escaped '<' takes six bytes in the stream, every queue and replay).
func TestNoHTMLEscaping(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	user := "escape-" + randID()
	c, _ := s.connect(user)
	defer c.c.Close()
	const content = "is 1<2 && 3>2?"
	c.send(map[string]any{"type": "user_message", "id": "m1", "content": content})
	echo := c.readUntil("user_message")
	if !strings.Contains(string(echo.raw), `"is 1<2 && 3>2?"`) {
		t.Fatalf("user_message echo is escaped: %s", echo.raw)
	}
	c.readUntil("agent_completed")
	req, _ := http.NewRequest("GET", s.URL+"/api/v1/threads/"+echo.ThreadID+"/messages", nil)
	req.Header.Set("Authorization", "Bearer "+s.token(user))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"is 1<2 && 3>2?"`) {
		t.Fatalf("GET messages: %d %s", resp.StatusCode, b)
	}
}
