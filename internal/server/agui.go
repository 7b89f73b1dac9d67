package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/agentwire/agentwire/internal/agui"
	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/internal/hub"
	hubsse "github.com/agentwire/agentwire/internal/hub/sse"
	"github.com/agentwire/agentwire/internal/runs"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// aguiMaxBody bounds an AG-UI request body: a RunAgentInput carries the
// conversation so far (agentwire reads its last user message only).
const aguiMaxBody = 1 << 20

// aguiThreadPage bounds each side of the run in a MESSAGES_SNAPSHOT: the
// thread's messages before the run's user message, and from it on.
const aguiThreadPage = 100

// Placer admits a hub connection carried over an HTTP response: the drain
// refusal, the per-user connection limit on this node and, with Redis,
// across the cluster, and the registration with the hub, the one admission
// of /ws and GET /api/v1/stream (ws.Server.Place). On failure it has
// answered and reports false; otherwise done must be called once the
// connection has ended and is unregistered.
type Placer func(w http.ResponseWriter, r *http.Request, hc *hub.Conn) (done func(), ok bool)

// aguiServer is what both AG-UI endpoints use: each response is a hub
// connection of the user (admitted by place: it counts against the
// per-user connection limit, on this node and with Redis across the
// cluster, and is refused while the node drains) carried over SSE, whose
// mapper keeps the frames of one run and translates them.
type aguiServer struct {
	hub       *hub.Hub
	place     Placer
	runs      *runs.Manager
	store     store.Store
	stream    stream.Stream
	heartbeat time.Duration
	log       *slog.Logger
	// resumes counts the /connect requests with a position:
	// metrics.Metrics.ResumeReplayed and ResumeResync.
	replayed, resync prometheus.Counter
}

// handleAGUIRun serves POST /api/v1/agui: the body is an AG-UI
// RunAgentInput, whose last user message becomes a user_message in its
// thread (a threadId the user has no thread of becomes a new thread of the
// user with that id) with the message's id as client_message_id, through
// the same runs path as the WebSocket frame. The answer is the run's AG-UI
// events over SSE until its end. A retried request (same message id)
// starts nothing new: it gets the first request's run, from a prelude as
// /connect builds it when the run started before the request.
func handleAGUIRun(a *aguiServer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := claimsFrom(r.Context()).Subject
		var in agui.RunAgentInput
		if !httpx.DecodeMax(w, r, &in, aguiMaxBody) {
			return
		}
		if len(in.Resume) > 0 {
			a.resumeInterrupt(w, r, user, &in)
			return
		}
		f, perr := in.UserFrame()
		if perr != nil {
			sendError(w, perr)
			return
		}
		a.respond(w, r, user, func(c *hubsse.Conn, rs *aguiStream) (protocol.Cursor, bool) {
			ctx := r.Context()
			ack, before, ok := a.send(w, r, c, user, func(sctx context.Context) (protocol.AckFrame, *protocol.Error) {
				return a.runs.UserMessageInThread(sctx, user, &f)
			})
			if !ok {
				return protocol.Cursor{}, false
			}
			if a.startedAfter(ctx, user, before, ack.RunID) {
				rs.tr = agui.NewTranslator(ack.ThreadID, ack.RunID)
				return protocol.Cursor{Seq: before.Head, Epoch: before.Epoch}, true
			}
			// A retry of a message whose run started earlier: the run so
			// far, as /connect gives it.
			run, err := a.store.GetRun(ctx, user, ack.RunID)
			var from protocol.Cursor
			if err == nil {
				from, err = a.resume(ctx, user, run, protocol.Cursor{None: true}, rs)
			}
			if err != nil {
				a.unavailable(w, c, "resume a repeated run request", err)
				return protocol.Cursor{}, false
			}
			return from, true
		})
	})
}

