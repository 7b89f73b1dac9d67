package hub_test

// Fan-out benchmarks: one event appended to a user's stream and delivered to
// the N connections of that user (encode once), against a baseline that
// encodes the event with encoding/json once per connection and queues it on
// the very same hub queues (per-connection encode).
//
// The transport is a no-op that only counts frames; each op waits until all N
// frames have been handed to WriteBatch, so the asynchronous flush goroutines
// are part of the measured time. Run:
//
//	go test ./internal/hub -run '^$' -bench 'Fanout' -benchmem
//
// Custom metrics: ns/conn = ns/op / N, allocs/conn = allocs/op / N (the
// allocation count of the op is taken from runtime.MemStats, like -benchmem).
// Compare allocs/op across N: encode once means it does not grow with N.

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/protocol"
)

var fanoutSizes = []int{1, 10, 100, 1000}

// countingTransport counts the frames written through it. When the shared
// counter reaches the current target it signals done.
type countingTransport struct{ w *waiter }

func (t countingTransport) WriteBatch(frames [][]byte) error {
	t.w.add(int64(len(frames)))
	return nil
}

func (countingTransport) Close(protocol.CloseCode, string) {}

type waiter struct {
	n      atomic.Int64
	target atomic.Int64
	done   chan struct{}
}

func newWaiter() *waiter { return &waiter{done: make(chan struct{}, 1)} }

func (w *waiter) add(k int64) {
	nv := w.n.Add(k)
	t := w.target.Load()
	if nv >= t && nv-k < t {
		w.done <- struct{}{}
	}
}

// expect sets the total the next wait waits for; it must be called before the
// frames that reach it can be written.
func (w *waiter) expect(total int64) { w.target.Store(total) }

func (w *waiter) wait(b *testing.B) {
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		b.Fatalf("frames not delivered: got %d, want %d", w.n.Load(), w.target.Load())
	}
}

type fixture struct {
	st   *memory.Stream
	hub  *hub.Hub
	w    *waiter
	rec  stream.Record
	user string
}

func newFixture(b *testing.B, user string, n int) *fixture {
	b.Helper()
	st := memory.New(memory.Options{})
	b.Cleanup(func() { _ = st.Close() })
	h := hub.New(hub.Config{Stream: st, MaxConnsPerUser: 100000, MaxQueueBytes: 64 << 20})
	f := &fixture{st: st, hub: h, w: newWaiter(), user: "bench-user",
		rec: stream.Record{Type: "bench.event", ThreadID: "thread-1",
			Data: json.RawMessage(`{"text":"hello, this is a typical small event payload","n":42}`)}}
	ctx := context.Background()
	for i := 0; i < n; i++ {
		c := h.NewConn("c"+strconv.Itoa(i), user, countingTransport{f.w})
		if err := h.Register(ctx, c); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Join(ctx, protocol.Cursor{None: true}, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
	return f
}

func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

func report(b *testing.B, n int, start time.Time, m0 uint64) {
	el := time.Since(start)
	m1 := mallocs()
	b.ReportMetric(float64(el.Nanoseconds())/float64(b.N)/float64(n), "ns/conn")
	b.ReportMetric(float64(m1-m0)/float64(b.N)/float64(n), "allocs/conn")
	b.ReportMetric(float64(b.N)*float64(n)/el.Seconds(), "frames/s")
}

// BenchmarkFanout: Append on the memory stream → hub.deliver → enqueue on N
// queues → flush goroutines → WriteBatch; each op waits for all N frames.
func BenchmarkFanout(b *testing.B) {
	for _, n := range fanoutSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			f := newFixture(b, "bench-user", n)
			ctx := context.Background()
			b.ReportAllocs()
			runtime.GC()
			b.ResetTimer()
			m0, start := mallocs(), time.Now()
			for i := 0; i < b.N; i++ {
				f.w.expect(int64(n) * int64(i+1))
				if _, err := f.st.Append(ctx, "bench-user", f.rec); err != nil {
					b.Fatal(err)
				}
				f.w.wait(b)
			}
			b.StopTimer()
			report(b, n, start, m0)
		})
	}
}

