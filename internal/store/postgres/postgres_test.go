package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/store/storetest"
	"github.com/agentwire/agentwire/internal/testproc"
)

// urlEnv names the variable holding the URL of a PostgreSQL database the
// tests may create and drop schemas in, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable
const urlEnv = "AGENTWIRE_TEST_DATABASE_URL"

const notTested = urlEnv + " not set: PostgreSQL backend NOT TESTED"

func TestMain(m *testing.M) {
	if os.Getenv(urlEnv) == "" {
		fmt.Fprintln(os.Stderr, "!!!!!!!!!! "+notTested+" !!!!!!!!!!")
	}
	goleak.VerifyTestMain(m)
}

// testURL returns the test database URL, or skips t.
func testURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv(urlEnv)
	if u == "" {
		t.Skip("!!!!!!!!!! " + notTested + " !!!!!!!!!!")
	}
	return u
}

// freshSchema returns the name of a schema no other test uses, dropped with
// everything in it when t ends. The name needs quoting, so every query
// built with it is checked to quote it.
func freshSchema(t *testing.T) string {
	t.Helper()
	u := testURL(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "agentwire_test-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		// t.Context is done by now.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer func() { _ = conn.Close(ctx) }()
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return schema
}

func open(t *testing.T, schema string) *Store {
	t.Helper()
	s, err := Open(t.Context(), testURL(t), Options{Schema: schema, MaxConns: 8})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	schema := freshSchema(t)
	open(t, schema) // migrate once, before the parallel subtests
	storetest.Run(t, func(t *testing.T) storetest.Store { return open(t, schema) })
}

// queryInt runs a query returning one integer on a connection of s.
func queryInt(t *testing.T, s *Store, query string, args ...any) int {
	t.Helper()
	var n int
	err := s.withConn(t.Context(), "test", func(c *pgx.Conn) error { return c.QueryRow(t.Context(), query, args...).Scan(&n) })
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func checkMigrations(t *testing.T, s *Store) {
	t.Helper()
	rows := queryInt(t, s, `SELECT COUNT(*) FROM schema_migrations`)
	version := queryInt(t, s, `SELECT MAX(version) FROM schema_migrations`)
	if rows != len(migrations) || version != len(migrations) {
		t.Fatalf("schema_migrations has %d rows up to version %d, want %d", rows, version, len(migrations))
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	t.Parallel()
	schema := freshSchema(t)
	s, err := Open(t.Context(), testURL(t), Options{Schema: schema})
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
		s := open(t, schema)
		if got, err := s.GetThread(t.Context(), "u", "t1"); err != nil || got.Title != "kept" {
			t.Fatalf("after reopening: %+v, %v; want the thread written before", got, err)
		}
		checkMigrations(t, s)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

// TestConcurrentOpen opens a schema that does not exist yet from several
// stores at once, as nodes of a cluster starting together: every Open
// succeeds and each migration is applied once.
func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	schema := freshSchema(t)
	const n = 6
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			s, err := Open(t.Context(), testURL(t), Options{Schema: schema, MaxConns: 1})
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	checkMigrations(t, open(t, schema))
}

func TestNewerSchema(t *testing.T) {
	t.Parallel()
	schema := freshSchema(t)
	s := open(t, schema)
	newer := len(migrations) + 1
	if err := s.withConn(t.Context(), "test", func(c *pgx.Conn) error {
		_, err := c.Exec(t.Context(), `INSERT INTO schema_migrations (version) VALUES ($1)`, newer)
		return err
	}); err != nil {
		t.Fatalf("insert version: %v", err)
	}
	s2, err := Open(t.Context(), testURL(t), Options{Schema: schema})
	if !errors.Is(err, store.ErrSchemaTooNew) {
		if s2 != nil {
			_ = s2.Close()
		}
		t.Fatalf("Open of a newer schema: %v, want ErrSchemaTooNew", err)
	}
	if got := queryInt(t, s, `SELECT MAX(version) FROM schema_migrations`); got != newer {
		t.Fatalf("schema version %d after the refused Open, want %d", got, newer)
	}
}

// TestSchemaIsolation: a store sees only the tables of its own schema.
func TestSchemaIsolation(t *testing.T) {
	t.Parallel()
	a, b := open(t, freshSchema(t)), open(t, freshSchema(t))
	if err := a.CreateThread(t.Context(), store.Thread{ID: "t1", UserID: "u", Title: "in a"}); err != nil {
		t.Fatalf("CreateThread: %v", err)
	}
	if _, err := b.GetThread(t.Context(), "u", "t1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetThread in another schema: %v, want ErrNotFound", err)
	}
	if err := b.CreateThread(t.Context(), store.Thread{ID: "t1", UserID: "u", Title: "in b"}); err != nil {
		t.Fatalf("CreateThread of the same id in another schema: %v", err)
	}
}

// TestNULAndInvalidUTF8 checks the documented policy: identifiers with a
// NUL byte or invalid UTF-8 are refused (ErrInvalid on writes, not found on
// reads); in free text each such byte or sequence becomes U+FFFD.
func TestNULAndInvalidUTF8(t *testing.T) {
	t.Parallel()
	s := open(t, freshSchema(t))
	c := t.Context()
	const u = "nul-user"
	th := store.Thread{ID: "nul-thread", UserID: u, Title: "a\x00b"}
	if err := s.CreateThread(c, th); err != nil {
		t.Fatalf("CreateThread with a NUL in the title: %v", err)
	}
	if got, err := s.GetThread(c, u, th.ID); err != nil || got.Title != "a\uFFFDb" {
		t.Fatalf("title %q, %v; want %q", got.Title, err, "a\uFFFDb")
	}

	contents := map[string]string{
		"json \u0000 escape": "json \uFFFD escape",
		"\x00\x00":           "\uFFFD\uFFFD",
		"bad \xff\xfe utf-8": "bad \uFFFD utf-8",
		"fine 👋":             "fine 👋",
	}
	i := 0
	for in := range contents {
		m := store.Message{ID: fmt.Sprint("m", i), ThreadID: th.ID, UserID: u, Role: store.RoleAssistant, Content: in,
			CreatedAt: time.Unix(int64(1000+i), 0)}
		if err := s.AddMessage(c, m); err != nil {
			t.Fatalf("AddMessage(%q): %v", in, err)
		}
		i++
	}
	msgs, _, err := s.ListMessages(c, u, th.ID, store.MessageQuery{})
	if err != nil || len(msgs) != len(contents) {
		t.Fatalf("ListMessages: %d messages, %v; want %d", len(msgs), err, len(contents))
	}
	var got, want []string
	for _, m := range msgs {
		got = append(got, m.Content)
	}
	for _, out := range contents {
		want = append(want, out)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("contents %q, want %q", got, want)
	}

	// A run's error message cannot keep it running.
	r := store.Run{ID: "nul-run", ThreadID: th.ID, UserID: u, Agent: "demo"}
	if err := s.CreateRun(c, r); err != nil {
		t.Fatalf("CreateRun: %v", err)
	}
	if err := s.FinishRun(c, store.Outcome{UserID: u, RunID: r.ID, Status: store.RunFailed, ErrorCode: "agent\x00failed", ErrorMessage: "boom\x00\xff"}); err != nil {
		t.Fatalf("FinishRun with a NUL in the error: %v", err)
	}
	if got, err := s.GetRun(c, u, r.ID); err != nil || got.ErrorCode != "agent\uFFFDfailed" || got.ErrorMessage != "boom\uFFFD\uFFFD" {
		t.Fatalf("run %+v, %v; want the error with U+FFFD", got, err)
	}

	// Identifiers.
	for name, err := range map[string]error{
		"CreateThread id":          s.CreateThread(c, store.Thread{ID: "t\x00", UserID: u, Title: "x"}),
		"CreateThread user":        s.CreateThread(c, store.Thread{ID: "t2", UserID: u + "\x00", Title: "x"}),
		"CreateThread invalid id":  s.CreateThread(c, store.Thread{ID: "t\xff", UserID: u, Title: "x"}),
		"AddMessage id":            s.AddMessage(c, store.Message{ID: "m\x00", ThreadID: th.ID, UserID: u, Role: store.RoleUser}),
		"AddMessage run id":        s.AddMessage(c, store.Message{ID: "m9", ThreadID: th.ID, UserID: u, Role: store.RoleUser, RunID: "\x00"}),
		"CreateRun agent":          s.CreateRun(c, store.Run{ID: "r2", ThreadID: th.ID, UserID: u, Agent: "a\x00"}),
		"CreateRun user message":   s.CreateRun(c, store.Run{ID: "r3", ThreadID: th.ID, UserID: u, Agent: "a", UserMessageID: "\x00"}),
		"ClaimIdempotencyKey key":  claimErr(s.ClaimIdempotencyKey(c, store.Claim{UserID: u, Key: "k\x00", Value: []byte("{}"), TTL: time.Minute, At: time.Now()})),
		"ClaimIdempotencyKey user": claimErr(s.ClaimIdempotencyKey(c, store.Claim{UserID: "\x00", Key: "k", Value: []byte("{}"), TTL: time.Minute, At: time.Now()})),
	} {
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s with a NUL or invalid UTF-8: %v, want ErrInvalid", name, err)
		}
	}
	if _, err := s.GetThread(c, u, th.ID+"\x00"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetThread with a NUL: %v, want ErrNotFound", err)
	}
	if _, _, err := s.ListMessages(c, u+"\x00", th.ID, store.MessageQuery{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ListMessages with a NUL: %v, want ErrNotFound", err)
	}
	if _, err := s.GetRun(c, u, r.ID+"\x00"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRun with a NUL: %v, want ErrNotFound", err)
	}
	if err := s.FinishRun(c, store.Outcome{UserID: u, RunID: r.ID + "\x00", Status: store.RunFailed}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("FinishRun with a NUL: %v, want ErrNotFound", err)
	}
	if list, _, err := s.ListThreads(c, u+"\x00", store.ThreadQuery{}); err != nil || len(list) != 0 {
		t.Errorf("ListThreads with a NUL: %d, %v; want none", len(list), err)
	}
	if list, err := s.ListRunning(c, "\xff"); err != nil || len(list) != 0 {
		t.Errorf("ListRunning with invalid UTF-8: %d, %v; want none", len(list), err)
	}
	if err := s.ReleaseIdempotencyKey(c, u, "k\x00"); err != nil {
		t.Errorf("ReleaseIdempotencyKey with a NUL: %v, want nil", err)
	}
	// Nothing of the refused calls landed.
	if n := queryInt(t, s, `SELECT COUNT(*) FROM threads`); n != 1 {
		t.Errorf("%d threads, want 1", n)
	}
	if n := queryInt(t, s, `SELECT COUNT(*) FROM runs`); n != 1 {
		t.Errorf("%d runs, want 1", n)
	}
}

func claimErr(_ []byte, _ bool, err error) error { return err }

func TestListAllRunning(t *testing.T) {
	t.Parallel()
	s := open(t, freshSchema(t))
	c := t.Context()
	if runs, err := s.ListAllRunning(c); err != nil || runs == nil || len(runs) != 0 {
		t.Fatalf("ListAllRunning of an empty store: %v, %v; want an empty slice", runs, err)
	}
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	var want []store.Run
	for i, u := range []string{"alice", "bob", "carol"} {
		th := store.Thread{ID: "t-" + u, UserID: u, Title: "t"}
		if err := s.CreateThread(c, th); err != nil {
			t.Fatalf("CreateThread: %v", err)
		}
		for j := range 2 {
			// Started interleaved across users: alice0 bob0 carol0 alice1 ...
			r := store.Run{ID: fmt.Sprintf("r-%s-%d", u, j), ThreadID: th.ID, UserID: u, Agent: "demo",
				UserMessageID: "m", StartedAt: t0.Add(time.Duration(3*j+i) * time.Second)}
			if err := s.CreateRun(c, r); err != nil {
				t.Fatalf("CreateRun: %v", err)
			}
			if u == "bob" && j == 0 {
				if err := s.FinishRun(c, store.Outcome{UserID: u, RunID: r.ID, Status: store.RunCompleted}); err != nil {
					t.Fatalf("FinishRun: %v", err)
				}
				continue
			}
			want = append(want, store.Run{ID: r.ID, ThreadID: th.ID, UserID: u, Agent: "demo", Status: store.RunRunning,
				UserMessageID: "m", StartedAt: r.StartedAt.UTC()})
		}
	}
	slices.SortFunc(want, func(a, b store.Run) int { return a.StartedAt.Compare(b.StartedAt) })
	got, err := s.ListAllRunning(c)
	if err != nil {
		t.Fatalf("ListAllRunning: %v", err)
	}
	if !slices.EqualFunc(got, want, func(a, b store.Run) bool {
		return a.ID == b.ID && a.UserID == b.UserID && a.ThreadID == b.ThreadID && a.Agent == b.Agent && a.Status == b.Status &&
			a.UserMessageID == b.UserMessageID && a.StartedAt.Equal(b.StartedAt) && a.StartedAt.Location() == time.UTC && a.EndedAt.IsZero()
	}) {
		t.Fatalf("ListAllRunning\n got %+v\nwant %+v", got, want)
	}
}

// TestUnreachable: a database that cannot be reached fails Open quickly with
// an error wrapping store.ErrUnavailable, whether it refuses the connection
// or accepts it and never answers.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	_ = l.Close()

	// A server that accepts and stays silent.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted []net.Conn
	wg.Go(func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = silent.Close()
		wg.Wait()
		for _, c := range accepted {
			_ = c.Close()
		}
	})

	for _, tc := range []struct {
		name, url string
		within    time.Duration
	}{
		{"refused", "postgres://postgres@" + refused + "/test?sslmode=disable", 2 * time.Second},
		{"silent", "postgres://postgres@" + silent.Addr().String() + "/test?sslmode=disable&connect_timeout=1", 3 * time.Second},
	} {
		start := time.Now()
		s, err := Open(t.Context(), tc.url, Options{Schema: "unused"})
		if s != nil {
			_ = s.Close()
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: Open: %v, want ErrUnavailable", tc.name, err)
		}
		if d := time.Since(start); d > tc.within {
			t.Errorf("%s: Open took %v, want under %v", tc.name, d, tc.within)
		}
	}
}

