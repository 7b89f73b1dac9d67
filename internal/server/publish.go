package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/internal/runs"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// isPublishType reports whether t matches ^[a-z][a-z0-9_.]{0,63}$, the
// rule of a published type (by hand: it runs for every published event).
func isPublishType(t string) bool {
	if len(t) == 0 || len(t) > 64 || t[0] < 'a' || t[0] > 'z' {
		return false
	}
	for i := 1; i < len(t); i++ {
		if c := t[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// Field bounds of POST /api/v1/publish.
const (
	maxUserID  = auth.MaxSubject
	maxKeyLen  = 128
	maxDataLen = 64 << 10
	// maxBatchBody bounds a batch publish ({"events":[…]}); one event's body
	// stays bounded by httpx.MaxBody.
	maxBatchBody = 1 << 20
	// batchWorkers bounds the users of one batch appended at once.
	batchWorkers = 16
)

// runPublisher adds an external agent's event to a running run
// (runs.Manager).
type runPublisher interface {
	Publish(user, runID, typ string, data json.RawMessage) (stream.Event, error)
}

// publishErr is why one published event was refused.
type publishErr struct {
	status int
	code   protocol.ErrorCode
	msg    string
}

func (e *publishErr) detail() *protocol.ErrorDetail {
	return &protocol.ErrorDetail{Code: e.code, Message: e.msg}
}

func (e *publishErr) write(w http.ResponseWriter) { httpx.Error(w, e.status, e.code, e.msg) }

// checkPublish applies the field rules of section 11 to one event and
// returns its data compacted (nil for none).
func checkPublish(req *protocol.PublishRequest) (json.RawMessage, *publishErr) {
	switch {
	case !isKey(req.UserID) || !isKey(req.ThreadID) || !isKey(req.RunID) || !isKey(req.IdempotencyKey):
		return nil, &publishErr{http.StatusBadRequest, protocol.CodeInvalidRequest, "user_id, thread_id, run_id and idempotency_key must not contain control characters"}
	case req.UserID == "" || len(req.UserID) > maxUserID:
		return nil, &publishErr{http.StatusBadRequest, protocol.CodeInvalidRequest, "user_id is required (1-256 bytes)"}
	case !isPublishType(req.Type):
		return nil, &publishErr{http.StatusBadRequest, protocol.CodeInvalidRequest, "type must match ^[a-z][a-z0-9_.]{0,63}$"}
	case len(req.ThreadID) > maxKeyLen || len(req.RunID) > maxKeyLen || len(req.IdempotencyKey) > maxKeyLen:
		return nil, &publishErr{http.StatusBadRequest, protocol.CodeInvalidRequest, "thread_id, run_id and idempotency_key are at most 128 bytes"}
	case len(req.Data) > maxDataLen:
		return nil, &publishErr{http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "data is over 64 KiB"}
	}
	data := bytes.TrimSpace(req.Data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return nil, nil
	}
	if data[0] != '{' {
		return nil, &publishErr{http.StatusBadRequest, protocol.CodeInvalidRequest, "data must be a JSON object"}
	}
	if isCompact(data) {
		// Valid JSON already (it was decoded as a json.RawMessage) with no
		// space between tokens: nothing to compact.
		return data, nil
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		return nil, &publishErr{http.StatusBadRequest, protocol.CodeInvalidRequest, "data must be a JSON object"}
	}
	return compact.Bytes(), nil
}

// isCompact reports whether the valid JSON text data has no whitespace
// outside its strings.
func isCompact(data []byte) bool {
	in, esc := false, false
	for _, c := range data {
		switch {
		case esc:
			esc = false
		case in:
			if c == '\\' {
				esc = true
			} else if c == '"' {
				in = false
			}
		case c == '"':
			in = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			return false
		}
	}
	return true
}

// errAgentTypeInBatch refuses an agent event type in a batch or a stream:
// those go one at a time through their run's emitter.
var errAgentTypeInBatch = &publishErr{http.StatusConflict, protocol.CodeReservedType,
	"agent event types are published one at a time (POST /api/v1/publish with one event and its run_id)"}

// publishToRun adds an external agent's event to a running run of user. The
// run's emitter keeps the per-run order: nothing after the terminal event.
func publishToRun(rn runPublisher, published prometheus.Counter, log *slog.Logger, w http.ResponseWriter, user, runID, typ string, data json.RawMessage) {
	if runID == "" {
		httpx.Error(w, http.StatusConflict, protocol.CodeReservedType,
			"type "+typ+" is an agent event: it needs the run_id of a run of that user that is still running")
		return
	}
	ev, err := rn.Publish(user, runID, typ, data)
	switch {
	case err == nil:
		published.Inc()
		httpx.JSON(w, http.StatusOK, protocol.PublishResponse{Seq: ev.Seq, Epoch: ev.Epoch})
	case errors.Is(err, runs.ErrNotRunning):
		httpx.Error(w, http.StatusConflict, protocol.CodeRunNotRunning,
			"type "+typ+" is an agent event: it is accepted only for a run of that user that is still running")
	case errors.Is(err, runs.ErrBadEvent), errors.Is(err, runs.ErrUnknownToolCall):
		httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, err.Error())
	default:
		log.Error("publish to run", "user", user, "run", runID, "err", err)
		httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "stream backend unavailable, retry")
	}
}

// publishBody is the body of POST /api/v1/publish: one event, or a batch
// in events.
type publishBody struct {
	protocol.PublishRequest
	Events *[]protocol.PublishRequest `json:"events"` // set: a batch
}

// handlePublish appends a server's event to a user's stream (POST
// /api/v1/publish), or to a running run for the agent event types, or a
// batch of events ({"events":[…]}); published counts the events accepted.
func handlePublish(st stream.Stream, rn runPublisher, published prometheus.Counter, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// JSON is UTF-8 (RFC 8259), and encoding/json lets other bytes
		// through inside data: one such byte appended to the stream would go
		// out in every later text frame of the user, which compliant clients
		// must fail (1007), so the whole body is checked first.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBatchBody))
		if err != nil {
			httpx.Error(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "request body over 1 MiB (128 KiB for one event)")
			return
		}
		if !utf8.Valid(body) {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidJSON, "request body is not valid UTF-8")
			return
		}
		var req publishBody
		if !httpx.DecodeBytes(w, body, &req) {
			return
		}
		if req.Events != nil {
			if q := req.PublishRequest; q.UserID != "" || q.Type != "" || q.ThreadID != "" || q.RunID != "" || q.IdempotencyKey != "" || q.Data != nil {
				httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, `a batch is {"events":[…]} with no other field`)
				return
			}
			publishBatch(w, r.Context(), st, published, log, *req.Events)
			return
		}
		if q := req.PublishRequest; q.UserID == "" && q.Type == "" && bytes.Contains(body, []byte(`"events"`)) {
			// {"events":null}: a batch of nothing.
			httpx.Error(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "events holds 1 to 1000 events")
			return
		}
		if len(body) > httpx.MaxBody {
			httpx.Error(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "request body over 128 KiB")
			return
		}
		data, perr := checkPublish(&req.PublishRequest)
		if perr != nil {
			perr.write(w)
			return
		}
		if protocol.RunEventType(req.Type) {
			publishToRun(rn, published, log, w, req.UserID, req.RunID, req.Type, data)
			return
		}
		ev, err := st.Append(r.Context(), req.UserID, stream.Record{
			Type: req.Type, ThreadID: req.ThreadID, RunID: req.RunID, Data: data, IdempotencyKey: req.IdempotencyKey,
		})
		if err != nil {
			log.Error("publish", "user", req.UserID, "type", req.Type, "err", err)
			httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "stream backend unavailable, retry with the same idempotency_key")
			return
		}
		published.Inc()
		httpx.JSON(w, http.StatusOK, protocol.PublishResponse{Seq: ev.Seq, Epoch: ev.Epoch})
	})
}

