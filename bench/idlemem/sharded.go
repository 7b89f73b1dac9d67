package main

// The sharded mode (-shards, or automatic when -conns does not fit one
// process): no process here may hold more than RLIMIT_NOFILE's hard limit of
// descriptors, so the connections are spread over several server processes
// (each its own agentwire serve on its own port, all bound to CPU 0) and
// several lean-client processes (this program with -lean-client, bound to
// CPU 1). User u connects to shard u % shards from source address
// sourceAddr(u); the figures are summed over the shards.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentwire/agentwire/bench/internal/benchproc"
	"github.com/agentwire/agentwire/internal/loadgen"
)

const (
	serverCPU, clientCPU = 0, 1
	apiKey               = "idlemem-bench-key"
	tickType             = "bench.idle"
	// fdReserve is what a process keeps below the open-files limit for
	// everything that is not a measured connection.
	fdReserve = 1000
)

type shardOpts struct {
	conns, shards, concurrency int
	lim                        uint64
	settle, idle, publishWait  time.Duration
	publishPct                 float64
}

// shardCount is -shards, or when 0 the fewest processes whose descriptors
// hold conns.
func shardCount(conns int, lim uint64, shards int) int {
	if shards > 0 {
		return shards
	}
	per := int(lim) - fdReserve
	return max(1, (conns+per-1)/per)
}

type shardResult struct {
	name                            string
	n, shards, clients              int
	perShard                        []int
	rssBefore, rssConnected, rssAft []int64
	kBefore, kAfter                 kernelFigures
	rtBefore, rtAfter               map[string]float64 // Go runtime gauges summed over shards
	connectTime                     time.Duration
	open, closed, pongs             int64
	published, received             int
	publishErrs                     int64
	lat                             []time.Duration
}

func (r *shardResult) sum(v []int64) (s int64) {
	for _, x := range v {
		s += x
	}
	return s
}

func (r *shardResult) kibPerConn() float64 {
	return float64(r.sum(r.rssAft)-r.sum(r.rssBefore)) / float64(r.n)
}

func (r *shardResult) print() {
	fmt.Printf("\n[%s] %d conns over %d server processes (cpu %d) and %d client processes (cpu %d), connected in %v: %.0f conns/s\n",
		r.name, r.n, r.shards, serverCPU, r.clients, clientCPU, r.connectTime.Round(time.Millisecond), float64(r.n)/r.connectTime.Seconds())
	for k := range r.shards {
		fmt.Printf("[%s] shard %d: %d conns, VmRSS before %d KiB, just connected %d KiB, after idle %d KiB: %.2f KiB/conn\n",
			r.name, k, r.perShard[k], r.rssBefore[k], r.rssConnected[k], r.rssAft[k], float64(r.rssAft[k]-r.rssBefore[k])/float64(r.perShard[k]))
	}
	fmt.Printf("[%s] server RSS per connection, summed over shards: %.2f KiB (%d KiB -> %d KiB)\n",
		r.name, r.kibPerConn(), r.sum(r.rssBefore), r.sum(r.rssAft))
	if r.rtBefore != nil && r.rtAfter != nil {
		for _, k := range benchproc.RuntimeFigures {
			d := (r.rtAfter[k] - r.rtBefore[k]) / float64(r.n)
			if k == "go_goroutines" {
				fmt.Printf("[%s]   %-32s %+.2f per conn\n", r.name, k, d)
			} else {
				fmt.Printf("[%s]   %-32s %+.2f KiB per conn\n", r.name, k, d/1024)
			}
		}
	}
	r.kBefore.printDelta(r.name, r.kAfter, r.n)
	fmt.Printf("[%s] after idle: %d open, %d closed by the server, %d pings answered\n", r.name, r.open, r.closed, r.pongs)
	if r.published > 0 {
		slices.Sort(r.lat)
		fmt.Printf("[%s] publish to %d users while idle: %d received, %d publish errors, latency p50 %v p99 %v max %v\n",
			r.name, r.published, r.received, r.publishErrs, pct(r.lat, 50), pct(r.lat, 99), pct(r.lat, 100))
	}
}