func TestDefaultConnectTimeout(t *testing.T) {
	t.Parallel()
	if DefaultConnectTimeout <= 0 || DefaultConnectTimeout > 10*time.Second {
		t.Fatalf("DefaultConnectTimeout %v, want a bound of a few seconds", DefaultConnectTimeout)
	}
}

// TestConnectionLoss: connections the server drops (restart, failover, idle
// timeout of a proxy) fail at most the call that meets them, with an error
// wrapping store.ErrUnavailable, and the store reconnects by itself.
func TestConnectionLoss(t *testing.T) {
	t.Parallel()
	var b [6]byte
	_, _ = rand.Read(b[:])
	app := "agentwire-test-" + hex.EncodeToString(b[:])
	u := testURL(t)
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	s, err := Open(t.Context(), u+sep+"application_name="+app, Options{Schema: freshSchema(t), MaxConns: 2})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	admin, err := pgx.Connect(t.Context(), u)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer func() { _ = admin.Close(context.Background()) }()
	var killed []int32
	if err := admin.QueryRow(t.Context(),
		`SELECT COALESCE(array_agg(pid), '{}') FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&killed); err != nil {
		t.Fatalf("pg_stat_activity: %v", err)
	}
	if _, err := admin.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid`, killed); err != nil {
		t.Fatalf("pg_terminate_backend: %v", err)
	}
	if len(killed) == 0 {
		t.Fatal("found no connection of the store to terminate")
	}
	// Wait until the terminated backends have exited (they leave
	// pg_stat_activity), not for a fixed time: a slow box may take longer.
	var left int
	if !testproc.WaitFor(30*time.Second, func() bool {
		err = admin.QueryRow(t.Context(), `SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ANY($1)`, killed).Scan(&left)
		return err == nil && left == 0
	}) {
		t.Fatalf("%d terminated backends still there after 30 s (last query error: %v)", left, err)
	}

	// The call finds its connection dead and runs again on a fresh one:
	// it is answered (no such thread), not refused.
	if _, err := s.GetThread(t.Context(), "u", "t"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("first call after the connection was lost: %v, want the answer ErrNotFound", err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping after reconnecting: %v", err)
	}
	if err := s.CreateThread(t.Context(), store.Thread{ID: "t", UserID: "u", Title: "back"}); err != nil {
		t.Fatalf("CreateThread after reconnecting: %v", err)
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	s := open(t, freshSchema(t))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for name, err := range map[string]error{
		"Ping":         s.Ping(t.Context()),
		"CreateThread": s.CreateThread(t.Context(), store.Thread{ID: "t", UserID: "u", Title: "x"}),
		"ListAllRunning": func() error {
			_, err := s.ListAllRunning(t.Context())
			return err
		}(),
	} {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s after Close: %v, want ErrUnavailable", name, err)
		}
	}
}

// TestCloseWaitsForCalls: Close returns after the calls in progress, which
// complete, and leaves no connection behind.
func TestCloseWaitsForCalls(t *testing.T) {
	t.Parallel()
	s := open(t, freshSchema(t))
	started := make(chan struct{})
	var wg sync.WaitGroup
	var callErr error
	wg.Go(func() {
		callErr = s.withConn(t.Context(), "sleep", func(c *pgx.Conn) error {
			close(started)
			_, err := c.Exec(t.Context(), `SELECT pg_sleep(0.3)`)
			return err
		})
	})
	<-started
	begin := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(begin); d < 200*time.Millisecond {
		t.Errorf("Close returned after %v, before the call in progress ended", d)
	}
	wg.Wait()
	if callErr != nil {
		t.Fatalf("call in progress during Close: %v", callErr)
	}
	if n := s.pool.Stat().TotalConns(); n != 0 {
		t.Fatalf("%d connections after Close", n)
	}
}

// TestCancelledQuery: a call whose context ends mid-query returns the
// context's error (not ErrUnavailable), and the broken connection is
// replaced.
func TestCancelledQuery(t *testing.T) {
	t.Parallel()
	s := open(t, freshSchema(t))
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := s.withConn(ctx, "sleep", func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `SELECT pg_sleep(5)`)
		return err
	})
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("cancelled query: %v, want the context's error", err)
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping after a cancelled query: %v", err)
	}
}

