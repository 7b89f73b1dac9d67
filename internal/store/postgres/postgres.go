// Package postgres is the store.Store shared by every node of an agentwire
// cluster: one PostgreSQL database (one schema of it), reached with pgx.
//
// Migrations are applied by Open in one transaction holding a
// transaction-scoped advisory lock, so nodes starting together apply each
// migration exactly once (see migrate).
//
// Times are truncated to store.TimePrecision in Go before they are written
// (timestamptz keeps microseconds; every backend must read back the same
// value) and converted to UTC when read. A zero time given to a create method
// means the caller's time.Now, not the database's, as in SQLite.
//
// Messages carry a bigserial column, seq: ListMessages orders by created_at,
// then seq, so messages with equal times keep their insertion order.
//
// NUL bytes and invalid UTF-8: PostgreSQL text values cannot hold a NUL byte
// (which a JSON "\u0000" decodes to) nor invalid UTF-8, both of which SQLite
// stores as given. This package therefore
//   - rejects them with store.ErrInvalid in identifiers: row ids, user ids,
//     thread ids, run ids, agent names and idempotency keys. Rewriting an
//     identifier could make two different ones equal, and thus cross the
//     user isolation boundary; a read with such an id finds nothing
//     (ErrNotFound, or an empty list);
//   - replaces each NUL byte and each invalid UTF-8 sequence by U+FFFD in
//     free text: titles, message content, run error codes and messages.
//     Rejecting those would lose an agent's answer or leave a run running
//     forever because its error message could not be stored, and U+FFFD
//     shows where text was lost, as store.TitleFrom does.
//
// Idempotency values are bytea and kept byte for byte.
//
// Errors: a database that cannot be reached (connection refused, timed out,
// reset, server shutting down) and a closed Store give errors wrapping
// store.ErrUnavailable, so an HTTP layer can answer 503.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/agentwire/agentwire/internal/store"
)

// DefaultConnectTimeout bounds each attempt to connect to the database when
// the URL sets no connect_timeout.
const DefaultConnectTimeout = 5 * time.Second

// Options configure Open. The zero value is usable.
type Options struct {
	// Schema holds the tables; it is created if missing. Default "public".
	Schema string
	// MaxConns bounds the connections this Store opens. Default
	// max(4, runtime.NumCPU()), as pgxpool.
	MaxConns int32
	// Logger receives migration and connection events. Default
	// slog.Default().
	Logger *slog.Logger
}

// Store is a store.Store backed by PostgreSQL.
type Store struct {
	pool   *pgxpool.Pool
	log    *slog.Logger
	closed atomic.Bool

	closeOnce sync.Once
}

var errClosed = fmt.Errorf("postgres: store is closed: %w", store.ErrUnavailable)

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (a postgres:// URL or a key=value
// DSN, as libpq), applies pending migrations, and returns a Store. It fails
// with store.ErrSchemaTooNew if a newer agentwire migrated the schema, and
// with an error wrapping store.ErrUnavailable if the database cannot be
// reached.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if opts.Schema == "" {
		opts.Schema = "public"
	}
	if !validID(opts.Schema) {
		return nil, fmt.Errorf("postgres: %w: schema name %q", store.ErrInvalid, opts.Schema)
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = int32(max(4, runtime.NumCPU()))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The error text masks the password.
		return nil, fmt.Errorf("postgres: %w", err)
	}
	cfg := pcfg.ConnConfig
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	// Every query runs in the store's schema, and only there: a missing
	// table is an error, never a table of the same name in public.
	cfg.RuntimeParams["search_path"] = pgx.Identifier{opts.Schema}.Sanitize()
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "agentwire"
	}
	pcfg.MaxConns = opts.MaxConns
	pcfg.MaxConnIdleTime = time.Minute
	pcfg.MaxConnLifetime = time.Hour
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}

	s := &Store{pool: pool, log: opts.Logger}
	var applied []int
	err = s.withConn(ctx, "open", func(c *pgx.Conn) error {
		applied, err = migrate(ctx, c, opts.Schema)
		return err
	})
	if err != nil {
		s.pool.Close()
		return nil, err
	}
	for _, v := range applied {
		s.log.Info("postgres: applied migration", "schema", opts.Schema, "version", v)
	}
	return s, nil
}

// Close closes every connection, after waiting for the operations in
// progress. Later calls fail with an error wrapping store.ErrUnavailable.
// It may be called more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.pool.Close() // waits for acquired connections to be released
	})
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.withConn(ctx, "ping", func(c *pgx.Conn) error { return c.Ping(ctx) })
}

// CreateThread implements storetest.Store (tests only).
func (s *Store) CreateThread(ctx context.Context, t store.Thread) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if err := validIDs("thread", "id", t.ID, "user id", t.UserID); err != nil {
		return err
	}
	created := toTime(t.CreatedAt, time.Now())
	updated := created
	if !t.UpdatedAt.IsZero() {
		updated = toTime(t.UpdatedAt, created)
	}
	return s.withConn(ctx, "create thread", func(c *pgx.Conn) error {
		_, err := c.Exec(ctx,
			`INSERT INTO threads (id, user_id, title, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)`,
			t.ID, t.UserID, cleanText(t.Title), created, updated)
		if isUniqueViolation(err) {
			return fmt.Errorf("thread %s: %w", t.ID, store.ErrConflict)
		}
		return err
	})
}

const threadColumns = `id, user_id, title, created_at, updated_at`