// publishBatch answers a batch: every event checked, then each user's
// events appended all or none (AppendBatch), one result per event in order.
func publishBatch(w http.ResponseWriter, ctx context.Context, st stream.Stream, published prometheus.Counter, log *slog.Logger, events []protocol.PublishRequest) {
	if len(events) == 0 || len(events) > stream.MaxBatch {
		httpx.Error(w, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "events holds 1 to 1000 events")
		return
	}
	results := make([]protocol.PublishResult, len(events))
	var b batcher
	for i := range events {
		data, perr := checkPublish(&events[i])
		if perr == nil && protocol.RunEventType(events[i].Type) {
			perr = errAgentTypeInBatch
		}
		b.add(i, &events[i], data, perr)
		if perr != nil {
			results[i].Error = perr.detail()
		}
	}
	n := b.run(ctx, st, log, results, true)
	published.Add(float64(n))
	// protocol.PublishBatchResponse, built by hand: one result per event.
	out := make([]byte, 0, 16+len(results)*48)
	out = append(out, `{"results":[`...)
	for i, res := range results {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendResult(out, res)
	}
	out = append(out, "]}\n"...)
	httpx.RawJSON(w, http.StatusOK, out)
}

// batcher groups checked events by user, keeping each user's order.
type batcher struct {
	users []*userBatch
	index map[string]*userBatch
}

type userBatch struct {
	user    string
	idx     []int // positions of the events in the request
	recs    []stream.Record
	refused bool // one of the user's events was refused
}