func pct(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)].Round(time.Microsecond)
}

// leanProc is one lean-client subprocess.
type leanProc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	ready chan string
	stat  chan string
}

type recvLog struct {
	mu   sync.Mutex
	got  map[int]bool
	lat  []time.Duration
	more chan struct{} // signalled (non-blocking) on each new receipt
}

func (l *recvLog) add(u int, lat time.Duration) {
	l.mu.Lock()
	if !l.got[u] {
		l.got[u] = true
		l.lat = append(l.lat, lat)
	}
	l.mu.Unlock()
	select {
	case l.more <- struct{}{}:
	default:
	}
}

func (l *recvLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.got)
}

func startLean(self string, o leanOpts, log *recvLog) (*leanProc, error) {
	args := []string{"-lean-client", "-lean-servers", strings.Join(o.servers, ","),
		"-lean-from", strconv.Itoa(o.from), "-lean-to", strconv.Itoa(o.to),
		"-concurrency", strconv.Itoa(o.concurrency), "-lean-tokens=" + strconv.FormatBool(o.tokens)}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := benchproc.StartCmdOn(clientCPU, cmd); err != nil {
		return nil, err
	}
	p := &leanProc{cmd: cmd, in: in, ready: make(chan string, 1), stat: make(chan string, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "ready "):
				p.ready <- line
			case strings.HasPrefix(line, "stat "):
				p.stat <- line
			case strings.HasPrefix(line, "recv "):
				f := strings.Fields(line)
				if len(f) == 3 {
					u, err1 := strconv.Atoi(f[1])
					ns, err2 := strconv.ParseInt(f[2], 10, 64)
					if err1 == nil && err2 == nil {
						log.add(u, time.Duration(ns))
					}
				}
			default:
				fmt.Fprintf(os.Stderr, "[lean client] %s\n", line)
			}
		}
		close(p.ready)
		close(p.stat)
	}()
	return p, nil
}