// GetThread implements storetest.Store (tests only).
func (s *Store) GetThread(ctx context.Context, userID, threadID string) (store.Thread, error) {
	if !validID(userID) || !validID(threadID) {
		return store.Thread{}, fmt.Errorf("postgres: thread %q: %w", threadID, store.ErrNotFound)
	}
	var t store.Thread
	err := s.withConn(ctx, "get thread", func(c *pgx.Conn) error {
		var err error
		t, err = scanThread(c.QueryRow(ctx, `SELECT `+threadColumns+` FROM threads WHERE id = $1 AND user_id = $2`, threadID, userID))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("thread %s: %w", threadID, store.ErrNotFound)
		}
		return err
	})
	return t, err
}

// ListThreads implements store.Store: a range scan of threads_user_updated
// from the cursor.
func (s *Store) ListThreads(ctx context.Context, userID string, q store.ThreadQuery) ([]store.Thread, bool, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = store.DefaultListLimit
	}
	if !validID(userID) || (q.After.ID != "" && !validID(q.After.ID)) {
		return []store.Thread{}, false, nil
	}
	var ts []store.Thread
	err := s.withConn(ctx, "list threads", func(c *pgx.Conn) error {
		var rows pgx.Rows
		var err error
		if q.After.ID == "" {
			rows, err = c.Query(ctx,
				`SELECT `+threadColumns+` FROM threads WHERE user_id = $1 ORDER BY updated_at DESC, id DESC LIMIT $2`,
				userID, limit+1)
		} else {
			rows, err = c.Query(ctx,
				`SELECT `+threadColumns+` FROM threads WHERE user_id = $1 AND (updated_at, id) < ($2, $3)
				ORDER BY updated_at DESC, id DESC LIMIT $4`,
				userID, q.After.UpdatedAt.Truncate(store.TimePrecision), q.After.ID, limit+1)
		}
		if err != nil {
			return err
		}
		ts, err = collect(rows, scanThread)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if len(ts) > limit {
		return ts[:limit], true, nil
	}
	return ts, false, nil
}

// AddMessage implements store.Store. The ownership check, the insert and
// the thread's UpdatedAt move are one statement.
func (s *Store) AddMessage(ctx context.Context, m store.Message) error {
	if err := m.Validate(); err != nil {
		return err
	}
	if err := validIDs("message", "id", m.ID, "thread id", m.ThreadID, "user id", m.UserID, "run id", m.RunID); err != nil {
		return err
	}
	created := toTime(m.CreatedAt, time.Now())
	return s.withConn(ctx, "add message", func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, `
WITH owned AS (
	UPDATE threads SET updated_at = GREATEST(updated_at, $7)
	WHERE id = $2 AND user_id = $3
	RETURNING id
)
INSERT INTO messages (id, thread_id, user_id, role, content, run_id, created_at)
SELECT $1, owned.id, $3, $4, $5, $6, $7 FROM owned`,
			m.ID, m.ThreadID, m.UserID, m.Role, cleanText(m.Content), m.RunID, created)
		switch {
		case isUniqueViolation(err):
			return fmt.Errorf("message %s: %w", m.ID, store.ErrConflict)
		case err != nil:
			return err
		case tag.RowsAffected() == 0:
			return fmt.Errorf("thread %s: %w", m.ThreadID, store.ErrNotFound)
		}
		return nil
	})
}

// ListMessages implements store.Store: the ownership check and the
// cursor's position in one statement, then a range scan of
// messages_thread_created from that position, forward, or backward for
// q.Before. Messages are never deleted, so the two statements need no
// shared snapshot.
func (s *Store) ListMessages(ctx context.Context, userID, threadID string, q store.MessageQuery) ([]store.Message, bool, error) {
	if err := q.Validate(); err != nil {
		return nil, false, err
	}
	if !validID(userID) || !validID(threadID) {
		return nil, false, fmt.Errorf("postgres: thread %q: %w", threadID, store.ErrNotFound)
	}
	cursor := q.After + q.Before
	if cursor != "" && !validID(cursor) {
		return nil, false, fmt.Errorf("postgres: message %q: %w", cursor, store.ErrBadCursor)
	}
	var msgs []store.Message
	var more bool
	err := s.withConn(ctx, "list messages", func(c *pgx.Conn) error {
		var created *time.Time
		var seq *int64
		err := c.QueryRow(ctx, `
SELECT m.created_at, m.seq FROM threads t LEFT JOIN messages m ON m.id = $3 AND m.thread_id = t.id
WHERE t.id = $1 AND t.user_id = $2`,
			threadID, userID, cursor).Scan(&created, &seq)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("thread %s: %w", threadID, store.ErrNotFound)
		case err != nil:
			return err
		case cursor != "" && created == nil:
			return fmt.Errorf("message %q: %w", cursor, store.ErrBadCursor)
		}
		const cols = `SELECT id, thread_id, user_id, role, content, run_id, created_at FROM messages`
		limit := q.PageLimit() + 1 // one more tells whether there is more
		var rows pgx.Rows
		switch {
		case cursor == "":
			rows, err = c.Query(ctx, cols+` WHERE thread_id = $1 ORDER BY created_at, seq LIMIT $2`, threadID, limit)
		case q.After != "":
			rows, err = c.Query(ctx, cols+` WHERE thread_id = $1 AND (created_at, seq) > ($2, $3)
				ORDER BY created_at, seq LIMIT $4`, threadID, *created, *seq, limit)
		default:
			rows, err = c.Query(ctx, cols+` WHERE thread_id = $1 AND (created_at, seq) < ($2, $3)
				ORDER BY created_at DESC, seq DESC LIMIT $4`, threadID, *created, *seq, limit)
		}
		if err != nil {
			return err
		}
		defer rows.Close()
		msgs, more = []store.Message{}, false
		total := 0
		for rows.Next() {
			m, err := scanMessage(rows)
			if err != nil {
				return err
			}
			if !q.Admit(len(msgs), total, len(m.Content)) {
				more = true
				break
			}
			msgs, total = append(msgs, m), total+len(m.Content)
		}
		rows.Close()
		return rows.Err()
	})
	if err != nil {
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
	if err := validIDs("run", "id", r.ID, "thread id", r.ThreadID, "user id", r.UserID, "agent", r.Agent, "user message id", r.UserMessageID, "node", r.Node); err != nil {
		return err
	}
	started := toTime(r.StartedAt, time.Now())
	return s.withConn(ctx, "create run", func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, `
INSERT INTO runs (id, thread_id, user_id, agent, status, user_message_id, started_at, node, lease_until)
SELECT $1, id, user_id, $4, 'running', $5, $6, $7, $8 FROM threads WHERE id = $2 AND user_id = $3`,
			r.ID, r.ThreadID, r.UserID, r.Agent, r.UserMessageID, started, r.Node, leaseTime(r.LeaseUntil))
		switch {
		case isUniqueViolation(err):
			return fmt.Errorf("run %s: %w", r.ID, store.ErrConflict)
		case err != nil:
			return err
		case tag.RowsAffected() == 0:
			return fmt.Errorf("thread %s: %w", r.ThreadID, store.ErrNotFound)
		}
		return nil
	})
}

