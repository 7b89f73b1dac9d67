package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/agentwire/agentwire/internal/store"
)

// AppendRunEvents implements store.Store.
func (s *Store) AppendRunEvents(ctx context.Context, userID, runID string, evs []store.RunEvent) error {
	if err := store.ValidateRunEvents(userID, runID, evs); err != nil {
		return err
	}
	return s.write(ctx, "append run events", func(tx *sql.Tx) error {
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM runs WHERE id = ? AND user_id = ?)`, runID, userID).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("run %s: %w", runID, store.ErrNotFound)
		}
		return insertRunEvents(ctx, tx, userID, runID, evs)
	})
}

// insertRunEvents inserts evs into the transcript of runID, skipping the
// indexes it has: one statement per insertBatch events (SQLite parses each
// statement anew, a cost a run's end should pay once).
func insertRunEvents(ctx context.Context, tx *sql.Tx, userID, runID string, evs []store.RunEvent) error {
	now := time.Now()
	for len(evs) > 0 {
		batch := evs[:min(len(evs), insertBatch)]
		evs = evs[len(batch):]
		q := make([]byte, 0, 96+len(batch)*26)
		q = append(q, `INSERT OR IGNORE INTO run_events (run_id, idx, user_id, type, seq, epoch, ts, data) VALUES `...)
		args := make([]any, 0, 8*len(batch))
		for i, ev := range batch {
			if i > 0 {
				q = append(q, ',')
			}
			q = append(q, `(?, ?, ?, ?, ?, ?, ?, ?)`...)
			args = append(args, runID, ev.Index, userID, ev.Type, int64(ev.Seq), ev.Epoch, toMillis(ev.TS, now), ev.Data)
		}
		if _, err := tx.ExecContext(ctx, string(q), args...); err != nil {
			return err
		}
	}
	return nil
}

// insertBatch is the most events one INSERT takes (8 parameters each, far
// under SQLite's bound of 32766).
const insertBatch = 200

const runEventColumns = `user_id, run_id, idx, type, seq, epoch, ts, data`

func scanRunEvent(sc scanner) (store.RunEvent, error) {
	var ev store.RunEvent
	var seq, ts int64
	err := sc.Scan(&ev.UserID, &ev.RunID, &ev.Index, &ev.Type, &seq, &ev.Epoch, &ts, &ev.Data)
	ev.Seq, ev.TS = uint64(seq), fromMillis(ts)
	return ev, err
}

// ListRunEvents implements store.Store.
func (s *Store) ListRunEvents(ctx context.Context, userID, runID string, q store.RunEventQuery) ([]store.RunEvent, bool, error) {
	if _, err := s.GetRun(ctx, userID, runID); err != nil {
		return nil, false, err
	}
	limit := q.Limit
	if limit <= 0 {
		limit = store.DefaultListLimit
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+runEventColumns+` FROM run_events
		WHERE run_id = ? AND user_id = ? AND idx > ? ORDER BY idx LIMIT ?`, runID, userID, q.After, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: list run events: %w", err)
	}
	defer rows.Close()
	evs, more, total := []store.RunEvent{}, false, 0
	for rows.Next() {
		ev, err := scanRunEvent(rows)
		if err != nil {
			return nil, false, fmt.Errorf("sqlite: list run events: %w", err)
		}
		if !q.Admit(len(evs), total, len(ev.Data)) {
			more = true
			break
		}
		evs, total = append(evs, ev), total+len(ev.Data)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("sqlite: list run events: %w", err)
	}
	return evs, more, nil
}

// RunTranscripts implements store.Store, in two statements on one read
// transaction: the ids go in as a JSON array.
func (s *Store) RunTranscripts(ctx context.Context, userID string, runIDs []string, maxBytes int) (map[string]*store.Transcript, error) {
	if len(runIDs) == 0 {
		return map[string]*store.Transcript{}, nil
	}
	ids, err := json.Marshal(runIDs)
	if err != nil {
		return nil, fmt.Errorf("sqlite: run transcripts: %w", err)
	}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("sqlite: run transcripts: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, `SELECT `+runColumns+` FROM runs
		WHERE user_id = ? AND id IN (SELECT value FROM json_each(?))`, userID, string(ids))
	if err != nil {
		return nil, fmt.Errorf("sqlite: run transcripts: %w", err)
	}
	runs, err := collect(rows, scanRun)
	if err != nil {
		return nil, fmt.Errorf("sqlite: run transcripts: %w", err)
	}
	rows, err = tx.QueryContext(ctx, `SELECT `+runEventColumns+` FROM run_events
		WHERE user_id = ? AND run_id IN (SELECT value FROM json_each(?)) ORDER BY run_id, idx`, userID, string(ids))
	if err != nil {
		return nil, fmt.Errorf("sqlite: run transcripts: %w", err)
	}
	defer rows.Close()
	out, err := store.ReadTranscripts(runs, maxBytes, func() (store.RunEvent, bool, error) {
		if !rows.Next() {
			return store.RunEvent{}, false, rows.Err()
		}
		ev, err := scanRunEvent(rows)
		return ev, err == nil, err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: run transcripts: %w", err)
	}
	return out, nil
}
