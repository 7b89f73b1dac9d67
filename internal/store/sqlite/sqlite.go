// Package sqlite is the store.Store of a single agentwire process: one
// SQLite file in the data directory, pure Go (modernc.org/sqlite, no cgo).
//
// Connections: SQLite admits one writer at a time. Rather than let several
// pooled connections race for the write lock and sleep in the busy handler
// (or fail with SQLITE_BUSY when a deferred transaction cannot upgrade its
// read lock), every write goes through a pool of exactly one connection, so
// writers queue in database/sql, in Go, and never contend inside SQLite. Its
// transactions begin IMMEDIATE, so a read-then-write transaction holds the
// write lock from its first statement. Reads use a separate pool of
// read-only connections; in WAL mode they run concurrently with each other
// and with the writer, on the last committed snapshot. busy_timeout still
// covers the rare contention the queue cannot see: another process on the
// same file and WAL checkpoints.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/agentwire/agentwire/internal/store"
)

// readConns is the size of the read pool. Reads are short indexed lookups;
// a few connections keep them from queueing behind each other without
// holding many page caches.
const readConns = 4

// busyTimeout is how long a connection waits for a lock held by another
// connection or process before failing with SQLITE_BUSY.
const busyTimeout = 5 * time.Second

// Store is a store.Store backed by one SQLite file.
type Store struct {
	w *sql.DB // exactly one connection: every write
	r *sql.DB // read-only connections

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens the database file at path, creating it with mode 0600 if it does
// not exist (its directory must), and applies pending migrations. It fails
// with store.ErrSchemaTooNew if a newer agentwire already migrated the file.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	// SQLite would create the file with mode 0644 (less the umask); it holds
	// every user's conversations, so create it first, private. SQLite gives
	// the -wal and -shm files the mode of the database file.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: create database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: create database file: %w", err)
	}

	w, err := openPool(ctx, abs, 1, url.Values{
		"_pragma": {
			fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()),
			"journal_mode(WAL)",
			"synchronous(NORMAL)",
			"foreign_keys(1)",
		},
		"_txlock": {"immediate"},
	})
	if err != nil {
		return nil, err
	}
	if err := migrate(ctx, w); err != nil {
		_ = w.Close()
		return nil, err
	}
	// Opened after the writer switched the file to WAL: journal_mode is
	// persistent, and a query_only connection could not change it.
	r, err := openPool(ctx, abs, readConns, url.Values{
		"_pragma": {
			fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()),
			"foreign_keys(1)",
			"query_only(1)",
		},
	})
	if err != nil {
		_ = w.Close()
		return nil, err
	}
	return &Store{w: w, r: r}, nil
}

// openPool opens a pool of at most n connections to the file at abs with the
// given DSN parameters, and checks that one connection works.
func openPool(ctx context.Context, abs string, n int, params url.Values) (*sql.DB, error) {
	// A file: URI with the path escaped, so a '?' or '#' in the path cannot
	// be taken for the start of the parameters.
	dsn := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: params.Encode()}).String()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	// A connection's first statements (switching a new file to WAL) can be
	// refused at once with SQLITE_BUSY while another process opens the same
	// file, before the busy timeout applies: retry within that timeout.
	deadline := time.Now().Add(busyTimeout)
	for {
		err := db.PingContext(ctx)
		if err == nil {
			return db, nil
		}
		if !isBusy(err) || time.Now().After(deadline) || ctx.Err() != nil {
			_ = db.Close()
			return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isBusy reports SQLITE_BUSY ("database is locked"), extended codes included.
func isBusy(err error) bool {
	var se *msqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == sqlite3.SQLITE_BUSY
	}
	return strings.Contains(err.Error(), "SQLITE_BUSY") // wrapped by database/sql as text
}

// Close closes both pools. It may be called more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = errors.Join(s.r.Close(), s.w.Close())
	})
	return s.closeErr
}

// Ping checks that both pools can reach the database.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// CreateThread implements storetest.Store (tests only).
func (s *Store) CreateThread(ctx context.Context, t store.Thread) error {
	if err := t.Validate(); err != nil {
		return err
	}
	created := toMillis(t.CreatedAt, time.Now())
	updated := created
	if !t.UpdatedAt.IsZero() {
		updated = toMillis(t.UpdatedAt, t.UpdatedAt)
	}
	if err := insertThread(ctx, s.w, &t, created, updated); err != nil {
		return fmt.Errorf("sqlite: create thread: %w", err)
	}
	return nil
}

