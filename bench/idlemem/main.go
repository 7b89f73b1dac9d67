// Command idlemem measures the server memory (RSS) of idle authenticated
// WebSocket connections: agentwire built from this module and run as a
// subprocess, against a same-run baseline, a minimal gorilla/websocket server
// (this program with -serve-baseline: unauthenticated upgrade with gorilla's
// default buffers and one goroutine per connection blocked in ReadMessage).
//
//	go run ./bench/idlemem -conns 10000
//
// Each agentwire connection is a distinct user (user-0 … user-N-1) with a real
// HS256 JWT and counts only once it has received connection_established.
// Figure: KiB per connection = (VmRSS after N idle conns + idle - VmRSS
// before) / N, and its ratio to the baseline's. Loopback only; the program
// exits by itself within -timeout and kills its subprocesses.
//
// With -sse it also measures the same idle connections over SSE (GET
// /api/v1/stream), against agentwire's own WebSocket figure.
//
// Beyond one process's open-files limit (or with -shards N) it runs sharded:
// several server processes on CPU 0 and lean epoll clients (this program
// with -lean-client) on CPU 1, and adds the kernel's side of the sockets and a
// publish to -publish-pct of the users while idle; see sharded.go and lean.go.
//
//	go run ./bench/idlemem -conns 250000 -timeout 10m
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agentwire/agentwire/bench/internal/benchproc"
	"github.com/agentwire/agentwire/internal/auth"
)

const secret = "idlemem-benchmark-secret-0123456789abcdef"

func main() {
	var (
		conns       = flag.Int("conns", 10000, "idle connections to open on each server")
		idle        = flag.Duration("idle", 3*time.Second, "how long the connections stay idle before RSS is read again")
		settle      = flag.Duration("settle", time.Second, "wait after the server listens before the baseline RSS")
		concurrency = flag.Int("concurrency", 32, "concurrent dials")
		timeout     = flag.Duration("timeout", 2*time.Minute, "hard bound on the whole run")
		prebuilt    = flag.String("bin", "", "use this agentwire binary instead of building ./cmd/agentwire")
		only        = flag.String("only", "", "run only this server: agentwire or baseline")
		withSSE     = flag.Bool("sse", false, "also measure agentwire's idle SSE connections (GET /api/v1/stream)")
		serveBase   = flag.Bool("serve-baseline", false, "internal: run the baseline server")
		addr        = flag.String("addr", "127.0.0.1:0", "internal: listen address of -serve-baseline")
		shards      = flag.Int("shards", 0, "server processes (and lean-client mode); 0: one in-process client when -conns fits the open-files limit, else the fewest that hold -conns")
		publishPct  = flag.Float64("publish-pct", 1, "sharded mode: percent of the users published to while idle (0: none)")
		publishWait = flag.Duration("publish-wait", 10*time.Second, "sharded mode: how long to wait for the published events")
		leanClient  = flag.Bool("lean-client", false, "internal: run a lean client (sharded mode)")
		leanServers = flag.String("lean-servers", "", "internal: -lean-client's shard addresses, comma-separated")
		leanFrom    = flag.Int("lean-from", 0, "internal: -lean-client's first user")
		leanTo      = flag.Int("lean-to", 0, "internal: -lean-client's end user (exclusive)")
		leanTokens  = flag.Bool("lean-tokens", true, "internal: -lean-client authenticates and waits for connection_established")
	)
	flag.Parse()
	if *leanClient {
		o := leanOpts{servers: strings.Split(*leanServers, ","), from: *leanFrom, to: *leanTo, tokens: *leanTokens,
			concurrency: *concurrency, handshake: 10 * time.Second}
		if err := runLeanClient(o); err != nil {
			fmt.Fprintln(os.Stderr, "lean client:", err)
			os.Exit(1)
		}
		return
	}
	if *serveBase {
		if err := serveBaseline(*addr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}

	run, lim := benchproc.NewRun("idlemem", *timeout)
	defer run.Close()
	fail := run.Fail
	if *conns <= 0 {
		fail(fmt.Errorf("-conns %d: must be positive", *conns))
	}
	sharded := *shards > 0 || uint64(*conns)+fdReserve > lim
	if sharded && *withSSE {
		fail(errors.New("-sse is measured in one process: use -conns within the open-files limit and no -shards"))
	}
	if *shards < 0 || lim <= fdReserve {
		fail(fmt.Errorf("-shards %d, open-files limit %d: need -shards >= 0 and a limit over %d", *shards, lim, fdReserve))
	}
	bin := ""
	if *only != "baseline" {
		bin = run.Binary(*prebuilt)
	}
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}

	if sharded {
		o := shardOpts{conns: *conns, shards: shardCount(*conns, lim, *shards), concurrency: *concurrency, lim: lim,
			settle: *settle, idle: *idle, publishWait: *publishWait, publishPct: *publishPct}
		runSharded(run, bin, self, *only, o)
		return
	}
	fmt.Printf("idlemem: %d idle connections per server, idle %v, GOMAXPROCS of servers default, nofile %d\n", *conns, *idle, lim)
	var base, aw *result
	if *only == "" || *only == "baseline" {
		base, err = measure(run, "baseline", self, []string{"-serve-baseline", "-addr", "127.0.0.1:0"}, *conns, *concurrency, *settle, *idle, wsDialer(nil))
		if err != nil {
			fail(err)
		}
		base.print()
	}
	if *only == "" || *only == "agentwire" {
		signer := auth.NewSigner([]byte(secret))
		tokens := make([]string, *conns)
		for i := range tokens {
			tokens[i], _, err = signer.Sign("user-"+strconv.Itoa(i), time.Hour, "", "")
			if err != nil {
				fail(err)
			}
		}
		args := []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", run.Tmp, "--jwt-secret", secret,
			"--log-level", "warn", "--max-connections-per-user", "100000"}
		aw, err = measure(run, "agentwire", bin, args, *conns, *concurrency, *settle, *idle, wsDialer(tokens))
		if err != nil {
			fail(err)
		}
		aw.print()
		if *withSSE {
			sse, err := measure(run, "agentwire-sse", bin, args, *conns, *concurrency, *settle, *idle, sseDialer(tokens))
			if err != nil {
				fail(err)
			}
			sse.print()
			fmt.Printf("\nRESULT agentwire SSE %.2f KiB/conn, WebSocket %.2f KiB/conn, ratio SSE/WebSocket %.2f\n",
				sse.kibPerConn(), aw.kibPerConn(), sse.kibPerConn()/aw.kibPerConn())
		}
	}
	if base != nil && aw != nil {
		fmt.Printf("\nRESULT agentwire %.2f KiB/conn, baseline %.2f KiB/conn, ratio agentwire/baseline %.2f (target: agentwire <= 8 KiB/conn: %s)\n",
			aw.kibPerConn(), base.kibPerConn(), aw.kibPerConn()/base.kibPerConn(), verdict(aw.kibPerConn() <= 8))
	} else if aw != nil {
		fmt.Printf("\nRESULT agentwire %.2f KiB/conn (target <= 8 KiB/conn: %s)\n", aw.kibPerConn(), verdict(aw.kibPerConn() <= 8))
	}
}

