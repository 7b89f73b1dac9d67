// Package loadgen holds what agentwire's load generators share: paced
// closed-loop workers, the timestamped body of a benchmark publish,
// quantiles of sorted latencies, and Clip for the server's text in a result
// line. It is used by `agentwire bench` (package internal/benchcmd),
// `agentwire verify` (Clip) and the benchmark programs under bench/.
package loadgen

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// MaxLag is how far behind its schedule a Pace worker may fall before it
// drops its backlog instead of bursting to catch up.
const MaxLag = 100 * time.Millisecond

// Pace runs workers goroutines that together call do about rate times a
// second, from start until end, and returns when all have finished. Each
// worker is closed-loop (one call in flight; a worker more than MaxLag behind
// its schedule drops its backlog), so the rate achieved is what the caller
// and the server sustain together. The workers' first calls are staggered
// over one interval. Closing stop (nil: never) ends the workers early.
func Pace(start, end time.Time, rate float64, workers int, stop <-chan struct{}, do func(worker int)) {
	if rate <= 0 || workers <= 0 {
		return
	}
	interval := time.Duration(float64(workers) / rate * 1e9)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start.Add(interval * time.Duration(g) / time.Duration(workers))
			t := time.NewTimer(0)
			defer t.Stop()
			<-t.C
			for {
				now := time.Now()
				if d := next.Sub(now); d > 0 {
					t.Reset(d)
					select {
					case <-t.C:
					case <-stop:
						return
					}
				} else if d < -MaxLag {
					next = now
				}
				select {
				case <-stop:
					return
				default:
				}
				if !next.Before(end) {
					return
				}
				next = next.Add(interval)
				do(g)
			}
		}()
	}
	wg.Wait()
}

// AppendPublish appends the JSON body of a POST /api/v1/publish for user
// with event type typ whose data is a tick: {"t":sent,"n":n,"pad":pad},
// sent being the send time in Unix nanoseconds and n the publish's number.
func AppendPublish(buf []byte, user, typ string, sent int64, n uint64, pad string) []byte {
	buf = append(buf, `{"user_id":`...)
	buf = appendString(buf, user)
	buf = append(buf, `,"type":`...)
	buf = appendString(buf, typ)
	buf = append(buf, `,"data":{"t":`...)
	buf = strconv.AppendInt(buf, sent, 10)
	buf = append(buf, `,"n":`...)
	buf = strconv.AppendUint(buf, n, 10)
	buf = append(buf, `,"pad":`...)
	buf = appendString(buf, pad)
	return append(buf, "}}"...)
}

func appendString(buf []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(buf, b...)
}

var tKey, nKey = []byte(`"t":`), []byte(`"n":`)

// ParseTick reads the send time and number of a tick written by
// AppendPublish from an event's data (or a whole frame carrying it) without
// decoding the JSON. ok is false when there is no "t".
func ParseTick(data []byte) (sent int64, n uint64, ok bool) {
	v, ok := uintAfter(data, tKey)
	if !ok {
		return 0, 0, false
	}
	n, _ = uintAfter(data, nKey)
	return int64(v), n, true
}

func uintAfter(b, key []byte) (uint64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	j := i + len(key)
	var v uint64
	start := j
	for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
		v = v*10 + uint64(b[j]-'0')
	}
	return v, j > start
}

// Quantile is the p-quantile (0 < p ≤ 1; 1 is the maximum) of sorted, by
// the nearest-rank method; 0 for an empty slice.
func Quantile[T ~int64](sorted []T, p float64) T {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	i = min(max(i, 0), len(sorted)-1)
	return sorted[i]
}

// clipBytes is how much of a server's text Clip keeps.
const clipBytes = 120

// Clip shortens a server's text (an answer body, a message) for a result
// or error line: at most clipBytes bytes, cut at a character boundary, then
// "…".
func Clip(s string) string {
	if len(s) <= clipBytes {
		return s
	}
	n := clipBytes
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