const messageColumns = `id, thread_id, user_id, role, content, run_id, created_at`

// StartRun implements store.Store in one round trip: the statements go in
// one batch, which PostgreSQL runs as one implicit transaction, committed
// after the last statement and rolled back by any error. Each statement but
// the first also checks the thread's owner, so when the first finds no
// thread of the user, the others write nothing either. For a new thread
// the history is m alone and nothing is read.
func (s *Store) StartRun(ctx context.Context, newThread *store.Thread, m store.Message, r store.Run, historyLimit int) ([]store.Message, error) {
	if err := store.ValidateStartRun(newThread, m, r); err != nil {
		return nil, err
	}
	if err := validIDs("message", "id", m.ID, "thread id", m.ThreadID, "user id", m.UserID, "run id", m.RunID); err != nil {
		return nil, err
	}
	if err := validIDs("run", "id", r.ID, "agent", r.Agent, "node", r.Node); err != nil {
		return nil, err
	}
	now := time.Now()
	m.CreatedAt, m.Content = toTime(m.CreatedAt, now), cleanText(m.Content)
	r.StartedAt = toTime(r.StartedAt, now)
	var nt store.Thread
	if newThread != nil {
		nt = *newThread
		nt.CreatedAt, nt.Title = toTime(nt.CreatedAt, now), cleanText(nt.Title)
		if nt.UpdatedAt.IsZero() {
			nt.UpdatedAt = nt.CreatedAt
		}
		nt.UpdatedAt = toTime(nt.UpdatedAt, now)
		if m.CreatedAt.After(nt.UpdatedAt) {
			nt.UpdatedAt = m.CreatedAt
		}
	}

	var history []store.Message
	err := s.withConn(ctx, "start run", func(c *pgx.Conn) error {
		var err error
		for range maxTxAttempts {
			b := &pgx.Batch{}
			if newThread != nil {
				b.Queue(`INSERT INTO threads (id, user_id, title, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)`,
					nt.ID, nt.UserID, nt.Title, nt.CreatedAt, nt.UpdatedAt)
			} else {
				b.Queue(`UPDATE threads SET updated_at = GREATEST(updated_at, $3) WHERE id = $1 AND user_id = $2`,
					m.ThreadID, m.UserID, m.CreatedAt)
			}
			b.Queue(`
INSERT INTO messages (id, thread_id, user_id, role, content, run_id, created_at)
SELECT $1, id, user_id, $4, $5, $6, $7 FROM threads WHERE id = $2 AND user_id = $3`,
				m.ID, m.ThreadID, m.UserID, m.Role, m.Content, m.RunID, m.CreatedAt)
			b.Queue(`
INSERT INTO runs (id, thread_id, user_id, agent, status, user_message_id, started_at, node, lease_until)
SELECT $1, id, user_id, $4, 'running', $5, $6, $7, $8 FROM threads WHERE id = $2 AND user_id = $3`,
				r.ID, r.ThreadID, r.UserID, r.Agent, r.UserMessageID, r.StartedAt, r.Node, leaseTime(r.LeaseUntil))
			if newThread == nil {
				// LIMIT NULL is no limit.
				b.Queue(`
SELECT `+messageColumns+` FROM (
	SELECT `+messageColumns+`, seq FROM messages WHERE thread_id = $1
	ORDER BY created_at DESC, seq DESC LIMIT CASE WHEN $2::bigint > 0 THEN $2::bigint END
) h ORDER BY created_at, seq`,
					m.ThreadID, int64(historyLimit))
			}
			if history, err = startRunBatch(ctx, c, b, newThread != nil, m, r); !isRetryable(err) {
				break
			}
		}
		if err == nil && newThread != nil {
			history = []store.Message{m}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return history, nil
}

// startRunBatch sends the batch of StartRun and reads its results: the
// history when the batch ends with a query, else nil.
func startRunBatch(ctx context.Context, c *pgx.Conn, b *pgx.Batch, newThread bool, m store.Message, r store.Run) (history []store.Message, err error) {
	br := c.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			history, err = nil, cerr
		}
	}()
	tag, err := br.Exec()
	switch {
	case newThread && isUniqueViolation(err):
		return nil, fmt.Errorf("thread %s: %w", m.ThreadID, store.ErrConflict)
	case err != nil:
		return nil, err
	case tag.RowsAffected() == 0:
		// Nothing was written, and nothing will be: the other statements
		// find no thread of the user either.
		return nil, fmt.Errorf("thread %s: %w", m.ThreadID, store.ErrNotFound)
	}
	if _, err := br.Exec(); isUniqueViolation(err) {
		return nil, fmt.Errorf("message %s: %w", m.ID, store.ErrConflict)
	} else if err != nil {
		return nil, err
	}
	if _, err := br.Exec(); isUniqueViolation(err) {
		return nil, fmt.Errorf("run %s: %w", r.ID, store.ErrConflict)
	} else if err != nil {
		return nil, err
	}
	if newThread {
		return nil, nil
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	return collect(rows, scanMessage)
}

const runColumns = `id, thread_id, user_id, agent, status, user_message_id, started_at, ended_at, error_code, error_message, node, lease_until, end_announced, input_tokens, output_tokens`

// GetRun implements store.Store.
func (s *Store) GetRun(ctx context.Context, userID, runID string) (store.Run, error) {
	if !validID(userID) || !validID(runID) {
		return store.Run{}, fmt.Errorf("postgres: run %q: %w", runID, store.ErrNotFound)
	}
	var r store.Run
	err := s.withConn(ctx, "get run", func(c *pgx.Conn) error {
		var err error
		r, err = scanRun(c.QueryRow(ctx, `SELECT `+runColumns+` FROM runs WHERE id = $1 AND user_id = $2`, runID, userID))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("run %s: %w", runID, store.ErrNotFound)
		}
		return err
	})
	return r, err
}

// FindRun implements store.Store.
func (s *Store) FindRun(ctx context.Context, runID string) (store.Run, error) {
	if !validID(runID) {
		return store.Run{}, fmt.Errorf("postgres: run %q: %w", runID, store.ErrNotFound)
	}
	var r store.Run
	err := s.withConn(ctx, "find run", func(c *pgx.Conn) error {
		var err error
		r, err = scanRun(c.QueryRow(ctx, `SELECT `+runColumns+` FROM runs WHERE id = $1`, runID))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("run %s: %w", runID, store.ErrNotFound)
		}
		return err
	})
	return r, err
}

