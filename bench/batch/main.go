// Command batch measures the server CPU time per event delivered to one
// connection through the three publish paths, in one run against one
// server: single POST /api/v1/publish requests (the baseline), batches
// ({"events":[…]}) and one NDJSON POST /api/v1/publish/stream per
// publisher. The server is bound to one CPU and this program to another;
// the server's user + system time comes from /proc/<pid>/stat.
//
//	go run ./bench/batch                        # 100 users, 8 s per path
//	go run ./bench/batch -users 1000 -batch 200 -duration 10s
//
// Every user has one WebSocket connection, which counts the events it
// receives; the figure is server CPU ÷ events delivered in the measured
// window. Publishers are closed-loop (one request, batch or chunk of lines
// in flight each), so each path runs as fast as client and server allow.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agentwire/agentwire/bench/internal/benchproc"
	"github.com/agentwire/agentwire/internal/auth"
)

const (
	secret = "batch-benchmark-secret-0123456789abcdef"
	apiKey = "batch-bench-key"
)

type options struct {
	users, publishers, batch, payload int
	duration, warmup                  time.Duration
}

func main() {
	var o options
	flag.IntVar(&o.users, "users", 100, "users, one WebSocket connection each")
	flag.IntVar(&o.publishers, "publishers", 4, "publishing goroutines (one HTTP connection each)")
	flag.IntVar(&o.batch, "batch", 100, "events per batch, and per chunk of stream lines")
	flag.IntVar(&o.payload, "payload", 200, "bytes of padding in each event's data")
	flag.DurationVar(&o.duration, "duration", 8*time.Second, "measured duration of each path")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured warm-up before each path")
	pin := 0
	if benchproc.CPUs() < 2 {
		pin = -1
	}
	serverCPU := flag.Int("server-cpu", pin, "bind the server to this CPU (-1: not bound)")
	clientCPU := flag.Int("client-cpu", 2*pin+1, "bind this program to this CPU (-1: not bound)")
	debugAddr := flag.String("debug-addr", "", "start the server with this --debug-addr (pprof), to profile a run")
	prebuilt := flag.String("bin", "", "use this agentwire binary instead of building ./cmd/agentwire")
	only := flag.String("only", "", "measure only this path (batch or stream) beside the single baseline")
	timeout := flag.Duration("timeout", 3*time.Minute, "hard bound on the whole run")
	flag.Parse()

	run, _ := benchproc.NewRun("batch", *timeout)
	defer run.Close()
	if *serverCPU >= 0 && *serverCPU == *clientCPU {
		run.Fail(errors.New("-server-cpu and -client-cpu must differ (or be -1)"))
	}
	if err := benchproc.PinSelf(*clientCPU); err != nil {
		run.Fail(err)
	}
	bin := run.Binary(*prebuilt)
	args := []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", run.Tmp,
		"--jwt-secret", secret, "--api-keys", apiKey, "--log-level", "warn"}
	if *debugAddr != "" {
		args = append(args, "--debug-addr", *debugAddr)
	}
	srv := run.StartOn(*serverCPU, "agentwire", bin, args, 30*time.Second)
	b := &bench{o: o, addr: srv.Addr, pid: srv.Pid(), pad: string(bytes.Repeat([]byte("x"), o.payload))}
	if err := b.connect(); err != nil {
		run.Fail(err)
	}
	fmt.Printf("batch: %d users (1 connection each), %d publishers, %d events per batch or chunk, payload %d B, server on cpu %d, this program on cpu %d\n",
		o.users, o.publishers, o.batch, o.payload, *serverCPU, *clientCPU)
	results := map[string]result{}
	paths := []string{"single", "batch", "stream"}
	if *only != "" {
		paths = []string{"single", *only}
	}
	for _, path := range paths {
		r, err := b.measure(path)
		if err != nil {
			run.Fail(fmt.Errorf("%s: %w", path, err))
		}
		results[path] = r
		fmt.Printf("[%s] events/s delivered %.0f, server cpu %.2f µs/event, server busy %.0f%%, publish errors %d\n",
			path, r.rate(), r.perEvent(), 100*r.cpu.Seconds()/r.window.Seconds(), r.errors)
	}
	run.Close()
	fmt.Println()
	s := results["single"]
	for _, path := range paths {
		r := results[path]
		fmt.Printf("RESULT %-6s server cpu %.2f µs/event delivered (%.2f× single), %.0f events/s, errors %d\n",
			path, r.perEvent(), r.perEvent()/s.perEvent(), r.rate(), r.errors)
	}
}

type bench struct {
	o        options
	addr     string
	pid      int
	pad      string
	received atomic.Int64
	conns    []*websocket.Conn
	hc       *http.Client
}

type result struct {
	window    time.Duration
	cpu       time.Duration
	delivered int64
	errors    int64
}

func (r result) perEvent() float64 {
	return float64(r.cpu.Nanoseconds()) / 1e3 / float64(max(r.delivered, 1))
}

func (r result) rate() float64 { return float64(r.delivered) / r.window.Seconds() }

