// Command latency measures publish-to-delivery latency and throughput of
// agentwire on loopback: POST /api/v1/publish from many keep-alive HTTP
// clients at a fixed target rate, WebSocket readers on U users (1–3
// connections each) recording receive time − send time (the send time, unix
// ns, travels in the event's data).
//
//	go run ./bench/latency -users 100 -duration 10s -rate 20000
//	go run ./bench/latency -max            # also search the max sustainable rate
//
// Same-run baseline: a pure HTTP→WebSocket relay (this program with
// -serve-relay): the POST handler decodes the same JSON, encodes the frame once
// with encoding/json and writes it synchronously to each of the user's sockets
// (gorilla, one mutex per connection). No stream, no sequence, no queue, no
// auth on /ws. Ratios agentwire/relay show agentwire's overhead. A second
// relay, bare (-serve-bare), does the same without net/http or gorilla: a
// hand-rolled keep-alive HTTP/1.1 loop and gobwas/ws frames on the raw
// connection, so relay − bare is what those libraries cost. A third, epoll
// (-serve-epoll), answers the publishes from one goroutine waiting in
// epoll_wait, with non-blocking writes: no goroutine switch on the publish
// path, the least a Go server making the same I/O syscalls spends. Every
// server's CPU per publish is also split into kernel and user time.
//
// -centrifugo BIN also measures a Centrifugo 6 binary the way the performance
// issue compares with it: memory engine, each user's connections subscribed
// server-side to the user's personal channel (history 1000, recovery on),
// JWT connect, events published through its HTTP API. Build one with
// GOBIN=/tmp go install github.com/centrifugal/centrifugo/v6@v6.9.1.
//
// Publishers are closed-loop per goroutine (one request in flight each), so
// the achieved rate is what client+server sustain together on this machine;
// latency is from the moment the request is built, so time spent queued in a
// saturated publisher is not counted (coordinated omission: read p99 together
// with the achieved rate). Everything is bounded by -timeout.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agentwire/agentwire/bench/internal/benchproc"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/loadgen"
	"github.com/agentwire/agentwire/protocol"
)

const (
	secret = "latency-benchmark-secret-0123456789abcdef"
	apiKey = "latency-bench-key"
)

type options struct {
	users, publishers, payload int
	duration, warmup, step     time.Duration
	rate, startRate, maxRate   float64
	factor                     float64
	p99Limit                   time.Duration
	max                        bool
}