// resumeInterrupt answers the run request that resumes an interrupted run
// (RunAgentInput.resume): its entry becomes the user_input of the run's
// question, through the same runs path as the WebSocket frame (any node;
// the first answer wins, a later one is 409 conflict), and the answer is
// the run's AG-UI events from there (RUN_STARTED, as the run goes on) over
// SSE, until its end or its next interrupt.
func (a *aguiServer) resumeInterrupt(w http.ResponseWriter, r *http.Request, user string, in *agui.RunAgentInput) {
	f, perr := in.ResumeFrame()
	if perr != nil {
		sendError(w, perr)
		return
	}
	a.respond(w, r, user, func(c *hubsse.Conn, rs *aguiStream) (protocol.Cursor, bool) {
		ack, before, ok := a.send(w, r, c, user, func(sctx context.Context) (protocol.AckFrame, *protocol.Error) {
			return a.runs.UserInput(sctx, user, &f)
		})
		if !ok {
			return protocol.Cursor{}, false
		}
		rs.tr = agui.NewTranslator(ack.ThreadID, ack.RunID)
		return protocol.Cursor{Seq: before.Head, Epoch: before.Epoch}, true
	})
}

// send reads the stream's head, then does what the request sends (a
// user_message or a user_input) and returns its ack and that head, from
// where the response joins. On failure it has given up c and answered.
// As POST /api/v1/messages: a client that leaves does not cut the sending
// short.
func (a *aguiServer) send(w http.ResponseWriter, r *http.Request, c *hubsse.Conn, user string,
	do func(ctx context.Context) (protocol.AckFrame, *protocol.Error)) (protocol.AckFrame, stream.Position, bool) {
	before, err := a.stream.Head(r.Context(), user)
	if err != nil {
		a.unavailable(w, c, "stream head", err)
		return protocol.AckFrame{}, before, false
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), sendTimeout)
	ack, perr := do(sctx)
	cancel()
	if perr != nil {
		c.Discard()
		sendError(w, perr)
		return protocol.AckFrame{}, before, false
	}
	return ack, before, true
}

// handleAGUIConnect serves POST /api/v1/agui/connect: a client that lost
// its response (or any client of the thread, on any node) joins a run of
// the thread: runId when it names one of agentwire's runs (a ULID, as
// RUN_STARTED gave it; another id, such as the random one an AG-UI client
// makes up, is ignored), else the thread's latest. The position to resume
// after is Last-Event-ID, else the body's lastEventId. The answer is the
// prelude (RUN_STARTED, MESSAGES_SNAPSHOT of the thread as of the position,
// the re-opened text message), then the run's events after the position,
// until its end. A position that cannot be served (outside retention,
// another epoch) gets the prelude of everything the stream and the store
// still hold instead.
func handleAGUIConnect(a *aguiServer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := claimsFrom(r.Context()).Subject
		var in agui.ConnectInput
		if !httpx.DecodeMax(w, r, &in, aguiMaxBody) {
			return
		}
		id := r.Header.Get("Last-Event-ID")
		if id == "" {
			id = in.LastEventID
		}
		cur, err := protocol.ParseEventID(id)
		if err != nil {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, err.Error())
			return
		}
		if in.ThreadID == "" || len(in.ThreadID) > protocol.MaxKeyBytes || len(in.RunID) > protocol.MaxKeyBytes {
			httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "threadId (1 to 128 bytes) is required; runId is at most 128 bytes")
			return
		}
		ctx := r.Context()
		run, err := a.findRun(ctx, user, in.ThreadID, in.RunID)
		if err != nil {
			storeFailed(a.log, w, user, "thread or run", err)
			return
		}
		a.respond(w, r, user, func(c *hubsse.Conn, rs *aguiStream) (protocol.Cursor, bool) {
			from, err := a.resume(ctx, user, run, cur, rs)
			if err != nil {
				a.unavailable(w, c, "resume", err)
				return protocol.Cursor{}, false
			}
			switch {
			case cur.None: // no position: not a resume
			case rs.served:
				a.replayed.Inc()
			default: // the AG-UI resync: a prelude of what is still held
				a.resync.Inc()
			}
			return from, true
		})
	})
}

