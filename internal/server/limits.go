package server

import (
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Defaults of the per-request bounds (Deps.BodyTimeout, Deps.WriteTimeout,
// Deps.MaxReadsPerUser).
const (
	// DefaultBodyTimeout bounds how long a request body may take to arrive,
	// from the end of its headers: a 128 KiB body needs about 4 KiB/s.
	DefaultBodyTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds each write of a response: a client that
	// takes no byte of it for this long is cut. A client reading a long
	// answer steadily is not, however long the whole answer takes.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultMaxReadsPerUser is how many list requests (threads, messages,
	// events) one user may have in flight on one node.
	DefaultMaxReadsPerUser = 4
)

// withDeadlines bounds every HTTP request but the WebSocket upgrade: its
// body must arrive within body of the handler's start, and each write of
// its answer must complete within write. The read deadline is lifted as
// soon as the body has been read to its end: net/http keeps reading the
// idle connection in the background to notice a client going away, and a
// deadline there would cancel a long answer. A request without a body
// gets no read deadline (its headers were bounded by ReadHeaderTimeout).
//
// /ws is left unwrapped, since the upgrader needs the server's own
// ResponseWriter to hijack the connection; a body sent to it is bounded
// all the same (an upgrade has none). The ws package clears what deadlines
// are left on the connection once it owns it.
func withDeadlines(body, write time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One allocation for the controller and both wrappers.
		rd := &reqDeadlines{rc: *http.NewResponseController(w)}
		rc := &rd.rc
		if r.Body != nil && r.Body != http.NoBody {
			_ = rc.SetReadDeadline(time.Now().Add(body))
			rd.body = deadlineBody{ReadCloser: r.Body, rc: rc}
			r.Body = &rd.body
		}
		if r.URL.Path == "/ws" {
			next.ServeHTTP(w, r)
			return
		}
		rd.w = deadlineWriter{ResponseWriter: w, rc: rc, d: write}
		next.ServeHTTP(&rd.w, r)
		// What the handler left in the buffer is flushed after it returns.
		_ = rc.SetWriteDeadline(time.Now().Add(write))
	})
}

// reqDeadlines is one request's deadline wrappers and their controller.
type reqDeadlines struct {
	rc   http.ResponseController
	body deadlineBody
	w    deadlineWriter
}

// deadlineBody lifts the read deadline once the body has been read whole.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// deadlineWriter gives each write of a response its own deadline, so a
// stalled reader is cut after d and a slow but steady one is not.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.d))
	return w.ResponseWriter.Write(p)
}

func (w *deadlineWriter) Flush() {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.d))
	_ = w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// readLimiter counts the heavy reads each user has in flight on this node.
type readLimiter struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

func newReadLimiter(max int) *readLimiter {
	return &readLimiter{max: max, n: make(map[string]int)}
}

// acquire takes one of user's slots, or reports false when all are taken.
func (l *readLimiter) acquire(user string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[user] >= l.max {
		return false
	}
	l.n[user]++
	return true
}

func (l *readLimiter) release(user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[user] <= 1 {
		delete(l.n, user) // idle users cost no memory
		return
	}
	l.n[user]--
}

// limitReads returns the middleware of the list endpoints: it bounds how
// many such requests one user (from the claims requireUser put in the
// context) has in flight to max; one more answers 429 too_many_requests
// with Retry-After: 1. A page is at most about a MiB, so this bounds what
// one user's slow readers can hold. One limiter is shared by every endpoint
// the returned middleware wraps.
func limitReads(max int) func(http.Handler) http.Handler {
	l := newReadLimiter(max)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			user := claimsFrom(r.Context()).Subject
			if !l.acquire(user) {
				w.Header().Set("Retry-After", "1")
				httpx.Error(w, http.StatusTooManyRequests, protocol.CodeTooManyRequests, "too many list requests in flight for this user, retry")
				return
			}
			defer l.release(user)
			next.ServeHTTP(w, r)
		})
	}
}

// rateLimiter holds a token bucket per user who sent recently; a bucket
// left untouched long enough to be full again is dropped, so idle users
// cost no memory.
type rateLimiter struct {
	limit rate.Limit
	burst int
	mu    sync.Mutex
	users map[string]*rate.Limiter
	swept time.Time
}

// allow takes one token of user's bucket, or reports false.
func (l *rateLimiter) allow(user string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A full bucket is as good as none: forget those, at most once per
	// refill time, so the sweep costs nothing per request.
	refill := time.Duration(float64(l.burst) / float64(l.limit) * float64(time.Second))
	if now.Sub(l.swept) > refill {
		for u, b := range l.users {
			if b.TokensAt(now) >= float64(l.burst) {
				delete(l.users, u)
			}
		}
		l.swept = now
	}
	b := l.users[user]
	if b == nil {
		b = rate.NewLimiter(l.limit, l.burst)
		l.users[user] = b
	}
	return b.AllowN(now, 1)
}

// limitRate returns the middleware of the endpoints that send on a user's
// behalf: each user (from the claims requireUser put in the context) may
// make perSecond such requests per second on this node, in bursts of
// burst, like the frames of a WebSocket connection (--rate-limit,
// --rate-burst). One more answers 429 rate_limited with Retry-After: 1 and
// changes nothing; refused counts it. perSecond <= 0 means no bound.
func limitRate(perSecond float64, burst int, refused prometheus.Counter) func(http.Handler) http.Handler {
	if perSecond <= 0 {
		return func(next http.Handler) http.Handler { return next }
	}
	l := &rateLimiter{limit: rate.Limit(perSecond), burst: max(burst, 1), users: make(map[string]*rate.Limiter)}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !l.allow(claimsFrom(r.Context()).Subject, time.Now()) {
				refused.Inc()
				w.Header().Set("Retry-After", "1")
				httpx.Error(w, http.StatusTooManyRequests, protocol.CodeRateLimited, "too many requests: slow down")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
