package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/metrics"
	"github.com/agentwire/agentwire/internal/server"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/internal/store/sqlite"
)

const testSecret = "0123456789abcdef0123456789abcdef"

// apiEnv is the HTTP API of NewServer on a real listener, over a SQLite store
// the test fills directly.
type apiEnv struct {
	t      *testing.T
	url    string
	store  *sqlite.Store
	signer *auth.Signer
}

func newAPI(t *testing.T, tune func(*server.Deps)) *apiEnv {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	v, err := auth.NewVerifier(ctx, auth.Config{Secret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	d := server.Deps{Metrics: metrics.New(), Store: db, Verifier: v, WS: http.NotFoundHandler()}
	if tune != nil {
		tune(&d)
	}
	ts := httptest.NewServer(server.NewServer(d))
	t.Cleanup(ts.Close)
	return &apiEnv{t: t, url: ts.URL, store: db, signer: auth.NewSigner([]byte(testSecret))}
}

func (e *apiEnv) token(user string) string {
	e.t.Helper()
	tok, _, err := e.signer.Sign(user, time.Hour, "", "")
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// thread creates a thread of user with one message per content, 1 ms
// apart, and returns the message ids in order.
func (e *apiEnv) thread(user string, contents []string) (string, []string) {
	e.t.Helper()
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	th := store.Thread{ID: ulid.Make().String(), UserID: user, Title: "t", CreatedAt: t0}
	if err := e.store.CreateThread(ctx, th); err != nil {
		e.t.Fatal(err)
	}
	ids := make([]string, len(contents))
	for i, c := range contents {
		ids[i] = ulid.Make().String()
		role := store.RoleUser
		if i%2 == 1 {
			role = store.RoleAssistant
		}
		m := store.Message{ID: ids[i], ThreadID: th.ID, UserID: user, Role: role, Content: c, CreatedAt: t0.Add(time.Duration(i) * time.Millisecond)}
		if err := e.store.AddMessage(ctx, m); err != nil {
			e.t.Fatal(err)
		}
	}
	return th.ID, ids
}

// get sends an authenticated GET and returns the status, headers and body.
func (e *apiEnv) get(user, path string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token(user))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

type messagesPage struct {
	Messages []struct {
		ID      string `json:"id"`
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	Next    *string `json:"next"`
	HasMore bool    `json:"has_more"`
}

func (e *apiEnv) messages(user, threadID, query string) messagesPage {
	e.t.Helper()
	status, _, body := e.get(user, "/api/v1/threads/"+threadID+"/messages"+query)
	if status != http.StatusOK {
		e.t.Fatalf("GET messages%s: %d %s", query, status, body)
	}
	var p messagesPage
	if err := json.Unmarshal(body, &p); err != nil {
		e.t.Fatalf("GET messages%s: %v", query, err)
	}
	if p.HasMore != (p.Next != nil) {
		e.t.Fatalf("GET messages%s: has_more %v with next %v", query, p.HasMore, p.Next)
	}
	return p
}

func pageIDs(p messagesPage) []string {
	ids := make([]string, len(p.Messages))
	for i, m := range p.Messages {
		ids[i] = m.ID
	}
	return ids
}

func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("body %q is not the contract's error shape", body)
	}
	return e.Error.Code
}

func TestMessagesPaging(t *testing.T) {
	e := newAPI(t, nil)
	contents := make([]string, 150)
	for i := range contents {
		contents[i] = fmt.Sprintf("message %d", i)
	}
	th, ids := e.thread("alice", contents)

	// The default page is 100, then the rest, in order, following next.
	p := e.messages("alice", th, "")
	if !slices.Equal(pageIDs(p), ids[:100]) || p.Next == nil || *p.Next != ids[99] {
		t.Fatalf("first page: %d messages, next %v; want the first 100, next %s", len(p.Messages), p.Next, ids[99])
	}
	p = e.messages("alice", th, "?after="+*p.Next)
	if !slices.Equal(pageIDs(p), ids[100:]) || p.Next != nil || p.HasMore {
		t.Fatalf("second page: %d messages, next %v; want the last 50 and no next", len(p.Messages), p.Next)
	}
	if p.Messages[0].Content != "message 100" || p.Messages[0].Role != store.RoleUser {
		t.Fatalf("message 100 = %+v", p.Messages[0])
	}

	// Backward with before: the messages just before, oldest first; next
	// is the before of the page further back.
	p = e.messages("alice", th, "?limit=40&before="+ids[100])
	if !slices.Equal(pageIDs(p), ids[60:100]) || p.Next == nil || *p.Next != ids[60] {
		t.Fatalf("before page: %v, next %v; want 60-99, next %s", len(p.Messages), p.Next, ids[60])
	}
	p = e.messages("alice", th, "?limit=60&before="+ids[60])
	if !slices.Equal(pageIDs(p), ids[:60]) || p.Next != nil {
		t.Fatalf("before page: %d messages, next %v; want 0-59 and no next", len(p.Messages), p.Next)
	}
	p = e.messages("alice", th, "?limit=1000")
	if len(p.Messages) != 150 || p.Next != nil {
		t.Fatalf("limit 1000: %d messages, next %v", len(p.Messages), p.Next)
	}
	p = e.messages("alice", th, "?limit=1&after="+ids[149])
	if len(p.Messages) != 0 || p.Next != nil {
		t.Fatalf("after the last: %d messages, next %v", len(p.Messages), p.Next)
	}

	// Bad parameters, cursors of other threads, other users' threads.
	other, otherIDs := e.thread("alice", []string{"elsewhere"})
	bobs, bobIDs := e.thread("bob", []string{"bob's"})
	for _, tc := range []struct {
		user, path string
		status     int
		code       string
	}{
		{"alice", "/api/v1/threads/" + th + "/messages?limit=0", 400, "invalid_request"},
		{"alice", "/api/v1/threads/" + th + "/messages?limit=1001", 400, "invalid_request"},
		{"alice", "/api/v1/threads/" + th + "/messages?limit=ten", 400, "invalid_request"},
		{"alice", "/api/v1/threads/" + th + "/messages?limit=-1", 400, "invalid_request"},
		{"alice", "/api/v1/threads/" + th + "/messages?after=" + ids[1] + "&before=" + ids[5], 400, "invalid_request"},
		{"alice", "/api/v1/threads/" + th + "/messages?after=" + otherIDs[0], 400, "invalid_request"},
		{"alice", "/api/v1/threads/" + th + "/messages?before=" + bobIDs[0], 400, "invalid_request"},
		{"alice", "/api/v1/threads/" + th + "/messages?after=nonsense", 400, "invalid_request"},
		{"alice", "/api/v1/threads/" + bobs + "/messages", 404, "not_found"},
		{"alice", "/api/v1/threads/" + bobs + "/messages?after=" + bobIDs[0], 404, "not_found"},
		{"bob", "/api/v1/threads/" + th + "/messages?after=" + ids[3], 404, "not_found"},
		{"bob", "/api/v1/threads/" + other + "/messages", 404, "not_found"},
	} {
		status, _, body := e.get(tc.user, tc.path)
		if status != tc.status || errorCode(t, body) != tc.code {
			t.Errorf("%s GET %s: %d %s; want %d %s", tc.user, tc.path, status, body, tc.status, tc.code)
		}
		if strings.Contains(string(body), "bob's") || strings.Contains(string(body), "message 3") {
			t.Errorf("%s GET %s: the error carries message content: %s", tc.user, tc.path, body)
		}
	}
}

func TestMessagesPageBytesAndEscaping(t *testing.T) {
	e := newAPI(t, nil)
	// 40 messages of 32 KiB of '<': 1.25 MiB, over one page's bound.
	big := strings.Repeat("<", 32<<10)
	contents := make([]string, 40)
	for i := range contents {
		contents[i] = big
	}
	th, ids := e.thread("alice", contents)
	status, hdr, body := e.get("alice", "/api/v1/threads/"+th+"/messages?limit=1000")
	if status != http.StatusOK {
		t.Fatalf("GET: %d", status)
	}
	if strings.Contains(string(body), `\u003c`) || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("the answer escapes < as \\u003c (or is not JSON: %q)", hdr.Get("Content-Type"))
	}
	if len(body) > 2<<20 {
		t.Fatalf("a page of %d bytes, want about 1 MiB at most", len(body))
	}
	var p messagesPage
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Messages) != 32 || p.Next == nil || *p.Next != ids[31] || p.Messages[0].Content != big {
		t.Fatalf("page of %d messages, next %v; want 32 (1 MiB), next %s", len(p.Messages), p.Next, ids[31])
	}
	p = e.messages("alice", th, "?after="+*p.Next)
	if !slices.Equal(pageIDs(p), ids[32:]) || p.Next != nil {
		t.Fatalf("second page: %d messages, next %v; want the last 8", len(p.Messages), p.Next)
	}

	// One message over the bound still comes, alone.
	huge, hugeIDs := e.thread("alice", []string{strings.Repeat("&", 3<<20/2), "small"})
	p = e.messages("alice", huge, "")
	if len(p.Messages) != 1 || p.Next == nil || *p.Next != hugeIDs[0] {
		t.Fatalf("a 1.5 MiB message: page of %d, next %v; want it alone", len(p.Messages), p.Next)
	}

	// Errors are not HTML-escaped either.
	status, _, body = e.get("alice", "/api/v1/threads/"+th+"/messages?after=<x>")
	if status != 400 || strings.Contains(string(body), `\u003c`) {
		t.Fatalf("bad cursor: %d %s", status, body)
	}
}

