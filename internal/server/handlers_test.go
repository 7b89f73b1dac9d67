package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/time/rate"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/auth/tickets"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/runs"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/store/sqlite"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/protocol"
)

const unitSecret = "0123456789abcdef0123456789abcdef"

var discard = slog.New(slog.DiscardHandler)

// serve runs h on r and returns the recorded answer.
func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// asUser is r with the claims of user in its context, as requireUser leaves
// them.
func asUser(r *http.Request, user string) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), claimsKey{}, auth.Claims{Subject: user, ExpiresAt: time.Now().Add(time.Hour)}))
}

// wantJSON checks the status and the JSON headers of rec and decodes its
// body into v (nil: not decoded).
func wantJSON(t *testing.T, rec *httptest.ResponseRecorder, status int, v any) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d: %s", rec.Code, status, rec.Body)
	}
	if ct, cc := rec.Header().Get("Content-Type"), rec.Header().Get("Cache-Control"); ct != "application/json" || cc != "no-store" {
		t.Fatalf("Content-Type %q, Cache-Control %q", ct, cc)
	}
	if v != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
			t.Fatalf("body %q: %v", rec.Body, err)
		}
	}
}

// wantError checks that rec is the contract's error answer with status and
// code.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, code protocol.ErrorCode) {
	t.Helper()
	var body protocol.ErrorBody
	wantJSON(t, rec, status, &body)
	if body.Error.Code != code || body.Error.Message == "" {
		t.Fatalf("error %+v, want code %s and a message", body.Error, code)
	}
}

type verifierFunc func(ctx context.Context, token string) (auth.Claims, error)

func (f verifierFunc) Verify(ctx context.Context, token string) (auth.Claims, error) {
	return f(ctx, token)
}

// count reads the value of counter c.
func count(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func newFailures() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "auth_failures"}, []string{"reason"})
}

func TestRequireUser(t *testing.T) {
	t.Parallel()
	v := verifierFunc(func(_ context.Context, tok string) (auth.Claims, error) {
		switch tok {
		case "good":
			return auth.Claims{Subject: "alice"}, nil
		case "old":
			return auth.Claims{}, auth.ErrExpired
		}
		return auth.Claims{}, auth.ErrInvalid
	})
	var seen string
	h := requireUser(v, nil, newFailures())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = claimsFrom(r.Context()).Subject
		w.WriteHeader(http.StatusNoContent)
	}))
	for _, tc := range []struct {
		name, auth, msg string
	}{
		{"missing", "", "send Authorization: Bearer <JWT>"},
		{"not bearer", "Basic x", "send Authorization: Bearer <JWT>"},
		{"invalid", "Bearer bad", "invalid token"},
		{"expired", "Bearer old", "token expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/x", nil)
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			rec := serve(h, r)
			var body protocol.ErrorBody
			wantJSON(t, rec, http.StatusUnauthorized, &body)
			if body.Error.Code != protocol.CodeUnauthorized || body.Error.Message != tc.msg {
				t.Fatalf("error %+v, want unauthorized %q", body.Error, tc.msg)
			}
			if strings.Contains(rec.Body.String(), `\u003c`) {
				t.Fatalf("body %s escapes <", rec.Body)
			}
		})
	}
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	r.Header.Set("Authorization", "Bearer good")
	if rec := serve(h, r); rec.Code != http.StatusNoContent || seen != "alice" {
		t.Fatalf("valid token: status %d, user %q in context", rec.Code, seen)
	}
}

func TestRequireUserCountsFailures(t *testing.T) {
	t.Parallel()
	failures := newFailures()
	h := requireUser(verifierFunc(func(context.Context, string) (auth.Claims, error) {
		return auth.Claims{}, auth.ErrExpired
	}), nil, failures)(http.NotFoundHandler())
	serve(h, httptest.NewRequest(http.MethodGet, "/x", nil))
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	r.Header.Set("Authorization", "Bearer t")
	serve(h, r)
	if n := count(t, failures.WithLabelValues("missing")); n != 1 {
		t.Fatalf("missing failures %v, want 1", n)
	}
	if n := count(t, failures.WithLabelValues(auth.Reason(auth.ErrExpired))); n != 1 {
		t.Fatalf("expired failures %v, want 1", n)
	}
}

