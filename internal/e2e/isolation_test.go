package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestIsolationManyUsers: 200 users × 3 sockets, 8 concurrent publishers to
// random users for 3 s. Every socket gets exactly its user's events, each
// seq exactly the previous one + 1, never one frame of another user, and in
// the end as many as were published to its user.
func TestIsolationManyUsers(t *testing.T) {
	t.Parallel()
	const (
		users       = 200
		connsPer    = 3
		publishers  = 8
		publishFor  = 3 * time.Second
		dialWorkers = 32
	)
	s := startServer(t)
	api := newAPIClient(t, s)

	type sock struct {
		user   string
		c      *websocket.Conn
		epoch  string
		got    atomic.Int64
		ended  atomic.Bool // the user's end marker arrived
		mu     sync.Mutex
		failed string // first violation seen
	}
	names := make([]string, users)
	tokens := make([]string, users)
	for i := range names {
		names[i] = fmt.Sprintf("iso-%03d", i)
		tokens[i] = s.token(names[i])
	}
	socks := make([]*sock, users*connsPer)
	for i := range socks {
		socks[i] = &sock{user: names[i/connsPer]}
	}

	// Connect all sockets, 32 at a time.
	var (
		wg       sync.WaitGroup
		dialErr  atomic.Pointer[error]
		next     atomic.Int64
		stopping atomic.Bool
	)
	reader := func(k *sock) {
		defer wg.Done()
		var last uint64
		for {
			_, b, err := k.c.ReadMessage()
			if err != nil {
				if !stopping.Load() {
					k.mu.Lock()
					if k.failed == "" {
						k.failed = fmt.Sprintf("read: %v", err)
					}
					k.mu.Unlock()
				}
				return
			}
			var f struct {
				Type  string `json:"type"`
				Seq   uint64 `json:"seq"`
				Epoch string `json:"epoch"`
				Data  struct {
					User string `json:"user"`
					N    uint64 `json:"n"`
				} `json:"data"`
			}
			bad := ""
			switch err := json.Unmarshal(b, &f); {
			case err != nil:
				bad = fmt.Sprintf("frame %q is not JSON", b)
			case k.ended.Load():
				bad = fmt.Sprintf("frame after the end marker: %s", b)
			case f.Type == "iso.end" && f.Data.User == k.user && f.Seq == last+1:
				k.ended.Store(true)
				continue
			case f.Type != "iso":
				bad = fmt.Sprintf("unexpected frame %s", b)
			case f.Data.User != k.user:
				bad = fmt.Sprintf("ISOLATION BREACH: socket of %s got %s", k.user, b)
			case f.Seq != last+1:
				bad = fmt.Sprintf("seq %d after %d (want +1): %s", f.Seq, last, b)
			case f.Data.N != f.Seq:
				bad = fmt.Sprintf("event n=%d carries seq %d", f.Data.N, f.Seq)
			case f.Epoch != k.epoch:
				bad = fmt.Sprintf("epoch %q, connection_established said %q", f.Epoch, k.epoch)
			}
			if bad != "" {
				k.mu.Lock()
				if k.failed == "" {
					k.failed = bad
				}
				k.mu.Unlock()
			}
			last = f.Seq
			k.got.Add(1)
		}
	}
	var dwg sync.WaitGroup
	for w := 0; w < dialWorkers; w++ {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(socks) || dialErr.Load() != nil {
					return
				}
				k := socks[i]
				c, est, err := dialWS(nil, s, tokens[i/connsPer], "")
				if err == nil && (est.UserID != k.user || est.HeadSeq != 0) {
					c.Close()
					err = fmt.Errorf("connection_established %s for %s", est.raw, k.user)
				}
				if err != nil {
					err = fmt.Errorf("socket %d of %s: %w", i%connsPer, k.user, err)
					dialErr.CompareAndSwap(nil, &err)
					return
				}
				k.c, k.epoch = c, est.Epoch
				wg.Add(1)
				go reader(k)
			}
		}()
	}
	dwg.Wait()
	t.Cleanup(func() {
		stopping.Store(true)
		for _, k := range socks {
			if k.c != nil {
				k.c.Close()
			}
		}
		wg.Wait()
	})
	if p := dialErr.Load(); p != nil {
		t.Fatalf("connecting %d sockets: %v", len(socks), *p)
	}

	// Publish to random users; a user's publishes are serialised (under its
	// lock) so the seq the server answers must equal the user's counter.
	var (
		userMu    = make([]sync.Mutex, users)
		published = make([]uint64, users)
		pubErr    atomic.Pointer[error]
		total     atomic.Int64
	)
	deadline := time.Now().Add(publishFor)
	var pwg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for time.Now().Before(deadline) && pubErr.Load() == nil {
				u := rand.IntN(users)
				userMu[u].Lock()
				n := published[u] + 1
				seq, _, err := api.publish(names[u], "iso", map[string]any{"user": names[u], "n": n})
				if err == nil && seq != n {
					err = fmt.Errorf("publish #%d for %s answered seq %d", n, names[u], seq)
				}
				if err == nil {
					published[u] = n
					total.Add(1)
				}
				userMu[u].Unlock()
				if err != nil {
					pubErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	pwg.Wait()
	if p := pubErr.Load(); p != nil {
		t.Fatalf("publishing: %v", *p)
	}
	t.Logf("%d events published to %d users over %d sockets", total.Load(), users, len(socks))

	// A barrier instead of a pause: every publish above has returned, so
	// whatever it put on any socket's queue is ahead of the end marker
	// published now to each user. A socket that has its marker has had
	// everything it was ever going to get (a stray frame of another user
	// included); the reader flags anything after it.
	for _, name := range names {
		if _, _, err := api.publish(name, "iso.end", map[string]any{"user": name}); err != nil {
			t.Fatalf("end marker for %s: %v", name, err)
		}
	}
	received := func() int64 {
		var n int64
		for _, k := range socks {
			n += k.got.Load()
			if k.ended.Load() {
				n++
			}
		}
		return n
	}
	allEnded := func() bool {
		for _, k := range socks {
			if !k.ended.Load() {
				return false
			}
		}
		return true
	}
	if !waitProgress(10*time.Second, received, allEnded) {
		for i, k := range socks {
			if !k.ended.Load() {
				k.mu.Lock()
				t.Errorf("socket %d of %s got %d of %d events and no end marker (first violation: %q)", i%connsPer, k.user, k.got.Load(), published[i/connsPer], k.failed)
				k.mu.Unlock()
			}
		}
		t.FailNow()
	}
	bad := 0
	for i, k := range socks {
		k.mu.Lock()
		failed := k.failed
		k.mu.Unlock()
		if g, want := k.got.Load(), int64(published[i/connsPer]); failed != "" || g != want {
			if bad++; bad <= 10 {
				t.Errorf("socket %d of %s: got %d events, published %d; first violation: %q", i%connsPer, k.user, g, want, failed)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d sockets saw a violation", bad, len(socks))
	}
}
