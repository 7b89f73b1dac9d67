// Package sse is Server-Sent Events (text/event-stream) and nothing of
// agentwire: the writer of an event stream over an HTTP response (headers,
// id:/data: framing, comments, one flush per batch under a write deadline,
// so a buffering proxy honouring X-Accel-Buffering: no passes each batch on
// at once) and the one reader of event streams (the EventSource parsing
// rules, bounded in bytes), which the agents' upstream clients, the tests
// and the benchmarks use. A low-level library like httpx: the hub connection
// carried over a response is internal/hub/sse.
package sse

import (
	"bytes"
	"errors"
	"net/http"
	"time"
)

// DefaultWriteTimeout bounds a Writer's flush when NewWriter is given none.
const DefaultWriteTimeout = 10 * time.Second

// ErrAborted is Flush's error when the Writer's abort function (SetAbort)
// refused it.
var ErrAborted = errors.New("sse: response ended")

// Event is one SSE event. ID (when not empty) becomes the id: line, Name
// (when not empty) the event: line, and Data one data: line per line of it
// (JSON has none, but any text is framed correctly).
type Event struct {
	ID   string
	Name string
	Data []byte
}

// AppendEvent appends ev in the event-stream format, ending with the blank
// line that dispatches it. Carriage returns, line feeds and NULs cannot be
// in an id or a name: they are dropped from them.
func AppendEvent(b []byte, ev Event) []byte {
	if ev.ID != "" {
		b = append(b, "id: "...)
		b = appendField(b, ev.ID)
		b = append(b, '\n')
	}
	if ev.Name != "" {
		b = append(b, "event: "...)
		b = appendField(b, ev.Name)
		b = append(b, '\n')
	}
	data := ev.Data
	for {
		i := bytes.IndexAny(data, "\r\n")
		b = append(b, "data: "...)
		if i < 0 {
			b = append(b, data...)
			b = append(b, '\n')
			break
		}
		b = append(b, data[:i]...)
		b = append(b, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(b, '\n')
}

// AppendComment appends a comment line (": text"), which every client
// ignores: heartbeats, and the reason a response ends.
func AppendComment(b []byte, text string) []byte {
	b = append(b, ':')
	if text != "" {
		b = append(b, ' ')
		b = appendField(b, text)
	}
	return append(b, '\n', '\n')
}

func appendField(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '\r' && c != '\n' && c != 0 {
			b = append(b, c)
		}
	}
	return b
}

// SetHeaders sets the headers of an event stream: text/event-stream,
// Cache-Control: no-store, and X-Accel-Buffering: no, which tells nginx
// (and proxies that follow it) not to buffer the response.
func SetHeaders(h http.Header) {
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
}

// Writer writes an event stream to an HTTP response: events and comments are
// gathered in a buffer and written with one Write and one Flush, under a
// write deadline. It is not safe for concurrent use, but for Interrupt.
type Writer struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	buf     []byte
	started bool
	abort   func() bool // see SetAbort
}

// NewWriter returns a Writer on w whose every flush must complete within
// timeout (0: DefaultWriteTimeout).
func NewWriter(w http.ResponseWriter, timeout time.Duration) *Writer {
	if timeout <= 0 {
		timeout = DefaultWriteTimeout
	}
	return &Writer{w: w, rc: http.NewResponseController(w), timeout: timeout}
}

// Event buffers ev.
func (w *Writer) Event(ev Event) { w.buf = AppendEvent(w.buf, ev) }

// Comment buffers a comment line.
func (w *Writer) Comment(text string) { w.buf = AppendComment(w.buf, text) }

// Flush writes the headers (the first time: status 200 and SetHeaders) and
// what is buffered, and flushes the response to the client.
func (w *Writer) Flush() error {
	if err := w.rc.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil && err != http.ErrNotSupported {
		return err
	}
	if w.abort != nil && w.abort() {
		return ErrAborted
	}
	if !w.started {
		w.started = true
		SetHeaders(w.w.Header())
		w.w.WriteHeader(http.StatusOK)
	}
	if len(w.buf) > 0 {
		_, err := w.w.Write(w.buf)
		if cap(w.buf) > 64<<10 {
			w.buf = nil // give a burst's memory back
		} else {
			w.buf = w.buf[:0]
		}
		if err != nil {
			return err
		}
	}
	return w.rc.Flush()
}

// SetAbort makes every later Flush ask abort (nil: nothing) once the
// flush's deadline is set: true fails the flush with ErrAborted before it
// writes. With Interrupt it makes a close that races a flush either stop it
// before it writes or cut it short.
func (w *Writer) SetAbort(abort func() bool) { w.abort = abort }

// Interrupt makes a write in flight fail at once. Any goroutine may call it.
func (w *Writer) Interrupt() { _ = w.rc.SetWriteDeadline(time.Now()) }

// SetTimeout bounds every later flush by d, and whatever is written from
// now on without one (the response's end, once the handler returns), after
// an Interrupt set the deadline to now.
func (w *Writer) SetTimeout(d time.Duration) {
	w.timeout = d
	_ = w.rc.SetWriteDeadline(time.Now().Add(d))
}