// execer is a *sql.DB or a *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// insertThread, insertMessage and insertRun are the one place each row is
// written; times are unix milliseconds already.
func insertThread(ctx context.Context, x execer, t *store.Thread, created, updated int64) error {
	_, err := x.ExecContext(ctx,
		`INSERT INTO threads (id, user_id, title, created_at, updated_at) VALUES (?, ?, ?, ?, ?)`,
		t.ID, t.UserID, t.Title, created, updated)
	if isUniqueViolation(err) {
		return fmt.Errorf("thread %s: %w", t.ID, store.ErrConflict)
	}
	return err
}

func insertMessage(ctx context.Context, x execer, m *store.Message, created int64) error {
	_, err := x.ExecContext(ctx,
		`INSERT INTO messages (id, thread_id, user_id, role, content, run_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		m.ID, m.ThreadID, m.UserID, m.Role, m.Content, m.RunID, created)
	if isUniqueViolation(err) {
		return fmt.Errorf("message %s: %w", m.ID, store.ErrConflict)
	}
	return err
}

func insertRun(ctx context.Context, x execer, r *store.Run, started int64) error {
	_, err := x.ExecContext(ctx,
		`INSERT INTO runs (id, thread_id, user_id, agent, status, user_message_id, started_at, node, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.ThreadID, r.UserID, r.Agent, string(store.RunRunning), r.UserMessageID, started, r.Node, leaseMillis(r.LeaseUntil))
	if isUniqueViolation(err) {
		return fmt.Errorf("run %s: %w", r.ID, store.ErrConflict)
	}
	return err
}

// GetThread implements storetest.Store (tests only).
func (s *Store) GetThread(ctx context.Context, userID, threadID string) (store.Thread, error) {
	row := s.r.QueryRowContext(ctx,
		`SELECT id, user_id, title, created_at, updated_at FROM threads WHERE id = ? AND user_id = ?`,
		threadID, userID)
	t, err := scanThread(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Thread{}, fmt.Errorf("sqlite: thread %s: %w", threadID, store.ErrNotFound)
	}
	if err != nil {
		return store.Thread{}, fmt.Errorf("sqlite: get thread: %w", err)
	}
	return t, nil
}

// RenameThread implements store.Store.
func (s *Store) RenameThread(ctx context.Context, userID, threadID, title string) (store.Thread, error) {
	if !store.ValidTitle(title) {
		return store.Thread{}, fmt.Errorf("sqlite: rename thread: %w: title %q", store.ErrInvalid, title)
	}
	var t store.Thread
	err := s.write(ctx, "rename thread", func(tx *sql.Tx) error {
		var err error
		t, err = scanThread(tx.QueryRowContext(ctx,
			`UPDATE threads SET title = ? WHERE id = ? AND user_id = ? RETURNING id, user_id, title, created_at, updated_at`,
			title, threadID, userID))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("thread %s: %w", threadID, store.ErrNotFound)
		}
		return err
	})
	return t, err
}

// DeleteThread implements store.Store. The one writer connection
// serializes it with StartRun, so no run can start between the check and
// the delete; the schema's ON DELETE CASCADE takes the messages, the runs
// and their transcripts.
func (s *Store) DeleteThread(ctx context.Context, userID, threadID string) error {
	return s.write(ctx, "delete thread", func(tx *sql.Tx) error {
		if err := ownThread(ctx, tx, userID, threadID); err != nil {
			return err
		}
		var busy bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM runs WHERE thread_id = ? AND status IN ('running', 'waiting_for_input'))`,
			threadID).Scan(&busy); err != nil {
			return err
		}
		if busy {
			return fmt.Errorf("thread %s: %w", threadID, store.ErrRunInProgress)
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM threads WHERE id = ? AND user_id = ?`, threadID, userID)
		return err
	})
}