// ListActiveRuns implements store.Store, through the partial index
// runs_running (started_at, id) of the active runs.
func (s *Store) ListActiveRuns(ctx context.Context, q store.ActiveRunQuery) ([]store.Run, bool, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = store.DefaultListLimit
	}
	if (q.UserID != "" && !validID(q.UserID)) || (q.After.ID != "" && !validID(q.After.ID)) {
		return []store.Run{}, false, nil
	}
	var rs []store.Run
	err := s.withConn(ctx, "list active runs", func(c *pgx.Conn) error {
		after := q.After.StartedAt.Truncate(store.TimePrecision)
		if after.IsZero() {
			after = time.Unix(0, 0).AddDate(-100, 0, 0)
		}
		rows, err := c.Query(ctx, `SELECT `+runColumns+` FROM runs
WHERE status IN ('running', 'waiting_for_input') AND (started_at, id) > ($1, $2) AND ($3 = '' OR user_id = $3)
ORDER BY started_at, id LIMIT $4`, after, q.After.ID, q.UserID, limit+1)
		if err != nil {
			return err
		}
		rs, err = collect(rows, scanRun)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	if len(rs) > limit {
		return rs[:limit], true, nil
	}
	return rs, false, nil
}

// TokensUsed implements store.Store.
func (s *Store) TokensUsed(ctx context.Context, userID string, since time.Time) (int64, error) {
	if !validID(userID) {
		return 0, nil
	}
	var n int64
	err := s.withConn(ctx, "tokens used", func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT COALESCE(SUM(input_tokens + output_tokens), 0)::bigint FROM runs
WHERE user_id = $1 AND status IN ('completed', 'failed', 'cancelled', 'timeout') AND started_at >= $2`,
			userID, toTime(since, since)).Scan(&n)
	})
	return n, err
}

// ConfirmEnds implements store.Store.
func (s *Store) ConfirmEnds(ctx context.Context, runIDs []string) error {
	ids := make([]string, 0, len(runIDs))
	for _, id := range runIDs {
		if validID(id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return s.withConn(ctx, "confirm ends", func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `UPDATE runs SET end_announced = true WHERE id = ANY ($1) AND NOT end_announced AND status <> 'running' AND status <> 'waiting_for_input'`, ids)
		return err
	})
}

// ClaimEnds implements store.Store. Concurrent claimers skip each other's
// locked rows, so each run goes to one of them.
func (s *Store) ClaimEnds(ctx context.Context, c store.EndClaim) ([]store.Run, error) {
	if c.Node == "" || !validID(c.Node) {
		return nil, fmt.Errorf("%w: claim ends for node %q", store.ErrInvalid, c.Node)
	}
	limit := c.Limit
	if limit <= 0 {
		limit = store.DefaultReapLimit
	}
	at := toTime(c.Before, time.Now())
	return s.listRuns(ctx, "claim ends", `
UPDATE runs SET node = $1, lease_until = $2
WHERE NOT end_announced AND status <> 'running' AND status <> 'waiting_for_input' AND id = ANY (ARRAY (
	SELECT id FROM runs WHERE NOT end_announced AND status <> 'running' AND status <> 'waiting_for_input' AND lease_until < $3
	ORDER BY lease_until LIMIT $4
	FOR UPDATE SKIP LOCKED
))
RETURNING `+runColumns,
		c.Node, leaseTime(c.LeaseUntil), at, limit)
}

// FinishRun implements store.Store. The update only matches a running run,
// and concurrent updates of one row wait for each other and re-check the
// condition, so of concurrent calls exactly one changes the row.
func (s *Store) FinishRun(ctx context.Context, o store.Outcome) error {
	if !o.Status.Terminal() || o.InputTokens < 0 || o.OutputTokens < 0 {
		return fmt.Errorf("%w: finish run with status %q, tokens %d/%d", store.ErrInvalid, o.Status, o.InputTokens, o.OutputTokens)
	}
	if !validID(o.UserID) || !validID(o.RunID) {
		return fmt.Errorf("postgres: run %q: %w", o.RunID, store.ErrNotFound)
	}
	if len(o.Events) > 0 {
		if err := store.ValidateRunEvents(o.UserID, o.RunID, o.Events); err != nil {
			return err
		}
	}
	ended := toTime(o.EndedAt, time.Now())
	idx, typ, seq, epoch, ts, data := eventColumns(o.Events)
	return s.withConn(ctx, "finish run", func(c *pgx.Conn) error {
		// The EXISTS sees the statement's snapshot, where the run exists if
		// it existed when the update began. The transcript's events go in
		// only with the update (one row from finished).
		var updated, exists bool
		err := c.QueryRow(ctx, `
WITH finished AS (
	UPDATE runs SET status = $1, ended_at = $2, error_code = $3, error_message = $4, end_announced = $7, input_tokens = $14, output_tokens = $15
	WHERE id = $5 AND user_id = $6 AND status IN ('running', 'waiting_for_input')
	RETURNING 1
),
events AS (
	INSERT INTO run_events (run_id, idx, user_id, type, seq, epoch, ts, data)
	SELECT $5, e.idx, $6, e.type, e.seq, e.epoch, e.ts, e.data
	FROM finished, unnest($8::int[], $9::text[], $10::bigint[], $11::text[], $12::timestamptz[], $13::bytea[]) AS e (idx, type, seq, epoch, ts, data)
	ON CONFLICT (run_id, idx) DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM finished), EXISTS (SELECT 1 FROM runs WHERE id = $5 AND user_id = $6)`,
			string(o.Status), ended, cleanText(o.ErrorCode), cleanText(o.ErrorMessage), o.RunID, o.UserID, o.Announced,
			idx, typ, seq, epoch, ts, data, o.InputTokens, o.OutputTokens).Scan(&updated, &exists)
		switch {
		case err != nil:
			return err
		case updated:
			return nil
		case exists:
			return fmt.Errorf("run %s: %w", o.RunID, store.ErrNotRunning)
		}
		return fmt.Errorf("run %s: %w", o.RunID, store.ErrNotFound)
	})
}

// SetRunWaiting implements store.Store. The update only matches a run
// that has not ended, so it never reopens one a concurrent FinishRun ended.
func (s *Store) SetRunWaiting(ctx context.Context, userID, runID string, waiting bool) error {
	if !validID(userID) || !validID(runID) {
		return fmt.Errorf("postgres: run %q: %w", runID, store.ErrNotFound)
	}
	to := store.RunRunning
	if waiting {
		to = store.RunWaiting
	}
	return s.withConn(ctx, "set run waiting", func(c *pgx.Conn) error {
		var updated, exists bool
		err := c.QueryRow(ctx, `
WITH set AS (
	UPDATE runs SET status = $1
	WHERE id = $2 AND user_id = $3 AND status IN ('running', 'waiting_for_input')
	RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM set), EXISTS (SELECT 1 FROM runs WHERE id = $2 AND user_id = $3)`,
			string(to), runID, userID).Scan(&updated, &exists)
		switch {
		case err != nil:
			return err
		case updated:
			return nil
		case exists:
			return fmt.Errorf("run %s: %w", runID, store.ErrNotRunning)
		}
		return fmt.Errorf("run %s: %w", runID, store.ErrNotFound)
	})
}

// RenameThread implements store.Store.
func (s *Store) RenameThread(ctx context.Context, userID, threadID, title string) (store.Thread, error) {
	if !store.ValidTitle(title) {
		return store.Thread{}, fmt.Errorf("postgres: rename thread: %w: title %q", store.ErrInvalid, title)
	}
	if !validID(userID) || !validID(threadID) {
		return store.Thread{}, fmt.Errorf("postgres: thread %q: %w", threadID, store.ErrNotFound)
	}
	var t store.Thread
	err := s.inTx(ctx, "rename thread", func(tx pgx.Tx) error {
		var err error
		t, err = scanThread(tx.QueryRow(ctx,
			`UPDATE threads SET title = $3 WHERE id = $1 AND user_id = $2 RETURNING `+threadColumns, threadID, userID, title))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("thread %s: %w", threadID, store.ErrNotFound)
		}
		return err
	})
	return t, err
}

// DeleteThread implements store.Store. The thread's row is locked first:
// StartRun updates that row before it inserts a run, so a run starting
// concurrently either committed before the check (which then sees it) or
// waits and then finds no thread. ON DELETE CASCADE takes the messages,
// the runs and their transcripts.
func (s *Store) DeleteThread(ctx context.Context, userID, threadID string) error {
	if !validID(userID) || !validID(threadID) {
		return fmt.Errorf("postgres: thread %q: %w", threadID, store.ErrNotFound)
	}
	return s.inTx(ctx, "delete thread", func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM threads WHERE id = $1 AND user_id = $2 FOR UPDATE`, threadID, userID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("thread %s: %w", threadID, store.ErrNotFound)
		} else if err != nil {
			return err
		}
		var busy bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM runs WHERE thread_id = $1 AND status IN ('running', 'waiting_for_input'))`,
			threadID).Scan(&busy); err != nil {
			return err
		}
		if busy {
			return fmt.Errorf("thread %s: %w", threadID, store.ErrRunInProgress)
		}
		_, err = tx.Exec(ctx, `DELETE FROM threads WHERE id = $1 AND user_id = $2`, threadID, userID)
		return err
	})
}

// DiscardRun implements store.Store.
func (s *Store) DiscardRun(ctx context.Context, userID, runID string, withThread bool) error {
	if !validID(userID) || !validID(runID) {
		return fmt.Errorf("postgres: run %q: %w", runID, store.ErrNotFound)
	}
	return s.inTx(ctx, "discard run", func(tx pgx.Tx) error {
		var threadID, messageID string
		err := tx.QueryRow(ctx, `DELETE FROM runs WHERE id = $1 AND user_id = $2 AND status IN ('running', 'waiting_for_input') RETURNING thread_id, user_message_id`,
			runID, userID).Scan(&threadID, &messageID)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("run %s: %w", runID, store.ErrNotFound)
		} else if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM messages WHERE id = $1 AND user_id = $2`, messageID, userID); err != nil {
			return err
		}
		if withThread {
			_, err = tx.Exec(ctx, `DELETE FROM threads WHERE id = $1 AND user_id = $2 AND NOT EXISTS (SELECT 1 FROM messages WHERE thread_id = $1)`,
				threadID, userID)
		}
		return err
	})
}

