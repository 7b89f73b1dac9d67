package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/agentwire/agentwire/internal/store"
)

// migrations are applied in order; migration i brings the schema to version
// i+1. Append only: never edit or reorder an entry that has shipped.
//
// They run with search_path set to the store's schema, so table names are
// unqualified. Ids and keys are compared byte by byte (COLLATE "C"), as in
// SQLite, whatever the database's collation: orderings by id and index
// lookups do not depend on the locale. Times are timestamptz, written
// already truncated to store.TimePrecision.
var migrations = []string{
	// 1: threads, messages, runs, idempotency keys.
	`
CREATE TABLE threads (
	id         text COLLATE "C" PRIMARY KEY,
	user_id    text COLLATE "C" NOT NULL,
	title      text NOT NULL,
	created_at timestamptz NOT NULL,
	updated_at timestamptz NOT NULL
);
CREATE INDEX threads_user_updated ON threads (user_id, updated_at DESC, id DESC);

CREATE TABLE messages (
	id         text COLLATE "C" PRIMARY KEY,
	thread_id  text COLLATE "C" NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
	user_id    text COLLATE "C" NOT NULL,
	role       text NOT NULL CHECK (role IN ('user', 'assistant')),
	content    text NOT NULL,
	run_id     text COLLATE "C" NOT NULL DEFAULT '',
	created_at timestamptz NOT NULL,
	-- Insertion order, for messages with equal created_at (SQLite's rowid).
	seq        bigserial NOT NULL
);
CREATE INDEX messages_thread_created ON messages (thread_id, created_at, seq);

CREATE TABLE runs (
	id              text COLLATE "C" PRIMARY KEY,
	thread_id       text COLLATE "C" NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
	user_id         text COLLATE "C" NOT NULL,
	agent           text NOT NULL,
	status          text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cancelled', 'timeout')),
	user_message_id text COLLATE "C" NOT NULL DEFAULT '',
	started_at      timestamptz NOT NULL,
	ended_at        timestamptz,
	error_code      text NOT NULL DEFAULT '',
	error_message   text NOT NULL DEFAULT ''
);
CREATE INDEX runs_user_status ON runs (user_id, status, started_at, id);
CREATE INDEX runs_thread ON runs (thread_id);
-- ListAllRunning: every node's runs still running, small and hot.
CREATE INDEX runs_running ON runs (started_at, id) WHERE status = 'running';

CREATE TABLE idempotency_keys (
	user_id    text COLLATE "C" NOT NULL,
	idem_key   text COLLATE "C" NOT NULL,
	value      bytea NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (user_id, idem_key)
);
`,
	// 2: run leases. node is the node running the run; lease_until the time
	// until which it vouches for it. No lease is the epoch, not -infinity:
	// like SQLite's 0 it sorts before every real lease, so runs left running
	// by version 1 count as expired, and it scans into a time.Time (pgx
	// refuses infinities), which the store maps back to the zero time. The
	// partial index holds only running runs, the ones ReapExpired scans, in
	// lease order; finished runs never enter it.
	`
ALTER TABLE runs
	ADD COLUMN node        text COLLATE "C" NOT NULL DEFAULT '',
	ADD COLUMN lease_until timestamptz NOT NULL DEFAULT 'epoch';
CREATE INDEX runs_lease ON runs (lease_until) WHERE status = 'running';
`,
	// 3: end_announced says an ended run's terminal event is confirmed in the
	// stream (runs ended before this version count as announced). The
	// partial index holds only ended runs still waiting for it, the ones
	// ClaimEnds scans, in lease order.
	`
ALTER TABLE runs ADD COLUMN end_announced boolean NOT NULL DEFAULT true;
CREATE INDEX runs_unannounced ON runs (lease_until) WHERE NOT end_announced AND status <> 'running';
`,
	// issue 11 C: the status waiting_for_input (a running run whose agent
	// waits for its user's answer): leased, renewed and reaped like a
	// running one, so the partial indexes of live runs hold both.
	`
ALTER TABLE runs DROP CONSTRAINT runs_status_check,
	ADD CONSTRAINT runs_status_check CHECK (status IN ('running', 'completed', 'failed', 'cancelled', 'timeout', 'waiting_for_input'));
DROP INDEX runs_running;
CREATE INDEX runs_running ON runs (started_at, id) WHERE status IN ('running', 'waiting_for_input');
DROP INDEX runs_lease;
CREATE INDEX runs_lease ON runs (lease_until) WHERE status IN ('running', 'waiting_for_input');
`,
	// issue 11 A: run transcripts. One row per stored event of a run (the
	// deltas folded), keyed by the run and the event's index in it; data is
	// the event's JSON data. Deleted with their run.
	`
CREATE TABLE run_events (
	run_id  text COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
	idx     integer NOT NULL,
	user_id text COLLATE "C" NOT NULL,
	type    text NOT NULL,
	seq     bigint NOT NULL,
	epoch   text NOT NULL,
	ts      timestamptz NOT NULL,
	data    bytea NOT NULL,
	PRIMARY KEY (run_id, idx)
);
`,
	// issue 11 D: token usage. The tokens a run used, as its agent reported
	// them; TokensUsed sums them over a user's runs of the day through
	// runs_user_status (user_id, status, started_at, id).
	`
ALTER TABLE runs ADD COLUMN input_tokens bigint NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN output_tokens bigint NOT NULL DEFAULT 0;
`,
}

// migrationLockClass is the first key of the advisory lock that serializes
// migrations; the second is a hash of the schema name, so stores in
// different schemas of one database do not wait for each other.
const migrationLockClass = 0x61770001 // "aw", 1

// migrate brings the schema to the newest version in one transaction. The
// transaction first takes a transaction-scoped advisory lock, so of several
// nodes starting at once one migrates and the others wait, then find the
// schema current; a failed migration leaves the schema untouched, and the
// lock is released with the transaction however it ends.
func migrate(ctx context.Context, conn *pgx.Conn, schema string) (applied []int, err error) {
	ident := pgx.Identifier{schema}.Sanitize()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, int32(migrationLockClass), schema); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		// CREATE SCHEMA IF NOT EXISTS would need the CREATE privilege on the
		// database even when the schema exists (e.g. public).
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA `+ident); err != nil {
				return fmt.Errorf("create schema: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `SET LOCAL search_path TO `+ident); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer PRIMARY KEY,
	applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
			return err
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("read version: %w", err)
		}
		if current > len(migrations) {
			return fmt.Errorf("schema %s is at version %d, this program knows up to %d: %w", schema, current, len(migrations), store.ErrSchemaTooNew)
		}
		for v := current + 1; v <= len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return fmt.Errorf("to version %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, v); err != nil {
				return fmt.Errorf("to version %d: %w", v, err)
			}
			applied = append(applied, v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return applied, nil
}