// ListThreads implements store.Store: a range scan of threads_user_updated
// from the cursor.
func (s *Store) ListThreads(ctx context.Context, userID string, q store.ThreadQuery) ([]store.Thread, bool, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = store.DefaultListLimit
	}
	var rows *sql.Rows
	var err error
	if q.After.ID == "" {
		rows, err = s.r.QueryContext(ctx,
			`SELECT id, user_id, title, created_at, updated_at FROM threads
			WHERE user_id = ? ORDER BY updated_at DESC, id DESC LIMIT ?`,
			userID, limit+1)
	} else {
		rows, err = s.r.QueryContext(ctx,
			`SELECT id, user_id, title, created_at, updated_at FROM threads
			WHERE user_id = ? AND (updated_at, id) < (?, ?) ORDER BY updated_at DESC, id DESC LIMIT ?`,
			userID, toMillis(q.After.UpdatedAt, time.Time{}), q.After.ID, limit+1)
	}
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: list threads: %w", err)
	}
	ts, err := collect(rows, scanThread)
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: list threads: %w", err)
	}
	if len(ts) > limit {
		return ts[:limit], true, nil
	}
	return ts, false, nil
}

// AddMessage implements store.Store.
func (s *Store) AddMessage(ctx context.Context, m store.Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	created := toMillis(m.CreatedAt, time.Now())
	return s.write(ctx, "add message", func(tx *sql.Tx) error {
		if err := ownThread(ctx, tx, m.UserID, m.ThreadID); err != nil {
			return err
		}
		if err := insertMessage(ctx, tx, &m, created); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE threads SET updated_at = MAX(updated_at, ?) WHERE id = ?`, created, m.ThreadID)
		return err
	})
}

// ListMessages implements store.Store: a range scan of
// messages_thread_created (whose entries carry the rowid) from the cursor,
// forward, or backward for q.Before.
func (s *Store) ListMessages(ctx context.Context, userID, threadID string, q store.MessageQuery) ([]store.Message, bool, error) {
	if err := q.Validate(); err != nil {
		return nil, false, err
	}
	msgs, more, err := s.listMessages(ctx, userID, threadID, q)
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: list messages: %w", err)
	}
	return msgs, more, nil
}

func (s *Store) listMessages(ctx context.Context, userID, threadID string, q store.MessageQuery) ([]store.Message, bool, error) {
	// One read transaction: the ownership check, the cursor and the page
	// see the same snapshot.
	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = tx.Rollback() }()
	if err := ownThread(ctx, tx, userID, threadID); err != nil {
		return nil, false, err
	}
	const cols = `SELECT id, thread_id, user_id, role, content, run_id, created_at FROM messages`
	limit := q.PageLimit() + 1 // one more tells whether there is more
	var rows *sql.Rows
	if cursor := q.After + q.Before; cursor == "" {
		rows, err = tx.QueryContext(ctx, cols+` WHERE thread_id = ? ORDER BY created_at, rowid LIMIT ?`, threadID, limit)
	} else {
		var created, rowid int64
		err = tx.QueryRowContext(ctx, `SELECT created_at, rowid FROM messages WHERE id = ? AND thread_id = ?`,
			cursor, threadID).Scan(&created, &rowid)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, false, fmt.Errorf("message %s: %w", cursor, store.ErrBadCursor)
		}
		if err != nil {
			return nil, false, err
		}
		if q.After != "" {
			rows, err = tx.QueryContext(ctx, cols+` WHERE thread_id = ? AND (created_at, rowid) > (?, ?)
				ORDER BY created_at, rowid LIMIT ?`, threadID, created, rowid, limit)
		} else {
			rows, err = tx.QueryContext(ctx, cols+` WHERE thread_id = ? AND (created_at, rowid) < (?, ?)
				ORDER BY created_at DESC, rowid DESC LIMIT ?`, threadID, created, rowid, limit)
		}
	}
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	msgs, total, more := []store.Message{}, 0, false
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, false, err
		}
		if !q.Admit(len(msgs), total, len(m.Content)) {
			more = true
			break
		}
		msgs, total = append(msgs, m), total+len(m.Content)
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if q.Before != "" {
		slices.Reverse(msgs)
	}
	return msgs, more, nil
}

// CreateRun implements storetest.Store (tests only).
func (s *Store) CreateRun(ctx context.Context, r store.Run) error {
	if err := r.Validate(); err != nil {
		return err
	}
	started := toMillis(r.StartedAt, time.Now())
	return s.write(ctx, "create run", func(tx *sql.Tx) error {
		if err := ownThread(ctx, tx, r.UserID, r.ThreadID); err != nil {
			return err
		}
		return insertRun(ctx, tx, &r, started)
	})
}

// StartRun implements store.Store: one write transaction on the writer
// connection. For a new thread the history is m alone and nothing is read.
func (s *Store) StartRun(ctx context.Context, newThread *store.Thread, m store.Message, r store.Run, historyLimit int) ([]store.Message, error) {
	if err := store.ValidateStartRun(newThread, m, r); err != nil {
		return nil, err
	}
	now := time.Now()
	created := toMillis(m.CreatedAt, now)
	started := toMillis(r.StartedAt, now)
	var history []store.Message
	err := s.write(ctx, "start run", func(tx *sql.Tx) error {
		if newThread != nil {
			tCreated := toMillis(newThread.CreatedAt, now)
			tUpdated := tCreated
			if !newThread.UpdatedAt.IsZero() {
				tUpdated = toMillis(newThread.UpdatedAt, now)
			}
			if err := insertThread(ctx, tx, newThread, tCreated, max(tUpdated, created)); err != nil {
				return err
			}
		} else {
			// The ownership check and the UpdatedAt move in one statement.
			res, err := tx.ExecContext(ctx,
				`UPDATE threads SET updated_at = MAX(updated_at, ?) WHERE id = ? AND user_id = ?`,
				created, m.ThreadID, m.UserID)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				return fmt.Errorf("thread %s: %w", m.ThreadID, store.ErrNotFound)
			}
		}
		if err := insertMessage(ctx, tx, &m, created); err != nil {
			return err
		}
		if err := insertRun(ctx, tx, &r, started); err != nil {
			return err
		}
		if newThread != nil {
			m.CreatedAt = fromMillis(created)
			history = []store.Message{m}
			return nil
		}
		limit := int64(historyLimit)
		if limit <= 0 {
			limit = -1 // no limit
		}
		rows, err := tx.QueryContext(ctx,
			`SELECT id, thread_id, user_id, role, content, run_id, created_at FROM (
				SELECT rowid AS seq, id, thread_id, user_id, role, content, run_id, created_at FROM messages
				WHERE thread_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?
			) ORDER BY created_at, seq`,
			m.ThreadID, limit)
		if err != nil {
			return err
		}
		history, err = collect(rows, scanMessage)
		return err
	})
	if err != nil {
		return nil, err
	}
	return history, nil
}

const runColumns = `id, thread_id, user_id, agent, status, user_message_id, started_at, ended_at, error_code, error_message, node, lease_until, end_announced, input_tokens, output_tokens`

// GetRun implements store.Store.
func (s *Store) GetRun(ctx context.Context, userID, runID string) (store.Run, error) {
	row := s.r.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id = ? AND user_id = ?`, runID, userID)
	r, err := scanRun(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Run{}, fmt.Errorf("sqlite: run %s: %w", runID, store.ErrNotFound)
	}
	if err != nil {
		return store.Run{}, fmt.Errorf("sqlite: get run: %w", err)
	}
	return r, nil
}

// FindRun implements store.Store.
func (s *Store) FindRun(ctx context.Context, runID string) (store.Run, error) {
	r, err := scanRun(s.r.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id = ?`, runID))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Run{}, fmt.Errorf("sqlite: run %s: %w", runID, store.ErrNotFound)
	}
	if err != nil {
		return store.Run{}, fmt.Errorf("sqlite: find run: %w", err)
	}
	return r, nil
}

// ListActiveRuns implements store.Store, through the partial index
// runs_active (migration 7), which holds only the active runs.
func (s *Store) ListActiveRuns(ctx context.Context, q store.ActiveRunQuery) ([]store.Run, bool, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = store.DefaultListLimit
	}
	where := `status IN ('running', 'waiting_for_input') AND (started_at, id) > (?, ?)`
	after := int64(math.MinInt64)
	if !q.After.StartedAt.IsZero() {
		after = toMillis(q.After.StartedAt, time.Time{})
	}
	args := []any{after, q.After.ID}
	if q.UserID != "" {
		where += ` AND user_id = ?`
		args = append(args, q.UserID)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+runColumns+` FROM runs INDEXED BY runs_active WHERE `+where+` ORDER BY started_at, id LIMIT ?`,
		append(args, limit+1)...)
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: list active runs: %w", err)
	}
	rs, err := collect(rows, scanRun)
	if err != nil {
		return nil, false, fmt.Errorf("sqlite: list active runs: %w", err)
	}
	if len(rs) > limit {
		return rs[:limit], true, nil
	}
	return rs, false, nil
}

// FinishRun implements store.Store.
func (s *Store) FinishRun(ctx context.Context, o store.Outcome) error {
	if !o.Status.Terminal() || o.InputTokens < 0 || o.OutputTokens < 0 {
		return fmt.Errorf("%w: finish run with status %q, tokens %d/%d", store.ErrInvalid, o.Status, o.InputTokens, o.OutputTokens)
	}
	if len(o.Events) > 0 {
		if err := store.ValidateRunEvents(o.UserID, o.RunID, o.Events); err != nil {
			return err
		}
	}
	ended := toMillis(o.EndedAt, time.Now())
	return s.write(ctx, "finish run", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE runs SET status = ?, ended_at = ?, error_code = ?, error_message = ?, end_announced = ?, input_tokens = ?, output_tokens = ?
			WHERE id = ? AND user_id = ? AND status IN ('running', 'waiting_for_input')`,
			string(o.Status), ended, o.ErrorCode, o.ErrorMessage, o.Announced, o.InputTokens, o.OutputTokens, o.RunID, o.UserID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			if err != nil {
				return err
			}
			return insertRunEvents(ctx, tx, o.UserID, o.RunID, o.Events)
		}
		var exists bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM runs WHERE id = ? AND user_id = ?)`, o.RunID, o.UserID).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("run %s: %w", o.RunID, store.ErrNotRunning)
		}
		return fmt.Errorf("run %s: %w", o.RunID, store.ErrNotFound)
	})
}

// TokensUsed implements store.Store.
func (s *Store) TokensUsed(ctx context.Context, userID string, since time.Time) (int64, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, `SELECT COALESCE(SUM(input_tokens + output_tokens), 0) FROM runs
		WHERE user_id = ? AND status IN ('completed', 'failed', 'cancelled', 'timeout') AND started_at >= ?`,
		userID, since.UnixMilli()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sqlite: tokens used: %w", err)
	}
	return n, nil
}

// ConfirmEnds implements store.Store, in one statement (the ids as one
// JSON array).
func (s *Store) ConfirmEnds(ctx context.Context, runIDs []string) error {
	if len(runIDs) == 0 {
		return nil
	}
	ids, err := json.Marshal(runIDs)
	if err != nil {
		return err
	}
	return s.write(ctx, "confirm ends", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx,
			`UPDATE runs SET end_announced = 1
			WHERE id IN (SELECT value FROM json_each(?)) AND end_announced = 0 AND status != 'running' AND status != 'waiting_for_input'`, string(ids))
		return err
	})
}

// ClaimEnds implements store.Store.
func (s *Store) ClaimEnds(ctx context.Context, c store.EndClaim) ([]store.Run, error) {
	if c.Node == "" {
		return nil, fmt.Errorf("%w: claim ends for no node", store.ErrInvalid)
	}
	limit := c.Limit
	if limit <= 0 {
		limit = store.DefaultReapLimit
	}
	at := toMillis(c.Before, time.Now())
	var claimed []store.Run
	err := s.write(ctx, "claim ends", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx,
			`UPDATE runs SET node = ?, lease_until = ?
			WHERE id IN (SELECT id FROM runs WHERE end_announced = 0 AND status != 'running' AND status != 'waiting_for_input' AND lease_until < ? ORDER BY lease_until LIMIT ?)
			RETURNING `+runColumns,
			c.Node, leaseMillis(c.LeaseUntil), at, limit)
		if err != nil {
			return err
		}
		claimed, err = collect(rows, scanRun)
		return err
	})
	if err != nil {
		return nil, err
	}
	return claimed, nil
}

// RenewLeases implements store.Store, in one statement: the ids go in as a
// JSON array, so any number of them is one bind parameter.
func (s *Store) RenewLeases(ctx context.Context, node string, runIDs []string, until time.Time) ([]string, error) {
	if len(runIDs) == 0 {
		return nil, nil
	}
	ids, err := json.Marshal(runIDs)
	if err != nil {
		return nil, fmt.Errorf("sqlite: renew leases: %w", err)
	}
	var renewed []string
	err = s.write(ctx, "renew leases", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx,
			`UPDATE runs SET lease_until = ?
			WHERE node = ? AND status IN ('running', 'waiting_for_input') AND id IN (SELECT value FROM json_each(?))
			RETURNING id`,
			leaseMillis(until), node, string(ids))
		if err != nil {
			return err
		}
		renewed, err = collect(rows, func(sc scanner) (string, error) {
			var id string
			return id, sc.Scan(&id)
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return store.LostRuns(runIDs, renewed), nil
}

// SetRunWaiting implements store.Store.
func (s *Store) SetRunWaiting(ctx context.Context, userID, runID string, waiting bool) error {
	to := store.RunRunning
	if waiting {
		to = store.RunWaiting
	}
	return s.write(ctx, "set run waiting", func(tx *sql.Tx) error {
		var status string
		err := tx.QueryRowContext(ctx, `SELECT status FROM runs WHERE id = ? AND user_id = ?`, runID, userID).Scan(&status)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("run %s: %w", runID, store.ErrNotFound)
		case err != nil:
			return err
		case store.RunStatus(status).Terminal():
			return fmt.Errorf("run %s: %w", runID, store.ErrNotRunning)
		}
		_, err = tx.ExecContext(ctx, `UPDATE runs SET status = ? WHERE id = ?`, string(to), runID)
		return err
	})
}

// DiscardRun implements store.Store.
func (s *Store) DiscardRun(ctx context.Context, userID, runID string, withThread bool) error {
	return s.write(ctx, "discard run", func(tx *sql.Tx) error {
		var threadID, messageID string
		err := tx.QueryRowContext(ctx, `DELETE FROM runs WHERE id = ? AND user_id = ? AND status IN ('running', 'waiting_for_input') RETURNING thread_id, user_message_id`,
			runID, userID).Scan(&threadID, &messageID)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("run %s: %w", runID, store.ErrNotFound)
		} else if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE id = ? AND user_id = ?`, messageID, userID); err != nil {
			return err
		}
		if withThread {
			_, err = tx.ExecContext(ctx, `DELETE FROM threads WHERE id = ? AND user_id = ? AND NOT EXISTS (SELECT 1 FROM messages WHERE thread_id = ?)`,
				threadID, userID, threadID)
		}
		return err
	})
}

