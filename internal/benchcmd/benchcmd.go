// Package benchcmd is `agentwire bench`: a bounded load generator pointed at a running
// deployment. It connects users through the Go SDK, then either publishes
// timestamped events over the API (publish mode) or runs the demo question
// in a closed loop per user (runs mode), and prints rates, latencies,
// errors and losses. Any error or loss makes it fail, so it doubles as a
// soak test.
package benchcmd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentwire/agentwire/client"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/config"
	"github.com/agentwire/agentwire/internal/loadgen"
	"github.com/agentwire/agentwire/protocol"
)

// Run is `agentwire bench` with args (without "bench"), its flags also
// read from their AGENTWIRE_… variables through getenv; it prints the
// summary on stdout.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	f := config.NewFlagSet("bench", getenv)
	var o benchOptions
	f.String(&o.url, "url", "AGENTWIRE_URL", "http://127.0.0.1:8080", "base URL of the deployment (one node or its load balancer)")
	f.String(&o.apiKey, "api-key", "AGENTWIRE_API_KEY", "", "API key for POST /api/v1/publish (publish mode)")
	f.String(&o.secret, "token-secret", "AGENTWIRE_JWT_SECRET", "", "HS256 secret the deployment verifies user tokens with; bench mints one token per user")
	f.String(&o.issuer, "jwt-issuer", "AGENTWIRE_JWT_ISSUER", "", "iss claim of the minted tokens, when the deployment checks it")
	f.String(&o.audience, "jwt-audience", "AGENTWIRE_JWT_AUDIENCE", "", "aud claim of the minted tokens, when the deployment checks it")
	f.BoolVar(&o.dev, "dev", false, "log each user in with POST /auth/dev-login instead of minting tokens (servers started with --dev)")
	f.StringVar(&o.prefix, "user-prefix", "bench-", "users are <prefix>0 … <prefix>N-1")
	f.IntVar(&o.users, "users", 100, "users to connect")
	f.IntVar(&o.connsPerUser, "conns-per-user", 1, "WebSocket connections per user (tabs)")
	f.BoolVar(&o.sse, "sse", false, "read the streams over SSE (GET /api/v1/stream) and send over plain HTTP instead of WebSockets")
	f.StringVar(&o.mode, "mode", "publish", "publish: events via POST /api/v1/publish, publish → receive latency; runs: each user asks the agent in a closed loop")
	f.Float64Var(&o.rate, "rate", 5000, "target publishes/s (publish mode)")
	f.IntVar(&o.publishers, "publishers", 32, "publishing goroutines, each one keep-alive HTTP connection with one request in flight (publish mode)")
	f.IntVar(&o.payload, "payload", 64, "bytes of padding in each published event's data (publish mode)")
	f.StringVar(&o.message, "message", "what is 12*(3+4)?", "message each user sends (runs mode)")
	f.DurationVar(&o.duration, "duration", 10*time.Second, "measured duration")
	f.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured warm-up before the measured duration")
	f.DurationVar(&o.maxDuration, "max-duration", 0, "hard bound on the whole command, connecting and draining included (0: warmup + duration + 1m)")
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := o.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, o.maxDuration, fmt.Errorf("--max-duration %v reached", o.maxDuration))
	defer cancel()
	b := newBencher(o, stdout)
	defer b.close()
	err := b.run(ctx)
	if err == nil && ctx.Err() != nil {
		err = context.Cause(ctx)
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

type benchOptions struct {
	url, apiKey, secret, issuer, audience, prefix, mode, message string
	dev, sse                                                     bool
	users, connsPerUser, publishers, payload                     int
	rate                                                         float64
	duration, warmup, maxDuration                                time.Duration
}

func (o *benchOptions) check() error {
	o.url = strings.TrimRight(o.url, "/")
	switch {
	case o.mode != "publish" && o.mode != "runs":
		return fmt.Errorf("--mode %q: want publish or runs", o.mode)
	case (o.secret == "") == !o.dev:
		return errors.New("bench needs exactly one of --token-secret (AGENTWIRE_JWT_SECRET) and --dev")
	case o.mode == "publish" && o.apiKey == "":
		return errors.New("publish mode needs --api-key (AGENTWIRE_API_KEY)")
	case o.users < 1 || o.connsPerUser < 1:
		return errors.New("--users and --conns-per-user must be at least 1")
	case o.mode == "publish" && (o.rate <= 0 || o.publishers < 1 || o.payload < 0):
		return errors.New("--rate and --publishers must be positive, --payload not negative")
	case o.duration <= 0 || o.warmup < 0 || o.maxDuration < 0:
		return errors.New("--duration must be positive, --warmup and --max-duration not negative")
	case o.mode == "runs" && o.message == "":
		return errors.New("--message must not be empty")
	}
	if o.maxDuration == 0 {
		o.maxDuration = o.warmup + o.duration + time.Minute
	} else if o.maxDuration < o.warmup+o.duration {
		return fmt.Errorf("--max-duration %v is shorter than --warmup + --duration", o.maxDuration)
	}
	return nil
}

// drainTimeout bounds the wait for the last deliveries after the load stops.
const drainTimeout = 5 * time.Second

type bencher struct {
	benchOptions
	out    io.Writer
	hc     *http.Client // SDK calls, dev-login, probes
	pub    *http.Client // publishers
	signer *auth.Signer
	tick   string         // type of this run's published events: bench.tick.<nonce>
	conns  [][]*benchConn // [user][k]
	window                // the measured interval, read by the readers

	errs     atomic.Int64
	errMu    sync.Mutex
	firstErr []string // the first few errors, printed after the summary
	closing  atomic.Bool
}

// benchConn is one connection and what its reader saw.
type benchConn struct {
	c          *client.Conn
	user, k    int
	mu         sync.Mutex
	got        map[uint64]struct{} // publish mode: tick numbers received
	terminated map[string]struct{} // runs mode: runs whose terminal event arrived
	lat        []time.Duration     // publish mode: latencies of measured ticks
	events     chan client.Event   // runs mode, sending connection: events for the run loop
	done       chan struct{}       // closed when the reader has exited
}

func newBencher(o benchOptions, out io.Writer) *bencher {
	b := &bencher{benchOptions: o, out: out, tick: "bench.tick." + newNonce(), hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 10 * time.Second}}
	if o.secret != "" {
		b.signer = auth.NewSigner([]byte(o.secret))
	}
	if o.mode == "publish" {
		b.pub = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConns: o.publishers,
			MaxIdleConnsPerHost: o.publishers, MaxConnsPerHost: o.publishers, DisableCompression: true, IdleConnTimeout: time.Minute}}
	}
	return b
}

