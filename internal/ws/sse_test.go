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

	"github.com/agentwire/agentwire/internal/sse"
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

// GET /api/v1/stream takes and gives back its place in the cluster-wide
// limit as /ws does, and answers the same refusals.
func TestSSEAdmission(t *testing.T) {
	t.Parallel()
	lim := &fakeLimiter{held: map[string]bool{}, released: make(chan string, 4)}
	ts := newTestServer(t, false, func(c *Config) { c.Limiter, c.MaxConnsPerUser = lim, 1 })
	hs := httptest.NewServer(http.HandlerFunc(ts.srv.ServeSSE))
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