func TestThreadsPaging(t *testing.T) {
	e := newAPI(t, nil)
	var want []string
	for range 7 {
		th, _ := e.thread("alice", []string{"hi"})
		want = append([]string{th}, want...) // newest first
	}
	e.thread("bob", []string{"not alice's"})
	var got []string
	q := "?limit=3"
	for pages := 1; ; pages++ {
		status, _, body := e.get("alice", "/api/v1/threads"+q)
		if status != http.StatusOK {
			t.Fatalf("GET threads%s: %d %s", q, status, body)
		}
		var p struct {
			Threads []struct {
				ID string `json:"id"`
			} `json:"threads"`
			Next    *string `json:"next"`
			HasMore bool    `json:"has_more"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		for _, th := range p.Threads {
			got = append(got, th.ID)
		}
		if p.HasMore != (p.Next != nil) || p.HasMore != (pages < 3) || len(p.Threads) > 3 {
			t.Fatalf("page %d: %d threads, next %v, has_more %v", pages, len(p.Threads), p.Next, p.HasMore)
		}
		if p.Next == nil {
			break
		}
		q = "?limit=3&after=" + url.QueryEscape(*p.Next)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("threads %v, want %v", got, want)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?after=!!", "?after=bm90IGEgY3Vyc29y"} {
		if status, _, body := e.get("alice", "/api/v1/threads"+q); status != 400 || errorCode(t, body) != "invalid_request" {
			t.Errorf("GET threads%s: %d %s; want 400 invalid_request", q, status, body)
		}
	}
}

// slowReader sends an authenticated GET on a socket with a small receive
// buffer and reads only the answer's headers, so the server's writes stall
// once the socket buffers are full.
type slowReader struct {
	conn net.Conn
	resp *http.Response
}

func startSlowReader(t *testing.T, e *apiEnv, user, path string) *slowReader {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, e.token(user))
	// Headers in: the request holds its slot and is writing the body.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 512), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("slow reader: %v %v", resp, err)
	}
	return &slowReader{conn: conn, resp: resp}
}

// escapingThread creates a thread whose first page is about 6 MiB of JSON:
// 1 MiB of control characters, each escaped as \u00XX. No socket buffer
// takes that.
func escapingThread(e *apiEnv, user string) string {
	contents := make([]string, 32)
	for i := range contents {
		contents[i] = strings.Repeat("\x01", 32<<10)
	}
	th, _ := e.thread(user, contents)
	return th
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConcurrentReadsPerUser(t *testing.T) {
	e := newAPI(t, func(d *server.Deps) { d.WriteTimeout = time.Minute })
	th := escapingThread(e, "alice")
	path := "/api/v1/threads/" + th + "/messages"
	var readers []*slowReader
	for range server.DefaultMaxReadsPerUser {
		readers = append(readers, startSlowReader(t, e, "alice", path))
	}
	// The slow readers hold every slot: one more read is refused, on every
	// list endpoint, while another user reads freely.
	status, hdr, body := e.get("alice", "/api/v1/threads")
	if status != http.StatusTooManyRequests || hdr.Get("Retry-After") != "1" || errorCode(t, body) != "too_many_requests" {
		t.Fatalf("a fifth read: %d with Retry-After %q, body %s; want 429 too_many_requests", status, hdr.Get("Retry-After"), body)
	}
	if status, _, _ := e.get("alice", path+"?limit=1"); status != http.StatusTooManyRequests {
		t.Fatalf("messages while the slots are taken: %d, want 429", status)
	}
	if status, _, _ := e.get("bob", "/api/v1/threads"); status != http.StatusOK {
		t.Fatalf("another user: %d, want 200", status)
	}
	// A slot comes back when its reader goes away.
	_ = readers[0].conn.Close()
	waitFor(t, "a free slot after a slow reader left", func() bool {
		status, _, _ := e.get("alice", "/api/v1/threads")
		return status == http.StatusOK
	})
}

func TestStalledReaderIsCut(t *testing.T) {
	e := newAPI(t, func(d *server.Deps) { d.WriteTimeout = 300 * time.Millisecond; d.MaxReadsPerUser = 1 })
	th := escapingThread(e, "alice")
	r := startSlowReader(t, e, "alice", "/api/v1/threads/"+th+"/messages")
	// The write deadline cuts the stalled answer and frees the slot.
	waitFor(t, "the stalled answer to be cut", func() bool {
		status, _, _ := e.get("alice", "/api/v1/threads")
		return status == http.StatusOK
	})
	// What the reader gets is a truncated answer, then the end of the
	// connection.
	var p messagesPage
	if err := json.NewDecoder(r.resp.Body).Decode(&p); err == nil {
		t.Fatalf("the stalled reader got a whole page of %d messages", len(p.Messages))
	}
}
