package server

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/agentwire/agentwire/internal/httpx"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/protocol"
)

// wireRun is a stored run as the HTTP API shows it.
func wireRun(run store.Run) protocol.Run {
	out := protocol.Run{ID: run.ID, ThreadID: run.ThreadID, Status: string(run.Status), Agent: run.Agent,
		StartedAt: run.StartedAt.UTC(), ErrorCode: protocol.ErrorCode(run.ErrorCode), ErrorMessage: run.ErrorMessage}
	if !run.EndedAt.IsZero() {
		e := run.EndedAt.UTC()
		out.EndedAt = &e
	}
	out.Usage = protocol.UsageOf(run.InputTokens, run.OutputTokens)
	return out
}

// wireEvent is a stored event of run as the stream event it was.
func wireEvent(run store.Run, ev store.RunEvent) json.RawMessage {
	return protocol.EncodeEvent(protocol.Event{Type: ev.Type, Seq: ev.Seq, Epoch: ev.Epoch, TS: ev.TS,
		ThreadID: run.ThreadID, RunID: run.ID, Data: ev.Data})
}

// endOf is the terminal event of a run that ended without one in its
// transcript (ended by a reaper as node_lost, or stored with transcripts
// off), made from the run's outcome: the last item of a transcript read to
// its end. Nothing for a run still running or completed (its answer is the
// thread's assistant message).
func endOf(run store.Run, evs []store.RunEvent) (json.RawMessage, bool) {
	if !run.Status.Terminal() || run.Status == store.RunCompleted {
		return nil, false
	}
	if n := len(evs); n > 0 && (protocol.Event{Type: evs[n-1].Type}).Terminal() {
		return nil, false
	}
	data, _ := protocol.MarshalData(protocol.AgentError{Code: protocol.ErrorCode(run.ErrorCode), Message: run.ErrorMessage,
		DurationMS: run.EndedAt.Sub(run.StartedAt).Milliseconds()})
	return protocol.EncodeEvent(protocol.Event{Type: protocol.TypeAgentError, TS: run.EndedAt, ThreadID: run.ThreadID, RunID: run.ID, Data: data}), true
}

// wireTranscript is a run with its transcript, its end made up by endOf
// when the transcript is whole and has none.
func wireTranscript(t *store.Transcript) *protocol.RunTranscript {
	out := &protocol.RunTranscript{Run: wireRun(t.Run), Events: make([]json.RawMessage, 0, len(t.Events)+1)}
	for _, ev := range t.Events {
		out.Events = append(out.Events, wireEvent(t.Run, ev))
	}
	if end, ok := endOf(t.Run, t.Events); ok && t.Complete {
		out.Events = append(out.Events, end)
	}
	return out
}

// handleRunEvents answers one page of a run's transcript: its stored
// events, oldest first, in stream-event form, whatever the stream still
// retains. `next` is the `after` of the next page. Another user's run is
// 404.
func handleRunEvents(db store.Store, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := claimsFrom(r.Context()).Subject
		limit, ok := pageLimit(w, r)
		if !ok {
			return
		}
		q := store.RunEventQuery{Limit: limit, MaxBytes: pageBytes}
		if s := r.URL.Query().Get("after"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				httpx.Error(w, http.StatusBadRequest, protocol.CodeInvalidRequest, "after must be the next of a previous page")
				return
			}
			q.After = n
		}
		run, err := db.GetRun(r.Context(), user, r.PathValue("id"))
		if err != nil {
			storeFailed(log, w, user, "run", err)
			return
		}
		evs, more, err := db.ListRunEvents(r.Context(), user, run.ID, q)
		if err != nil {
			storeFailed(log, w, user, "run", err)
			return
		}
		items := make([]json.RawMessage, 0, len(evs)+1)
		for _, ev := range evs {
			items = append(items, wireEvent(run, ev))
		}
		next := ""
		if more {
			next = strconv.Itoa(evs[len(evs)-1].Index)
		} else if end, ok := endOf(run, evs); ok && (q.After == 0 || len(evs) > 0) {
			items = append(items, end)
		}
		httpx.List(w, protocol.ListEvents, items, next, func(b json.RawMessage) any { return b })
	})
}

// withTranscripts gives the user messages of a page that started a run
// that run with its transcript, read within about pageBytes: when the
// transcripts do not all fit, the page ends before the first message whose
// run's did not (from the cursor's side, at least one message stays), and
// more is set.
func withTranscripts(r *http.Request, db store.Store, user string, msgs []store.Message, before bool, more bool) ([]store.Message, map[string]*store.Transcript, bool, error) {
	for {
		var ids []string
		for _, m := range msgs {
			if m.Role == store.RoleUser && m.RunID != "" {
				ids = append(ids, m.RunID)
			}
		}
		trs, err := db.RunTranscripts(r.Context(), user, ids, pageBytes)
		if err != nil {
			return nil, nil, false, err
		}
		whole := func(m store.Message) bool {
			t := trs[m.RunID]
			return m.Role != store.RoleUser || t == nil || t.Complete
		}
		if !before {
			// Transcripts are read in run order, the messages' order: the
			// ones read whole are a prefix.
			for i, m := range msgs {
				if !whole(m) {
					if i == 0 { // too big alone: it goes, with what was read
						return msgs[:1], trs, more || len(msgs) > 1, nil
					}
					return msgs[:i], trs, true, nil
				}
			}
			return msgs, trs, more, nil
		}
		// Paging backwards the page must keep its newest messages: keep as
		// many as were read whole, and read again.
		n := 0
		for _, m := range msgs {
			if whole(m) {
				n++
			}
		}
		if n == len(msgs) || len(msgs) == 1 {
			return msgs, trs, more, nil
		}
		msgs, more = msgs[len(msgs)-max(n, 1):], true
	}
}