// ReapExpired implements store.Store. Every write goes through the one
// writer connection, and the update claims the runs it returns in the same
// statement, so two reapers, in this process or another on the same file,
// can never return the same run: the second sees it failed.
func (s *Store) ReapExpired(ctx context.Context, r store.Reap) ([]store.Run, error) {
	now, errCode, errMsg, limit := r.Before, r.ErrorCode, r.ErrorMessage, r.Limit
	if limit <= 0 {
		limit = store.DefaultReapLimit
	}
	at := toMillis(now, time.Now())
	var reaped []store.Run
	err := s.write(ctx, "reap expired", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx,
			`UPDATE runs SET status = 'failed', ended_at = ?, error_code = ?, error_message = ?, end_announced = 0,
				node = CASE WHEN ? = '' THEN node ELSE ? END, lease_until = CASE WHEN ? = 0 THEN lease_until ELSE ? END
			WHERE id IN (SELECT id FROM runs WHERE status IN ('running', 'waiting_for_input') AND lease_until < ? ORDER BY lease_until LIMIT ?)
			RETURNING `+runColumns,
			at, errCode, errMsg, r.Node, r.Node, leaseMillis(r.LeaseUntil), leaseMillis(r.LeaseUntil), at, limit)
		if err != nil {
			return err
		}
		reaped, err = collect(rows, scanRun)
		return err
	})
	if err != nil {
		return nil, err
	}
	return reaped, nil
}

