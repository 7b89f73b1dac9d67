package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/agentwire/agentwire/internal/store"
)

// migrations are applied in order; migration i brings the schema to version
// i+1. Append only: never edit or reorder an entry that has shipped.
//
// Times are INTEGER unix milliseconds (UTC by definition, sortable, exact at
// store.TimePrecision). Tables are STRICT so a wrongly typed bind fails
// instead of being stored as something else.
var migrations = []string{
	// 1: threads, messages, runs, idempotency keys.
	`
CREATE TABLE threads (
	id         TEXT PRIMARY KEY,
	user_id    TEXT NOT NULL,
	title      TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX threads_user_updated ON threads (user_id, updated_at DESC, id DESC);

CREATE TABLE messages (
	id         TEXT PRIMARY KEY,
	thread_id  TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
	user_id    TEXT NOT NULL,
	role       TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
	content    TEXT NOT NULL,
	run_id     TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL
) STRICT;
-- The rowid rides along in every index entry, so ORDER BY created_at, rowid
-- (insertion order for equal times) is served by this index.
CREATE INDEX messages_thread_created ON messages (thread_id, created_at);

CREATE TABLE runs (
	id              TEXT PRIMARY KEY,
	thread_id       TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
	user_id         TEXT NOT NULL,
	agent           TEXT NOT NULL,
	status          TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cancelled', 'timeout')),
	user_message_id TEXT NOT NULL DEFAULT '',
	started_at      INTEGER NOT NULL,
	ended_at        INTEGER,
	error_code      TEXT NOT NULL DEFAULT '',
	error_message   TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX runs_user_status ON runs (user_id, status, started_at);
CREATE INDEX runs_thread ON runs (thread_id);

CREATE TABLE idempotency_keys (
	user_id    TEXT NOT NULL,
	idem_key   TEXT NOT NULL,
	value      BLOB NOT NULL,
	expires_at INTEGER NOT NULL,
	PRIMARY KEY (user_id, idem_key)
) STRICT, WITHOUT ROWID;
`,
	// 2: run leases. node is the process running the run; lease_until the
	// time (unix ms) until which it vouches for it, 0 for no lease: runs
	// left running by version 1 (a stopped process) have expired leases, so
	// the first reaper ends them. The index serves ReapExpired: its range
	// scan touches only running runs, oldest lease first.
	`
ALTER TABLE runs ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
CREATE INDEX runs_status_lease ON runs (status, lease_until);
`,
	// 3: end_announced says an ended run's terminal event is confirmed in the
	// stream (runs ended before this version count as announced). The
	// partial index holds only ended runs still waiting for it, the ones
	// ClaimEnds scans, in lease order.
	`
ALTER TABLE runs ADD COLUMN end_announced INTEGER NOT NULL DEFAULT 1;
CREATE INDEX runs_unannounced ON runs (lease_until) WHERE end_announced = 0 AND status != 'running';
`,
	// issue 11 C: the status waiting_for_input (a running run whose agent
	// waits for its user's answer). SQLite cannot alter a CHECK; widening
	// one is the documented edit of the table's definition in
	// sqlite_schema (https://sqlite.org/lang_altertable.html, section 7:
	// every existing row still satisfies it). Re-creating an index then
	// bumps the schema cookie, so every connection reloads the schema.
	`
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql, '''cancelled'', ''timeout'')', '''cancelled'', ''timeout'', ''waiting_for_input'')')
	WHERE type = 'table' AND name = 'runs';
PRAGMA writable_schema = RESET;
DROP INDEX runs_thread;
CREATE INDEX runs_thread ON runs (thread_id);
`,
	// issue 11 A: run transcripts. One row per stored event of a run (the
	// deltas folded), keyed by the run and the event's index in it; data is
	// the event's JSON data. Deleted with their run.
	`
CREATE TABLE run_events (
	run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
	idx     INTEGER NOT NULL,
	user_id TEXT NOT NULL,
	type    TEXT NOT NULL,
	seq     INTEGER NOT NULL,
	epoch   TEXT NOT NULL,
	ts      INTEGER NOT NULL,
	data    BLOB NOT NULL,
	PRIMARY KEY (run_id, idx)
) STRICT, WITHOUT ROWID;
`,
	// issue 11 D: token usage. The tokens a run used, as its agent reported
	// them; TokensUsed sums them over a user's runs of the day through
	// runs_user_status (user_id, status, started_at).
	`
ALTER TABLE runs ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
`,
	// issue 14: the admin API's list of active runs across users, oldest
	// first. The partial index holds only running and waiting runs.
	`
CREATE INDEX runs_active ON runs (started_at, id) WHERE status IN ('running', 'waiting_for_input');
`,
}

// migrate brings the schema of db to the newest version in one immediate
// transaction, so two processes opening the same file at once cannot both
// apply a migration, and a failed migration leaves the schema untouched.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: the writer DSN sets _txlock
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit

	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	applied_at TEXT NOT NULL
)`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("sqlite: migrate: read version: %w", err)
	}
	if current > len(migrations) {
		return fmt.Errorf("sqlite: database is at schema version %d, this program knows up to %d: %w", current, len(migrations), store.ErrSchemaTooNew)
	}
	for v := current + 1; v <= len(migrations); v++ {
		if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
			return fmt.Errorf("sqlite: migrate to version %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
			v, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			return fmt.Errorf("sqlite: migrate to version %d: %w", v, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: migrate: commit: %w", err)
	}
	return nil
}