func TestRequireAPIKey(t *testing.T) {
	t.Parallel()
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for _, tc := range []struct {
		name   string
		keys   *auth.APIKeys
		header string
		status int
	}{
		{"right key", auth.NewAPIKeys([]string{"k1", "k2"}), "Bearer k2", http.StatusNoContent},
		{"wrong key", auth.NewAPIKeys([]string{"k1"}), "Bearer k2", http.StatusUnauthorized},
		{"no header", auth.NewAPIKeys([]string{"k1"}), "", http.StatusUnauthorized},
		{"no keys configured", nil, "Bearer k1", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failures := newFailures()
			r := httptest.NewRequest(http.MethodPost, "/api/v1/publish", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			rec := serve(requireAPIKey(tc.keys, failures)(next), r)
			if tc.status != http.StatusUnauthorized {
				if rec.Code != tc.status {
					t.Fatalf("status %d, want %d", rec.Code, tc.status)
				}
				return
			}
			wantError(t, rec, http.StatusUnauthorized, protocol.CodeUnauthorized)
			if n := count(t, failures.WithLabelValues("api_key")); n != 1 {
				t.Fatalf("api_key failures %v, want 1", n)
			}
		})
	}
}

// TestAuthRefusedOnEveryRoute sends each authenticated route of NewServer a
// request without credentials: the middleware refuses it before the
// handler (whose backends are nil here) runs.
func TestAuthRefusedOnEveryRoute(t *testing.T) {
	t.Parallel()
	h := NewServer(Deps{Metrics: metrics.New(), Verifier: verifierFunc(func(context.Context, string) (auth.Claims, error) {
		return auth.Claims{}, auth.ErrInvalid
	}), WS: http.NotFoundHandler()})
	for _, route := range []string{
		"POST /api/v1/tickets", "GET /api/v1/events", "GET /api/v1/threads",
		"GET /api/v1/threads/t1/messages", "GET /api/v1/runs/r1", "POST /api/v1/publish",
	} {
		method, path, _ := strings.Cut(route, " ")
		for _, hdr := range []string{"", "Bearer nope"} {
			r := httptest.NewRequest(method, path, strings.NewReader("{}"))
			if hdr != "" {
				r.Header.Set("Authorization", hdr)
			}
			rec := serve(h, r)
			wantError(t, rec, http.StatusUnauthorized, protocol.CodeUnauthorized)
			if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("%s: no X-Content-Type-Options", route)
			}
		}
	}
}