// fail counts an error and keeps the first few messages.
func (b *bencher) fail(format string, a ...any) {
	if b.closing.Load() {
		return
	}
	b.errs.Add(1)
	b.errMu.Lock()
	if len(b.firstErr) < 5 {
		b.firstErr = append(b.firstErr, fmt.Sprintf(format, a...))
	}
	b.errMu.Unlock()
}

func (b *bencher) close() {
	b.closing.Store(true)
	var wg sync.WaitGroup
	for _, cs := range b.conns {
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.c.Close()
				<-c.done
			}()
		}
	}
	wg.Wait()
	b.hc.CloseIdleConnections()
	if b.pub != nil {
		b.pub.CloseIdleConnections()
	}
}

func (b *bencher) userID(u int) string { return b.prefix + strconv.Itoa(u) }

func (b *bencher) run(ctx context.Context) error {
	what := fmt.Sprintf("target %.0f publishes/s, %d publishers, payload %d B", b.rate, b.publishers, b.payload)
	if b.mode == "runs" {
		what = fmt.Sprintf("message %q", b.message)
	}
	each := "1 connection each"
	if b.connsPerUser > 1 {
		each = fmt.Sprintf("%d connections each", b.connsPerUser)
	}
	fmt.Fprintf(b.out, "agentwire bench: %s mode against %s: %d users, %s, %s, %v after a %v warm-up\n",
		b.mode, b.url, b.users, each, what, b.duration, b.warmup)
	if err := b.probe(ctx); err != nil {
		return err
	}
	if err := b.connect(ctx); err != nil {
		return err
	}
	if b.mode == "runs" {
		return b.runs(ctx)
	}
	return b.publish(ctx)
}

