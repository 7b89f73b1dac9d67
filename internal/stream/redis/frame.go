package redis

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

var errBadFrame = errors.New("redis stream: malformed stored frame")

// decodeFrame rebuilds an Event from a frame made by protocol.EncodeEvent (the only
// thing this backend stores and publishes). Frame and Data alias f.
func decodeFrame(f []byte) (stream.Event, error) {
	ev := stream.Event{Frame: f}
	c := cursor{b: f}
	var ok bool
	if !c.lit(`{"type":`) {
		return ev, errBadFrame
	}
	if ev.Type, ok = c.str(); !ok || !c.lit(`,"seq":`) {
		return ev, errBadFrame
	}
	start := c.i
	for c.i < len(f) && f[c.i] >= '0' && f[c.i] <= '9' {
		c.i++
	}
	seq, err := strconv.ParseUint(string(f[start:c.i]), 10, 64)
	if err != nil || !c.lit(`,"epoch":`) {
		return ev, errBadFrame
	}
	ev.Seq = seq
	if ev.Epoch, ok = c.str(); !ok || !c.lit(`,"ts":`) {
		return ev, errBadFrame
	}
	ts, ok := c.str()
	if !ok {
		return ev, errBadFrame
	}
	if ev.TS, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return ev, errBadFrame
	}
	if c.lit(`,"thread_id":`) {
		if ev.ThreadID, ok = c.str(); !ok {
			return ev, errBadFrame
		}
	}
	if c.lit(`,"run_id":`) {
		if ev.RunID, ok = c.str(); !ok {
			return ev, errBadFrame
		}
	}
	end := len(f) - 1
	if !c.lit(`,"data":`) || end < c.i || f[end] != '}' {
		return ev, errBadFrame
	}
	ev.Data = f[c.i:end:end]
	return ev, nil
}

type cursor struct {
	b []byte
	i int
}

func (c *cursor) lit(s string) bool {
	if len(c.b)-c.i >= len(s) && string(c.b[c.i:c.i+len(s)]) == s {
		c.i += len(s)
		return true
	}
	return false
}

// str reads a JSON string; the common case without escapes costs one copy.
func (c *cursor) str() (string, bool) {
	if c.i >= len(c.b) || c.b[c.i] != '"' {
		return "", false
	}
	j, esc := c.i+1, false
	for j < len(c.b) && c.b[j] != '"' {
		if c.b[j] == '\\' {
			esc = true
			j++
		}
		j++
	}
	if j >= len(c.b) {
		return "", false
	}
	raw := c.b[c.i : j+1]
	c.i = j + 1
	if !esc {
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// placeholder is what protocol.EncodeEvent writes for seq 0 and epoch "".
const placeholder = `,"seq":0,"epoch":""`

// template encodes ev (seq and epoch unset) and returns the frame template
// and the offsets around the seq/epoch placeholder.
func template(ev *stream.Event) (tpl []byte, pre, post int, err error) {
	tpl = protocol.EncodeEvent(ev.Wire())
	pre = bytes.Index(tpl, []byte(placeholder))
	if pre < 0 {
		return nil, 0, 0, errors.New("redis stream: unexpected frame layout")
	}
	return tpl, pre, pre + len(placeholder), nil
}

// fill builds the final frame from the template, exactly as the Lua script
// does, so the caller need not receive the frame back.
func fill(tpl []byte, pre, post int, seq uint64, epoch string) []byte {
	b := make([]byte, 0, len(tpl)+24+len(epoch))
	b = append(b, tpl[:pre]...)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"epoch":"`...)
	b = append(b, epoch...)
	b = append(b, '"')
	return append(b, tpl[post:]...)
}
