package main

// In-process companion of the idlemem program, for attributing memory:
//
//	go test ./bench/idlemem -run '^$' -bench IdleConnHeap -benchtime 1x \
//	    -memprofile /tmp/idle.mem -memprofilerate 1
//	go tool pprof -sample_index=inuse_space -top /tmp/idle.mem
//
// With IDLEMEM_HEAPPROFILE=/tmp/idleheap set, a heap profile is written
// while the connections are open, one file per sub-benchmark
// (/tmp/idleheap.BenchmarkIdleConnHeap_agentwire …); read it with
// go tool pprof -sample_index=inuse_space -top (build with -memprofilerate 1).
//
// Each op opens idleConns authenticated idle connections to agentwire's /ws
// endpoint (hub + memory stream + ws, in this process), and reports the growth
// of heap-in-use and stack-in-use per connection. The client side (gorilla
// Dialer, 512 B buffers, no goroutine) is in the same process, so the same
// figure for the gorilla baseline server (Baseline sub-benchmark) is reported
// alongside: compare the two, or read the profile's server-side frames.

import (
	"context"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/agentwire/agentwire/bench/internal/benchproc"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/leantcp"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/internal/ws"
)

const idleConns = 2000

func BenchmarkIdleConnHeap(b *testing.B) {
	b.Run("agentwire", func(b *testing.B) {
		st := memory.New(memory.Options{})
		defer st.Close()
		v, err := auth.NewVerifier(context.Background(), auth.Config{Secret: []byte(secret)})
		if err != nil {
			b.Fatal(err)
		}
		defer v.Close()
		h := hub.New(hub.Config{Stream: st, MaxConnsPerUser: 100000})
		srv := ws.New(ws.Config{Hub: h, Verifier: v})
		signer := auth.NewSigner([]byte(secret))
		tokens := make([]string, idleConns)
		for i := range tokens {
			tokens[i], _, _ = signer.Sign("user-"+strconv.Itoa(i), time.Hour, "", "")
		}
		idleHeap(b, srv, tokens, leantcp.Wrap) // as internal/app listens
	})
	b.Run("baseline", func(b *testing.B) {
		up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
		idleHeap(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		}), nil, nil)
	})
}

// idleHeap measures idle connections to h; wrap, if set, wraps the
// server's listener.
func idleHeap(b *testing.B, h http.Handler, tokens []string, wrap func(net.Listener) net.Listener) {
	if _, err := raiseNoFileForTest(); err != nil {
		b.Skip(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	if wrap != nil {
		ln = wrap(ln)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	defer hs.Close()
	url := "ws://" + ln.Addr().String() + "/ws"
	d := websocket.Dialer{ReadBufferSize: 512, WriteBufferSize: 512}
	var heap, stack float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		before := memstats()
		b.StartTimer()
		conns := make([]*websocket.Conn, 0, idleConns)
		for j := 0; j < idleConns; j++ {
			c, err := dial(&d, url, tokens, j)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		b.StopTimer()
		time.Sleep(500 * time.Millisecond)
		after := memstats()
		if path := os.Getenv("IDLEMEM_HEAPPROFILE"); path != "" && i == 0 {
			// In-use heap while the connections are open (the -memprofile of
			// go test is written after they are closed).
			writeHeapProfile(b, path+"."+strings.ReplaceAll(b.Name(), "/", "_"))
		}
		heap += float64(after.HeapInuse-before.HeapInuse) / idleConns
		stack += float64(after.StackInuse-before.StackInuse) / idleConns
		for _, c := range conns {
			c.Close()
		}
		time.Sleep(200 * time.Millisecond)
		b.StartTimer()
	}
	b.ReportMetric(heap/float64(b.N)/1024, "heapKiB/conn")
	b.ReportMetric(stack/float64(b.N)/1024, "stackKiB/conn")
}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

func memstats() runtime.MemStats {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

func raiseNoFileForTest() (uint64, error) { return benchproc.RaiseNoFile() }
