package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// ErrTooLong is Reader.Next's error for an event larger than the Reader's
// bound.
var ErrTooLong = errors.New("sse: event too long")

// Reader reads an event stream as the HTML standard's EventSource parses it:
// lines end with CRLF, LF or CR; "data" lines join with LF; "id" sets the
// last event id (kept across events, and ignored when it holds a NUL);
// "event" names the event; comments and unknown fields are skipped, and a
// blank line dispatches the event unless it has no data line.
type Reader struct {
	br      *bufio.Reader
	max     int
	lastID  string
	crSeen  bool // the previous line ended with CR: a LF right after it is not a line
	comment func(string)
}

// NewReader reads r, refusing events (and lines) over max bytes (0: 1 MiB).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = 1 << 20
	}
	return &Reader{br: bufio.NewReaderSize(r, 4096), max: max}
}

// OnComment makes the Reader call fn with the text of every comment line
// (without the colon and one leading space): heartbeats, close reasons.
func (r *Reader) OnComment(fn func(string)) { r.comment = fn }

// LastEventID is the id the stream set last: what a reconnect sends as
// Last-Event-ID.
func (r *Reader) LastEventID() string { return r.lastID }

// Next returns the next dispatched event: ID is the last event id in force
// (set by this event or an earlier one). At the end of the stream it
// returns io.EOF (an event not ended by a blank line is dropped, as
// EventSource does).
func (r *Reader) Next() (Event, error) {
	var (
		ev      Event
		hasData bool
		size    int
	)
	for {
		line, err := r.line()
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) == 0 {
				return Event{}, io.EOF
			}
			if !errors.Is(err, io.EOF) {
				return Event{}, err
			}
		}
		size += len(line)
		if size > r.max {
			return Event{}, ErrTooLong
		}
		if len(line) == 0 {
			if err != nil {
				return Event{}, io.EOF
			}
			if !hasData {
				ev.Name = ""
				continue
			}
			ev.ID = r.lastID
			return ev, nil
		}
		field, value, _ := bytes.Cut(line, []byte{':'})
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(field) {
		case "":
			if r.comment != nil {
				r.comment(string(value))
			}
		case "data":
			if hasData {
				ev.Data = append(ev.Data, '\n')
			}
			ev.Data = append(ev.Data, value...)
			hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				r.lastID = string(value)
			}
		case "event":
			ev.Name = string(value)
		}
		if err != nil {
			return Event{}, io.EOF
		}
	}
}

// line reads one line without its end (CRLF, LF or CR), bounded by max.
func (r *Reader) line() ([]byte, error) {
	var out []byte
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			return out, err
		}
		if r.crSeen {
			r.crSeen = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return out, nil
		case '\r':
			r.crSeen = true
			return out, nil
		}
		if len(out) >= r.max {
			return nil, ErrTooLong
		}
		out = append(out, b)
	}
}
