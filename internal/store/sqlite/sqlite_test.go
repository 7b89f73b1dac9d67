package sqlite

import (
	"database/sql"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		return open(t, filepath.Join(t.TempDir(), "agentwire.db"))
	})
}

func TestSettings(t *testing.T) {
	t.Parallel()
	s := open(t, filepath.Join(t.TempDir(), "agentwire.db"))
	for _, tc := range []struct {
		db         *sql.DB
		pragma     string
		want       string
		connection string
	}{
		{s.w, "journal_mode", "wal", "writer"},
		{s.w, "synchronous", "1", "writer"},
		{s.w, "foreign_keys", "1", "writer"},
		{s.w, "busy_timeout", "5000", "writer"},
		{s.w, "query_only", "0", "writer"},
		{s.r, "journal_mode", "wal", "reader"},
		{s.r, "foreign_keys", "1", "reader"},
		{s.r, "busy_timeout", "5000", "reader"},
		{s.r, "query_only", "1", "reader"},
	} {
		var got string
		if err := tc.db.QueryRowContext(t.Context(), "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatalf("%s PRAGMA %s: %v", tc.connection, tc.pragma, err)
		}
		if !strings.EqualFold(got, tc.want) {
			t.Errorf("%s PRAGMA %s = %q, want %q", tc.connection, tc.pragma, got, tc.want)
		}
	}
	if _, err := s.r.ExecContext(t.Context(), `DELETE FROM threads`); err == nil {
		t.Error("a write on the read pool succeeded, want query_only to refuse it")
	}
}

func TestFileMode(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agentwire.db")
	s := open(t, path)
	if err := s.CreateThread(t.Context(), store.Thread{ID: "t1", UserID: "u", Title: "x"}); err != nil {
		t.Fatalf("CreateThread: %v", err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat: %v", err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %o, want 600", filepath.Base(p), mode)
		}
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agentwire.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	th := store.Thread{ID: "t1", UserID: "u", Title: "kept"}
	if err := s.CreateThread(t.Context(), th); err != nil {
		t.Fatalf("CreateThread: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range 2 {
		s = open(t, path)
		if got, err := s.GetThread(t.Context(), "u", "t1"); err != nil || got.Title != "kept" {
			t.Fatalf("after reopening: %+v, %v; want the thread written before", got, err)
		}
		var rows, version int
		if err := s.r.QueryRowContext(t.Context(), `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&rows, &version); err != nil {
			t.Fatalf("schema_migrations: %v", err)
		}
		if rows != len(migrations) || version != len(migrations) {
			t.Fatalf("schema_migrations has %d rows up to version %d, want %d", rows, version, len(migrations))
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agentwire.db")
	const n = 4
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			s, err := Open(t.Context(), path)
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	s := open(t, path)
	var rows int
	if err := s.r.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM schema_migrations`).Scan(&rows); err != nil {
		t.Fatalf("schema_migrations: %v", err)
	}
	if rows != len(migrations) {
		t.Fatalf("schema_migrations has %d rows after concurrent opens, want %d", rows, len(migrations))
	}
}

func TestNewerSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agentwire.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, err := s.w.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, applied_at) VALUES (?, 'later')`, len(migrations)+1); err != nil {
		t.Fatalf("insert a future version: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err = Open(t.Context(), path)
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a database with a newer schema succeeded")
	}
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("Open: %v, want ErrSchemaTooNew", err)
	}
	t.Log(err)
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, path := range map[string]string{
		"empty path":        "",
		"missing directory": filepath.Join(dir, "missing", "agentwire.db"),
		"directory":         dir,
	} {
		if s, err := Open(t.Context(), path); err == nil {
			_ = s.Close()
			t.Errorf("%s: Open succeeded, want an error", name)
		}
	}
}

func TestPathWithURICharacters(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "a?b#c%20d&e")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "agentwire.db")
	s := open(t, path)
	if err := s.CreateThread(t.Context(), store.Thread{ID: "t1", UserID: "u", Title: "x"}); err != nil {
		t.Fatalf("CreateThread: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) == 0 || entries[0].Name() != "agentwire.db" {
		t.Fatalf("directory holds %v, want agentwire.db", entries)
	}
	if parent, _ := os.ReadDir(filepath.Dir(dir)); len(parent) != 1 {
		t.Fatalf("files created outside the database directory: %v", parent)
	}
}

// TestLeasesAfterUpgrade: a run left running by schema version 1 (by a
// process that stopped) reads back with no node and no lease, and the first
// reaper ends it; so does a run created without a lease.
func TestLeasesAfterUpgrade(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agentwire.db")
	db, err := openPool(t.Context(), path, 1, url.Values{"_txlock": {"immediate"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`,
		migrations[0],
		`INSERT INTO schema_migrations VALUES (1, 'then')`,
		`INSERT INTO threads VALUES ('t', 'u', 'x', 1000, 1000)`,
		`INSERT INTO runs (id, thread_id, user_id, agent, status, started_at) VALUES ('old', 't', 'u', 'demo', 'running', 1000)`,
	} {
		if _, err := db.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := open(t, path)
	c := t.Context()
	old, err := s.GetRun(c, "u", "old")
	if err != nil || old.Node != "" || !old.LeaseUntil.IsZero() || old.Status != store.RunRunning {
		t.Fatalf("run of version 1: %+v, %v; want running, no node, zero lease", old, err)
	}
	if err := s.CreateRun(c, store.Run{ID: "bare", ThreadID: "t", UserID: "u", Agent: "demo"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRun(c, store.Run{ID: "alive", ThreadID: "t", UserID: "u", Agent: "demo", Node: "n", LeaseUntil: time.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	reaped, err := s.ReapExpired(c, store.Reap{ErrorCode: "node_lost", ErrorMessage: "stopped"})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, r := range reaped {
		ids = append(ids, r.ID)
		if r.Status != store.RunFailed || r.ErrorCode != "node_lost" || r.EndedAt.IsZero() {
			t.Errorf("reaped %+v", r)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"bare", "old"}) {
		t.Fatalf("ReapExpired = %v, want [bare old]", ids)
	}
}

// issue 11 C: the migration that widens the runs' status CHECK keeps the
// file sound, keeps refusing unknown statuses, and holds after a reopen.
func TestWaitingStatusMigration(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "agentwire.db")
	s := open(t, path)
	c := t.Context()
	if err := s.CreateThread(c, store.Thread{ID: "t", UserID: "u", Title: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRun(c, store.Run{ID: "r", ThreadID: "t", UserID: "u", Agent: "demo"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRunWaiting(c, "u", "r", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(c, `UPDATE runs SET status = 'done' WHERE id = 'r'`); err == nil {
		t.Fatal("status 'done' accepted: the CHECK is gone")
	}
	var ok string
	if err := s.w.QueryRowContext(c, `PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check: %q, %v", ok, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	if r, err := s.GetRun(c, "u", "r"); err != nil || r.Status != store.RunWaiting {
		t.Fatalf("after reopening: %+v, %v", r, err)
	}
	if err := s.SetRunWaiting(c, "u", "r", false); err != nil {
		t.Fatal(err)
	}
}