// respond makes the response a connection of user (see open), lets place
// put the run on its mapper and say where the join starts (false: it
// refused and answered), and serves it.
func (a *aguiServer) respond(w http.ResponseWriter, r *http.Request, user string, place func(*hubsse.Conn, *aguiStream) (protocol.Cursor, bool)) {
	rs := &aguiStream{}
	c, done, ok := a.open(w, r, user, rs)
	if !ok {
		return
	}
	defer done()
	from, ok := place(c, rs)
	if !ok {
		return
	}
	rs.from = from
	ctx, cancel := context.WithTimeout(r.Context(), sendTimeout)
	_, err := c.HC.Join(ctx, from, func(pos stream.Position) []byte {
		return protocol.EncodeConnectionEstablished(protocol.ConnectionEstablished{ConnectionID: c.HC.ID, Epoch: pos.Epoch, HeadSeq: pos.Head})
	}, func(e *stream.ResyncError) []byte {
		return protocol.EncodeResync(e.Position.Epoch, e.Position.Head, e.Reason)
	})
	cancel()
	if err != nil {
		a.unavailable(w, c, "join the stream", err)
		return
	}
	c.Serve(r.Context())
}

// unavailable gives up c, registered but not written to yet, and answers
// 503 unavailable.
func (a *aguiServer) unavailable(w http.ResponseWriter, c *hubsse.Conn, what string, err error) {
	c.Discard()
	a.log.Error("agui: "+what, "user", c.HC.User, "conn", c.HC.ID, "err", err)
	httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "store or stream unavailable, retry")
}

// open makes the response a hub connection of user over SSE, mapped by rs,
// and admits it (a.place). On failure it has answered. done gives the
// connection's places back; call it when the response is over.
func (a *aguiServer) open(w http.ResponseWriter, r *http.Request, user string, rs *aguiStream) (c *hubsse.Conn, done func(), ok bool) {
	claims := claimsFrom(r.Context())
	c = hubsse.NewConn(a.hub, w, connID(), user, hubsse.Options{Mapper: rs.mapFrame, Heartbeat: a.heartbeat,
		Expires: claims.ExpiresAt})
	c.HC.Describe("agui", claims.IssuedAt)
	done, ok = a.place(w, r, c.HC)
	return c, done, ok
}

// startedAfter reports whether run runID's echo follows position before in
// the user's stream, i.e. the run is the request's own (not an earlier one
// a retried message id points at). It reads one small page: the echo is
// appended before the ack, right after before unless other events of the
// user came between; when it is not found the caller takes the longer,
// always correct way (the /connect prelude).
func (a *aguiServer) startedAfter(ctx context.Context, user string, before stream.Position, runID string) bool {
	evs, _, err := a.stream.Since(ctx, user, protocol.Cursor{Seq: before.Head, Epoch: before.Epoch}, stream.Limit{MaxEvents: 64, MaxBytes: 256 << 10})
	if err != nil {
		return false
	}
	for i := range evs {
		if evs[i].RunID == runID && evs[i].Type == protocol.TypeUserMessage {
			return true
		}
	}
	return false
}

// findRun returns the run a connect names: runID when it is one of
// agentwire's run ids (a ULID), which must be the user's and in threadID;
// else the thread's latest run. ErrNotFound for another user's thread or
// run, or a thread without runs.
func (a *aguiServer) findRun(ctx context.Context, user, threadID, runID string) (store.Run, error) {
	if _, err := ulid.ParseStrict(runID); err == nil {
		run, err := a.store.GetRun(ctx, user, runID)
		if err == nil && run.ThreadID != threadID {
			err = store.ErrNotFound
		}
		return run, err
	}
	// The thread's latest run is the run of its newest message.
	after, last := "", ""
	for {
		msgs, more, err := a.store.ListMessages(ctx, user, threadID, store.MessageQuery{After: after, Limit: 1000, MaxBytes: pageBytes})
		if err != nil {
			return store.Run{}, err
		}
		for _, m := range msgs {
			if m.RunID != "" {
				last = m.RunID
			}
		}
		if !more || len(msgs) == 0 {
			break
		}
		after = msgs[len(msgs)-1].ID
	}
	if last == "" {
		return store.Run{}, store.ErrNotFound
	}
	return a.store.GetRun(ctx, user, last)
}

