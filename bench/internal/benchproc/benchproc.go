// Package benchproc holds what the load programs under bench/ share: building
// and starting the agentwire binary (or a baseline mode of the program
// itself) as a subprocess on loopback, reading its RSS and Go runtime figures,
// and raising the open-files limit.
package benchproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RaiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns the
// new soft limit. Subprocesses inherit it.
func RaiseNoFile() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	r.Cur = r.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	return r.Cur, nil
}

// BuildAgentwire builds ./cmd/agentwire of the current module into dir and
// returns the binary's path. It must be run from inside the module.
func BuildAgentwire(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "agentwire")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/agentwire/agentwire/cmd/agentwire")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build agentwire: %w", err)
	}
	return bin, nil
}

// Server is a running subprocess that printed "listening on http://ADDR".
type Server struct {
	Name string
	Addr string // host:port
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs bin with args, waits (up to timeout) for its "listening on
// http://HOST:PORT" line on stdout and returns. The child gets SIGKILL if this
// process dies (Pdeathsig), so nothing outlives the benchmark.
func Start(name, bin string, args []string, timeout time.Duration) (*Server, error) {
	return StartOn(-1, name, bin, args, timeout)
}

// StartOn is Start with the child bound to cpu from its start (cpu < 0: not
// bound).
func StartOn(cpu int, name, bin string, args []string, timeout time.Duration) (*Server, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := onCPU(cpu, cmd.Start); err != nil {
		return nil, err
	}
	s := &Server{Name: name, cmd: cmd, done: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if !sent {
				if i := strings.Index(line, "listening on http://"); i >= 0 {
					addrc <- strings.TrimSpace(line[i+len("listening on http://"):])
					sent = true
					continue
				}
			}
			fmt.Fprintf(os.Stderr, "[%s] %s\n", name, line)
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() { _ = cmd.Wait(); close(s.done) }()
	select {
	case s.Addr = <-addrc:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("%s exited before listening", name)
	case <-time.After(timeout):
		s.Stop()
		return nil, fmt.Errorf("%s not listening after %v", name, timeout)
	}
}

// StartOnAt is StartOn for a server that does not print the line Start waits
// for (a third-party baseline such as Centrifugo): its args make it listen on
// addr, and it is ready once addr accepts a TCP connection. Its output goes
// to stderr.
func StartOnAt(cpu int, name, bin string, args []string, addr string, timeout time.Duration) (*Server, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := onCPU(cpu, cmd.Start); err != nil {
		return nil, err
	}
	s := &Server{Name: name, Addr: addr, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("%s exited before listening on %s", name, addr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("%s not listening on %s after %v", name, addr, timeout)
		}
	}
}

// FreeAddr returns a loopback address with a port free right now, for a
// server that cannot listen on port 0 and report it.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Pid is the subprocess's pid.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Stop sends SIGTERM, waits up to 3 s, then SIGKILLs.
func (s *Server) Stop() {
	if s == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// RSSKiB reads VmRSS (KiB) of pid from /proc.
func RSSKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				return strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return 0, errors.New("VmRSS not found")
}

// Scrape fetches a Prometheus text page (or the baseline's imitation of one)
// and returns the unlabelled samples by name.
func Scrape(url string) (map[string]float64, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 || strings.ContainsRune(f[0], '{') {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
		}
	}
	return out, sc.Err()
}

// RuntimeFigures are the Go runtime gauges both servers expose.
var RuntimeFigures = []string{
	"go_goroutines",
	"go_memstats_heap_inuse_bytes",
	"go_memstats_stack_inuse_bytes",
	"go_memstats_sys_bytes",
}

// RuntimeHandler serves RuntimeFigures of this process in Prometheus text
// format, for the baseline servers, which have no /metrics of their own.
func RuntimeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		fmt.Fprintf(w, "go_goroutines %d\n", runtime.NumGoroutine())
		fmt.Fprintf(w, "go_memstats_heap_inuse_bytes %d\n", m.HeapInuse)
		fmt.Fprintf(w, "go_memstats_stack_inuse_bytes %d\n", m.StackInuse)
		fmt.Fprintf(w, "go_memstats_sys_bytes %d\n", m.Sys)
		fmt.Fprintf(w, "go_memstats_mallocs_total %d\n", m.Mallocs)
	})
}

// Listen listens on addr and prints the "listening on http://ADDR" line Start
// waits for, then serves h until the process is killed.
func Listen(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	return srv.Serve(ln)
}