// ListRunning implements storetest.Store (tests only).
func (s *Store) ListRunning(ctx context.Context, userID string) ([]store.Run, error) {
	rows, err := s.r.QueryContext(ctx,
		`SELECT `+runColumns+` FROM runs WHERE user_id = ? AND status IN ('running', 'waiting_for_input') ORDER BY started_at, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list running: %w", err)
	}
	runs, err := collect(rows, scanRun)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list running: %w", err)
	}
	return runs, nil
}

// ClaimIdempotencyKey implements store.Store.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, c store.Claim) ([]byte, bool, error) {
	switch {
	case c.UserID == "" || c.Key == "":
		return nil, false, fmt.Errorf("%w: idempotency key without user or key", store.ErrInvalid)
	case c.TTL <= 0:
		return nil, false, fmt.Errorf("%w: idempotency ttl %v", store.ErrInvalid, c.TTL)
	}
	if c.Value == nil {
		c.Value = []byte{}
	}
	nowMs := toMillis(c.At, time.Now())
	var existing []byte
	claimed := false
	err := s.write(ctx, "claim idempotency key", func(tx *sql.Tx) error {
		// Expired entries of this user go first, this key's included, so the
		// insert below only meets a live entry. Only the user's own: now is
		// the caller's clock.
		if _, err := tx.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE user_id = ? AND expires_at <= ?`, c.UserID, nowMs); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx,
			`INSERT INTO idempotency_keys (user_id, idem_key, value, expires_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (user_id, idem_key) DO NOTHING`,
			c.UserID, c.Key, c.Value, nowMs+c.TTL.Milliseconds())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if claimed = n == 1; claimed {
			return nil
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM idempotency_keys WHERE user_id = ? AND idem_key = ?`, c.UserID, c.Key).Scan(&existing)
	})
	if err != nil {
		return nil, false, err
	}
	return existing, claimed, nil
}

// ReleaseIdempotencyKey implements store.Store.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, userID, key string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM idempotency_keys WHERE user_id = ? AND idem_key = ?`, userID, key); err != nil {
		return fmt.Errorf("sqlite: release idempotency key: %w", err)
	}
	return nil
}