func main() {
	var o options
	flag.IntVar(&o.users, "users", 100, "users; user i has 1+i%3 connections unless -tabs is set")
	flag.IntVar(&tabs, "tabs", 0, "connections per user (0: 1+i%3)")
	flag.IntVar(&o.publishers, "publishers", 64, "publishing goroutines (keep-alive HTTP connections), one request in flight each")
	flag.IntVar(&o.payload, "payload", 64, "bytes of padding in each event's data")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured duration of the fixed-rate run")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured warm-up before each run")
	flag.Float64Var(&o.rate, "rate", 20000, "target publishes/s of the fixed-rate run")
	flag.BoolVar(&o.max, "max", false, "also search the highest rate with p99 <= -p99-limit, no error, no loss, >= 95% of target achieved")
	flag.DurationVar(&o.step, "step", 3*time.Second, "measured duration of each -max step")
	flag.Float64Var(&o.startRate, "start-rate", 2000, "first rate of -max")
	flag.Float64Var(&o.maxRate, "max-rate", 60000, "last rate of -max")
	flag.Float64Var(&o.factor, "factor", 1.4, "rate multiplier between -max steps")
	flag.DurationVar(&o.p99Limit, "p99-limit", 5*time.Millisecond, "p99 bound of -max")
	skipFixed := flag.Bool("skip-fixed", false, "skip the fixed-rate run (with -max)")
	only := flag.String("only", "", "run only agentwire, before, relay, bare, epoll, redis, centrifugo or centrifugo-redis")
	centrifugo := flag.String("centrifugo", "", "also measure this Centrifugo 6 binary (memory engine, personal channel with history 1000 and recovery, HTTP publish API), alternating with the others")
	binBefore := flag.String("bin-before", "", "also measure this agentwire binary (e.g. built from an earlier commit) as \"before\", alternating with the others")
	pin := 0
	if benchproc.CPUs() < 2 {
		pin = -1
	}
	serverCPU := flag.Int("server-cpu", pin, "bind every server to this CPU (-1: not bound)")
	clientCPU := flag.Int("client-cpu", pin+pin+1, "bind this load generator to this CPU (-1: not bound)")
	debugAddr := flag.String("debug-addr", "", "pass --debug-addr to the agentwire server (pprof for a CPU profile under load, e.g. 127.0.0.1:6060); the Redis pair's reading node gets the next port, its publishing node the one after")
	redisURL := flag.String("redis-url", "", "also measure two agentwire nodes sharing this Redis: publish to one, read on the other")
	prebuilt := flag.String("bin", "", "use this agentwire binary instead of building ./cmd/agentwire")
	timeout := flag.Duration("timeout", 4*time.Minute, "hard bound on the whole run")
	serveRelay := flag.Bool("serve-relay", false, "internal: run the relay baseline")
	serveBare := flag.Bool("serve-bare", false, "internal: run the bare relay baseline")
	serveEpoll := flag.Bool("serve-epoll", false, "internal: run the epoll relay baseline")
	addr := flag.String("addr", "127.0.0.1:0", "internal: listen address of -serve-relay, -serve-bare or -serve-epoll")
	flag.Parse()
	if *serveEpoll {
		fmt.Fprintln(os.Stderr, runEpoll(*addr)) // it serves until it fails
		os.Exit(1)
	}
	if *serveBare {
		fmt.Fprintln(os.Stderr, runBare(*addr)) // it serves until it fails
		os.Exit(1)
	}
	if *serveRelay {
		if err := runRelay(*addr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}

	run, _ := benchproc.NewRun("latency", *timeout)
	defer run.Close()
	fail := run.Fail
	if *serverCPU >= 0 && *serverCPU == *clientCPU {
		fail(errors.New("-server-cpu and -client-cpu must differ (or be -1)"))
	}
	if err := benchproc.PinSelf(*clientCPU); err != nil {
		fail(err)
	}
	tmp := run.Tmp
	self, err := os.Executable()
	if err != nil {
		fail(err)
	}
	bin := ""
	if !relayName(*only) && !strings.HasPrefix(*only, "centrifugo") {
		bin = run.Binary(*prebuilt)
	}

	type target struct {
		name  string
		bin   string
		args  []string
		pub   []string // a second node to publish to (the Redis pair), nil for one node
		at    string   // where a server that does not print its address listens
		pubAt string   // the same for pub
	}
	nodeArgs := func(dir string, extra ...string) []string {
		return append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dir,
			"--jwt-secret", secret, "--api-keys", apiKey, "--log-level", "warn", "--max-connections-per-user", "100000"}, extra...)
	}
	var targets []target
	if *only == "" || *only == "agentwire" {
		var extra []string
		if *debugAddr != "" {
			extra = []string{"--debug-addr", *debugAddr}
		}
		targets = append(targets, target{name: "agentwire", bin: bin, args: nodeArgs(tmp, extra...)})
	}
	if *binBefore != "" && (*only == "" || *only == "before") {
		dir := filepath.Join(tmp, "before")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			fail(err)
		}
		targets = append(targets, target{name: "before", bin: *binBefore, args: nodeArgs(dir)})
	}
	if *only == "" || *only == "relay" {
		targets = append(targets, target{name: "relay", bin: self, args: []string{"-serve-relay", "-addr", "127.0.0.1:0"}})
	}
	if *only == "" || *only == "bare" {
		targets = append(targets, target{name: "bare", bin: self, args: []string{"-serve-bare", "-addr", "127.0.0.1:0"}})
	}
	if *only == "" || *only == "epoll" {
		targets = append(targets, target{name: "epoll", bin: self, args: []string{"-serve-epoll", "-addr", "127.0.0.1:0"}})
	}
	if *redisURL != "" && (*only == "" || *only == "redis") {
		for _, d := range []string{"a", "b"} {
			if err := os.MkdirAll(filepath.Join(tmp, d), 0o700); err != nil {
				fail(err)
			}
		}
		a := []string{"--redis-url", *redisURL}
		b := []string{"--redis-url", *redisURL}
		if *debugAddr != "" {
			// The pair's reading node on the next port, its publishing node on
			// the one after: one profile per node.
			host, port, err := net.SplitHostPort(*debugAddr)
			p, perr := strconv.Atoi(port)
			if err != nil || perr != nil {
				fail(fmt.Errorf("-debug-addr %q: want host:port", *debugAddr))
			}
			a = append(a, "--debug-addr", net.JoinHostPort(host, strconv.Itoa(p+1)))
			b = append(b, "--debug-addr", net.JoinHostPort(host, strconv.Itoa(p+2)))
		}
		targets = append(targets, target{name: "redis", bin: bin,
			args: nodeArgs(filepath.Join(tmp, "a"), a...),
			pub:  nodeArgs(filepath.Join(tmp, "b"), b...)})
	}
	if *centrifugo != "" && (*only == "" || *only == "centrifugo") {
		at, err := benchproc.FreeAddr()
		if err != nil {
			fail(err)
		}
		cfg, err := centrifugoConfig(filepath.Join(tmp, "centrifugo.json"), at, "")
		if err != nil {
			fail(err)
		}
		targets = append(targets, target{name: "centrifugo", bin: *centrifugo, args: []string{"--config", cfg}, at: at})
	}
	if *centrifugo != "" && *redisURL != "" && (*only == "" || *only == "centrifugo-redis") {
		// Two Centrifugo nodes on its Redis engine, like the agentwire pair:
		// read on the first, publish to the second.
		var cfgs, ats [2]string
		for i := range cfgs {
			at, err := benchproc.FreeAddr()
			if err != nil {
				fail(err)
			}
			if cfgs[i], err = centrifugoConfig(filepath.Join(tmp, fmt.Sprintf("centrifugo-redis-%d.json", i)), at, *redisURL); err != nil {
				fail(err)
			}
			ats[i] = at
		}
		targets = append(targets, target{name: "centrifugo-redis", bin: *centrifugo, args: []string{"--config", cfgs[0]}, at: ats[0],
			pub: []string{"--config", cfgs[1]}, pubAt: ats[1]})
	}
	fmt.Printf("latency: %d users, %d connections, %d publishers, payload %d B, server on cpu %d, load generator on cpu %d\n",
		o.users, totalConns(o.users), o.publishers, o.payload, *serverCPU, *clientCPU)
	// Both servers run side by side (the idle one costs nothing) and the
	// measurements alternate, so that load from elsewhere on the shared
	// machine hits both alike.
	fixed := map[string]*stats{}
	maxHeld := map[string]*stats{}
	var clients []*client
	for _, t := range targets {
		var srv *benchproc.Server
		if t.at != "" {
			srv = run.StartOnAt(*serverCPU, t.name, t.bin, t.args, t.at, 30*time.Second)
		} else {
			srv = run.StartOn(*serverCPU, t.name, t.bin, t.args, 30*time.Second)
		}
		cl, err := connect(t.name, srv.Addr, o)
		if err != nil {
			fail(err)
		}
		cl.pids = []int{srv.Pid()}
		if t.pub != nil {
			var pub *benchproc.Server
			if t.pubAt != "" {
				pub = run.StartOnAt(*serverCPU, t.name+"-pub", t.bin, t.pub, t.pubAt, 30*time.Second)
			} else {
				pub = run.StartOn(*serverCPU, t.name+"-pub", t.bin, t.pub, 30*time.Second)
			}
			cl.pubAddr = pub.Addr
			cl.pids = append(cl.pids, pub.Pid())
		}
		clients = append(clients, cl)
	}
	if !*skipFixed {
		for _, cl := range clients {
			st := cl.run(o.rate, o.warmup, o.duration)
			st.print(cl.name, "fixed")
			fixed[cl.name] = st
		}
	}
	if o.max {
		// A step that misses is retried once before the search stops for
		// that server: a single noisy step elsewhere on the box is not a limit.
		failed := map[string]bool{}
		for r := o.startRate; r <= o.maxRate; r *= o.factor {
			left := 0
			for _, cl := range clients {
				if failed[cl.name] {
					continue
				}
				left++
				var st *stats
				ok := false
				for try := 0; try < 2 && !ok; try++ {
					st = cl.run(math.Round(r), o.warmup/2, o.step)
					ok = st.held(o.p99Limit)
					st.print(cl.name, fmt.Sprintf("max step try %d held=%v", try+1, ok))
				}
				if ok {
					maxHeld[cl.name] = st
				} else {
					failed[cl.name] = true
					if _, seen := maxHeld[cl.name]; !seen {
						maxHeld[cl.name] = nil
					}
				}
			}
			if left == 0 {
				break
			}
		}
	}
	for _, cl := range clients {
		cl.close()
	}
	run.Close()

	fmt.Println()
	for _, name := range []string{"agentwire", "before", "relay", "bare", "epoll", "centrifugo"} {
		if a := fixed[name]; a != nil {
			fmt.Printf("RESULT fixed target %.0f/s: %-9s publishes/s %.0f, delivered/s %.0f, p50 %v, p99 %v, max %v, errors %d, lost %d\n",
				o.rate, name, a.pubRate(), a.delRate(), a.q(0.5), a.q(0.99), a.q(1), a.errors(), a.lost())
			fmt.Printf("RESULT server cpu %-9s %.1f µs/publish (kernel %.1f, user %.1f), %.1f µs/delivery, server busy %.0f%%, %s allocs/publish\n",
				name, a.cpuPerPublish(), a.sysPerPublish(), a.cpuPerPublish()-a.sysPerPublish(), a.cpuPerDelivery(), 100*a.busy(), a.allocsPerPublish())
		}
	}
	if a, r := fixed["agentwire"], fixed["relay"]; a != nil && r != nil {
		fmt.Printf("RESULT ratio agentwire/relay: publishes/s %.2f, p50 %.2f, p99 %.2f, server cpu/publish %.2f\n",
			a.pubRate()/r.pubRate(), ratio(a.q(0.5), r.q(0.5)), ratio(a.q(0.99), r.q(0.99)), a.cpuPerPublish()/r.cpuPerPublish())
	}
	for _, base := range []string{"bare", "epoll"} {
		if a, r := fixed["agentwire"], fixed[base]; a != nil && r != nil {
			fmt.Printf("RESULT ratio agentwire/%s: publishes/s %.2f, p50 %.2f, p99 %.2f, server cpu/publish %.2f, kernel cpu/publish %.2f\n",
				base, a.pubRate()/r.pubRate(), ratio(a.q(0.5), r.q(0.5)), ratio(a.q(0.99), r.q(0.99)), a.cpuPerPublish()/r.cpuPerPublish(), a.sysPerPublish()/r.sysPerPublish())
		}
	}
	if a, c := fixed["agentwire"], fixed["centrifugo"]; a != nil && c != nil {
		fmt.Printf("RESULT ratio agentwire/centrifugo: publishes/s %.2f, p50 %.2f, p99 %.2f, server cpu/publish %.2f\n",
			a.pubRate()/c.pubRate(), ratio(a.q(0.5), c.q(0.5)), ratio(a.q(0.99), c.q(0.99)), a.cpuPerPublish()/c.cpuPerPublish())
	}
	if a, b := fixed["agentwire"], fixed["before"]; a != nil && b != nil {
		fmt.Printf("RESULT ratio agentwire/before: publishes/s %.2f, p99 %.2f, server cpu/publish %.2f\n",
			a.pubRate()/b.pubRate(), ratio(a.q(0.99), b.q(0.99)), a.cpuPerPublish()/b.cpuPerPublish())
	}
	if a, r := fixed["agentwire"], fixed["redis"]; a != nil && r != nil {
		printPair("", o.rate, a, r)
	}
	if a, r := fixed["centrifugo"], fixed["centrifugo-redis"]; a != nil && r != nil {
		printPair("centrifugo ", o.rate, a, r)
	}
	if o.max {
		for _, name := range []string{"agentwire", "relay", "bare", "epoll", "redis", "centrifugo", "centrifugo-redis"} {
			if _, ok := maxHeld[name]; !ok {
				continue
			}
			if b := maxHeld[name]; b != nil {
				fmt.Printf("RESULT max sustainable (p99 <= %v) %-9s target %.0f/s: publishes/s %.0f, delivered/s %.0f, p50 %v, p99 %v\n",
					o.p99Limit, name, b.target, b.pubRate(), b.delRate(), b.q(0.5), b.q(0.99))
			} else {
				fmt.Printf("RESULT max sustainable (p99 <= %v) %-9s: not even the start rate %.0f/s held\n", o.p99Limit, name, o.startRate)
			}
		}
		if a, r := maxHeld["agentwire"], maxHeld["relay"]; a != nil && r != nil {
			fmt.Printf("RESULT ratio max sustainable agentwire/relay: %.2f\n", a.pubRate()/r.pubRate())
		}
	}
}