// RenewLeases implements store.Store, in one statement. An id with a NUL
// byte or invalid UTF-8 cannot be stored, so it is lost without asking.
func (s *Store) RenewLeases(ctx context.Context, node string, runIDs []string, until time.Time) ([]string, error) {
	if len(runIDs) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(runIDs))
	for _, id := range runIDs {
		if validID(id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 || !validID(node) {
		return store.LostRuns(runIDs, nil), nil
	}
	var renewed []string
	err := s.withConn(ctx, "renew leases", func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `
UPDATE runs SET lease_until = $3
WHERE id = ANY ($2) AND node = $1 AND status IN ('running', 'waiting_for_input')
RETURNING id`,
			node, ids, leaseTime(until))
		if err != nil {
			return err
		}
		renewed, err = collect(rows, func(row pgx.Row) (string, error) {
			var id string
			return id, row.Scan(&id)
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return store.LostRuns(runIDs, renewed), nil
}

// ReapExpired implements store.Store. The subquery locks the expired runs it
// picks and skips those another transaction holds locked (another reaper's
// pick, or a FinishRun in progress); a row updated and committed since the
// statement's snapshot is re-checked once locked, and dropped if no longer
// running. So concurrent reapers, on any number of nodes, pick disjoint sets
// and each run is returned to one of them, and a reaper never waits for
// another.
//
// The pick is an ARRAY sublink, not a plain IN (subquery): uncorrelated, it
// runs once, as an init plan. PostgreSQL may plan an IN as a join that
// rescans the subquery for each row updated; each rescan skips the rows the
// statement already changed and picks the next expired ones, and the update
// ends more than limit runs (seen in testing: 3 with limit 2).
func (s *Store) ReapExpired(ctx context.Context, r store.Reap) ([]store.Run, error) {
	now, errCode, errMsg, limit := r.Before, r.ErrorCode, r.ErrorMessage, r.Limit
	if limit <= 0 {
		limit = store.DefaultReapLimit
	}
	at := toTime(now, time.Now())
	return s.listRuns(ctx, "reap expired", `
UPDATE runs SET status = 'failed', ended_at = $1, error_code = $2, error_message = $3, end_announced = false,
	node = CASE WHEN $5 = '' THEN node ELSE $5 END, lease_until = COALESCE($6, lease_until)
WHERE status IN ('running', 'waiting_for_input') AND id = ANY (ARRAY (
	SELECT id FROM runs WHERE status IN ('running', 'waiting_for_input') AND lease_until < $1
	ORDER BY lease_until LIMIT $4
	FOR UPDATE SKIP LOCKED
))
RETURNING `+runColumns,
		at, cleanText(errCode), cleanText(errMsg), limit, cleanText(r.Node), optLease(r.LeaseUntil))
}

// ListRunning implements storetest.Store (tests only).
func (s *Store) ListRunning(ctx context.Context, userID string) ([]store.Run, error) {
	if !validID(userID) {
		return []store.Run{}, nil
	}
	return s.listRuns(ctx, "list running",
		`SELECT `+runColumns+` FROM runs WHERE user_id = $1 AND status IN ('running', 'waiting_for_input') ORDER BY started_at, id`, userID)
}

// ListAllRunning returns the runs of every user that are still running,
// oldest first, whatever their node. Ending the runs of a lost node is
// ReapExpired's job: PostgreSQL is shared, so a node must not end the runs
// it finds, only those whose lease expired.
func (s *Store) ListAllRunning(ctx context.Context) ([]store.Run, error) {
	return s.listRuns(ctx, "list all running",
		`SELECT `+runColumns+` FROM runs WHERE status IN ('running', 'waiting_for_input') ORDER BY started_at, id`)
}

func (s *Store) listRuns(ctx context.Context, what, query string, args ...any) ([]store.Run, error) {
	var runs []store.Run
	err := s.withConn(ctx, what, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		runs, err = collect(rows, scanRun)
		return err
	})
	return runs, err
}

// maxClaimAttempts bounds the loop of ClaimIdempotencyKey; each pass but
// the last lost a race with a release or an expiry of the key, which
// concurrent callers cannot keep winning.
const maxClaimAttempts = 4

// ClaimIdempotencyKey implements store.Store.
//
// In one read-committed transaction: delete this user's expired entries
// (only this user's, since now is the caller's clock), insert the claim with
// ON CONFLICT DO NOTHING, and if another entry holds the key, read it. An
// insert that meets another transaction's uncommitted insert of the same key
// waits for it to end, so of concurrent claimers of a free key, on any
// number of nodes, exactly one inserts and the others read its value. Each
// statement sees what committed before it started, so if the entry read is
// gone by then (released, or expired by this caller's clock), the claim is
// tried again.
func (s *Store) ClaimIdempotencyKey(ctx context.Context, c store.Claim) ([]byte, bool, error) {
	switch {
	case c.UserID == "" || c.Key == "":
		return nil, false, fmt.Errorf("%w: idempotency key without user or key", store.ErrInvalid)
	case c.TTL <= 0:
		return nil, false, fmt.Errorf("%w: idempotency ttl %v", store.ErrInvalid, c.TTL)
	}
	if err := validIDs("idempotency key", "user id", c.UserID, "key", c.Key); err != nil {
		return nil, false, err
	}
	if c.Value == nil {
		c.Value = []byte{}
	}
	at := toTime(c.At, time.Now())
	expires := at.Add(c.TTL).Truncate(store.TimePrecision)
	var existing []byte
	claimed := false
	err := s.inTx(ctx, "claim idempotency key", func(tx pgx.Tx) error {
		existing, claimed = nil, false
		for range maxClaimAttempts {
			if _, err := tx.Exec(ctx, `DELETE FROM idempotency_keys WHERE user_id = $1 AND expires_at <= $2`, c.UserID, at); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `
INSERT INTO idempotency_keys (user_id, idem_key, value, expires_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, idem_key) DO NOTHING`, c.UserID, c.Key, c.Value, expires)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				claimed = true
				return nil
			}
			err = tx.QueryRow(ctx, `SELECT value FROM idempotency_keys WHERE user_id = $1 AND idem_key = $2 AND expires_at > $3`,
				c.UserID, c.Key, at).Scan(&existing)
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
		}
		return fmt.Errorf("key %q changed hands %d times during the claim", c.Key, maxClaimAttempts)
	})
	if err != nil {
		return nil, false, err
	}
	return existing, claimed, nil
}

