package agui

import (
	"encoding/json"

	"github.com/agentwire/agentwire/protocol"
)

// StoredMessage is a thread's message as agentwire stores it.
type StoredMessage struct {
	ID, Role, Content, RunID string
}

// Resume builds the prelude of a client that joins run runID of thread
// threadID part way (POST /api/v1/agui/connect), and returns the translator
// that goes on with the run's later events:
//
//  1. RUN_STARTED;
//  2. MESSAGES_SNAPSHOT: thread (the thread's stored messages, oldest
//     first) with the run's own messages assembled from events, the run's
//     retained events up to the client's position (in seq order, perhaps
//     none, perhaps not from its start), exactly as a client that read
//     those events holds them;
//  3. the run's state as of the position: its last STATE_SNAPSHOT and the
//     STATE_DELTAs after it;
//  4. the re-opening of what the run has open (its steps, its text
//     message), or, when events hold the run's end, its RUN_FINISHED or
//     RUN_ERROR.
//
// When events hold the run's start (its user_message echo or
// agent_started) the run's stored messages are not used: the run's user
// message takes its client_message_id as its id, as the client that sent it
// named it. Otherwise the stored ones stand in (the answer is stored when
// the run completes).
func Resume(threadID, runID string, thread []StoredMessage, events []protocol.Event) ([]Event, *Translator) {
	t := NewTranslator(threadID, runID)
	var run Messages
	fromStart := false
	var meta json.RawMessage
	var last []Event
	var state []Event // the last STATE_SNAPSHOT and the deltas after it
	for _, ev := range events {
		if ev.RunID != runID {
			continue
		}
		meta = Metadata(ev)
		switch ev.Type {
		case protocol.TypeUserMessage:
			fromStart = true
			if d, ok := ev.UserMessage(); ok {
				id := d.ClientMessageID
				if id == "" {
					id = d.MessageID
				}
				run.Add(Message{ID: id, Role: RoleUser, Content: String(d.Content)})
			}
			continue
		case protocol.TypeAgentStarted:
			fromStart = true
		}
		out := t.Event(ev)
		for _, e := range out {
			run.Apply(e)
			switch e.Type {
			case StateSnapshot:
				state = append(state[:0], e)
			case StateDelta:
				state = append(state, e)
			}
		}
		if len(out) > 0 {
			last = out
		}
	}

	var all Messages
	placed := false
	place := func() {
		if !placed {
			for _, m := range run.List() {
				all.Add(m)
			}
			placed = true
		}
	}
	for _, m := range thread {
		if m.RunID == runID {
			if m.Role == RoleUser && !fromStart {
				all.Add(Message{ID: m.ID, Role: m.Role, Content: String(m.Content)})
			}
			if m.Role == RoleUser || fromStart {
				place()
				continue
			}
		}
		all.Add(Message{ID: m.ID, Role: m.Role, Content: String(m.Content)})
	}
	place()

	t.started = true
	prelude := []Event{
		{Type: RunStarted, ThreadID: threadID, RunID: runID, Metadata: meta},
		{Type: MessagesSnapshot, Messages: all.List(), Metadata: meta},
	}
	prelude = append(prelude, state...)
	if t.Ended() {
		return append(prelude, last[len(last)-1]), t
	}
	return append(prelude, t.Reopen()...), t
}

// Finish returns the end of a run whose terminal event the client cannot
// be given (it is no longer retained), made from what the store recorded:
// ev is an agent_completed or agent_error of the run. Nothing of the
// answer is repeated: the snapshot holds it.
func (t *Translator) Finish(ev protocol.Event) []Event {
	t.streamed = true
	out := t.Event(ev)
	for i := range out {
		out[i].Metadata = nil // no stream event to point at
	}
	return out
}