// resume builds the prelude of run for a client at cur (None: it has
// nothing of the run) into rs, and returns where the join continues from:
// cur when the stream still holds everything after it, else the position
// the prelude was built at; None when the prelude ends the run.
func (a *aguiServer) resume(ctx context.Context, user string, run store.Run, cur protocol.Cursor, rs *aguiStream) (protocol.Cursor, error) {
	evs, pos, oldest, err := a.runEvents(ctx, user, run.ID)
	if err != nil {
		return protocol.Cursor{}, err
	}
	from := protocol.Cursor{Seq: pos.Head, Epoch: pos.Epoch}
	fold := evs
	if !cur.None && (cur.Epoch == "" || cur.Epoch == pos.Epoch) && cur.Seq <= pos.Head && cur.Seq+1 >= oldest {
		from = protocol.Cursor{Seq: cur.Seq, Epoch: pos.Epoch}
		rs.served = true
		fold = evs[:0:0]
		for _, ev := range evs {
			if ev.Seq <= cur.Seq {
				fold = append(fold, ev)
			}
		}
	}
	thread, err := a.threadAround(ctx, user, run)
	if err != nil {
		return protocol.Cursor{}, err
	}
	prelude, tr := agui.Resume(run.ThreadID, run.ID, thread, fold)
	started := false
	for _, ev := range evs {
		started = started || ev.Type == protocol.TypeAgentStarted || ev.Type == protocol.TypeUserMessage
	}
	if !tr.Ended() && run.Status.Terminal() && !started {
		// The run's events are gone: its end comes from the store. (When
		// its start is still retained, its end is in the stream or on its
		// way there, and the join brings it.)
		prelude = append(prelude, tr.Finish(storedEnd(run, thread))...)
	}
	rs.tr, rs.prelude = tr, prelude
	if tr.Ended() {
		return protocol.Cursor{None: true}, nil
	}
	return from, nil
}

// storedEnd is the terminal event of an ended run as the store recorded it.
func storedEnd(run store.Run, thread []agui.StoredMessage) protocol.Event {
	ev := protocol.Event{RunID: run.ID, ThreadID: run.ThreadID}
	if run.Status == store.RunCompleted {
		d := protocol.AgentCompleted{}
		for _, m := range thread {
			if m.RunID == run.ID && m.Role == store.RoleAssistant {
				d.MessageID, d.FinalResponse = m.ID, m.Content
			}
		}
		d.Usage = protocol.UsageOf(run.InputTokens, run.OutputTokens) // as its node sent it
		ev.Type, ev.Data = protocol.TypeAgentCompleted, mustData(d)
		return ev
	}
	code := protocol.ErrorCode(run.ErrorCode)
	if run.Status == store.RunCancelled {
		code = protocol.CodeCancelled
	}
	ev.Type, ev.Data = protocol.TypeAgentError, mustData(protocol.AgentError{Code: code, Message: run.ErrorMessage})
	return ev
}

func mustData(v any) json.RawMessage {
	b, _ := protocol.MarshalData(v)
	return b
}

// runEvents reads the events of run runID the user's stream retains, in
// order, a page at a time, with the position the read ended at and the
// oldest retained seq (pos.Head+1 when none is).
func (a *aguiServer) runEvents(ctx context.Context, user, runID string) ([]protocol.Event, stream.Position, uint64, error) {
	var lastErr error
	for range 3 { // history trimmed while reading: again from the new oldest
		pos, err := a.stream.Head(ctx, user)
		if err != nil {
			return nil, pos, 0, err
		}
		oldest, err := a.oldestRetained(ctx, user, pos)
		if err != nil {
			lastErr = err
			continue
		}
		var out []protocol.Event
		since, first := oldest-1, true
		for {
			evs, p, err := a.stream.Since(ctx, user, protocol.Cursor{Seq: since, Epoch: pos.Epoch}, stream.Limit{})
			if err != nil {
				lastErr = err
				break
			}
			if first && len(evs) > 0 {
				oldest = evs[0].Seq
			}
			first = false
			pos = p
			for i := range evs {
				if evs[i].RunID == runID {
					out = append(out, evs[i].Wire())
				}
			}
			if !stream.More(evs, p) {
				return out, pos, oldest, nil
			}
			since = evs[len(evs)-1].Seq
		}
		if !errors.Is(lastErr, stream.ErrResync) {
			return nil, pos, 0, lastErr
		}
	}
	return nil, stream.Position{}, 0, lastErr
}