func TestLimitReads(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	h := limitReads(1)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if claimsFrom(r.Context()).Subject == "alice" {
			entered <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	var wg sync.WaitGroup
	wg.Go(func() { serve(h, asUser(httptest.NewRequest(http.MethodGet, "/x", nil), "alice")) })
	<-entered

	rec := serve(h, asUser(httptest.NewRequest(http.MethodGet, "/x", nil), "alice"))
	wantError(t, rec, http.StatusTooManyRequests, protocol.CodeTooManyRequests)
	if ra := rec.Header().Get("Retry-After"); ra != "1" {
		t.Fatalf("Retry-After %q, want 1", ra)
	}
	if rec := serve(h, asUser(httptest.NewRequest(http.MethodGet, "/x", nil), "bob")); rec.Code != http.StatusNoContent {
		t.Fatalf("another user: status %d, want 204", rec.Code)
	}
	close(release)
	wg.Wait()
	go func() { <-entered }() // the slot is free again
	if rec := serve(h, asUser(httptest.NewRequest(http.MethodGet, "/x", nil), "alice")); rec.Code != http.StatusNoContent {
		t.Fatalf("after release: status %d, want 204", rec.Code)
	}
}

func TestHandleNotFoundAndMethodNotAllowed(t *testing.T) {
	t.Parallel()
	wantError(t, serve(handleNotFound(), httptest.NewRequest(http.MethodGet, "/nope", nil)), http.StatusNotFound, protocol.CodeNotFound)
	rec := serve(handleMethodNotAllowed("POST"), httptest.NewRequest(http.MethodGet, "/api/v1/tickets", nil))
	wantError(t, rec, http.StatusMethodNotAllowed, protocol.CodeMethodNotAllowed)
	if rec.Header().Get("Allow") != "POST" {
		t.Fatalf("Allow %q, want POST", rec.Header().Get("Allow"))
	}
}

func TestHandleConfig(t *testing.T) {
	t.Parallel()
	for _, dev := range []bool{false, true} {
		var body struct{ Dev *bool }
		wantJSON(t, serve(handleConfig(dev), httptest.NewRequest(http.MethodGet, "/api/v1/config", nil)), http.StatusOK, &body)
		if body.Dev == nil || *body.Dev != dev {
			t.Fatalf("dev %v: body %+v", dev, body)
		}
	}
}

func TestHandleHealthz(t *testing.T) {
	t.Parallel()
	var body map[string]string
	wantJSON(t, serve(handleHealthz(), httptest.NewRequest(http.MethodGet, "/healthz", nil)), http.StatusOK, &body)
	if body["status"] != "ok" {
		t.Fatalf("body %v", body)
	}
}

type pingFunc func(context.Context) error

func (f pingFunc) Ping(ctx context.Context) error { return f(ctx) }

func TestHandleReadyz(t *testing.T) {
	t.Parallel()
	up := pingFunc(func(context.Context) error { return nil })
	down := pingFunc(func(context.Context) error { return errors.New("down") })
	yes := func() bool { return true }
	failed := func() error { return errors.New("fetch failed") }
	for _, tc := range []struct {
		name      string
		st, db    pinger
		draining  func() bool
		jwks      func() error
		status    int
		wantCheck map[string]string
	}{
		{"ready", up, up, nil, nil, 200, map[string]string{"stream": "ok", "store": "ok"}},
		{"stream down", down, up, nil, nil, 503, map[string]string{"stream": "unreachable", "store": "ok"}},
		{"store down", up, down, nil, nil, 503, map[string]string{"stream": "ok", "store": "unreachable"}},
		{"draining", up, up, yes, nil, 503, map[string]string{"stream": "ok", "store": "ok", "process": "draining"}},
		{"jwks fine", up, up, nil, func() error { return nil }, 200, map[string]string{"stream": "ok", "store": "ok", "jwks": "ok"}},
		{"jwks failing is detail only", up, up, nil, failed, 200, map[string]string{"stream": "ok", "store": "ok", "jwks": "last fetch failed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body struct {
				Status string
				Checks map[string]string
			}
			wantJSON(t, serve(handleReadyz(tc.st, tc.db, tc.draining, tc.jwks), httptest.NewRequest(http.MethodGet, "/readyz", nil)), tc.status, &body)
			wantStatus := map[int]string{200: "ok", 503: "unavailable"}[tc.status]
			if body.Status != wantStatus || len(body.Checks) != len(tc.wantCheck) {
				t.Fatalf("body %+v, want status %s and checks %v", body, wantStatus, tc.wantCheck)
			}
			for k, v := range tc.wantCheck {
				if body.Checks[k] != v {
					t.Fatalf("check %s = %q, want %q", k, body.Checks[k], v)
				}
			}
		})
	}
}

// failingTickets is a ticket store whose backend is down.
type failingTickets struct{ tickets.Store }

func (failingTickets) Issue(context.Context, auth.Claims) (string, time.Time, error) {
	return "", time.Time{}, errors.New("redis down")
}

