package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/agui"
	"github.com/agentwire/agentwire/internal/agui/aguitest"
	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/runs"
	"github.com/agentwire/agentwire/internal/server"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/internal/store/sqlite"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/internal/stream/memory"
	"github.com/agentwire/agentwire/internal/ws"
	"github.com/agentwire/agentwire/protocol"
)

// scripted is an agent that thinks, calls a tool, streams "Hello, " and
// "world.", waiting between the two deltas for gate (nil: no wait), and
// completes. A message containing "fail" fails instead.
type scripted struct{ gate chan struct{} }

func (scripted) Name() string { return "scripted" }

func (s scripted) Run(ctx context.Context, run agent.Run, em agent.Emitter) error {
	if strings.Contains(run.Messages[len(run.Messages)-1].Content, "fail") {
		return em.Fail(protocol.CodeAgentFailed, "failed on purpose")
	}
	steps := []func() error{
		func() error { return em.Thinking("thinking") },
		func() error {
			return em.ToolExecuting("tc-"+run.ID, "calculator", map[string]string{"expression": "1+1"})
		},
		func() error {
			return em.ToolCompleted(agent.ToolResult{CallID: "tc-" + run.ID, Tool: "calculator", OK: true, Result: 2})
		},
		func() error { return em.Delta("Hello, ") },
	}
	for _, st := range steps {
		if err := st(); err != nil {
			return err
		}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := em.Delta("world."); err != nil {
		return err
	}
	return em.Complete("")
}

// aguiEnv is NewServer with the AG-UI endpoints over a memory stream, a
// SQLite store and a runs manager running agent a.
type aguiEnv struct {
	t      *testing.T
	url    string
	signer *auth.Signer
	stream *memory.Stream
	ws     *ws.Server // the admission of the AG-UI responses (Deps.Place)
	m      *metrics.Metrics
}

// checkResumes checks agentwire_resumes_total by result.
func (e *aguiEnv) checkResumes(replayed, resync float64) {
	e.t.Helper()
	for _, c := range []struct {
		name string
		c    prometheus.Counter
		want float64
	}{{"replayed", e.m.ResumeReplayed, replayed}, {"resync", e.m.ResumeResync, resync}} {
		var m dto.Metric
		_ = c.c.Write(&m)
		if got := m.GetCounter().GetValue(); got != c.want {
			e.t.Errorf("resumes %s: %v, want %v", c.name, got, c.want)
		}
	}
}

// aguiOpts tune newAGUI; zero values take the defaults.
type aguiOpts struct {
	retention         stream.Retention
	maxConns, maxRuns int
	heartbeat         time.Duration
}

func newAGUI(t *testing.T, a agent.Agent, o aguiOpts) *aguiEnv {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New(memory.Options{Retention: o.retention})
	m := metrics.New()
	rm := runs.New(runs.Config{Stream: st, Store: db, Agent: a, MaxPerUser: o.maxRuns})
	h := hub.New(hub.Config{Stream: st, Metrics: m, MaxConnsPerUser: o.maxConns})
	v, err := auth.NewVerifier(ctx, auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	wss := ws.New(ws.Config{Hub: h, Metrics: m})
	d := server.Deps{Metrics: m, Store: db, Stream: st, Runs: rm, Verifier: v, WS: wss, Hub: h, Place: wss.Place, SSEHeartbeat: o.heartbeat}
	ts := httptest.NewServer(server.NewServer(d))
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Every response placed has ended and given its place back, or
		// Shutdown's wait would not end.
		if err := wss.Shutdown(sctx); err != nil {
			t.Errorf("ws shutdown: %v", err)
		}
		ts.Close()
		rm.Shutdown(sctx)
		_ = db.Close()
		_ = st.Close()
	})
	return &aguiEnv{t: t, url: ts.URL, signer: auth.NewSigner([]byte(testSecret)), stream: st, ws: wss, m: m}
}

// post sends body to path as user with extra headers; the caller closes
// the response.
func (e *aguiEnv) post(ctx context.Context, user, path string, body any, header ...string) *http.Response {
	e.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+path, bytes.NewReader(b))
	tok, _, err := e.signer.Sign(user, time.Hour, "", "")
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp
}

// read checks that resp is an event stream and reads its AG-UI events
// until stop holds for one (nil: to the end).
func read(t *testing.T, resp *http.Response, stop func(agui.Event) bool) []aguitest.Item {
	t.Helper()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return aguitest.Read(t, sse.NewReader(resp.Body, 0), stop)
}

func typesOf(evs []aguitest.Item) string { return strings.Join(aguitest.Types(evs), " ") }

func input(thread, msgID, content string) agui.RunAgentInput {
	return agui.RunAgentInput{ThreadID: thread, RunID: "client-run", Messages: []agui.Message{{ID: msgID, Role: agui.RoleUser, Content: agui.String(content)}}}
}

