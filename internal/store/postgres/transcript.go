package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/agentwire/agentwire/internal/store"
)

// AppendRunEvents implements store.Store, in one statement: the run's owner
// is checked by the INSERT … SELECT, and an index already stored is skipped.
func (s *Store) AppendRunEvents(ctx context.Context, userID, runID string, evs []store.RunEvent) error {
	if err := store.ValidateRunEvents(userID, runID, evs); err != nil {
		return err
	}
	if !validID(userID) || !validID(runID) {
		return fmt.Errorf("postgres: run %q: %w", runID, store.ErrNotFound)
	}
	idx, typ, seq, epoch, ts, data := eventColumns(evs)
	return s.withConn(ctx, "append run events", func(c *pgx.Conn) error {
		var owned bool
		err := c.QueryRow(ctx, `
WITH run AS (SELECT id FROM runs WHERE id = $1 AND user_id = $2),
ins AS (
	INSERT INTO run_events (run_id, idx, user_id, type, seq, epoch, ts, data)
	SELECT run.id, e.idx, $2, e.type, e.seq, e.epoch, e.ts, e.data
	FROM run, unnest($3::int[], $4::text[], $5::bigint[], $6::text[], $7::timestamptz[], $8::bytea[]) AS e (idx, type, seq, epoch, ts, data)
	ON CONFLICT (run_id, idx) DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM run)`, runID, userID, idx, typ, seq, epoch, ts, data).Scan(&owned)
		if err != nil {
			return err
		}
		if !owned {
			return fmt.Errorf("run %s: %w", runID, store.ErrNotFound)
		}
		return nil
	})
}

// eventColumns returns evs as the column arrays the statements unnest, in
// the order idx, type, seq, epoch, ts, data.
func eventColumns(evs []store.RunEvent) ([]int32, []string, []int64, []string, []time.Time, [][]byte) {
	n := len(evs)
	idx, seq := make([]int32, n), make([]int64, n)
	typ, epoch := make([]string, n), make([]string, n)
	ts, data := make([]time.Time, n), make([][]byte, n)
	now := time.Now()
	for i, ev := range evs {
		idx[i], seq[i], typ[i], epoch[i] = int32(ev.Index), int64(ev.Seq), cleanText(ev.Type), cleanText(ev.Epoch)
		ts[i], data[i] = toTime(ev.TS, now), ev.Data
	}
	return idx, typ, seq, epoch, ts, data
}

const runEventColumns = `user_id, run_id, idx, type, seq, epoch, ts, data`

func scanRunEvent(row pgx.Row) (store.RunEvent, error) {
	var ev store.RunEvent
	var seq int64
	err := row.Scan(&ev.UserID, &ev.RunID, &ev.Index, &ev.Type, &seq, &ev.Epoch, &ev.TS, &ev.Data)
	ev.Seq, ev.TS = uint64(seq), ev.TS.UTC()
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
	var evs []store.RunEvent
	var more bool
	err := s.withConn(ctx, "list run events", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+runEventColumns+` FROM run_events
			WHERE run_id = $1 AND user_id = $2 AND idx > $3 ORDER BY idx LIMIT $4`, runID, userID, q.After, limit+1)
		if err != nil {
			return err
		}
		defer rows.Close()
		evs, more = []store.RunEvent{}, false
		total := 0
		for rows.Next() {
			ev, err := scanRunEvent(rows)
			if err != nil {
				return err
			}
			if !q.Admit(len(evs), total, len(ev.Data)) {
				more = true
				break
			}
			evs, total = append(evs, ev), total+len(ev.Data)
		}
		rows.Close()
		return rows.Err()
	})
	return evs, more, err
}

// RunTranscripts implements store.Store, in two statements on one
// connection.
func (s *Store) RunTranscripts(ctx context.Context, userID string, runIDs []string, maxBytes int) (map[string]*store.Transcript, error) {
	ids := make([]string, 0, len(runIDs))
	for _, id := range runIDs {
		if validID(id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 || !validID(userID) {
		return map[string]*store.Transcript{}, nil
	}
	var out map[string]*store.Transcript
	err := s.withConn(ctx, "run transcripts", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+runColumns+` FROM runs WHERE user_id = $1 AND id = ANY ($2)`, userID, ids)
		if err != nil {
			return err
		}
		runs, err := collect(rows, scanRun)
		if err != nil {
			return err
		}
		rows, err = c.Query(ctx, `SELECT `+runEventColumns+` FROM run_events
			WHERE user_id = $1 AND run_id = ANY ($2) ORDER BY run_id, idx`, userID, ids)
		if err != nil {
			return err
		}
		defer rows.Close()
		out, err = store.ReadTranscripts(runs, maxBytes, func() (store.RunEvent, bool, error) {
			if !rows.Next() {
				return store.RunEvent{}, false, rows.Err()
			}
			ev, err := scanRunEvent(rows)
			return ev, err == nil, err
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