// runSharded measures the baseline and agentwire in the sharded mode (see
// sharded.go) and prints the figures.
func runSharded(run *benchproc.Run, bin, self, only string, o shardOpts) {
	fmt.Printf("idlemem (sharded): %d idle connections per server kind over %d server processes on cpu %d, lean clients on cpu %d, idle %v, nofile %d per process\n",
		o.conns, o.shards, serverCPU, clientCPU, o.idle, o.lim)
	var base, aw *shardResult
	var err error
	inuse := readKernel().tcpInuse
	if only == "" || only == "baseline" {
		args := func(int) []string { return []string{"-serve-baseline", "-addr", "127.0.0.1:0"} }
		if base, err = measureSharded(run, "baseline", self, self, args, o, false); err != nil {
			run.Fail(err)
		}
		base.print()
		waitSocketsGone(inuse, int64(o.conns)/50)
	}
	if only == "" || only == "agentwire" {
		if aw, err = measureSharded(run, "agentwire", bin, self, shardArgs(run.Tmp), o, true); err != nil {
			run.Fail(err)
		}
		aw.print()
	}
	if aw == nil {
		return
	}
	ok := aw.kibPerConn() <= 3.5 && aw.closed == 0 && aw.received == aw.published
	if base != nil {
		fmt.Printf("\nRESULT agentwire %d conns, %.2f KiB/conn server RSS over %d shards, %.0f conns/s; baseline %.2f KiB/conn, %.0f conns/s; ratio %.2f; publish %d/%d received p50 %v p99 %v (target <= 3.5 KiB/conn, none lost: %s)\n",
			aw.n, aw.kibPerConn(), aw.shards, float64(aw.n)/aw.connectTime.Seconds(), base.kibPerConn(), float64(base.n)/base.connectTime.Seconds(),
			aw.kibPerConn()/base.kibPerConn(), aw.received, aw.published, pct(aw.lat, 50), pct(aw.lat, 99), verdict(ok))
	} else {
		fmt.Printf("\nRESULT agentwire %d conns, %.2f KiB/conn server RSS over %d shards, %.0f conns/s; publish %d/%d received p50 %v p99 %v (target <= 3.5 KiB/conn, none lost: %s)\n",
			aw.n, aw.kibPerConn(), aw.shards, float64(aw.n)/aw.connectTime.Seconds(), aw.received, aw.published, pct(aw.lat, 50), pct(aw.lat, 99), verdict(ok))
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

type result struct {
	name              string
	n                 int
	rssBefore         int64 // KiB
	rssConnected      int64
	rssAfter          int64
	rtBefore, rtAfter map[string]float64
	connectTime       time.Duration
}

func (r *result) kibPerConn() float64 { return float64(r.rssAfter-r.rssBefore) / float64(r.n) }

func (r *result) print() {
	fmt.Printf("\n[%s] %d conns connected in %v\n", r.name, r.n, r.connectTime.Round(time.Millisecond))
	fmt.Printf("[%s] VmRSS before %d KiB, just connected %d KiB, after idle %d KiB\n", r.name, r.rssBefore, r.rssConnected, r.rssAfter)
	fmt.Printf("[%s] RSS per connection: %.2f KiB\n", r.name, r.kibPerConn())
	if r.rtBefore != nil && r.rtAfter != nil {
		for _, k := range benchproc.RuntimeFigures {
			d := r.rtAfter[k] - r.rtBefore[k]
			if k == "go_goroutines" {
				fmt.Printf("[%s]   %-32s %8.0f -> %8.0f  (%+.2f per conn)\n", r.name, k, r.rtBefore[k], r.rtAfter[k], d/float64(r.n))
			} else {
				fmt.Printf("[%s]   %-32s %8.0f KiB -> %8.0f KiB  (%+.2f KiB per conn)\n", r.name, k, r.rtBefore[k]/1024, r.rtAfter[k]/1024, d/1024/float64(r.n))
			}
		}
	}
}

// dialFunc opens connection i to the server at addr (host:port) and returns
// it once it is established.
type dialFunc func(addr string, i int) (io.Closer, error)

// measure starts a server, reads its RSS, opens n idle connections with
// dial, idles, reads RSS again, closes everything.
func measure(run *benchproc.Run, name, bin string, args []string, n, concurrency int, settle, idle time.Duration, dial dialFunc) (*result, error) {
	srv := run.Start(name, bin, args, 30*time.Second)
	defer srv.Stop()
	var err error
	time.Sleep(settle)
	r := &result{name: name, n: n}
	if r.rssBefore, err = benchproc.RSSKiB(srv.Pid()); err != nil {
		return nil, err
	}
	r.rtBefore, _ = benchproc.Scrape("http://" + srv.Addr + "/metrics")

	conns := make([]io.Closer, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	var (
		next   atomic.Int64
		errCnt atomic.Int64
		first  atomic.Value
		wg     sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := dial(srv.Addr, i)
				if err != nil {
					if errCnt.Add(1) == 1 {
						first.Store(err)
					}
					continue
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	r.connectTime = time.Since(start)
	if e := errCnt.Load(); e > 0 {
		return nil, fmt.Errorf("%s: %d of %d connections failed, first: %v", name, e, n, first.Load())
	}
	if r.rssConnected, err = benchproc.RSSKiB(srv.Pid()); err != nil {
		return nil, err
	}
	time.Sleep(idle)
	if r.rssAfter, err = benchproc.RSSKiB(srv.Pid()); err != nil {
		return nil, err
	}
	r.rtAfter, _ = benchproc.Scrape("http://" + srv.Addr + "/metrics")
	return r, nil
}

// wsDialer dials /ws: with tokens[i] as bearer token when tokens is set,
// then waiting for connection_established.
func wsDialer(tokens []string) dialFunc {
	d := &websocket.Dialer{ReadBufferSize: 512, WriteBufferSize: 512, HandshakeTimeout: 10 * time.Second}
	return func(addr string, i int) (io.Closer, error) { return dial(d, "ws://"+addr+"/ws", tokens, i) }
}

// sseDialer opens GET /api/v1/stream with tokens[i] and waits for its
// first event (connection_established).
func sseDialer(tokens []string) dialFunc {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, ReadBufferSize: 512, WriteBufferSize: 512}}
	return func(addr string, i int) (io.Closer, error) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/api/v1/stream", nil)
		req.Header.Set("Authorization", "Bearer "+tokens[i])
		resp, err := hc.Do(req)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("stream %d: %w", i, err)
		}
		closer := closerFunc(func() error { cancel(); return resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			_ = closer()
			return nil, fmt.Errorf("stream %d: HTTP %s", i, resp.Status)
		}
		first, err := bufio.NewReaderSize(resp.Body, 512).ReadString('\n')
		if err != nil || !strings.Contains(first, `"type":"connection_established"`) {
			_ = closer()
			return nil, fmt.Errorf("stream %d: first line %.200q: %v", i, first, err)
		}
		return closer, nil
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func dial(d *websocket.Dialer, url string, tokens []string, i int) (*websocket.Conn, error) {
	var h http.Header
	if tokens != nil {
		h = http.Header{"Authorization": {"Bearer " + tokens[i]}}
	}
	c, resp, err := d.Dial(url, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %d: %w (HTTP %s)", i, err, resp.Status)
		}
		return nil, fmt.Errorf("dial %d: %w", i, err)
	}
	if tokens == nil {
		return c, nil
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("conn %d: reading connection_established: %w", i, err)
	}
	if !bytes.Contains(msg, []byte(`"type":"connection_established"`)) {
		c.Close()
		return nil, fmt.Errorf("conn %d: first frame is not connection_established: %.200s", i, msg)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, nil
}

// serveBaseline is the same-run baseline: gorilla/websocket with its default
// Upgrader (buffers: the hijacked net/http ones), no authentication, one
// goroutine per connection in ReadMessage.
func serveBaseline(addr string) error {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
	})
	mux.Handle("/metrics", benchproc.RuntimeHandler())
	return benchproc.Listen(addr, mux)
}