func (b *batcher) add(i int, req *protocol.PublishRequest, data json.RawMessage, perr *publishErr) {
	if b.index == nil {
		b.index = make(map[string]*userBatch)
	}
	ub := b.index[req.UserID]
	if ub == nil {
		ub = &userBatch{user: req.UserID}
		b.index[req.UserID] = ub
		b.users = append(b.users, ub)
	}
	if perr != nil {
		ub.refused = true
		return
	}
	ub.idx = append(ub.idx, i)
	ub.recs = append(ub.recs, stream.Record{Type: req.Type, ThreadID: req.ThreadID, RunID: req.RunID, Data: data, IdempotencyKey: req.IdempotencyKey})
}

// run appends each user's events (up to batchWorkers users at once) and
// fills their results; results of refused events are already set. With
// atomic, a user with a refused event gets none appended (batch_aborted).
// It returns how many events were accepted.
func (b *batcher) run(ctx context.Context, st stream.Stream, log *slog.Logger, results []protocol.PublishResult, atomic bool) int {
	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, batchWorkers)
		mu       sync.Mutex
		accepted int
	)
	for _, ub := range b.users {
		if len(ub.recs) == 0 {
			continue
		}
		if atomic && ub.refused {
			for _, i := range ub.idx {
				results[i].Error = &protocol.ErrorDetail{Code: protocol.CodeBatchAborted,
					Message: "not appended: another event of this user_id in the batch was refused (one user's events are appended all or none)"}
			}
			continue
		}
		append1 := func() {
			evs, err := st.AppendBatch(ctx, ub.user, ub.recs)
			if err != nil {
				log.Error("publish batch", "user", ub.user, "events", len(ub.recs), "err", err)
				for _, i := range ub.idx {
					results[i].Error = &protocol.ErrorDetail{Code: protocol.CodeUnavailable,
						Message: "stream backend unavailable, retry with the same idempotency_key"}
				}
				return
			}
			for k, i := range ub.idx {
				results[i].Seq, results[i].Epoch = evs[k].Seq, evs[k].Epoch
			}
			mu.Lock()
			accepted += len(evs)
			mu.Unlock()
		}
		if len(b.users) == 1 {
			append1()
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			append1()
		})
	}
	wg.Wait()
	return accepted
}

// Bounds of POST /api/v1/publish/stream.
const (
	// streamChunk is how many lines are appended at once at most: the
	// lines already received when the first is read, up to this many.
	streamChunk = 1000
	// streamDrainPoll is how often a stream checks whether the node drains.
	streamDrainPoll = 200 * time.Millisecond
)

// handlePublishStream takes NDJSON publish requests on one long request
// (POST /api/v1/publish/stream) and answers one NDJSON ack per non-blank
// line, in order, as the events are appended: {"i":N,"seq","epoch"} or
// {"i":N,"error":{…}}. Lines that arrive together are appended together,
// each user's in one AppendBatch. A stream idle for longer than idle ends;
// a node that drains ends its streams with a last line
// an error line (code shutting_down) after acking what it read.
func handlePublishStream(st stream.Stream, published prometheus.Counter, draining func() bool, idle time.Duration, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		// HTTP/1.1: answer while the request is still being read.
		_ = rc.EnableFullDuplex()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		_ = rc.Flush()

		// The read deadline is the idle bound, renewed before each read
		// that waits; a drain sets it in the past to end the wait now.
		var (
			mu       sync.Mutex
			stopped  bool // a drain ended the stream
			finished bool // the handler returned: rc is no longer usable
		)
		done := make(chan struct{})
		defer func() {
			mu.Lock()
			finished = true
			mu.Unlock()
			close(done)
		}()
		if draining != nil {
			go func() {
				t := time.NewTicker(streamDrainPoll)
				defer t.Stop()
				for {
					select {
					case <-done:
						return
					case <-t.C:
						if draining() {
							mu.Lock()
							if !finished {
								stopped = true
								_ = rc.SetReadDeadline(time.Unix(1, 0))
							}
							mu.Unlock()
							return
						}
					}
				}
			}()
		}
		wait := func() bool {
			mu.Lock()
			defer mu.Unlock()
			if stopped {
				return false
			}
			_ = rc.SetReadDeadline(time.Now().Add(idle))
			return true
		}

		br := bufio.NewReaderSize(r.Body, 64<<10)
		out := &flusher{bufio.NewWriterSize(w, 16<<10), rc}
		var (
			next  int // index of the next non-blank line
			lines []lineReq
			line  []byte
		)
		for {
			if br.Buffered() == 0 && !wait() {
				break
			}
			var err error
			line, err = readLine(br, line[:0], httpx.MaxBody)
			if err != nil && !errors.Is(err, errLineTooLong) {
				break // EOF, the idle deadline, a drain or a broken request
			}
			if len(bytes.TrimSpace(line)) > 0 || errors.Is(err, errLineTooLong) {
				lines = append(lines, parseLine(next, line, err))
				next++
			}
			if br.Buffered() > 0 && len(lines) < streamChunk {
				continue
			}
			if !ackLines(r.Context(), out, st, published, log, lines) {
				return
			}
			lines = lines[:0]
		}
		ackLines(r.Context(), out, st, published, log, lines)
		mu.Lock()
		drained := stopped
		mu.Unlock()
		if drained {
			b, _ := json.Marshal(protocol.ErrorBody{Error: protocol.ErrorDetail{Code: protocol.CodeShuttingDown,
				Message: "the server is shutting down: lines after the last ack were not read; send them again to another node"}})
			_, _ = out.Write(append(b, '\n'))
			_ = out.Flush()
		}
	})
}

