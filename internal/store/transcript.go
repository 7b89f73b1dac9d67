package store

import (
	"fmt"
	"time"
)

// RunEvent is one event of a run's transcript: a stream event of the run as
// the stream carried it (type, seq, epoch, time, data), kept with the run
// after the stream's retention forgot it. The answer's deltas are kept
// folded: one agent_message_delta holds the text of many.
type RunEvent struct {
	UserID string
	RunID  string
	// Index is the event's position in the run's transcript, from 1, unique
	// per run; an append with an index already stored is ignored, so an
	// append may be retried.
	Index int
	Type  string
	// Seq and Epoch are the stream position the event had (a fold's is its
	// last delta's); zero and empty when the stream never took it.
	Seq   uint64
	Epoch string
	TS    time.Time
	// Data is the event's data, a JSON object.
	Data []byte
}

// RunEventQuery selects one page of a run's transcript, in Index order.
type RunEventQuery struct {
	// After is an Index: the page starts after it (0: at the start).
	After int
	// Limit is the most events in the page (DefaultListLimit when <= 0).
	Limit int
	// MaxBytes bounds the page's total data, as MessageQuery.MaxBytes does.
	MaxBytes int
}

// Admit is MessageQuery.Admit for a transcript page.
func (q RunEventQuery) Admit(n, total, size int) bool {
	return MessageQuery{Limit: q.Limit, MaxBytes: q.MaxBytes}.Admit(n, total, size)
}

// Validate reports an ErrInvalid error unless every event is of userID's
// run runID with a positive index, a type and data.
func ValidateRunEvents(userID, runID string, evs []RunEvent) error {
	if userID == "" || runID == "" {
		return fmt.Errorf("%w: run events without user or run", ErrInvalid)
	}
	for _, ev := range evs {
		if ev.UserID != userID || ev.RunID != runID || ev.Index < 1 || ev.Type == "" || len(ev.Data) == 0 {
			return fmt.Errorf("%w: run event %d (%q) of another run, without a type or data", ErrInvalid, ev.Index, ev.Type)
		}
	}
	return nil
}

// Transcript is a run with its transcript, as RunTranscripts returns it.
type Transcript struct {
	Run    Run
	Events []RunEvent
	// Complete reports that Events is the whole transcript.
	Complete bool
}

// ReadTranscripts is the shared part of RunTranscripts: given the user's
// runs, it reads events in (run id, index) order from next into them until
// their data would total more than maxBytes (no bound when <= 0; the first
// event is always read), and marks the runs it read whole Complete.
func ReadTranscripts(runs []Run, maxBytes int, next func() (RunEvent, bool, error)) (map[string]*Transcript, error) {
	out := make(map[string]*Transcript, len(runs))
	for _, r := range runs {
		out[r.ID] = &Transcript{Run: r}
	}
	total, cut := 0, ""
	for {
		ev, ok, err := next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		t := out[ev.RunID]
		if t == nil {
			continue
		}
		if maxBytes > 0 && total > 0 && total+len(ev.Data) > maxBytes {
			cut = ev.RunID
			break
		}
		total += len(ev.Data)
		t.Events = append(t.Events, ev)
	}
	for id, t := range out {
		t.Complete = cut == "" || id < cut
	}
	return out, nil
}
