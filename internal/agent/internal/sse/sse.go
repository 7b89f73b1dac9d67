// Package sse reads a text/event-stream (Server-Sent Events) body, as
// written by OpenAI-compatible endpoints and agent services.
package sse

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxLine is the longest line Read accepts, and the most data one event
// may carry over all its data lines.
const MaxLine = 1 << 20

// ErrLineTooLong is returned for a line, or an event's data, over MaxLine
// bytes.
var ErrLineTooLong = fmt.Errorf("sse: line or event longer than %d bytes", MaxLine)

// Event is one dispatched event.
type Event struct {
	Name string // the "event:" field; empty when absent
	Data string // the "data:" lines joined with "\n"
}

// Read calls fn for each event of r, in order, until r ends (nil), fn
// returns an error (that error), or reading fails. Comments and fields
// other than event and data are skipped, as the SSE spec says; an event
// without data is not dispatched. An event not followed by a blank line
// before the end is still dispatched.
func Read(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	var name string
	var data []string
	size := 0
	dispatch := func() error {
		if data == nil {
			name = ""
			return nil
		}
		e := Event{Name: name, Data: strings.Join(data, "\n")}
		name, data, size = "", nil, 0
		return fn(e)
	}
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if line == "" {
			if err := dispatch(); err != nil {
				return err
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "data":
			if size += len(value) + 1; size > MaxLine {
				return ErrLineTooLong
			}
			data = append(data, value)
		case "event":
			name = value
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return ErrLineTooLong
		}
		return err
	}
	return dispatch()
}