// printPair reports a pair of nodes through Redis (pair) against one node
// of the same server (one); server is "" for agentwire, else its name and a
// space.
func printPair(server string, rate float64, one, pair *stats) {
	fmt.Printf("RESULT fixed target %.0f/s: %sredis 2 nodes publishes/s %.0f, delivered/s %.0f, p50 %v, p99 %v, max %v, errors %d, lost %d\n",
		rate, server, pair.pubRate(), pair.delRate(), pair.q(0.5), pair.q(0.99), pair.q(1), pair.errors(), pair.lost())
	fmt.Printf("RESULT server cpu %sredis 2 nodes (both processes) %.1f µs/publish (kernel %.1f, user %.1f), %.1f µs/delivery\n",
		server, pair.cpuPerPublish(), pair.sysPerPublish(), pair.cpuPerPublish()-pair.sysPerPublish(), pair.cpuPerDelivery())
	fmt.Printf("RESULT ratio %sredis-2-nodes/memory-1-node: delivered/s %.2f, p50 %.2f, p99 %.2f\n",
		server, pair.delRate()/one.delRate(), ratio(pair.q(0.5), one.q(0.5)), ratio(pair.q(0.99), one.q(0.99)))
}

// relayName reports whether name is one of the relay baselines, whose /ws
// takes the user from the query and no token.
func relayName(name string) bool { return name == "relay" || name == "bare" || name == "epoll" }

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func totalConns(users int) int {
	n := 0
	for i := 0; i < users; i++ {
		n += connsOf(i)
	}
	return n
}

