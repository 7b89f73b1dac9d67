package ws

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	hubsse "github.com/agentwire/agentwire/internal/hub/sse"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// fakeLimiter is the cluster-wide connection limit (cluster.Slots in
// production): it counts held places and can fail.
type fakeLimiter struct {
	mu       sync.Mutex
	held     map[string]bool
	fail     error
	released chan string
}

func (l *fakeLimiter) Acquire(_ context.Context, _, id string, max int) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return false, l.fail
	}
	if len(l.held) >= max {
		return false, nil
	}
	l.held[id] = true
	return true, nil
}

func (l *fakeLimiter) Release(_ context.Context, _, id string) error {
	l.mu.Lock()
	delete(l.held, id)
	l.mu.Unlock()
	l.released <- id
	return nil
}

// GET /api/v1/stream, and a connection another endpoint admits with Place
// (the AG-UI responses), take and give back their place in the
// cluster-wide limit as /ws does, and answer the same refusals.
func TestSSEAdmission(t *testing.T) {
	t.Parallel()
	for name, serve := range map[string]func(*Server) http.HandlerFunc{
		"stream": func(s *Server) http.HandlerFunc { return s.ServeSSE },
		"place":  placed,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testAdmission(t, serve)
		})
	}
}

// placed serves a hub connection of u1 over SSE admitted by Place, as the
// AG-UI endpoints do (their middleware authenticates).
func placed(s *Server) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := hubsse.NewConn(s.cfg.Hub, w, newID(), "u1", hubsse.Options{})
		done, ok := s.Place(w, r, c.HC)
		if !ok {
			return
		}
		defer done()
		if _, err := c.HC.Join(r.Context(), protocol.Cursor{None: true}, func(pos stream.Position) []byte {
			return protocol.EncodeConnectionEstablished(protocol.ConnectionEstablished{ConnectionID: c.HC.ID, Epoch: pos.Epoch, HeadSeq: pos.Head})
		}, resyncFrame); err != nil {
			c.Discard()
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		c.Serve(r.Context())
	}
}

func testAdmission(t *testing.T, serve func(*Server) http.HandlerFunc) {
	lim := &fakeLimiter{held: map[string]bool{}, released: make(chan string, 4)}
	ts := newTestServer(t, false, func(c *Config) { c.Limiter, c.MaxConnsPerUser = lim, 1 })
	hs := httptest.NewServer(serve(ts.srv))
	t.Cleanup(hs.Close)
	get := func(ctx context.Context) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL, nil)
		req.Header.Set("Authorization", "Bearer "+ts.token(t, "u1", time.Hour))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	status := func(resp *http.Response) int {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	ctx, cancel := context.WithCancel(context.Background())
	resp := get(ctx)
	if resp.StatusCode != 200 {
		t.Fatalf("first: %d", resp.StatusCode)
	}
	if ev, err := sse.NewReader(resp.Body, 0).Next(); err != nil || ev.ID != "" {
		t.Fatalf("connection_established: %+v %v", ev, err)
	}
	if got := status(get(context.Background())); got != http.StatusTooManyRequests {
		t.Fatalf("over the cluster-wide limit: %d, want 429", got)
	}
	cancel() // the client leaves: its place comes back
	resp.Body.Close()
	select {
	case <-lim.released:
	case <-time.After(10 * time.Second):
		t.Fatal("the place in the cluster-wide limit was not given back")
	}

	lim.mu.Lock()
	lim.fail = errors.New("redis down")
	lim.mu.Unlock()
	if got := status(get(context.Background())); got != http.StatusServiceUnavailable {
		t.Fatalf("limiter down: %d, want 503", got)
	}
	lim.mu.Lock()
	lim.fail = nil
	lim.mu.Unlock()

	ts.srv.Drain()
	if got := status(get(context.Background())); got != http.StatusServiceUnavailable {
		t.Fatalf("draining: %d, want 503", got)
	}
}