var errLineTooLong = errors.New("line too long")

// readLine appends the next line of br (without its newline) to buf. A
// line over max bytes is skipped to its end and reported as errLineTooLong;
// a last line without a newline is returned with a nil error, and io.EOF
// comes after it.
func readLine(br *bufio.Reader, buf []byte, max int) ([]byte, error) {
	tooLong := false
	for {
		frag, err := br.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(frag) > max+1 {
				tooLong, buf = true, buf[:0]
			} else {
				buf = append(buf, frag...)
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && (len(buf) > 0 || tooLong):
			err = nil
		case err != nil:
			return buf, err
		}
		if tooLong {
			return buf[:0], errLineTooLong
		}
		return bytes.TrimSuffix(buf, []byte("\n")), nil
	}
}

// lineReq is one line of a publish stream, checked.
type lineReq struct {
	i    int
	req  protocol.PublishRequest
	data json.RawMessage
	err  *publishErr
}

func parseLine(i int, line []byte, readErr error) lineReq {
	l := lineReq{i: i}
	switch {
	case readErr != nil:
		l.err = &publishErr{http.StatusRequestEntityTooLarge, protocol.CodeTooLarge, "line over 128 KiB"}
	case !utf8.Valid(line):
		l.err = &publishErr{http.StatusBadRequest, protocol.CodeInvalidJSON, "line is not valid UTF-8"}
	default:
		if err := httpx.Unmarshal(line, &l.req); err != nil {
			l.err = &publishErr{http.StatusBadRequest, protocol.CodeBadJSON, "line is not one JSON object"}
		} else if l.data, l.err = checkPublish(&l.req); l.err == nil && protocol.RunEventType(l.req.Type) {
			l.err = errAgentTypeInBatch
		}
	}
	return l
}

// ackLines appends the lines' events (each user's together, not atomic
// across lines: a refused line refuses only itself) and writes one ack per
// line in order. It reports whether the acks could be written.
func ackLines(ctx context.Context, out *flusher, st stream.Stream, published prometheus.Counter, log *slog.Logger, lines []lineReq) bool {
	if len(lines) == 0 {
		return true
	}
	results := make([]protocol.PublishResult, len(lines))
	var b batcher
	for k := range lines {
		l := &lines[k]
		b.add(k, &l.req, l.data, l.err)
		if l.err != nil {
			results[k].Error = l.err.detail()
		}
	}
	published.Add(float64(b.run(ctx, st, log, results, false)))
	var buf []byte
	for k, res := range results {
		buf = appendAck(buf[:0], lines[k].i, res)
		if _, err := out.Write(buf); err != nil {
			return false
		}
	}
	return out.Flush() == nil
}

// flusher is the buffered answer of a publish stream: Flush sends what it
// holds to the client now, through the response's own buffer too.
type flusher struct {
	*bufio.Writer
	rc *http.ResponseController
}

func (f *flusher) Flush() error {
	if err := f.Writer.Flush(); err != nil {
		return err
	}
	return f.rc.Flush()
}

// appendAck appends one ack line: {"i":N,"seq":S,"epoch":"E"} or
// {"i":N,"error":{…}}.
func appendAck(b []byte, i int, res protocol.PublishResult) []byte {
	b = append(b, `{"i":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, ',')
	b = appendResultFields(b, res)
	return append(b, "}\n"...)
}

// appendResult appends res as JSON: {"seq":S,"epoch":"E"} or {"error":{…}}.
func appendResult(b []byte, res protocol.PublishResult) []byte {
	b = append(b, '{')
	b = appendResultFields(b, res)
	return append(b, '}')
}

func appendResultFields(b []byte, res protocol.PublishResult) []byte {
	if res.Error != nil {
		e, _ := json.Marshal(res.Error)
		b = append(b, `"error":`...)
		return append(b, e...)
	}
	b = append(b, `"seq":`...)
	b = strconv.AppendUint(b, res.Seq, 10)
	b = append(b, `,"epoch":`...)
	return protocol.AppendString(b, res.Epoch)
}