// probe fails fast on an unreachable deployment and, in publish mode, on a
// refused API key (with one publish to the first bench user).
func (b *bencher) probe(ctx context.Context) error {
	resp, err := b.post(ctx, b.hc, http.MethodGet, "/healthz", "", nil)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %w", b.url, err)
	}
	if resp.status != http.StatusOK {
		return fmt.Errorf("GET %s/healthz: %s", b.url, resp)
	}
	if b.mode != "publish" {
		return nil
	}
	body, _ := json.Marshal(map[string]any{"user_id": b.userID(0), "type": "bench.probe", "data": map[string]any{}})
	resp, err = b.post(ctx, b.hc, http.MethodPost, "/api/v1/publish", b.apiKey, body)
	if err != nil {
		return fmt.Errorf("POST /api/v1/publish: %w", err)
	}
	if resp.status != http.StatusOK {
		hint := ""
		if resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden {
			hint = " (check --api-key: it must be one of the deployment's --api-keys)"
		}
		return fmt.Errorf("POST /api/v1/publish: %s%s", resp, hint)
	}
	return nil
}

type httpAnswer struct {
	status int
	body   []byte
}

func (a httpAnswer) String() string {
	if msg := bytes.TrimSpace(a.body); len(msg) > 0 {
		return fmt.Sprintf("HTTP %d: %s", a.status, loadgen.Clip(string(msg)))
	}
	return fmt.Sprintf("HTTP %d", a.status)
}

func (b *bencher) post(ctx context.Context, hc *http.Client, method, path, bearer string, body []byte) (httpAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, method, b.url+path, bytes.NewReader(body))
	if err != nil {
		return httpAnswer{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return httpAnswer{}, err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return httpAnswer{}, err
	}
	_, _ = io.Copy(io.Discard, resp.Body) // keep the connection reusable
	return httpAnswer{status: resp.StatusCode, body: rb}, nil
}

// token returns a token for user u: minted with --token-secret, or from
// POST /auth/dev-login with --dev. The SDK calls it again after close 4001.
func (b *bencher) token(u int) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		if b.signer != nil {
			tok, _, err := b.signer.Sign(b.userID(u), b.maxDuration+time.Hour, b.issuer, b.audience)
			return tok, err
		}
		body, _ := json.Marshal(map[string]string{"user_id": b.userID(u)})
		resp, err := b.post(ctx, b.hc, http.MethodPost, "/auth/dev-login", "", body)
		if err != nil {
			return "", fmt.Errorf("POST /auth/dev-login: %w", err)
		}
		var out struct {
			Token string `json:"token"`
		}
		if resp.status != http.StatusOK {
			return "", fmt.Errorf("POST /auth/dev-login: %s (is the server started with --dev?)", resp)
		}
		if err := json.Unmarshal(resp.body, &out); err != nil || out.Token == "" {
			return "", fmt.Errorf("POST /auth/dev-login: answer has no token (%v)", err)
		}
		return out.Token, nil
	}
}

// connect opens every connection, 16 at a time, and starts their readers;
// the first failure stops it.
func (b *bencher) connect(ctx context.Context) error {
	start := time.Now()
	b.conns = make([][]*benchConn, b.users)
	type slot struct{ u, k int }
	slots := make(chan slot)
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for u := range b.users {
		b.conns[u] = make([]*benchConn, b.connsPerUser)
	}
	for range min(16, b.users*b.connsPerUser) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range slots {
				c, err := b.dial(cctx, s.u, s.k)
				if err != nil {
					cancel(fmt.Errorf("connect %s (connection %d): %w", b.userID(s.u), s.k+1, err))
					continue
				}
				mu.Lock()
				b.conns[s.u][s.k] = c
				mu.Unlock()
			}
		}()
	}
feed:
	for u := range b.users {
		for k := range b.connsPerUser {
			select {
			case slots <- slot{u, k}:
			case <-cctx.Done():
				break feed
			}
		}
	}
	close(slots)
	wg.Wait()
	if cctx.Err() != nil {
		// Keep only what connected, so close() closes it.
		for u, cs := range b.conns {
			b.conns[u] = slices.DeleteFunc(cs, func(c *benchConn) bool { return c == nil })
		}
		if err := context.Cause(cctx); !errors.Is(err, context.Canceled) {
			return connectHint(err)
		}
		return context.Cause(ctx)
	}
	fmt.Fprintf(b.out, "connected %d connections in %v\n", b.users*b.connsPerUser, time.Since(start).Round(time.Millisecond))
	return nil
}