func TestAGUIRunStreamsTheRun(t *testing.T) {
	t.Parallel()
	e := newAGUI(t, scripted{}, aguiOpts{})
	resp := e.post(t.Context(), "alice", "/api/v1/agui", input("thread-1", "m1", "hi"))
	defer resp.Body.Close()
	if resp.Header.Get("X-Accel-Buffering") != "no" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("headers %v", resp.Header)
	}
	evs := read(t, resp, nil)
	want := "RUN_STARTED REASONING_MESSAGE_START REASONING_MESSAGE_CONTENT REASONING_MESSAGE_END " +
		"TOOL_CALL_START TOOL_CALL_ARGS TOOL_CALL_END TOOL_CALL_RESULT " +
		"TEXT_MESSAGE_START TEXT_MESSAGE_CONTENT TEXT_MESSAGE_CONTENT TEXT_MESSAGE_END RUN_FINISHED"
	if got := typesOf(evs); got != want {
		t.Fatalf("events\n%s\nwant\n%s", got, want)
	}
	if evs[0].ThreadID != "thread-1" || evs[0].RunID == "" || evs[0].RunID == "client-run" {
		t.Fatalf("RUN_STARTED %+v", evs[0].Event)
	}
	// Each stream event's last AG-UI event carries its id, in seq order.
	ids := map[string]bool{}
	for i, ev := range evs {
		cur, ok := agui.MetadataCursor(ev.Metadata)
		if !ok || cur.Seq == 0 || cur.Epoch == "" {
			t.Fatalf("event %d metadata %s", i, ev.Metadata)
		}
		lastOfGroup := i == len(evs)-1 || !bytes.Equal(evs[i+1].Metadata, ev.Metadata)
		if lastOfGroup != (ev.ID != "") || (ev.ID != "" && (ev.ID != protocol.EventID(cur.Epoch, cur.Seq) || ids[ev.ID])) {
			t.Fatalf("event %d (%s) id %q, metadata %s", i, ev.Type, ev.ID, ev.Metadata)
		}
		if ev.ID != "" {
			ids[ev.ID] = true
		}
	}
	if string(evs[len(evs)-1].Result) != `"Hello, world."` {
		t.Fatalf("RUN_FINISHED result %s", evs[len(evs)-1].Result)
	}

	// A new thread with the client's id; the next request lands in it.
	resp2 := e.post(t.Context(), "alice", "/api/v1/agui", input("thread-1", "m2", "again"))
	defer resp2.Body.Close()
	evs2 := read(t, resp2, nil)
	if evs2[0].ThreadID != "thread-1" || evs2[0].RunID == evs[0].RunID {
		t.Fatalf("second run %+v", evs2[0].Event)
	}
}

func TestAGUIRunFails(t *testing.T) {
	t.Parallel()
	e := newAGUI(t, scripted{}, aguiOpts{})
	resp := e.post(t.Context(), "alice", "/api/v1/agui", input("", "m1", "please fail"))
	defer resp.Body.Close()
	evs := read(t, resp, nil)
	last := evs[len(evs)-1]
	if typesOf(evs) != "RUN_STARTED RUN_ERROR" || last.Code != "agent_failed" || last.Message != "failed on purpose" {
		t.Fatalf("events %s, last %+v", typesOf(evs), last.Event)
	}
}