// tabs is -tabs: connections per user, 0 for 1 + user%3.
var tabs int

func connsOf(user int) int {
	if tabs > 0 {
		return tabs
	}
	return 1 + user%3
}

// client holds the WebSocket readers and the HTTP publishers of one server.
type client struct {
	name    string
	addr    string // where the WebSocket readers connect
	pubAddr string // where events are published ("" → addr)
	o       options
	pids    []int // the server processes, whose CPU time is measured
	conns   []*reader
	http    *http.Client
	readErr atomic.Int64
	closing atomic.Bool // close has begun: read errors are expected
	body    string      // padding

	centrifugo bool // the server is Centrifugo: its protocol and API
}

type reader struct {
	c    *websocket.Conn
	mu   sync.Mutex
	lat  []int64 // latencies (ns) of events sent within [from, to)
	from int64
	to   int64
}

func connect(name, addr string, o options) (*client, error) {
	cl := &client{name: name, addr: addr, o: o, body: string(bytes.Repeat([]byte("x"), o.payload)),
		centrifugo: strings.HasPrefix(name, "centrifugo")}
	signer := auth.NewSigner([]byte(secret))
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	for u := 0; u < o.users; u++ {
		user := "user-" + strconv.Itoa(u)
		for k := 0; k < connsOf(u); k++ {
			var (
				url = "ws://" + addr + "/ws"
				h   http.Header
				tok string
			)
			if !relayName(name) {
				var err error
				if tok, _, err = signer.Sign(user, time.Hour, "", ""); err != nil {
					return nil, err
				}
			}
			switch {
			case relayName(name):
				url += "?user=" + user
			case cl.centrifugo:
				url = "ws://" + addr + "/connection/websocket"
			default:
				h = http.Header{"Authorization": {"Bearer " + tok}}
			}
			c, _, err := d.Dial(url, h)
			if err != nil {
				return nil, fmt.Errorf("%s: dial %s: %w", name, user, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if cl.centrifugo {
				// Its JSON protocol: a connect command with the JWT; the reply
				// lists the server-side subscription to the personal channel.
				if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{"token":"`+tok+`"}}`)); err != nil {
					return nil, fmt.Errorf("%s: %s: connect: %w", name, user, err)
				}
				if _, msg, err := c.ReadMessage(); err != nil || !bytes.Contains(msg, []byte(`"`+centrifugoChannel(user)+`"`)) {
					return nil, fmt.Errorf("%s: %s: no connect reply subscribed to %s (%v): %.300s", name, user, centrifugoChannel(user), err, msg)
				}
			} else if _, msg, err := c.ReadMessage(); err != nil || !bytes.Contains(msg, []byte("connection_established")) {
				return nil, fmt.Errorf("%s: %s: no connection_established (%v)", name, user, err)
			}
			_ = c.SetReadDeadline(time.Time{})
			r := &reader{c: c}
			cl.conns = append(cl.conns, r)
			go cl.read(r)
		}
	}
	tr := &http.Transport{MaxIdleConns: o.publishers, MaxIdleConnsPerHost: o.publishers,
		MaxConnsPerHost: o.publishers, DisableCompression: true, IdleConnTimeout: time.Minute}
	cl.http = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return cl, nil
}

func (cl *client) read(r *reader) {
	for {
		_, msg, err := r.c.ReadMessage()
		now := time.Now().UnixNano()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				cl.readError(err)
			}
			return
		}
		if !cl.centrifugo {
			r.record(msg, now)
			continue
		}
		// Centrifugo may put several replies in one frame, one per line, and
		// pings with an empty command, to be answered in kind.
		for line := range bytes.SplitSeq(msg, []byte{'\n'}) {
			if string(line) != "{}" {
				r.record(line, now)
				continue
			}
			if err := r.c.WriteMessage(websocket.TextMessage, line); err != nil {
				cl.readError(err)
				return
			}
		}
	}
}

// readError counts a connection lost while reading and reports the first.
func (cl *client) readError(err error) {
	if cl.closing.Load() {
		return
	}
	if cl.readErr.Add(1) == 1 {
		fmt.Fprintf(os.Stderr, "[%s] first read error: %v\n", cl.name, err)
	}
}

// record notes the latency of the tick in msg, received at now, if it was
// sent in the measured window.
func (r *reader) record(msg []byte, now int64) {
	sent, _, ok := loadgen.ParseTick(msg)
	if !ok {
		return
	}
	r.mu.Lock()
	if sent >= r.from && sent < r.to {
		r.lat = append(r.lat, now-sent)
	}
	r.mu.Unlock()
}

func (cl *client) close() {
	cl.closing.Store(true)
	for _, r := range cl.conns {
		_ = r.c.Close()
	}
	cl.http.CloseIdleConnections()
}

type stats struct {
	target    float64
	window    time.Duration
	published int64 // successful publishes sent in the window
	expected  int64 // frames they should produce
	httpErrs  int64
	readErrs  int64
	lat       []int64       // sorted
	cpu       time.Duration // server CPU time (all its processes) over the window
	sys       time.Duration // the part of cpu spent in the kernel
	mallocs   float64       // server heap allocations over the window (-1: unknown)
}

func (s *stats) cpuPerPublish() float64 {
	return float64(s.cpu.Microseconds()) / float64(max(s.published, 1))
}

// sysPerPublish is the kernel's share of cpuPerPublish.
func (s *stats) sysPerPublish() float64 {
	return float64(s.sys.Microseconds()) / float64(max(s.published, 1))
}

func (s *stats) cpuPerDelivery() float64 {
	return float64(s.cpu.Microseconds()) / float64(max(len(s.lat), 1))
}

// busy is the fraction of one core the server used over the window.
func (s *stats) busy() float64 { return s.cpu.Seconds() / s.window.Seconds() }

func (s *stats) allocsPerPublish() string {
	if s.mallocs < 0 {
		return "?"
	}
	return strconv.FormatFloat(s.mallocs/float64(max(s.published, 1)), 'f', 1, 64)
}

func (s *stats) pubRate() float64 { return float64(s.published) / s.window.Seconds() }
func (s *stats) delRate() float64 { return float64(len(s.lat)) / s.window.Seconds() }
func (s *stats) errors() int64    { return s.httpErrs + s.readErrs }
func (s *stats) lost() int64      { return s.expected - int64(len(s.lat)) }

func (s *stats) q(p float64) time.Duration {
	return time.Duration(loadgen.Quantile(s.lat, p)).Round(time.Microsecond)
}

func (s *stats) held(limit time.Duration) bool {
	return s.errors() == 0 && s.lost() == 0 && s.q(0.99) <= limit && s.pubRate() >= 0.95*s.target
}

func (s *stats) print(name, what string) {
	fmt.Printf("[%s] %s target %.0f/s over %v: publishes/s %.0f, delivered/s %.0f, p50 %v p90 %v p99 %v max %v, http errors %d, ws read errors %d, lost %d, server cpu %.1f µs/publish (busy %.0f%%)\n",
		name, what, s.target, s.window, s.pubRate(), s.delRate(), s.q(0.5), s.q(0.9), s.q(0.99), s.q(1), s.httpErrs, s.readErrs, s.lost(), s.cpuPerPublish(), 100*s.busy())
}

// run publishes at rate for warmup+window and measures the events sent in
// the window.
func (cl *client) run(rate float64, warmup, window time.Duration) *stats {
	start := time.Now().Add(50 * time.Millisecond)
	from := start.Add(warmup)
	to := from.Add(window)
	for _, r := range cl.conns {
		r.mu.Lock()
		r.lat, r.from, r.to = r.lat[:0], from.UnixNano(), to.UnixNano()
		r.mu.Unlock()
	}
	readErr0 := cl.readErr.Load()
	var (
		published, expected, httpErrs atomic.Int64
		nextUser                      atomic.Int64
		firstErr                      atomic.Value
	)
	// The server's CPU time and allocations are read when the window opens
	// and when it closes, by a goroutine of their own.
	type sample struct {
		cpu, sys time.Duration
		mallocs  float64
	}
	samples := make(chan sample, 2)
	go func() {
		for _, at := range []time.Time{from, to} {
			time.Sleep(time.Until(at))
			var sm sample
			for _, pid := range cl.pids {
				u, k, err := benchproc.CPUTimes(pid)
				if err != nil {
					fmt.Fprintf(os.Stderr, "[%s] %v\n", cl.name, err)
				}
				sm.cpu += u + k
				sm.sys += k
			}
			sm.mallocs = -1
			if m, err := benchproc.Scrape("http://" + cl.addr + "/metrics"); err == nil {
				if v, ok := m["go_memstats_mallocs_total"]; ok {
					sm.mallocs = v
				}
			}
			samples <- sm
		}
	}()
	bufs := make([][]byte, cl.o.publishers)
	loadgen.Pace(start, to, rate, cl.o.publishers, nil, func(g int) {
		u := int(nextUser.Add(1)-1) % cl.o.users
		sent := time.Now().UnixNano()
		if cl.centrifugo {
			bufs[g] = appendCentrifugoPublish(bufs[g][:0], "user-"+strconv.Itoa(u), sent, cl.body)
		} else {
			bufs[g] = loadgen.AppendPublish(bufs[g][:0], "user-"+strconv.Itoa(u), "bench.tick", sent, 0, cl.body)
		}
		ok, err := cl.publish(bufs[g])
		if sent < from.UnixNano() || sent >= to.UnixNano() {
			return
		}
		if !ok {
			if httpErrs.Add(1) == 1 {
				firstErr.Store(err)
			}
			return
		}
		published.Add(1)
		expected.Add(int64(connsOf(u)))
	})
	time.Sleep(time.Second) // let the last deliveries arrive
	st := &stats{target: rate, window: window, published: published.Load(), expected: expected.Load(),
		httpErrs: httpErrs.Load(), readErrs: cl.readErr.Load() - readErr0}
	s0, s1 := <-samples, <-samples
	st.cpu = s1.cpu - s0.cpu
	st.sys = s1.sys - s0.sys
	st.mallocs = -1
	if s0.mallocs >= 0 && s1.mallocs >= 0 && len(cl.pids) == 1 {
		st.mallocs = s1.mallocs - s0.mallocs
	}
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "[%s] first publish error: %v\n", cl.name, e)
	}
	for _, r := range cl.conns {
		r.mu.Lock()
		st.lat = append(st.lat, r.lat...)
		r.from, r.to = 0, 0
		r.mu.Unlock()
	}
	slices.Sort(st.lat)
	return st
}

func (cl *client) publish(body []byte) (bool, error) {
	addr := cl.addr
	if cl.pubAddr != "" {
		addr = cl.pubAddr
	}
	path, keyHeader, key := "/api/v1/publish", "Authorization", "Bearer "+apiKey
	if cl.centrifugo {
		path, keyHeader, key = "/api/publish", "X-API-Key", apiKey
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set(keyHeader, key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := cl.http.Do(req)
	if err != nil {
		return false, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("HTTP %s: %.200s", resp.Status, b)
	}
	if cl.centrifugo && bytes.Contains(b, []byte(`"error"`)) {
		// Its API answers a failed command with 200 and an error object.
		return false, fmt.Errorf("centrifugo: %.200s", b)
	}
	return true, nil
}

// ---- Centrifugo baseline ----

// centrifugoChannel is user's personal channel: the namespace "personal",
// Centrifugo's user boundary "#", then the user.
func centrifugoChannel(user string) string { return "personal:#" + user }

// appendCentrifugoPublish is loadgen.AppendPublish for Centrifugo's HTTP API:
// the same data, published to the user's personal channel.
func appendCentrifugoPublish(buf []byte, user string, sent int64, pad string) []byte {
	ch, _ := json.Marshal(centrifugoChannel(user))
	p, _ := json.Marshal(pad)
	buf = append(buf, `{"channel":`...)
	buf = append(buf, ch...)
	buf = append(buf, `,"data":{"t":`...)
	buf = strconv.AppendInt(buf, sent, 10)
	buf = append(buf, `,"n":0,"pad":`...)
	buf = append(buf, p...)
	return append(buf, "}}"...)
}

// centrifugoConfig writes the Centrifugo 6 configuration of the comparison
// to path and returns path: listen on addr, HS256 connection tokens with this
// program's secret, every connection subscribed server-side to its user's
// personal channel, whose namespace keeps a history of 1000 with recovery,
// the HTTP API behind apiKey; the memory engine, or the Redis engine on
// redisURL when it is set.
func centrifugoConfig(path, addr, redisURL string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", err
	}
	cfg := map[string]any{
		"http_server": map[string]any{"address": host, "port": p},
		"log":         map[string]any{"level": "error"},
		"client": map[string]any{
			"token": map[string]any{"hmac_secret_key": secret},
			"subscribe_to_user_personal_channel": map[string]any{
				"enabled": true, "personal_channel_namespace": "personal"},
		},
		"http_api": map[string]any{"key": apiKey},
		"channel": map[string]any{"namespaces": []any{map[string]any{
			"name": "personal", "history_size": 1000, "history_ttl": "300s", "force_recovery": true}}},
	}
	if redisURL != "" {
		cfg["engine"] = map[string]any{"type": "redis", "redis": map[string]any{
			"address": []string{redisURL}, "prefix": "latency-bench-centrifugo"}}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, b, 0o600)
}

// ---- relay baseline ----

type relayConn struct {
	mu sync.Mutex
	c  *websocket.Conn
}

type relay struct {
	mu    sync.RWMutex
	users map[string][]*relayConn
	seq   atomic.Uint64
	up    websocket.Upgrader
}

func runRelay(addr string) error {
	rl := &relay{users: map[string][]*relayConn{}, up: websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", rl.ws)
	mux.HandleFunc("POST /api/v1/publish", rl.publish)
	mux.Handle("/metrics", benchproc.RuntimeHandler())
	return benchproc.Listen(addr, mux)
}

func (rl *relay) ws(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	c, err := rl.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	rc := &relayConn{c: c}
	rc.mu.Lock()
	_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"connection_established"}`))
	rc.mu.Unlock()
	rl.mu.Lock()
	rl.users[user] = append(rl.users[user], rc)
	rl.mu.Unlock()
	go func() {
		defer func() {
			rl.mu.Lock()
			rl.users[user] = slices.DeleteFunc(rl.users[user], func(x *relayConn) bool { return x == rc })
			rl.mu.Unlock()
			c.Close()
		}()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
}

func (rl *relay) publish(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+apiKey {
		relayError(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "bad key")
		return
	}
	var req protocol.PublishRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil || req.UserID == "" {
		relayError(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "bad body")
		return
	}
	seq := rl.seq.Add(1)
	frame := protocol.EncodeEvent(protocol.Event{Type: req.Type, Seq: seq, Epoch: "relay", TS: time.Now(),
		ThreadID: req.ThreadID, RunID: req.RunID, Data: req.Data})
	rl.mu.RLock()
	conns := slices.Clone(rl.users[req.UserID])
	rl.mu.RUnlock()
	for _, rc := range conns {
		rc.mu.Lock()
		_ = rc.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_ = rc.c.WriteMessage(websocket.TextMessage, frame)
		rc.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(protocol.PublishResponse{Seq: seq, Epoch: "relay"})
}

// relayError answers the contract's error body.
func relayError(w http.ResponseWriter, status int, code protocol.ErrorCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(protocol.ErrorBody{Error: protocol.ErrorDetail{Code: code, Message: msg}})
}