// ReleaseIdempotencyKey implements store.Store.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, userID, key string) error {
	if !validID(userID) || !validID(key) {
		return nil // never stored
	}
	return s.withConn(ctx, "release idempotency key", func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `DELETE FROM idempotency_keys WHERE user_id = $1 AND idem_key = $2`, userID, key)
		return err
	})
}

func (s *Store) ConfirmIdempotencyKey(ctx context.Context, userID, key string, value []byte) error {
	if !validID(userID) || !validID(key) {
		return nil // never stored
	}
	if value == nil {
		value = []byte{}
	}
	return s.withConn(ctx, "confirm idempotency key", func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `UPDATE idempotency_keys SET value = $3 WHERE user_id = $1 AND idem_key = $2`, userID, key, value)
		return err
	})
}

// withConn runs fn on a connection of the pool. Errors are prefixed with
// "postgres: what: " and, when the database could not be reached, wrap
// store.ErrUnavailable. When the connection turns out to have been cut
// before fn took effect (see lostBefore), fn runs again on a fresh one: a
// database that dropped its connections but is up answers the first call.
func (s *Store) withConn(ctx context.Context, what string, fn func(c *pgx.Conn) error) error {
	var err error
	for range maxLostAttempts {
		if err = s.withConn1(ctx, what, fn); !errors.Is(err, errLostBefore) {
			return err
		}
		// Its siblings in the pool were most likely cut at the same time
		// (a restart, pg_terminate_backend): drop them all, then try again
		// on a fresh connection.
		s.pool.Reset()
	}
	return err
}