// TestAGUIConnectResumes drops a response mid-answer (the run goes on) and
// resumes it with /connect and the last id: the prelude re-opens the answer
// and the tail continues it, and the assembled messages are the uncut
// run's.
func TestAGUIConnectResumes(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	e := newAGUI(t, scripted{gate: gate}, aguiOpts{})
	ctx, cut := context.WithCancel(t.Context())
	resp := e.post(ctx, "alice", "/api/v1/agui", input("", "m1", "hi"))
	head := read(t, resp, func(ev agui.Event) bool { return ev.Type == agui.TextMessageContent })
	cut()
	resp.Body.Close()
	lastID := ""
	for _, ev := range head {
		if ev.ID != "" {
			lastID = ev.ID
		}
	}
	runID, threadID := head[0].RunID, head[0].ThreadID
	// A run request is no resume.
	e.checkResumes(0, 0)
	close(gate) // the run finishes while nobody reads it

	resp2 := e.post(t.Context(), "alice", "/api/v1/agui/connect", agui.ConnectInput{ThreadID: threadID, RunID: runID}, "Last-Event-ID", lastID)
	defer resp2.Body.Close()
	tail := read(t, resp2, nil)
	if got, want := typesOf(tail), "RUN_STARTED MESSAGES_SNAPSHOT TEXT_MESSAGE_START TEXT_MESSAGE_CONTENT TEXT_MESSAGE_END RUN_FINISHED"; got != want {
		t.Fatalf("resumed\n%s\nwant\n%s", got, want)
	}
	if tail[0].RunID != runID || tail[len(tail)-1].Outcome.Type != agui.OutcomeSuccess {
		t.Fatalf("resumed run %+v … %+v", tail[0].Event, tail[len(tail)-1].Event)
	}

	// The same run read whole (a connect from before its start) assembles
	// to the same messages as the cut read plus the resumed one.
	assemble := func(evs []aguitest.Item, m *agui.Messages) {
		for _, ev := range evs {
			if ev.Type == agui.MessagesSnapshot {
				*m = agui.Messages{}
				for _, x := range ev.Messages {
					m.Add(x)
				}
				continue
			}
			m.Apply(ev.Event)
		}
	}
	var cutRead agui.Messages
	cutRead.Add(agui.Message{ID: "m1", Role: agui.RoleUser, Content: agui.String("hi")})
	assemble(head, &cutRead)
	assemble(tail, &cutRead)
	resp3 := e.post(t.Context(), "alice", "/api/v1/agui/connect", agui.ConnectInput{ThreadID: threadID}, "Last-Event-ID", protocol.EventID(strings.Split(lastID, ":")[0], 1))
	defer resp3.Body.Close()
	whole := read(t, resp3, nil)
	var wholeRead agui.Messages
	assemble(whole, &wholeRead)
	if got, want := cutRead.List(), wholeRead.List(); !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Fatalf("cut and resumed:\n%s\nwhole:\n%s", g, w)
	}
	e.checkResumes(2, 0)
}

// TestAGUIConnectOutsideRetention: the run's events are gone from the
// stream; the prelude comes from the store, and ends the run as stored.
func TestAGUIConnectOutsideRetention(t *testing.T) {
	t.Parallel()
	e := newAGUI(t, scripted{}, aguiOpts{retention: stream.Retention{MaxEvents: 2}})
	resp := e.post(t.Context(), "alice", "/api/v1/agui", input("", "m1", "hi"))
	first := read(t, resp, nil)
	resp.Body.Close()
	epoch := strings.Split(first[0].ID, ":")[0]
	for _, c := range []struct{ name, id string }{{"expired position", epoch + ":1"}, {"other epoch", "other:1"}, {"none", ""}} {
		resp := e.post(t.Context(), "alice", "/api/v1/agui/connect", agui.ConnectInput{ThreadID: first[0].ThreadID, RunID: first[0].RunID}, "Last-Event-ID", c.id)
		evs := read(t, resp, nil)
		resp.Body.Close()
		if got := typesOf(evs); got != "RUN_STARTED MESSAGES_SNAPSHOT RUN_FINISHED" {
			t.Fatalf("%s: %s", c.name, got)
		}
		msgs := evs[1].Messages
		if len(msgs) != 2 || msgs[0].Role != agui.RoleUser || msgs[0].Text() != "hi" || msgs[1].Text() != "Hello, world." {
			b, _ := json.Marshal(msgs)
			t.Fatalf("%s: snapshot %s", c.name, b)
		}
	}
	e.checkResumes(0, 2) // a connect without a position is no resume
}