func (p *leanProc) stop() {
	_ = p.in.Close() // the client exits when its stdin closes
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// measureSharded starts o.shards servers (args(k) for shard k), opens
// o.conns idle connections through lean clients, reads the figures, and for
// agentwire publishes to publishPct% of the users while idle.
func measureSharded(run *benchproc.Run, name, bin, self string, args func(k int) []string, o shardOpts, agentwire bool) (*shardResult, error) {
	r := &shardResult{name: name, n: o.conns, shards: o.shards}
	srvs := make([]*benchproc.Server, o.shards)
	addrs := make([]string, o.shards)
	defer func() {
		for _, s := range srvs {
			s.Stop()
		}
	}()
	for k := range srvs {
		srvs[k] = run.StartOn(serverCPU, fmt.Sprintf("%s-%d", name, k), bin, args(k), 30*time.Second)
		addrs[k] = srvs[k].Addr
	}
	r.perShard = make([]int, o.shards)
	for u := 0; u < o.conns; u++ {
		r.perShard[u%o.shards]++
	}
	readRSS := func() ([]int64, error) {
		v := make([]int64, o.shards)
		for k, s := range srvs {
			var err error
			if v[k], err = benchproc.RSSKiB(s.Pid()); err != nil {
				return nil, err
			}
		}
		return v, nil
	}
	// scrape sums the shards' Go runtime gauges (nil when one fails).
	scrape := func() map[string]float64 {
		sum := map[string]float64{}
		for _, s := range srvs {
			m, err := benchproc.Scrape("http://" + s.Addr + "/metrics")
			if err != nil {
				return nil
			}
			for _, k := range benchproc.RuntimeFigures {
				sum[k] += m[k]
			}
		}
		return sum
	}
	time.Sleep(o.settle)
	var err error
	if r.rssBefore, err = readRSS(); err != nil {
		return nil, err
	}
	r.rtBefore = scrape()

	per := int(o.lim) - fdReserve
	r.clients = max(1, (o.conns+per-1)/per)
	log := &recvLog{got: map[int]bool{}, more: make(chan struct{}, 1)}
	procs := make([]*leanProc, r.clients)
	defer func() {
		for _, p := range procs {
			if p != nil {
				p.stop()
			}
		}
	}()
	chunk := (o.conns + r.clients - 1) / r.clients
	for c := range procs {
		lo := leanOpts{servers: addrs, from: c * chunk, to: min(o.conns, (c+1)*chunk), tokens: agentwire, concurrency: o.concurrency}
		if procs[c], err = startLean(self, lo, log); err != nil {
			return nil, err
		}
	}
	// Tokens are signed before "connect": the connect time is the sockets'.
	r.kBefore = readKernel()
	start := time.Now()
	for _, p := range procs {
		if _, err := io.WriteString(p.in, "connect\n"); err != nil {
			return nil, fmt.Errorf("lean client: %w", err)
		}
	}
	var failed int64
	var first string
	for _, p := range procs {
		line, ok := <-p.ready
		if !ok {
			return nil, errors.New("lean client exited before connecting")
		}
		// ready <opened> <failed> <ns> <first error>
		f := strings.SplitN(line, " ", 5)
		n, _ := strconv.ParseInt(f[2], 10, 64)
		if n > 0 && first == "" {
			first = f[4]
		}
		failed += n
	}
	r.connectTime = time.Since(start)
	if failed > 0 {
		return nil, fmt.Errorf("%s: %d of %d connections failed, first: %s", name, failed, o.conns, first)
	}
	if r.rssConnected, err = readRSS(); err != nil {
		return nil, err
	}
	time.Sleep(o.idle)
	if r.rssAft, err = readRSS(); err != nil {
		return nil, err
	}
	r.kAfter = readKernel()
	r.rtAfter = scrape()

	if agentwire && o.publishPct > 0 {
		publishIdle(r, addrs, o, log)
	}
	for _, p := range procs {
		if _, err := io.WriteString(p.in, "stat\n"); err != nil {
			return nil, fmt.Errorf("lean client: %w", err)
		}
		line, ok := <-p.stat
		if !ok {
			return nil, errors.New("lean client exited")
		}
		var open, closed, pongs int64
		if _, err := fmt.Sscanf(line, "stat %d %d %d", &open, &closed, &pongs); err != nil {
			return nil, fmt.Errorf("lean client stat %q: %w", line, err)
		}
		r.open += open
		r.closed += closed
		r.pongs += pongs
	}
	return r, nil
}

// publishIdle publishes one tick to every user u with u % step == 0 (step =
// 100/publishPct) on its shard, and waits up to publishWait for them to
// arrive.
func publishIdle(r *shardResult, addrs []string, o shardOpts, log *recvLog) {
	step := max(1, int(100/o.publishPct+0.5))
	var users []int
	for u := 0; u < o.conns; u += step {
		users = append(users, u)
	}
	r.published = len(users)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var (
		next, errs atomic.Int64
		firstErr   atomic.Value
		wg         sync.WaitGroup
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for {
				i := int(next.Add(1) - 1)
				if i >= len(users) {
					return
				}
				u := users[i]
				buf = loadgen.AppendPublish(buf[:0], "user-"+strconv.Itoa(u), tickType, time.Now().UnixNano(), uint64(u), "")
				if err := postPublish(hc, addrs[u%len(addrs)], buf); err != nil {
					if errs.Add(1) == 1 {
						firstErr.Store(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	r.publishErrs = errs.Load()
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "[%s] first publish error: %v\n", r.name, e)
	}
	deadline := time.After(o.publishWait)
wait:
	for log.count() < r.published {
		select {
		case <-log.more:
		case <-deadline:
			fmt.Fprintf(os.Stderr, "[%s] publish wait %v over with %d of %d received\n", r.name, o.publishWait, log.count(), r.published)
			break wait
		}
	}
	log.mu.Lock()
	r.received = len(log.got)
	r.lat = slices.Clone(log.lat)
	log.mu.Unlock()
}

func postPublish(hc *http.Client, addr string, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/publish", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s: %.200s", resp.Status, b)
	}
	return nil
}

// kernelFigures is the kernel's side of the sockets: /proc/meminfo,
// /proc/net/sockstat and, when readable, /proc/slabinfo.
type kernelFigures struct {
	meminfo  map[string]int64 // KiB
	tcpInuse int64
	tcpMem   int64            // pages
	slab     map[string]int64 // bytes of the cache's active objects
}

var (
	meminfoKeys = []string{"MemAvailable", "Slab", "SUnreclaim"}
	slabCaches  = []string{"TCP", "sock_inode_cache", "dentry", "filp", "eventpoll_epi", "eventpoll_pwq", "skbuff_head_cache", "kmalloc-1k", "kmalloc-512", "kmalloc-256"}
)

func readKernel() kernelFigures {
	k := kernelFigures{meminfo: map[string]int64{}, slab: map[string]int64{}}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				k.meminfo[strings.TrimSuffix(f[0], ":")] = v
			}
		}
	}
	if b, err := os.ReadFile("/proc/net/sockstat"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 0 && f[0] == "TCP:" {
				for i := 1; i+1 < len(f); i += 2 {
					v, _ := strconv.ParseInt(f[i+1], 10, 64)
					switch f[i] {
					case "inuse":
						k.tcpInuse = v
					case "mem":
						k.tcpMem = v
					}
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/slabinfo"); err == nil {
		// name active_objs num_objs objsize … Active objects, not slab
		// pages: a cache returns its pages lazily (TCP sockets are freed
		// after an RCU grace period), so pages would lag the sockets.
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 || !slices.Contains(slabCaches, f[0]) {
				continue
			}
			active, _ := strconv.ParseInt(f[1], 10, 64)
			size, _ := strconv.ParseInt(f[3], 10, 64)
			k.slab[f[0]] = active * size
		}
	}
	return k
}