// maxLostAttempts bounds the tries of an operation whose connection turned
// out to be dead before the operation took effect.
const maxLostAttempts = 3

// errLostBefore marks an error of a connection that was found dead before
// the operation took effect: trying again on another connection is safe,
// whatever the operation.
var errLostBefore = errors.New("connection lost before the operation took effect")

func (s *Store) withConn1(ctx context.Context, what string, fn func(c *pgx.Conn) error) error {
	if s.closed.Load() {
		return errClosed
	}
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		if s.closed.Load() {
			return errClosed
		}
		if ctx.Err() != nil {
			return fmt.Errorf("postgres: %s: %w", what, ctx.Err())
		}
		return fmt.Errorf("postgres: %s: %w: %w", what, store.ErrUnavailable, err)
	}
	defer pc.Release()
	if err := fn(pc.Conn()); err != nil {
		if pc.Conn().IsClosed() {
			s.log.Debug("postgres: connection lost", "op", what, "err", err)
			if ctx.Err() == nil && lostBefore(err) {
				return fmt.Errorf("postgres: %s: %w: %w", what, errLostBefore, classify(ctx, err))
			}
		}
		return fmt.Errorf("postgres: %s: %w", what, classify(ctx, err))
	}
	return nil
}

// lostBefore reports whether err says the connection was gone before the
// server ran (or committed) anything: nothing was sent, or the server had
// ended the session (pg_terminate_backend, a shutdown), which rolls back
// whatever it had not committed.
func lostBefore(err error) bool {
	if pgconn.SafeToRetry(err) {
		return true
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03")
}

// maxTxAttempts bounds the retries of a transaction PostgreSQL aborted to
// break a deadlock or a serialization failure.
const maxTxAttempts = 3

// inTx runs fn in a read-committed transaction and commits it if fn returns
// nil, retrying it from the start if PostgreSQL aborted it to resolve a
// deadlock or serialization failure.
func (s *Store) inTx(ctx context.Context, what string, fn func(tx pgx.Tx) error) error {
	return s.withConn(ctx, what, func(c *pgx.Conn) error {
		var err error
		for range maxTxAttempts {
			if err = pgx.BeginFunc(ctx, c, fn); !isRetryable(err) {
				return err
			}
		}
		return err
	})
}

// classify wraps store.ErrUnavailable around err if it says the database
// could not be reached. The store's own sentinels and the caller's context
// ending are returned as they are.
func classify(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) ||
		errors.Is(err, store.ErrNotRunning) || errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrBadCursor) ||
		errors.Is(err, store.ErrSchemaTooNew) || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

func unavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			pgErr.Code == "53300", // too_many_connections
			pgErr.Code == "57P01", // admin_shutdown
			pgErr.Code == "57P02", // crash_shutdown
			pgErr.Code == "57P03": // cannot_connect_now
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) || pgconn.Timeout(err) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// isRetryable reports whether PostgreSQL aborted the transaction to resolve
// a conflict with another one.
func isRetryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// isUniqueViolation reports whether err is a primary key or unique
// constraint failure.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// validID reports whether s can be stored in a text column as it is: valid
// UTF-8 without NUL bytes.
func validID(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// validIDs reports an ErrInvalid error if a value of the (name, value)
// pairs is not a valid id.
func validIDs(kind string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if !validID(pairs[i+1]) {
			return fmt.Errorf("%w: %s %s %q has a NUL byte or invalid UTF-8", store.ErrInvalid, kind, pairs[i], pairs[i+1])
		}
	}
	return nil
}

// cleanText returns s with every NUL byte and every invalid UTF-8 sequence
// replaced by U+FFFD, which PostgreSQL text can hold.
func cleanText(s string) string {
	if validID(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// toTime returns t, or def when t is zero, truncated to store.TimePrecision
// and in UTC.
func toTime(t, def time.Time) time.Time {
	if t.IsZero() {
		t = def
	}
	return t.Truncate(store.TimePrecision).UTC()
}

// noLease is the lease_until of a run without a lease (LeaseUntil zero),
// the column's default: the epoch, which sorts before every real lease, so
// such a run is expired for every reaper.
var noLease = time.Unix(0, 0).UTC()

// leaseTime returns a lease time as stored: truncated, in UTC, and noLease
// for the zero time. scanRun maps noLease back to the zero time.
// optLease is a lease to set, or nil (SQL NULL) for none: keep the row's.
func optLease(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	l := leaseTime(t)
	return &l
}

func leaseTime(t time.Time) time.Time {
	if t.IsZero() {
		return noLease
	}
	return t.Truncate(store.TimePrecision).UTC()
}

func scanThread(row pgx.Row) (store.Thread, error) {
	var t store.Thread
	err := row.Scan(&t.ID, &t.UserID, &t.Title, &t.CreatedAt, &t.UpdatedAt)
	t.CreatedAt, t.UpdatedAt = t.CreatedAt.UTC(), t.UpdatedAt.UTC()
	return t, err
}

func scanMessage(row pgx.Row) (store.Message, error) {
	var m store.Message
	err := row.Scan(&m.ID, &m.ThreadID, &m.UserID, &m.Role, &m.Content, &m.RunID, &m.CreatedAt)
	m.CreatedAt = m.CreatedAt.UTC()
	return m, err
}

func scanRun(row pgx.Row) (store.Run, error) {
	var r store.Run
	var status string
	var ended *time.Time
	var lease time.Time
	var announced bool
	err := row.Scan(&r.ID, &r.ThreadID, &r.UserID, &r.Agent, &status, &r.UserMessageID, &r.StartedAt, &ended, &r.ErrorCode, &r.ErrorMessage, &r.Node, &lease, &announced,
		&r.InputTokens, &r.OutputTokens)
	r.Status, r.StartedAt = store.RunStatus(status), r.StartedAt.UTC()
	r.EndAnnounced = announced && r.Status.Terminal()
	if ended != nil {
		r.EndedAt = ended.UTC()
	}
	if !lease.Equal(noLease) {
		r.LeaseUntil = lease.UTC()
	}
	return r, err
}

// collect scans every row with scan and closes rows. It returns an empty,
// non-nil slice when there is no row.
func collect[T any](rows pgx.Rows, scan func(pgx.Row) (T, error)) ([]T, error) {
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