// oldestRetained finds the oldest seq the user's stream still holds at pos
// (pos.Head+1 when none): Since answers history_expired for a since below
// it, so a binary search over since finds it in about log2(head) reads of
// one event each.
func (a *aguiServer) oldestRetained(ctx context.Context, user string, pos stream.Position) (uint64, error) {
	served := func(since uint64) (bool, error) {
		_, _, err := a.stream.Since(ctx, user, protocol.Cursor{Seq: since, Epoch: pos.Epoch}, stream.Limit{MaxEvents: 1, MaxBytes: 1})
		var re *stream.ResyncError
		if errors.As(err, &re) && re.Reason == protocol.ReasonTooOld {
			return false, nil
		}
		return err == nil, err
	}
	ok, err := served(0)
	if err != nil || ok {
		return 1, err
	}
	lo, hi := uint64(0), pos.Head // served(lo) is false, served(hi) true
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := served(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi + 1, nil
}

// threadAround reads the stored messages of run's thread around the run:
// up to aguiThreadPage before its user message, and as many from it on.
func (a *aguiServer) threadAround(ctx context.Context, user string, run store.Run) ([]agui.StoredMessage, error) {
	before, _, err := a.store.ListMessages(ctx, user, run.ThreadID, store.MessageQuery{Before: run.UserMessageID, Limit: aguiThreadPage, MaxBytes: pageBytes})
	if errors.Is(err, store.ErrBadCursor) {
		before, err = nil, nil // the run's message is gone: the thread from its start
	}
	if err != nil {
		return nil, err
	}
	after := ""
	if len(before) > 0 {
		after = before[len(before)-1].ID
	}
	rest, _, err := a.store.ListMessages(ctx, user, run.ThreadID, store.MessageQuery{After: after, Limit: aguiThreadPage, MaxBytes: pageBytes})
	if err != nil {
		return nil, err
	}
	out := make([]agui.StoredMessage, 0, len(before)+len(rest))
	for _, m := range append(before, rest...) {
		out = append(out, agui.StoredMessage{ID: m.ID, Role: m.Role, Content: m.Content, RunID: m.RunID})
	}
	return out, nil
}

// aguiStream is the hubsse.Mapper of an AG-UI response: the prelude when the
// join places the connection (connection_established), then the frames of
// one run, translated; the response ends after the run's last event. The
// last AG-UI event made from a stream event carries that event's id,
// "<epoch>:<seq>", so a client's last id is always a whole stream event's.
type aguiStream struct {
	tr      *agui.Translator
	prelude []agui.Event
	from    protocol.Cursor // where the prelude ends: the id of its last event
	served  bool            // resume continues from the client's position
	buf     bytes.Buffer
}

func (s *aguiStream) mapFrame(dst []sse.Event, frame []byte) ([]sse.Event, bool) {
	f, err := protocol.DecodeServerFrame(frame)
	if err != nil {
		return dst, false
	}
	switch {
	case f.Type == protocol.TypeConnectionEstablished:
		for i, e := range s.prelude {
			ev := sse.Event{Data: s.encode(e)}
			if i == len(s.prelude)-1 && !s.from.None {
				ev.ID = protocol.EventID(s.from.Epoch, s.from.Seq)
			}
			dst = append(dst, ev)
		}
		s.prelude = nil
		return dst, s.tr.Ended()
	case f.Type == protocol.TypeResyncRequired:
		// The history this response stood on is gone: the client
		// connects again and gets a prelude from what is left.
		return dst, true
	case f.Seq == 0:
		return dst, false
	}
	ev := f.Event()
	out := s.tr.Event(ev)
	for i, e := range out {
		sev := sse.Event{Data: s.encode(e)}
		if i == len(out)-1 {
			sev.ID = protocol.EventID(ev.Epoch, ev.Seq)
		}
		dst = append(dst, sev)
	}
	return dst, s.tr.Ended()
}

// encode is e's JSON, < > & as they are (as every agentwire frame).
func (s *aguiStream) encode(e agui.Event) []byte {
	s.buf.Reset()
	enc := json.NewEncoder(&s.buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(e)
	return bytes.Clone(bytes.TrimRight(s.buf.Bytes(), "\n"))
}

func connID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