func connectHint(err error) error {
	var he *client.HTTPError
	if errors.As(err, &he) {
		switch he.Status {
		case http.StatusUnauthorized:
			return fmt.Errorf("%w (check --token-secret, --jwt-issuer and --jwt-audience against the deployment's)", err)
		case http.StatusTooManyRequests:
			return fmt.Errorf("%w (--conns-per-user is over the deployment's --max-connections-per-user)", err)
		}
	}
	return err
}

func (b *bencher) dial(ctx context.Context, u, k int) (*benchConn, error) {
	bc := &benchConn{user: u, k: k, got: map[uint64]struct{}{}, terminated: map[string]struct{}{}, done: make(chan struct{})}
	if b.mode == "runs" && k == 0 {
		bc.events = make(chan client.Event, 1024)
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	who := fmt.Sprintf("%s (connection %d)", b.userID(u), k+1)
	// A drop under load is an error for a soak test, though the SDK then
	// reconnects and resumes, so nothing is lost.
	onDrop := func(code protocol.CloseCode, reason string, err error) {
		b.fail("%s: connection dropped: code=%d reason=%q err=%v", who, code, reason, err)
	}
	hc := b.hc
	if b.sse {
		hc = &http.Client{Transport: b.hc.Transport} // no Timeout: an SSE stream is one long answer
	}
	c, err := client.Dial(dctx, client.Options{URL: b.url, Token: b.token(u), HTTPClient: hc, EventBuffer: 1024,
		OnDisconnect: onDrop, SSE: b.sse})
	if err != nil {
		return nil, err
	}
	bc.c = c
	go b.read(bc)
	return bc, nil
}

// read consumes one connection's events until it stops.
func (b *bencher) read(bc *benchConn) {
	defer close(bc.done)
	if bc.events != nil {
		defer close(bc.events)
	}
	for ev := range bc.c.Events() {
		now := time.Now()
		switch {
		case ev.Type == protocol.TypeResyncRequired:
			b.fail("%s (connection %d): resync_required (%s): events were lost", b.userID(bc.user), bc.k+1, ev.Resync.Reason)
		case ev.Type == b.tick:
			sent, n, ok := loadgen.ParseTick(ev.Data)
			if !ok || n == 0 {
				continue
			}
			bc.mu.Lock()
			if _, dup := bc.got[n]; dup {
				bc.mu.Unlock()
				b.fail("%s (connection %d): tick %d received twice", b.userID(bc.user), bc.k+1, n)
				continue
			}
			bc.got[n] = struct{}{}
			if sent >= b.from.Load() && sent < b.to.Load() {
				bc.lat = append(bc.lat, now.Sub(time.Unix(0, sent)))
			}
			bc.mu.Unlock()
		case ev.Terminal():
			bc.mu.Lock()
			bc.terminated[ev.RunID] = struct{}{}
			bc.mu.Unlock()
		}
		if bc.events != nil {
			select {
			case bc.events <- ev:
			default:
				b.fail("%s: run loop too slow, event dropped", b.userID(bc.user))
			}
		}
	}
	b.fail("%s (connection %d): connection stopped: %v", b.userID(bc.user), bc.k+1, bc.c.Err()) // not counted once closing
}

// window is the measured interval, shared with the readers (unix ns).
type window struct{ from, to atomic.Int64 }

// published is one publish answered 200.
type published struct {
	user int
	n    uint64
}

func (b *bencher) publish(ctx context.Context) error {
	start := time.Now().Add(20 * time.Millisecond)
	from, to := start.Add(b.warmup), start.Add(b.warmup+b.duration)
	b.from.Store(from.UnixNano())
	b.to.Store(to.UnixNano())
	pad := strings.Repeat("x", b.payload)
	var (
		next, measured, httpErrs atomic.Int64
		okByWorker               = make([][]published, b.publishers)
		bufs                     = make([][]byte, b.publishers)
		fatal                    atomic.Pointer[error]
	)
	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	go func() {
		select {
		case <-ctx.Done():
			halt()
		case <-stop:
		}
	}()
	loadgen.Pace(start, to, b.rate, b.publishers, stop, func(g int) {
		n := uint64(next.Add(1))
		u := int(n-1) % b.users
		sent := time.Now().UnixNano()
		bufs[g] = loadgen.AppendPublish(bufs[g][:0], b.userID(u), b.tick, sent, n, pad)
		resp, err := b.post(ctx, b.pub, http.MethodPost, "/api/v1/publish", b.apiKey, bufs[g])
		switch {
		case err != nil:
			if ctx.Err() == nil {
				httpErrs.Add(1)
				b.fail("POST /api/v1/publish: %v", err)
			}
			return
		case resp.status == http.StatusUnauthorized || resp.status == http.StatusForbidden:
			e := fmt.Errorf("POST /api/v1/publish: %s (the API key was refused mid-run)", resp)
			fatal.CompareAndSwap(nil, &e)
			halt()
			return
		case resp.status != http.StatusOK:
			httpErrs.Add(1)
			b.fail("POST /api/v1/publish: %s", resp)
			return
		}
		okByWorker[g] = append(okByWorker[g], published{u, n})
		if sent >= from.UnixNano() && sent < to.UnixNano() {
			measured.Add(1)
		}
	})
	halt()
	if e := fatal.Load(); e != nil {
		return *e
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	ok := slices.Concat(okByWorker...)
	missing := func() (lost, frames int) {
		for _, p := range ok {
			miss := 0
			for _, c := range b.conns[p.user] {
				c.mu.Lock()
				if _, got := c.got[p.n]; !got {
					miss++
				}
				c.mu.Unlock()
			}
			if miss > 0 {
				lost++
				frames += miss
			}
		}
		return lost, frames
	}
	waitFor(ctx, drainTimeout, func() bool { l, _ := missing(); return l == 0 })
	lost, lostFrames := missing()

	var lat []time.Duration
	for _, cs := range b.conns {
		for _, c := range cs {
			c.mu.Lock()
			lat = append(lat, c.lat...)
			c.mu.Unlock()
		}
	}
	slices.Sort(lat)
	secs := b.duration.Seconds()
	fmt.Fprintf(b.out, "publishes/s   %.1f (target %.0f; %d answered 200 in the measured %v, %d in all)\n", float64(measured.Load())/secs, b.rate, measured.Load(), b.duration, len(ok))
	fmt.Fprintf(b.out, "delivered/s   %.1f (%d frames of measured publishes)\n", float64(len(lat))/secs, len(lat))
	fmt.Fprintf(b.out, "latency       %s (publish → receive)\n", quantiles(lat))
	return b.summary(httpErrs.Load(), lost, fmt.Sprintf("publishes answered 200 not received on every connection of their user (%d frames missing)", lostFrames))
}

// summary prints errors and losses and turns them into the command's error.
func (b *bencher) summary(httpErrs int64, lost int, lostWhat string) error {
	errs := b.errs.Load()
	if b.mode == "publish" {
		fmt.Fprintf(b.out, "errors        %d (HTTP %d, WebSocket %d)\n", errs, httpErrs, errs-httpErrs)
	} else {
		fmt.Fprintf(b.out, "errors        %d\n", errs)
	}
	fmt.Fprintf(b.out, "lost          %d\n", lost)
	b.errMu.Lock()
	for _, e := range b.firstErr {
		fmt.Fprintf(b.out, "error: %s\n", e)
	}
	b.errMu.Unlock()
	if errs > 0 || lost > 0 {
		return fmt.Errorf("%d errors, %d lost (%s)", errs, lost, lostWhat)
	}
	return nil
}

// waitFor polls cond until it holds, timeout passes or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) {
	deadline := time.Now().Add(timeout)
	for !cond() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	r := func(p float64) time.Duration { return roundDuration(loadgen.Quantile(ds, p)) }
	return fmt.Sprintf("p50 %v  p90 %v  p99 %v  max %v", r(0.5), r(0.9), r(0.99), r(1))
}

// roundDuration keeps three significant digits or so.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// acked is a run a user started.
type acked struct {
	user  int
	runID string
}

// runs is runs mode: each user's first connection sends the message, waits
// for the run's terminal event, and sends again, until the window ends.
func (b *bencher) runs(ctx context.Context) error {
	start := time.Now()
	from, to := start.Add(b.warmup), start.Add(b.warmup+b.duration)
	var (
		mu                 sync.Mutex
		ack, started, done []time.Duration
		all                []acked
		wg                 sync.WaitGroup
	)
	for u := range b.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := b.conns[u][0]
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(to) {
					return
				}
				tAck, tStarted, tDone, runID, ok := b.oneRun(ctx, c, u, t0, to.Add(drainTimeout))
				if runID != "" {
					mu.Lock()
					all = append(all, acked{u, runID})
					if ok && !t0.Before(from) {
						ack, started, done = append(ack, tAck), append(started, tStarted), append(done, tDone)
					}
					mu.Unlock()
				}
				if !ok {
					select { // no hot loop on repeated errors
					case <-time.After(100 * time.Millisecond):
					case <-ctx.Done():
					}
				}
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	missing := func() (lost int) {
		for _, r := range all {
			for _, c := range b.conns[r.user] {
				c.mu.Lock()
				_, got := c.terminated[r.runID]
				c.mu.Unlock()
				if !got {
					lost++
					break
				}
			}
		}
		return lost
	}
	waitFor(ctx, drainTimeout, func() bool { return missing() == 0 })
	lost := missing()
	slices.Sort(ack)
	slices.Sort(started)
	slices.Sort(done)
	fmt.Fprintf(b.out, "runs/s        %.1f (%d runs started in the measured %v completed, %d runs in all)\n", float64(len(done))/b.duration.Seconds(), len(done), b.duration, len(all))
	fmt.Fprintf(b.out, "ack           %s (send → ack)\n", quantiles(ack))
	fmt.Fprintf(b.out, "started       %s (send → agent_started)\n", quantiles(started))
	fmt.Fprintf(b.out, "completed     %s (send → agent_completed)\n", quantiles(done))
	return b.summary(0, lost, "runs whose terminal event did not reach every connection of their user")
}

// runTimeout bounds one run in runs mode.
const runTimeout = 30 * time.Second

// oneRun sends the message on c and follows the run to its end, for at most
// runTimeout and not after last. ok is false after an error (counted); runID
// is set once the run was acked.
func (b *bencher) oneRun(ctx context.Context, c *benchConn, u int, t0, last time.Time) (tAck, tStarted, tDone time.Duration, runID string, ok bool) {
	deadline := t0.Add(runTimeout)
	if last.Before(deadline) {
		deadline = last
	}
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	a, err := c.c.SendMessage(rctx, b.message, client.SendOptions{})
	if err != nil {
		if ctx.Err() == nil {
			b.fail("%s: user_message: %v", b.userID(u), err)
		}
		return 0, 0, 0, "", false
	}
	tAck = time.Since(t0)
	for {
		select {
		case ev, open := <-c.events:
			if !open {
				return tAck, tStarted, 0, a.RunID, false // the reader counted why
			}
			if ev.RunID != a.RunID {
				continue
			}
			switch ev.Type {
			case protocol.TypeAgentStarted:
				tStarted = time.Since(t0)
			case protocol.TypeAgentCompleted:
				if tStarted == 0 {
					b.fail("%s: run %s completed without agent_started", b.userID(u), a.RunID)
					return tAck, 0, 0, a.RunID, false
				}
				return tAck, tStarted, time.Since(t0), a.RunID, true
			case protocol.TypeAgentError:
				e, _ := ev.AgentError()
				b.fail("%s: run %s ended with agent_error %s: %s", b.userID(u), a.RunID, e.Code, e.Message)
				return tAck, tStarted, 0, a.RunID, false
			}
		case <-rctx.Done():
			if ctx.Err() == nil {
				b.fail("%s: run %s did not end within %v", b.userID(u), a.RunID, deadline.Sub(t0).Round(time.Millisecond))
			}
			return tAck, tStarted, 0, a.RunID, false
		}
	}
}

// newNonce is a short random hex string.
func newNonce() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