// BenchmarkFanoutSteady appends b.N events back to back and waits once at the
// end for all N*b.N frames: steady-state throughput, where the flush
// goroutines write batches of several frames.
func BenchmarkFanoutSteady(b *testing.B) {
	for _, n := range fanoutSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			f := newFixture(b, "bench-user", n)
			ctx := context.Background()
			b.ReportAllocs()
			runtime.GC()
			b.ResetTimer()
			m0, start := mallocs(), time.Now()
			f.w.expect(int64(n) * int64(b.N))
			for i := 0; i < b.N; i++ {
				if _, err := f.st.Append(ctx, "bench-user", f.rec); err != nil {
					b.Fatal(err)
				}
			}
			f.w.wait(b)
			b.StopTimer()
			report(b, n, start, m0)
		})
	}
}

// wireEvent is the naive baseline's view of a stream event, encoded with
// encoding/json for each connection.
type wireEvent struct {
	Type     string          `json:"type"`
	Seq      uint64          `json:"seq"`
	Epoch    string          `json:"epoch"`
	TS       time.Time       `json:"ts"`
	ThreadID string          `json:"thread_id,omitempty"`
	RunID    string          `json:"run_id,omitempty"`
	Data     json.RawMessage `json:"data"`
}

// newNaiveFixture registers N connections under a user that receives no
// events, and subscribes the event user's stream with a handler that
// json.Marshals the event once per connection and queues it with Conn.Send:
// the same queues and flush path, only the encoding differs.
func newNaiveFixture(b *testing.B, n int) *fixture {
	f := newFixture(b, "naive-sink", 0)
	ctx := context.Background()
	conns := make([]*hub.Conn, n)
	for i := range conns {
		c := f.hub.NewConn("c"+strconv.Itoa(i), "naive-sink", countingTransport{f.w})
		if err := f.hub.Register(ctx, c); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Join(ctx, protocol.Cursor{None: true}, nil, nil); err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	cancel, err := f.st.Subscribe(ctx, "bench-user", func(ev stream.Event) {
		for _, c := range conns {
			frame, err := json.Marshal(wireEvent{Type: ev.Type, Seq: ev.Seq, Epoch: ev.Epoch, TS: ev.TS,
				ThreadID: ev.ThreadID, RunID: ev.RunID, Data: ev.Data})
			if err != nil {
				panic(err)
			}
			c.Send(frame)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cancel)
	return f
}

// BenchmarkFanoutNaive is the baseline of BenchmarkFanout: per-connection
// json.Marshal. The ratio Naive/Fanout at the same N is the gain of encode once.
func BenchmarkFanoutNaive(b *testing.B) {
	for _, n := range fanoutSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			f := newNaiveFixture(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			runtime.GC()
			b.ResetTimer()
			m0, start := mallocs(), time.Now()
			for i := 0; i < b.N; i++ {
				f.w.expect(int64(n) * int64(i+1))
				if _, err := f.st.Append(ctx, "bench-user", f.rec); err != nil {
					b.Fatal(err)
				}
				f.w.wait(b)
			}
			b.StopTimer()
			report(b, n, start, m0)
		})
	}
}

// BenchmarkFanoutNaiveSteady is the baseline of BenchmarkFanoutSteady.
func BenchmarkFanoutNaiveSteady(b *testing.B) {
	for _, n := range fanoutSizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			f := newNaiveFixture(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			runtime.GC()
			b.ResetTimer()
			m0, start := mallocs(), time.Now()
			f.w.expect(int64(n) * int64(b.N))
			for i := 0; i < b.N; i++ {
				if _, err := f.st.Append(ctx, "bench-user", f.rec); err != nil {
					b.Fatal(err)
				}
			}
			f.w.wait(b)
			b.StopTimer()
			report(b, n, start, m0)
		})
	}
}