func TestHandleTickets(t *testing.T) {
	t.Parallel()
	mem := tickets.NewMemory(30*time.Second, nil)
	r := asUser(httptest.NewRequest(http.MethodPost, "/api/v1/tickets", nil), "alice")
	var body protocol.Ticket
	wantJSON(t, serve(handleTickets(mem, discard), r), http.StatusOK, &body)
	if body.Ticket == "" || body.ExpiresAt.Location() != time.UTC || !body.ExpiresAt.After(time.Now()) {
		t.Fatalf("ticket %+v", body)
	}
	if c, err := mem.Redeem(context.Background(), body.Ticket); err != nil || c.Subject != "alice" {
		t.Fatalf("redeem: %+v, %v", c, err)
	}

	// Claims already expired cannot be exchanged.
	expired := r.WithContext(context.WithValue(context.Background(), claimsKey{}, auth.Claims{Subject: "alice", ExpiresAt: time.Now().Add(-time.Minute)}))
	wantError(t, serve(handleTickets(mem, discard), expired), http.StatusUnauthorized, protocol.CodeUnauthorized)

	wantError(t, serve(handleTickets(failingTickets{}, discard), r), http.StatusServiceUnavailable, protocol.CodeUnavailable)
}

// newStream is a memory stream holding n published events of user.
func newStream(t *testing.T, user string, n int) *memory.Stream {
	t.Helper()
	st := memory.New(memory.Options{})
	for range n {
		if _, err := st.Append(context.Background(), user, stream.Record{Type: "note", Data: json.RawMessage(`{"a":"<b>"}`)}); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// failingStream is a stream whose backend is down.
type failingStream struct{ stream.Stream }

func (failingStream) Since(context.Context, string, protocol.Cursor, stream.Limit) ([]stream.Event, stream.Position, error) {
	return nil, stream.Position{}, errors.New("down")
}

func (failingStream) Append(context.Context, string, stream.Record) (stream.Event, error) {
	return stream.Event{}, errors.New("down")
}

func TestHandleEvents(t *testing.T) {
	t.Parallel()
	st := newStream(t, "alice", 3)
	h := handleEvents(st, discard)
	get := func(query string) *httptest.ResponseRecorder {
		return serve(h, asUser(httptest.NewRequest(http.MethodGet, "/api/v1/events"+query, nil), "alice"))
	}
	type page struct {
		Epoch          string            `json:"epoch"`
		HeadSeq        uint64            `json:"head_seq"`
		Events         []json.RawMessage `json:"events"`
		Next           *uint64           `json:"next"`
		ResyncRequired bool              `json:"resync_required"`
		Reason         string            `json:"reason"`
	}

	var all page
	wantJSON(t, get(""), http.StatusOK, &all)
	if all.Epoch == "" || all.HeadSeq != 3 || len(all.Events) != 3 || all.Next != nil || all.ResyncRequired {
		t.Fatalf("all: %+v", all)
	}
	var ev struct {
		Type string
		Seq  uint64
		Data map[string]string
	}
	if err := json.Unmarshal(all.Events[2], &ev); err != nil || ev.Type != "note" || ev.Seq != 3 || ev.Data["a"] != "<b>" {
		t.Fatalf("event %s: %+v %v", all.Events[2], ev, err)
	}

	var first page
	wantJSON(t, get("?limit=2"), http.StatusOK, &first)
	if len(first.Events) != 2 || first.Next == nil || *first.Next != 2 {
		t.Fatalf("limit=2: %+v", first)
	}
	var rest page
	wantJSON(t, get("?limit=2&since=2&epoch="+all.Epoch), http.StatusOK, &rest)
	if len(rest.Events) != 1 || rest.Next != nil {
		t.Fatalf("since=2: %+v", rest)
	}

	var resync page
	wantJSON(t, get("?since=1&epoch=other"), http.StatusOK, &resync)
	if !resync.ResyncRequired || resync.Reason == "" || len(resync.Events) != 0 || resync.HeadSeq != 3 || resync.Epoch != all.Epoch {
		t.Fatalf("resync: %+v", resync)
	}

	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?since=-1", "?since=x"} {
		wantError(t, get(q), http.StatusBadRequest, protocol.CodeInvalidRequest)
	}

	r := asUser(httptest.NewRequest(http.MethodGet, "/api/v1/events", nil), "alice")
	wantError(t, serve(handleEvents(failingStream{}, discard), r), http.StatusServiceUnavailable, protocol.CodeUnavailable)
}

// newStore is a SQLite store in t.TempDir() with one thread of alice
// holding two messages and one run.
func newStore(t *testing.T) (db store.Store, threadID, runID string) {
	t.Helper()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	t0 := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	if err := s.CreateThread(ctx, store.Thread{ID: "th1", UserID: "alice", Title: "first <thread>", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	for i, role := range []string{store.RoleUser, store.RoleAssistant} {
		m := store.Message{ID: []string{"m1", "m2"}[i], ThreadID: "th1", UserID: "alice", Role: role, Content: "hi", CreatedAt: t0.Add(time.Duration(i) * time.Millisecond)}
		if err := s.AddMessage(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateRun(ctx, store.Run{ID: "r1", ThreadID: "th1", UserID: "alice", Agent: "echo", Status: store.RunRunning, UserMessageID: "m1", StartedAt: t0}); err != nil {
		t.Fatal(err)
	}
	return s, "th1", "r1"
}

// failingStore is a store whose backend is down.
type failingStore struct{ store.Store }

func (failingStore) ListThreads(context.Context, string, store.ThreadQuery) ([]store.Thread, bool, error) {
	return nil, false, errors.New("down")
}

func (failingStore) ListMessages(context.Context, string, string, store.MessageQuery) ([]store.Message, bool, error) {
	return nil, false, errors.New("down")
}

func (failingStore) GetRun(context.Context, string, string) (store.Run, error) {
	return store.Run{}, errors.New("down")
}

func TestHandleThreads(t *testing.T) {
	t.Parallel()
	db, threadID, _ := newStore(t)
	get := func(db store.Store, user, query string) *httptest.ResponseRecorder {
		return serve(handleThreads(db, discard), asUser(httptest.NewRequest(http.MethodGet, "/api/v1/threads"+query, nil), user))
	}
	var page protocol.ThreadsPage
	rec := get(db, "alice", "")
	wantJSON(t, rec, http.StatusOK, &page)
	if len(page.Threads) != 1 || page.Threads[0].ID != threadID || page.Threads[0].Title != "first <thread>" || page.Next != "" || page.HasMore {
		t.Fatalf("page %s", rec.Body)
	}
	page = protocol.ThreadsPage{}
	wantJSON(t, get(db, "bob", ""), http.StatusOK, &page)
	if len(page.Threads) != 0 {
		t.Fatalf("bob sees %+v", page.Threads)
	}
	wantError(t, get(db, "alice", "?limit=0"), http.StatusBadRequest, protocol.CodeInvalidRequest)
	wantError(t, get(db, "alice", "?after=%21%21"), http.StatusBadRequest, protocol.CodeInvalidRequest)
	wantError(t, get(failingStore{}, "alice", ""), http.StatusServiceUnavailable, protocol.CodeUnavailable)
}

func TestHandleMessages(t *testing.T) {
	t.Parallel()
	db, threadID, _ := newStore(t)
	get := func(db store.Store, user, id, query string) *httptest.ResponseRecorder {
		r := asUser(httptest.NewRequest(http.MethodGet, "/api/v1/threads/"+id+"/messages"+query, nil), user)
		r.SetPathValue("id", id)
		return serve(handleMessages(db, discard), r)
	}
	var page protocol.MessagesPage
	wantJSON(t, get(db, "alice", threadID, "?limit=1"), http.StatusOK, &page)
	if len(page.Messages) != 1 || page.Messages[0].ID != "m1" || page.Messages[0].Role != store.RoleUser || page.Next != "m1" || !page.HasMore {
		t.Fatalf("first page %+v", page)
	}
	page = protocol.MessagesPage{} // null leaves a field as it was
	wantJSON(t, get(db, "alice", threadID, "?after=m1"), http.StatusOK, &page)
	if len(page.Messages) != 1 || page.Messages[0].ID != "m2" || page.Next != "" || page.HasMore {
		t.Fatalf("second page %+v", page)
	}
	wantError(t, get(db, "bob", threadID, ""), http.StatusNotFound, protocol.CodeNotFound)
	wantError(t, get(db, "alice", "nope", ""), http.StatusNotFound, protocol.CodeNotFound)
	wantError(t, get(db, "alice", threadID, "?after=m1&before=m2"), http.StatusBadRequest, protocol.CodeInvalidRequest)
	wantError(t, get(db, "alice", threadID, "?after=zzz"), http.StatusBadRequest, protocol.CodeInvalidRequest)
	wantError(t, get(db, "alice", threadID, "?limit=1001"), http.StatusBadRequest, protocol.CodeInvalidRequest)
	wantError(t, get(failingStore{}, "alice", threadID, ""), http.StatusServiceUnavailable, protocol.CodeUnavailable)
}

func TestHandleRun(t *testing.T) {
	t.Parallel()
	db, threadID, runID := newStore(t)
	get := func(db store.Store, user, id string) *httptest.ResponseRecorder {
		r := asUser(httptest.NewRequest(http.MethodGet, "/api/v1/runs/"+id, nil), user)
		r.SetPathValue("id", id)
		return serve(handleRun(db, discard), r)
	}
	var run protocol.Run
	wantJSON(t, get(db, "alice", runID), http.StatusOK, &run)
	if run.ID != runID || run.ThreadID != threadID || run.Status != string(store.RunRunning) || run.Agent != "echo" || run.EndedAt != nil || run.StartedAt.IsZero() || run.Usage != nil {
		t.Fatalf("run %+v", run)
	}
	if err := db.FinishRun(context.Background(), store.Outcome{UserID: "alice", RunID: runID, Status: store.RunFailed, EndedAt: time.Now(), ErrorCode: "agent_failed", ErrorMessage: "boom",
		InputTokens: 12, OutputTokens: 3}); err != nil {
		t.Fatal(err)
	}
	wantJSON(t, get(db, "alice", runID), http.StatusOK, &run)
	if run.EndedAt == nil || run.ErrorCode != "agent_failed" || run.ErrorMessage != "boom" || run.Usage == nil || *run.Usage != (protocol.Usage{InputTokens: 12, OutputTokens: 3}) {
		t.Fatalf("finished run %+v", run)
	}
	wantError(t, get(db, "bob", runID), http.StatusNotFound, protocol.CodeNotFound)
	wantError(t, get(db, "alice", "nope"), http.StatusNotFound, protocol.CodeNotFound)
	wantError(t, get(failingStore{}, "alice", runID), http.StatusServiceUnavailable, protocol.CodeUnavailable)
}

type publishFunc func(user, runID, typ string, data json.RawMessage) (stream.Event, error)

func (f publishFunc) Publish(user, runID, typ string, data json.RawMessage) (stream.Event, error) {
	return f(user, runID, typ, data)
}

func TestHandlePublish(t *testing.T) {
	t.Parallel()
	st := newStream(t, "alice", 0)
	var toRun []string
	rn := publishFunc(func(user, runID, typ string, data json.RawMessage) (stream.Event, error) {
		switch runID {
		case "done":
			return stream.Event{}, runs.ErrNotRunning
		case "bad":
			return stream.Event{}, runs.ErrBadEvent
		case "down":
			return stream.Event{}, errors.New("down")
		}
		toRun = append(toRun, user+" "+runID+" "+typ+" "+string(data))
		return stream.Event{Seq: 7, Epoch: "e"}, nil
	})
	published := prometheus.NewCounter(prometheus.CounterOpts{Name: "published"})
	post := func(st stream.Stream, body string) *httptest.ResponseRecorder {
		return serve(handlePublish(st, rn, published, discard), httptest.NewRequest(http.MethodPost, "/api/v1/publish", strings.NewReader(body)))
	}

	var resp protocol.PublishResponse
	wantJSON(t, post(st, `{"user_id":"alice","type":"note","data":{ "a" : 1 }}`), http.StatusOK, &resp)
	if resp.Seq != 1 || resp.Epoch == "" {
		t.Fatalf("response %+v", resp)
	}
	evs, _, err := st.Since(context.Background(), "alice", protocol.Cursor{}, stream.Limit{MaxEvents: 10})
	if err != nil || len(evs) != 1 || !strings.Contains(string(evs[0].Frame), `"data":{"a":1}`) {
		t.Fatalf("stream holds %v, %v", evs, err)
	}
	wantJSON(t, post(st, `{"user_id":"alice","type":"agent_completed","run_id":"r1"}`), http.StatusOK, &resp)
	if resp.Seq != 7 || len(toRun) != 1 || toRun[0] != "alice r1 agent_completed " {
		t.Fatalf("to run: %+v %q", resp, toRun)
	}
	if n := count(t, published); n != 2 {
		t.Fatalf("published %v, want 2", n)
	}

	for _, tc := range []struct {
		name, body string
		status     int
		code       protocol.ErrorCode
	}{
		{"not JSON", `{`, 400, protocol.CodeBadJSON},
		{"trailing data", `{"user_id":"alice","type":"note"} {}`, 400, protocol.CodeBadJSON},
		{"not UTF-8", "{\"user_id\":\"alice\",\"type\":\"note\",\"data\":{\"a\":\"\xff\"}}", 400, protocol.CodeInvalidJSON},
		{"too large", `{"user_id":"` + strings.Repeat("a", 130<<10) + `"}`, 413, protocol.CodeTooLarge},
		{"no user", `{"type":"note"}`, 400, protocol.CodeInvalidRequest},
		{"control character", `{"user_id":"a\u0001","type":"note"}`, 400, protocol.CodeInvalidRequest},
		{"bad type", `{"user_id":"alice","type":"Note"}`, 400, protocol.CodeInvalidRequest},
		{"long key", `{"user_id":"alice","type":"note","thread_id":"` + strings.Repeat("t", 129) + `"}`, 400, protocol.CodeInvalidRequest},
		{"data too large", `{"user_id":"alice","type":"note","data":{"a":"` + strings.Repeat("d", 65<<10) + `"}}`, 413, protocol.CodeTooLarge},
		{"data not an object", `{"user_id":"alice","type":"note","data":[1]}`, 400, protocol.CodeInvalidRequest},
		{"agent event without run", `{"user_id":"alice","type":"agent_completed"}`, 409, protocol.CodeReservedType},
		{"run not running", `{"user_id":"alice","type":"agent_completed","run_id":"done"}`, 409, protocol.CodeRunNotRunning},
		{"bad run event", `{"user_id":"alice","type":"agent_completed","run_id":"bad"}`, 400, protocol.CodeInvalidRequest},
		{"run publish fails", `{"user_id":"alice","type":"agent_completed","run_id":"down"}`, 503, protocol.CodeUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, post(st, tc.body), tc.status, tc.code)
		})
	}
	wantError(t, post(failingStream{}, `{"user_id":"alice","type":"note"}`), http.StatusServiceUnavailable, protocol.CodeUnavailable)
	if n := count(t, published); n != 2 {
		t.Fatalf("published %v after refusals, want 2", n)
	}
}

func TestHandleDevLogin(t *testing.T) {
	t.Parallel()
	signer := auth.NewSigner([]byte(unitSecret))
	post := func(signer *auth.Signer, body string) *httptest.ResponseRecorder {
		return serve(handleDevLogin(signer, time.Hour, "iss", "aud"), httptest.NewRequest(http.MethodPost, "/auth/dev-login", strings.NewReader(body)))
	}
	var resp protocol.DevLoginResponse
	wantJSON(t, post(signer, `{"user_id":"alice"}`), http.StatusOK, &resp)
	v, err := auth.NewVerifier(context.Background(), auth.Config{Secret: []byte(unitSecret), Issuer: "iss", Audience: "aud"})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(context.Background(), resp.Token); err != nil || c.Subject != "alice" || !c.ExpiresAt.Equal(resp.ExpiresAt) {
		t.Fatalf("token of %+v: %+v, %v", resp, c, err)
	}
	wantError(t, post(signer, `{"user_id":"a b"}`), http.StatusBadRequest, protocol.CodeInvalidRequest)
	wantError(t, post(signer, `nope`), http.StatusBadRequest, protocol.CodeBadJSON)
	wantError(t, post(nil, `{"user_id":"alice"}`), http.StatusNotImplemented, protocol.CodeNoSigningKey)
}

// TestCORSOnBrowserTransports: the SSE stream and sending over plain HTTP
// answer preflights from an allowed origin with their method, refuse
// another origin with 403 forbidden_origin before authenticating, and
// give an allowed origin Access-Control-Allow-Origin on the real request.
func TestCORSOnBrowserTransports(t *testing.T) {
	t.Parallel()
	const allowed = "https://app.example"
	h := NewServer(Deps{Metrics: metrics.New(),
		Verifier:      verifierFunc(func(context.Context, string) (auth.Claims, error) { return auth.Claims{}, auth.ErrInvalid }),
		WS:            http.NotFoundHandler(),
		SSE:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }),
		OriginAllowed: func(r *http.Request) bool { return r.Header.Get("Origin") == allowed },
	})
	for _, c := range []struct{ path, method string }{
		{"/api/v1/stream", "GET"}, {"/api/v1/messages", "POST"}, {"/api/v1/runs/r1/stop", "POST"},
	} {
		pre := httptest.NewRequest(http.MethodOptions, c.path, nil)
		pre.Header.Set("Origin", allowed)
		pre.Header.Set("Access-Control-Request-Method", c.method)
		rec := serve(h, pre)
		if rec.Code != http.StatusNoContent || rec.Header().Get("Access-Control-Allow-Origin") != allowed ||
			rec.Header().Get("Access-Control-Allow-Methods") != c.method ||
			!strings.Contains(rec.Header().Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Errorf("preflight %s: %d %v", c.path, rec.Code, rec.Header())
		}
		foreign := httptest.NewRequest(c.method, c.path, strings.NewReader("{}"))
		foreign.Header.Set("Origin", "https://elsewhere.example")
		wantError(t, serve(h, foreign), http.StatusForbidden, protocol.CodeForbiddenOrigin)
		real := httptest.NewRequest(c.method, c.path, strings.NewReader("{}"))
		real.Header.Set("Origin", allowed)
		if rec := serve(h, real); rec.Header().Get("Access-Control-Allow-Origin") != allowed {
			t.Errorf("%s %s from an allowed origin: %d, no Access-Control-Allow-Origin", c.method, c.path, rec.Code)
		}
	}
}

// TestLimitRate: a user's sends beyond the burst are refused 429
// rate_limited with Retry-After, counted, and change nothing; another user
// has a bucket of their own; the bucket refills with time, and buckets of
// users gone idle are forgotten.
func TestLimitRate(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "refused"})
		var served sync.Map
		h := limitRate(1, 2, refused)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := served.LoadOrStore(claimsFrom(r.Context()).Subject, new(int))
			*n.(*int)++
			w.WriteHeader(http.StatusNoContent)
		}))
		send := func(user string) *httptest.ResponseRecorder {
			return serve(h, asUser(httptest.NewRequest(http.MethodPost, "/api/v1/messages", nil), user))
		}
		for i := range 2 {
			if rec := send("ann"); rec.Code != http.StatusNoContent {
				t.Fatalf("send %d within the burst: %d", i+1, rec.Code)
			}
		}
		rec := send("ann")
		wantError(t, rec, http.StatusTooManyRequests, protocol.CodeRateLimited)
		if rec.Header().Get("Retry-After") != "1" || count(t, refused) != 1 {
			t.Fatalf("refusal: Retry-After %q, counted %v", rec.Header().Get("Retry-After"), count(t, refused))
		}
		if n, _ := served.Load("ann"); *n.(*int) != 2 {
			t.Fatalf("the refused send reached the handler")
		}
		if rec := send("bob"); rec.Code != http.StatusNoContent {
			t.Fatalf("another user refused: %d", rec.Code)
		}
		time.Sleep(time.Second)
		if rec := send("ann"); rec.Code != http.StatusNoContent {
			t.Fatalf("after a second: %d", rec.Code)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		l := &rateLimiter{limit: 10, burst: 5, users: map[string]*rate.Limiter{}}
		for i := range 1000 {
			l.allow(fmt.Sprint("user", i), time.Now())
		}
		time.Sleep(time.Second) // 5 tokens at 10/s: full again after 0.5 s
		l.allow("last", time.Now())
		if len(l.users) != 1 {
			t.Fatalf("%d buckets kept after every other user went idle, want 1", len(l.users))
		}
	})
}