func TestAGUIRefusals(t *testing.T) {
	t.Parallel()
	e := newAGUI(t, scripted{}, aguiOpts{})
	resp := e.post(t.Context(), "alice", "/api/v1/agui", input("alices", "m1", "hi"))
	first := read(t, resp, nil)
	resp.Body.Close()
	runID := first[0].RunID

	status := func(user, path string, body any, header ...string) (int, protocol.ErrorCode) {
		resp := e.post(t.Context(), user, path, body, header...)
		defer resp.Body.Close()
		var eb protocol.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		return resp.StatusCode, eb.Error.Code
	}
	for _, c := range []struct {
		name, user, path string
		body             any
		header           []string
		status           int
		code             protocol.ErrorCode
	}{
		{"another user's thread", "mallory", "/api/v1/agui", input("alices", "m2", "x"), nil, 404, protocol.CodeNotFound},
		{"connect another user's thread", "mallory", "/api/v1/agui/connect", agui.ConnectInput{ThreadID: "alices"}, nil, 404, protocol.CodeNotFound},
		{"connect another user's run", "mallory", "/api/v1/agui/connect", agui.ConnectInput{ThreadID: "alices", RunID: runID}, nil, 404, protocol.CodeNotFound},
		{"connect a run of another thread", "alice", "/api/v1/agui/connect", agui.ConnectInput{ThreadID: "other", RunID: runID}, nil, 404, protocol.CodeNotFound},
		{"no user message", "alice", "/api/v1/agui", agui.RunAgentInput{ThreadID: "t"}, nil, 400, protocol.CodeInvalidMessage},
		{"not JSON", "alice", "/api/v1/agui", "nope", nil, 400, protocol.CodeBadJSON},
		{"connect without thread", "alice", "/api/v1/agui/connect", agui.ConnectInput{}, nil, 400, protocol.CodeInvalidRequest},
		{"bad Last-Event-ID", "alice", "/api/v1/agui/connect", agui.ConnectInput{ThreadID: "alices"}, []string{"Last-Event-ID", "nope"}, 400, protocol.CodeInvalidRequest},
		{"foreign origin", "alice", "/api/v1/agui", input("alices", "m3", "x"), []string{"Origin", "https://elsewhere.example"}, 403, protocol.CodeForbiddenOrigin},
	} {
		if st, code := status(c.user, c.path, c.body, c.header...); st != c.status || code != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, st, code, c.status, c.code)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/api/v1/agui", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// TestAGUIHeartbeat: while the run waits, comment lines keep the response
// alive; a client that reads events only (as @ag-ui/client does) sees none.
func TestAGUIHeartbeat(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	e := newAGUI(t, scripted{gate: gate}, aguiOpts{heartbeat: 20 * time.Millisecond})
	resp := e.post(t.Context(), "alice", "/api/v1/agui", input("", "m1", "hi"))
	defer resp.Body.Close()
	r := sse.NewReader(resp.Body, 0)
	beats := make(chan struct{}, 64)
	r.OnComment(func(string) {
		select {
		case beats <- struct{}{}:
		default:
		}
	})
	go func() {
		defer close(gate) // two heartbeats while the run waited: let it finish
		deadline := time.After(10 * time.Second)
		for range 2 {
			select {
			case <-beats:
			case <-deadline:
				t.Error("no heartbeat within 10 s")
				return
			}
		}
	}()
	types := aguitest.Types(aguitest.Read(t, r, nil))
	if types[len(types)-1] != string(agui.RunFinished) {
		t.Fatalf("events %v", types)
	}
}

// TestAGUILimits: a response is one of the user's connections, and a run
// request over the run limit is refused before anything is streamed.
func TestAGUILimits(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	defer close(gate)
	e := newAGUI(t, scripted{gate: gate}, aguiOpts{maxConns: 2, maxRuns: 1})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp := e.post(ctx, "alice", "/api/v1/agui", input("", "m1", "hi"))
	defer resp.Body.Close()
	run := read(t, resp, func(ev agui.Event) bool { return ev.Type == agui.RunStarted })[0] // one connection, one run

	second := e.post(t.Context(), "alice", "/api/v1/agui", input("", "m2", "again"))
	var eb protocol.ErrorBody
	_ = json.NewDecoder(second.Body).Decode(&eb)
	second.Body.Close()
	if second.StatusCode != http.StatusTooManyRequests || eb.Error.Code != protocol.CodeTooManyRuns {
		t.Fatalf("over the run limit: %d %+v", second.StatusCode, eb)
	}
	held := e.post(ctx, "alice", "/api/v1/agui/connect", agui.ConnectInput{ThreadID: run.ThreadID, RunID: run.RunID})
	defer held.Body.Close()
	read(t, held, func(ev agui.Event) bool { return ev.Type == agui.MessagesSnapshot }) // the second connection
	third := e.post(t.Context(), "alice", "/api/v1/agui/connect", agui.ConnectInput{ThreadID: run.ThreadID, RunID: run.RunID})
	eb = protocol.ErrorBody{}
	_ = json.NewDecoder(third.Body).Decode(&eb)
	third.Body.Close()
	if third.StatusCode != http.StatusTooManyRequests || eb.Error.Code != protocol.CodeTooManyConnections {
		t.Fatalf("over the connection limit: %d %+v", third.StatusCode, eb)
	}
}

// TestAGUIDrain: a draining node refuses AG-UI responses as it refuses
// /ws, with 503 shutting_down, before anything is sent.
func TestAGUIDrain(t *testing.T) {
	t.Parallel()
	e := newAGUI(t, scripted{}, aguiOpts{})
	first := e.post(t.Context(), "alice", "/api/v1/agui", input("t1", "m1", "hi"))
	read(t, first, nil) // the whole run: the thread exists
	first.Body.Close()
	e.ws.Drain()
	for path, body := range map[string]any{
		"/api/v1/agui":         input("t1", "m2", "again"),
		"/api/v1/agui/connect": agui.ConnectInput{ThreadID: "t1"},
	} {
		resp := e.post(t.Context(), "alice", path, body)
		var eb protocol.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || eb.Error.Code != protocol.CodeShuttingDown {
			t.Errorf("%s while draining: %d %+v", path, resp.StatusCode, eb)
		}
	}
}