func (b *bench) connect() error {
	signer := auth.NewSigner([]byte(secret))
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	for u := range b.o.users {
		tok, _, err := signer.Sign("user-"+strconv.Itoa(u), time.Hour, "", "")
		if err != nil {
			return err
		}
		c, _, err := d.Dial("ws://"+b.addr+"/ws", http.Header{"Authorization": {"Bearer " + tok}})
		if err != nil {
			return fmt.Errorf("dial user-%d: %w", u, err)
		}
		b.conns = append(b.conns, c)
		go func() {
			for {
				_, msg, err := c.ReadMessage()
				if err != nil {
					var ce *websocket.CloseError
					if !errors.Is(err, net.ErrClosed) && !errors.As(err, &ce) {
						fmt.Fprintf(os.Stderr, "read: %v\n", err)
					}
					return
				}
				if bytes.Contains(msg, []byte(`"type":"bench.ev"`)) {
					b.received.Add(1)
				}
			}
		}()
	}
	b.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: b.o.publishers, DisableCompression: true}, Timeout: 30 * time.Second}
	return nil
}

// event appends one publish body for user u.
func (b *bench) event(buf []byte, u int, n int64) []byte {
	buf = append(buf, `{"user_id":"user-`...)
	buf = strconv.AppendInt(buf, int64(u), 10)
	buf = append(buf, `","type":"bench.ev","data":{"n":`...)
	buf = strconv.AppendInt(buf, n, 10)
	buf = append(buf, `,"pad":"`...)
	buf = append(buf, b.pad...)
	return append(buf, `"}}`...)
}

// measure runs one path for warm-up + window and reads the server's CPU
// time and the events delivered at the window's two ends.
func (b *bench) measure(path string) (result, error) {
	var (
		stop   atomic.Bool
		errs   atomic.Int64
		wg     sync.WaitGroup
		seqGen atomic.Int64
	)
	for p := range b.o.publishers {
		wg.Go(func() {
			var err error
			switch path {
			case "single":
				err = b.single(&stop, &seqGen, p)
			case "batch":
				err = b.batches(&stop, &seqGen, p)
			case "stream":
				err = b.stream(&stop, &seqGen, p)
			}
			if err != nil {
				if errs.Add(1) == 1 {
					fmt.Fprintf(os.Stderr, "[%s] publisher %d: %v\n", path, p, err)
				}
			}
		})
	}
	time.Sleep(b.o.warmup)
	cpu0, err := benchproc.CPUTime(b.pid)
	if err != nil {
		return result{}, err
	}
	got0, t0 := b.received.Load(), time.Now()
	time.Sleep(b.o.duration)
	cpu1, err := benchproc.CPUTime(b.pid)
	if err != nil {
		return result{}, err
	}
	got1, t1 := b.received.Load(), time.Now()
	stop.Store(true)
	wg.Wait()
	// Let the last deliveries arrive before the next path starts.
	for last := int64(-1); last != b.received.Load(); {
		last = b.received.Load()
		time.Sleep(200 * time.Millisecond)
	}
	return result{window: t1.Sub(t0), cpu: cpu1 - cpu0, delivered: got1 - got0, errors: errs.Load()}, nil
}

func (b *bench) post(path string, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, "http://"+b.addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %.200s", path, resp.Status, answer)
	}
	if bytes.Contains(answer, []byte(`"error"`)) {
		return fmt.Errorf("%s: %.200s", path, answer)
	}
	return nil
}

func (b *bench) single(stop *atomic.Bool, n *atomic.Int64, p int) error {
	var buf []byte
	for u := p; !stop.Load(); u = (u + b.o.publishers) % b.o.users {
		buf = b.event(buf[:0], u, n.Add(1))
		if err := b.post("/api/v1/publish", buf); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) batches(stop *atomic.Bool, n *atomic.Int64, p int) error {
	var buf []byte
	u := p
	for !stop.Load() {
		buf = append(buf[:0], `{"events":[`...)
		for i := range b.o.batch {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = b.event(buf, u, n.Add(1))
			u = (u + 1) % b.o.users
		}
		buf = append(buf, "]}"...)
		if err := b.post("/api/v1/publish", buf); err != nil {
			return err
		}
	}
	return nil
}

// stream keeps one publish stream open and sends chunks of -batch lines,
// each after the previous chunk's acks came back.
func (b *bench) stream(stop *atomic.Bool, n *atomic.Int64, p int) error {
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPost, "http://"+b.addr+"/api/v1/publish/stream", pr)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	go func() { _, _ = pw.Write([]byte("\n")) }()
	resp, err := b.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("stream: %s", resp.Status)
	}
	acks := bufio.NewScanner(resp.Body)
	var buf []byte
	u := p
	for !stop.Load() {
		buf = buf[:0]
		for range b.o.batch {
			buf = b.event(buf, u, n.Add(1))
			buf = append(buf, '\n')
			u = (u + 1) % b.o.users
		}
		if _, err := pw.Write(buf); err != nil {
			return err
		}
		for range b.o.batch {
			if !acks.Scan() {
				return fmt.Errorf("stream ended: %v", acks.Err())
			}
			if bytes.Contains(acks.Bytes(), []byte(`"error"`)) {
				return fmt.Errorf("stream: %.200s", acks.Bytes())
			}
		}
	}
	_ = pw.Close()
	for acks.Scan() {
	}
	return nil
}