func (k kernelFigures) printDelta(name string, after kernelFigures, n int) {
	page := float64(os.Getpagesize())
	pc := func(d float64) float64 { return d / 1024 / float64(n) }
	fmt.Printf("[%s] kernel, per connection (a connection is two loopback sockets, client's and server's):\n", name)
	fmt.Printf("[%s]   sockstat TCP inuse %d -> %d, mem %d -> %d pages: %.2f KiB/conn of TCP buffers\n",
		name, k.tcpInuse, after.tcpInuse, k.tcpMem, after.tcpMem, pc(float64(after.tcpMem-k.tcpMem)*page))
	for _, key := range meminfoKeys {
		b, a := k.meminfo[key], after.meminfo[key]
		fmt.Printf("[%s]   meminfo %-14s %9d KiB -> %9d KiB (%+.2f KiB/conn)\n", name, key, b, a, float64(a-b)/float64(n))
	}
	if len(after.slab) == 0 {
		fmt.Printf("[%s]   /proc/slabinfo not readable\n", name)
		return
	}
	var total int64
	for _, c := range slabCaches {
		if _, ok := after.slab[c]; !ok {
			continue
		}
		d := after.slab[c] - k.slab[c]
		total += d
		fmt.Printf("[%s]   slab %-18s %+10d KiB (%+.2f KiB/conn)\n", name, c, d/1024, pc(float64(d)))
	}
	fmt.Printf("[%s]   slab caches above (active objects), total %+.2f KiB/conn; kernel total (slab + TCP buffers) %.2f KiB/conn\n",
		name, pc(float64(total)), pc(float64(total)+float64(after.tcpMem-k.tcpMem)*page))
}

// waitSocketsGone waits (up to 30 s) until the loopback TCP sockets in use
// are back to at most inuse + slack, so that the teardown of one phase does
// not run into the next phase's kernel figures. The box may be shared, so the
// level is a bound, not an equality.
func waitSocketsGone(inuse, slack int64) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if readKernel().tcpInuse <= inuse+slack {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "idlemem: TCP sockets in use still over %d after 30 s\n", inuse+slack)
}

// shardArgs is the agentwire serve command line of shard k.
func shardArgs(tmp string) func(k int) []string {
	return func(k int) []string {
		return []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(tmp, "shard-"+strconv.Itoa(k)),
			"--jwt-secret", secret, "--api-keys", apiKey, "--log-level", "warn", "--max-connections-per-user", "100000"}
	}
}
