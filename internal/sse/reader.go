package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxEvent is a Reader's bound on one event (and one line) when its
// caller gives none.
const DefaultMaxEvent = 1 << 20

// ErrTooLong is the error of an event whose data (over all its data lines),
// or of a line, larger than the Reader's bound.
var ErrTooLong = errors.New("sse: event too long")

// Reader reads an event stream as the HTML standard's EventSource parses it:
// lines end with CRLF, LF or CR; "data" lines join with LF; "id" sets the
// last event id (kept across events, and ignored when it holds a NUL);
// "event" names the event; comments and unknown fields are skipped, and a
// blank line dispatches the event unless it has no data line.
//
// Memory is bounded by max: a line over max bytes, or an event whose data
// lines come to more than max bytes (each counted with its line feed),
// fails with ErrTooLong.
type Reader struct {
	br      *bufio.Reader
	max     int
	lastID  string
	crSeen  bool // the previous line ended with CR: a LF right after it is not a line
	comment func(string)
	// cutLast dispatches an event the end of the stream cuts off (see Read).
	cutLast bool
	eof     bool
}

// NewReader reads r, refusing events (and lines) over max bytes (0:
// DefaultMaxEvent).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxEvent
	}
	return &Reader{br: bufio.NewReaderSize(r, 4096), max: max}
}

// Read calls fn with each event of r, in order, until r ends (nil), fn
// returns an error (that error) or reading fails (ErrTooLong for an event
// or a line over max bytes; 0: DefaultMaxEvent). It is how agentwire reads
// the streamed answers of model endpoints and agent services, which may end
// their last event with the body: unlike EventSource, Read dispatches an
// event that the end of r cuts off (no blank line after it).
func Read(r io.Reader, max int, fn func(Event) error) error {
	rd := NewReader(r, max)
	rd.cutLast = true
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
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
	for !r.eof {
		line, err := r.line()
		if err != nil && !errors.Is(err, io.EOF) {
			return Event{}, err
		}
		if err != nil { // the end: line is what came after the last line end
			r.eof = true
			if len(line) == 0 {
				break
			}
		}
		if len(line) == 0 { // a blank line: dispatch
			if hasData {
				ev.ID = r.lastID
				return ev, nil
			}
			ev.Name, size = "", 0
			continue
		}
		field, value, _ := bytes.Cut(line, []byte{':'})
		value = bytes.TrimPrefix(value, []byte{' '})
		switch string(field) {
		case "":
			if r.comment != nil {
				r.comment(string(value))
			}
		case "data":
			if size += len(value) + 1; size > r.max {
				return Event{}, ErrTooLong
			}
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
	}
	if hasData && r.cutLast {
		ev.ID = r.lastID
		return ev, nil
	}
	return Event{}, io.EOF
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
			return nil, fmt.Errorf("%w: a line over %d bytes", ErrTooLong, r.max)
		}
		out = append(out, b)
	}
}