func (s *Store) ConfirmIdempotencyKey(ctx context.Context, userID, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	if _, err := s.w.ExecContext(ctx, `UPDATE idempotency_keys SET value = ? WHERE user_id = ? AND idem_key = ?`, value, userID, key); err != nil {
		return fmt.Errorf("sqlite: confirm idempotency key: %w", err)
	}
	return nil
}

// write runs fn in a write transaction and commits it if fn returns nil.
// Errors are prefixed with "sqlite: what: ".
func (s *Store) write(ctx context.Context, what string, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the writer DSN sets _txlock
	if err != nil {
		return fmt.Errorf("sqlite: %s: %w", what, err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return fmt.Errorf("sqlite: %s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: %s: commit: %w", what, err)
	}
	return nil
}

// ownThread returns store.ErrNotFound unless userID owns threadID.
func ownThread(ctx context.Context, tx *sql.Tx, userID, threadID string) error {
	var exists bool
	err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM threads WHERE id = ? AND user_id = ?)`, threadID, userID).Scan(&exists)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("thread %s: %w", threadID, store.ErrNotFound)
	}
	return nil
}

// isUniqueViolation reports whether err is a primary key or unique
// constraint failure.
func isUniqueViolation(err error) bool {
	var se *msqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	c := se.Code()
	return c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

type scanner interface{ Scan(dest ...any) error }

func scanThread(sc scanner) (store.Thread, error) {
	var t store.Thread
	var created, updated int64
	err := sc.Scan(&t.ID, &t.UserID, &t.Title, &created, &updated)
	t.CreatedAt, t.UpdatedAt = fromMillis(created), fromMillis(updated)
	return t, err
}

func scanMessage(sc scanner) (store.Message, error) {
	var m store.Message
	var created int64
	err := sc.Scan(&m.ID, &m.ThreadID, &m.UserID, &m.Role, &m.Content, &m.RunID, &created)
	m.CreatedAt = fromMillis(created)
	return m, err
}

func scanRun(sc scanner) (store.Run, error) {
	var r store.Run
	var status string
	var started int64
	var ended sql.NullInt64
	var lease int64
	var announced bool
	err := sc.Scan(&r.ID, &r.ThreadID, &r.UserID, &r.Agent, &status, &r.UserMessageID, &started, &ended, &r.ErrorCode, &r.ErrorMessage, &r.Node, &lease, &announced,
		&r.InputTokens, &r.OutputTokens)
	r.Status, r.StartedAt = store.RunStatus(status), fromMillis(started)
	r.EndAnnounced = announced && r.Status.Terminal()
	if ended.Valid {
		r.EndedAt = fromMillis(ended.Int64)
	}
	if lease != 0 {
		r.LeaseUntil = fromMillis(lease)
	}
	return r, err
}

// collect scans every row with scan and closes rows.
func collect[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// toMillis returns t, or def when t is zero, as unix milliseconds, truncated
// as Time.Truncate does (down, also before 1970, where UnixMilli alone
// would round toward zero).
func toMillis(t, def time.Time) int64 {
	if t.IsZero() {
		t = def
	}
	return t.Truncate(store.TimePrecision).UnixMilli()
}

// leaseMillis returns a lease time as stored: unix milliseconds, 0 for the
// zero time (no lease, expired for every reaper). scanRun maps 0 back to the
// zero time.
func leaseMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Truncate(store.TimePrecision).UnixMilli()
}

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