// TestConcurrentClaimsAcrossNodes: claimers on several stores (nodes) race
// for a free key, then for the same key once expired; each time exactly one
// wins and every other claimer gets the winner's value.
func TestConcurrentClaimsAcrossNodes(t *testing.T) {
	t.Parallel()
	schema := freshSchema(t)
	const nodes, perNode = 4, 5
	stores := make([]*Store, nodes)
	for i := range stores {
		stores[i] = open(t, schema)
	}
	const ttl = time.Minute
	now := time.Now()
	for round, at := range []time.Time{now, now.Add(ttl), now.Add(2*ttl + time.Millisecond)} {
		type result struct {
			existing []byte
			claimed  bool
			err      error
		}
		results := make([]result, nodes*perNode)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() {
				<-start
				ex, ok, err := stores[i%nodes].ClaimIdempotencyKey(t.Context(), store.Claim{UserID: "u", Key: "k", Value: fmt.Appendf(nil, "%d/%d", round, i), TTL: ttl, At: at})
				results[i] = result{ex, ok, err}
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, r := range results {
			switch {
			case r.err != nil:
				t.Fatalf("round %d: claim #%d: %v", round, i, r.err)
			case r.claimed && winner >= 0:
				t.Fatalf("round %d: claims #%d and #%d both won", round, winner, i)
			case r.claimed:
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no claim won", round)
		}
		for i, r := range results {
			if want := fmt.Sprintf("%d/%d", round, winner); !r.claimed && string(r.existing) != want {
				t.Errorf("round %d: claim #%d returned %q, want the winner's %q", round, i, r.existing, want)
			}
		}
	}
}

// TestConcurrentReapAcrossNodes: reapers on several stores (nodes) race to
// end the expired runs of a lost node; each run is returned exactly once,
// and runs without a lease (as left by schema version 1) count as expired.
func TestConcurrentReapAcrossNodes(t *testing.T) {
	t.Parallel()
	schema := freshSchema(t)
	const nodes, perNode, runs, limit = 4, 3, 60, 5
	stores := make([]*Store, nodes)
	for i := range stores {
		stores[i] = open(t, schema)
	}
	c := t.Context()
	if err := stores[0].CreateThread(c, store.Thread{ID: "t", UserID: "u", Title: "t"}); err != nil {
		t.Fatalf("CreateThread: %v", err)
	}
	now := time.Now()
	want := map[string]bool{}
	for i := range runs {
		r := store.Run{ID: fmt.Sprintf("r%02d", i), ThreadID: "t", UserID: "u", Agent: "demo", Node: "lost",
			LeaseUntil: now.Add(-time.Duration(i) * time.Second)}
		if i%10 == 0 {
			r.Node, r.LeaseUntil = "", time.Time{}
		}
		if err := stores[i%nodes].CreateRun(c, r); err != nil {
			t.Fatalf("CreateRun: %v", err)
		}
		want[r.ID] = true
	}
	if err := stores[0].CreateRun(c, store.Run{ID: "alive", ThreadID: "t", UserID: "u", Agent: "demo", Node: "n", LeaseUntil: now.Add(time.Minute)}); err != nil {
		t.Fatalf("CreateRun: %v", err)
	}
	var mu sync.Mutex
	got := map[string]int{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range nodes * perNode {
		wg.Go(func() {
			<-start
			for {
				reaped, err := stores[i%nodes].ReapExpired(c, store.Reap{Before: now, ErrorCode: "node_lost", ErrorMessage: "lost", Limit: limit})
				if err != nil || len(reaped) > limit {
					t.Errorf("reaper %d: %d runs, %v", i, len(reaped), err)
					return
				}
				if len(reaped) == 0 {
					return
				}
				mu.Lock()
				for _, r := range reaped {
					got[r.ID]++
				}
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	for id := range want {
		if got[id] != 1 {
			t.Errorf("run %s returned %d times, want once", id, got[id])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d runs reaped, want %d", len(got), len(want))
	}
	if r, err := stores[1].GetRun(c, "u", "alive"); err != nil || r.Status != store.RunRunning {
		t.Errorf("unexpired run: %+v, %v; want running", r, err)
	}
	if n := queryInt(t, stores[0], `SELECT COUNT(*) FROM runs WHERE status = 'running'`); n != 1 {
		t.Errorf("%d runs running after the reapers, want 1", n)
	}
}
