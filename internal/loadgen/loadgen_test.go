package loadgen

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPublishBodyRoundTrip(t *testing.T) {
	b := AppendPublish(nil, `u"1`, "bench.tick.x", 1234567890123, 42, "xx")
	var got struct {
		UserID string `json:"user_id"`
		Type   string `json:"type"`
		Data   json.RawMessage
	}
	if err := json.Unmarshal(b, &got); err != nil || got.UserID != `u"1` || got.Type != "bench.tick.x" {
		t.Fatalf("%s: %v %+v", b, err, got)
	}
	sent, n, ok := ParseTick(got.Data)
	if !ok || sent != 1234567890123 || n != 42 {
		t.Fatalf("ParseTick(%s) = %d, %d, %v", got.Data, sent, n, ok)
	}
	// A whole frame, with "ts" before the data, parses the same.
	frame := []byte(`{"type":"x","seq":3,"ts":"2026-01-01T00:00:00Z","data":` + string(got.Data) + `}`)
	if s, n, ok := ParseTick(frame); !ok || s != sent || n != 42 {
		t.Fatalf("ParseTick(frame) = %d, %d, %v", s, n, ok)
	}
	if _, _, ok := ParseTick([]byte(`{"ts":"x"}`)); ok {
		t.Fatal("ParseTick found a tick in a frame without one")
	}
}

func TestQuantile(t *testing.T) {
	ds := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for p, want := range map[float64]time.Duration{0.5: 5, 0.9: 9, 0.99: 10, 1: 10, 0.01: 1} {
		if got := Quantile(ds, p); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", p, got, want)
		}
	}
	if Quantile([]int64(nil), 0.5) != 0 {
		t.Error("empty")
	}
}

func TestPace(t *testing.T) {
	var calls atomic.Int64
	start := time.Now()
	Pace(start, start.Add(500*time.Millisecond), 200, 4, nil, func(int) { calls.Add(1) })
	if n := calls.Load(); n < 80 || n > 101 {
		t.Errorf("%d calls at 200/s for 500 ms, want about 100", n)
	}
	stop := make(chan struct{})
	close(stop)
	begin := time.Now()
	Pace(begin, begin.Add(time.Hour), 1, 2, stop, func(int) { t.Error("called after stop") })
	if d := time.Since(begin); d > time.Second {
		t.Errorf("stop took %v", d)
	}
}

func TestClip(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 119) + "éz"
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"short", "short"},
		{strings.Repeat("x", 120), strings.Repeat("x", 120)},
		{strings.Repeat("x", 121), strings.Repeat("x", 120) + "…"},
		{long, strings.Repeat("a", 119) + "…"}, // é straddles byte 120: not split
	} {
		if got := Clip(tt.in); got != tt.want {
			t.Errorf("Clip(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
