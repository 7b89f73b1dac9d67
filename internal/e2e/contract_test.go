package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The contract suite: sections 2 to 8 of PROTOCOL.md against the real server.

func TestConnectEstablished(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, f := s.connect("alice")
	_ = c
	if f.UserID != "alice" || f.Protocol != "agentwire.v1" || f.Epoch == "" || f.ConnID == "" ||
		f.HBms != 25000 || f.MaxBytes != 65536 || f.HeadSeq != 0 {
		t.Fatalf("connection_established = %s", f.raw)
	}
}

func TestAuthMethods(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	t.Run("subprotocol answers agentwire.v1 and never echoes the token", func(t *testing.T) {
		tok := s.token("bob")
		c, resp, err := s.dial(withSubprotocolToken(tok))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.c.Close()
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "agentwire.v1" {
			t.Fatalf("subprotocol answer %q", got)
		}
		for k, vs := range resp.Header {
			for _, v := range vs {
				if strings.Contains(v, tok) {
					t.Fatalf("token echoed in header %s", k)
				}
			}
		}
		if f := c.read(); f.Type != "connection_established" || f.UserID != "bob" {
			t.Fatalf("first frame %s", f.raw)
		}
	})

	t.Run("ticket is single use", func(t *testing.T) {
		var tk struct {
			Ticket    string    `json:"ticket"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		if code := s.do("POST", "/api/v1/tickets", s.token("carol"), nil, &tk); code != 200 || tk.Ticket == "" {
			t.Fatalf("tickets: %d %+v", code, tk)
		}
		if d := time.Until(tk.ExpiresAt); d <= 0 || d > 31*time.Second {
			t.Fatalf("ticket expires in %v, want about 30 s", d)
		}
		c, _, err := s.dial(withQuery("ticket=" + tk.Ticket))
		if err != nil {
			t.Fatalf("dial with ticket: %v", err)
		}
		defer c.c.Close()
		if f := c.read(); f.UserID != "carol" {
			t.Fatalf("ticket connection is %q", f.UserID)
		}
		_, resp, err := s.dial(withQuery("ticket=" + tk.Ticket))
		if err == nil || resp == nil || resp.StatusCode != 401 {
			t.Fatalf("second use of a ticket: err %v resp %v", err, resp)
		}
		assertErrorBody(t, resp, "unauthorized")
	})

	failures := []struct {
		name string
		opts []dialOpt
	}{
		{"no credentials", nil},
		{"garbage bearer", []dialOpt{withBearer("not-a-jwt")}},
		{"expired", []dialOpt{withBearer(expiredToken(t))}},
		{"JWT in the query string", []dialOpt{withQuery("token=" + s.token("dave"))}},
		{"unknown ticket", []dialOpt{withQuery("ticket=nope")}},
		{"subprotocol without agentwire.v1", []dialOpt{func(d *websocket.Dialer, _ http.Header, _ *string) {
			d.Subprotocols = []string{"bearer." + s.token("erin")}
		}}},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := s.dial(tc.opts...)
			if err == nil || resp == nil || resp.StatusCode != 401 {
				t.Fatalf("want 401, got err %v resp %v", err, resp)
			}
			assertErrorBody(t, resp, "unauthorized")
		})
	}
}

func expiredToken(t *testing.T) string {
	t.Helper()
	// A token whose exp is in the past, signed with the right key.
	tok, err := signRaw(map[string]any{"sub": "late", "exp": time.Now().Add(-time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func assertErrorBody(t *testing.T, resp *http.Response, code string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code != code || e.Error.Message == "" {
		t.Fatalf("body %q, want error code %s", body, code)
	}
}

func TestOriginPolicy(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--dev=false", "--allowed-origins", "https://app.example")
	tok := s.token("o")
	host := strings.TrimPrefix(s.URL, "http://")
	cases := []struct {
		origin string
		want   int
	}{
		{"https://evil.example", 403},
		{"http://localhost:3000", 403}, // only --dev allows localhost
		{"https://app.example", 101},
		{"http://" + host, 101}, // same origin
	}
	for _, tc := range cases {
		c, resp, err := s.dial(withBearer(tok), withOrigin(tc.origin))
		if tc.want == 101 {
			if err != nil {
				t.Fatalf("origin %s: %v", tc.origin, err)
			}
			c.c.Close()
			continue
		}
		if err == nil || resp.StatusCode != tc.want {
			t.Fatalf("origin %s: err %v resp %v", tc.origin, err, resp)
		}
		assertErrorBody(t, resp, "forbidden_origin")
	}

	dev := startServer(t) // --dev
	c, _, err := dev.dial(withBearer(dev.token("o")), withOrigin("http://localhost:5173"))
	if err != nil {
		t.Fatalf("--dev must allow localhost origins: %v", err)
	}
	c.c.Close()
}

func TestTooManyConnections(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--max-connections-per-user", "2")
	s.connect("max")
	s.connect("max")
	_, resp, err := s.dial(withBearer(s.token("max")))
	if err == nil || resp.StatusCode != 429 {
		t.Fatalf("third connection: err %v resp %v", err, resp)
	}
	assertErrorBody(t, resp, "too_many_connections")
	s.connect("other") // another user is not affected
}

func TestResumeAtConnect(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--retention-events", "5")
	var epoch string
	for i := 1; i <= 4; i++ {
		_, epoch = s.publish("rita", "note", map[string]int{"n": i})
	}

	c, est := s.connect("rita", withQuery(fmt.Sprintf("since=1&epoch=%s", epoch)))
	if est.HeadSeq != 4 || est.Epoch != epoch {
		t.Fatalf("established %s", est.raw)
	}
	for want := uint64(2); want <= 4; want++ {
		f := c.read()
		if f.Seq != want || f.Type != "note" || f.Epoch != epoch {
			t.Fatalf("replay frame %s, want seq %d", f.raw, want)
		}
		if _, err := time.Parse(time.RFC3339, f.TS); err != nil || !strings.HasSuffix(f.TS, "Z") {
			t.Fatalf("ts %q is not RFC 3339 UTC", f.TS)
		}
	}
	s.publish("rita", "note", map[string]int{"n": 5})
	if f := c.read(); f.Seq != 5 {
		t.Fatalf("live after replay: %s", f.raw)
	}

	t.Run("epoch differs", func(t *testing.T) {
		c, _ := s.connect("rita", withQuery("since=2&epoch=old"))
		f := c.read()
		if f.Type != "resync_required" || f.Epoch != epoch || f.HeadSeq != 5 || f.Reason == "" {
			t.Fatalf("want resync_required, got %s", f.raw)
		}
		s.publish("rita", "note", nil)
		if f := c.read(); f.Seq != 6 {
			t.Fatalf("live after resync: %s", f.raw)
		}
	})
	t.Run("since older than the window", func(t *testing.T) {
		for i := 0; i < 5; i++ {
			s.publish("rita", "note", nil)
		}
		c, _ := s.connect("rita", withQuery("since=1&epoch="+epoch))
		if f := c.read(); f.Type != "resync_required" {
			t.Fatalf("want resync_required, got %s", f.raw)
		}
	})
	t.Run("no since: live from head", func(t *testing.T) {
		c, est := s.connect("rita")
		seq, _ := s.publish("rita", "note", nil)
		if f := c.read(); f.Seq != seq || seq != est.HeadSeq+1 {
			t.Fatalf("live frame %s after head %d", f.raw, est.HeadSeq)
		}
	})
}

func TestClientFrames(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, _ := s.connect("uma")
	other, _ := s.connect("uma")

	c.send(`{"type":"ping","id":"p1"}`)
	if f := c.read(); f.Type != "pong" || f.Ref != "p1" {
		t.Fatalf("pong: %s", f.raw)
	}

	c.send(map[string]any{"type": "user_message", "id": "m1", "content": "hello", "client_message_id": "cm-1"})
	ack := c.read()
	if ack.Type != "ack" || ack.Ref != "m1" || ack.ThreadID == "" || ack.MsgID == "" {
		t.Fatalf("ack: %s", ack.raw)
	}
	for _, cl := range []*client{c, other} {
		ev := cl.readUntil("user_message")
		var d struct {
			MessageID, Content, ClientMessageID string
		}
		_ = json.Unmarshal(ev.Data, &struct {
			MessageID       *string `json:"message_id"`
			Content         *string `json:"content"`
			ClientMessageID *string `json:"client_message_id"`
		}{&d.MessageID, &d.Content, &d.ClientMessageID})
		if ev.Seq == 0 || ev.ThreadID != ack.ThreadID || d.Content != "hello" || d.MessageID != ack.MsgID || d.ClientMessageID != "cm-1" {
			t.Fatalf("user_message echo: %s", ev.raw)
		}
	}

	// The same client_message_id returns the first ack and starts nothing.
	c.send(map[string]any{"type": "user_message", "id": "m2", "content": "hello", "client_message_id": "cm-1"})
	again := c.readUntil("ack")
	if again.Ref != "m2" || again.ThreadID != ack.ThreadID || again.MsgID != ack.MsgID || again.RunID != ack.RunID {
		t.Fatalf("repeated client_message_id: %s, first %s", again.raw, ack.raw)
	}
	var evs struct {
		Events []frame `json:"events"`
	}
	s.do("GET", "/api/v1/events?since=0", s.token("uma"), nil, &evs)
	echoes, starts := 0, 0
	for _, e := range evs.Events {
		switch e.Type {
		case "user_message":
			echoes++
		case "agent_started":
			starts++
		}
	}
	if echoes != 1 || starts != 1 {
		t.Fatalf("after a repeated client_message_id: %d echoes, %d runs", echoes, starts)
	}

	c.send(map[string]any{"type": "user_message", "content": "in thread", "thread_id": ack.ThreadID})
	if f := c.readUntil("ack"); f.ThreadID != ack.ThreadID {
		t.Fatalf("thread not kept: %s", f.raw)
	}

	c.send(`{"type":"stop_agent","id":"s1","run_id":"nope"}`)
	if f := c.readUntil("error"); f.Code != "not_found" || f.Ref != "s1" {
		t.Fatalf("stop unknown run: %s", f.raw)
	}

	c.send(`{"type":"resume","id":"r1","since":0}`)
	if f := c.readUntil("user_message"); f.Seq != 1 {
		t.Fatalf("resume replay: %s", f.raw)
	}
}

func TestDeprecatedAliases(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--max-runs-per-user", "10")
	c, _ := s.connect("old")
	c.send(`{"type":"chat","payload":{"text":"hi there"}}`)
	dep := c.read()
	if dep.Type != "deprecation" || dep.Alias != "chat" || dep.Repl != "user_message" || dep.Message == "" {
		t.Fatalf("deprecation: %s", dep.raw)
	}
	c.readUntil("ack")
	if f := c.readUntil("user_message"); !strings.Contains(string(f.Data), "hi there") {
		t.Fatalf("alias message: %s", f.raw)
	}
	c.send(`{"type":"chat","content":"again","id":"x"}`)
	if f := c.readUntil("ack"); f.Ref != "x" {
		t.Fatalf("second alias use: %s", f.raw)
	}
	c.send(`{"type":"session_restore","last_seq":0}`)
	if f := c.readUntil("deprecation"); f.Alias != "session_restore" || f.Repl != "resume" {
		t.Fatalf("session_restore deprecation: %s", f.raw)
	}
	if f := c.readUntil("user_message"); f.Seq != 1 {
		t.Fatalf("session_restore replay: %s", f.raw)
	}
	for _, alias := range []string{"agent_request", "execute_agent", "start_agent"} {
		c.send(fmt.Sprintf(`{"type":%q,"payload":{"user_request":"via %s"}}`, alias, alias))
		if f := c.readUntil("deprecation"); f.Alias != alias {
			t.Fatalf("deprecation for %s: %s", alias, f.raw)
		}
		c.readUntil("ack")
	}
	metrics := s.get("/metrics")
	for _, want := range []string{
		`agentwire_deprecated_messages_total{alias="chat"} 2`,
		`agentwire_deprecated_messages_total{alias="session_restore"} 1`,
		`agentwire_deprecated_messages_total{alias="start_agent"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Fatalf("metrics lack %q", want)
		}
	}
}

func (s *server) get(path string) string {
	s.t.Helper()
	resp, err := http.Get(s.URL + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, _ := s.connect("bad")
	cases := []struct {
		frame, code, ref string
	}{
		{`{not json`, "bad_json", ""},
		{`[1,2]`, "bad_json", ""},
		{`{"type":"dance","id":"d"}`, "unknown_type", "d"},
		{`{"type":"user_message","id":"e"}`, "invalid_message", "e"},
		{`{"type":"user_message","content":""}`, "invalid_message", ""},
		{`{"type":"user_message","content":"` + strings.Repeat("x", 32769) + `"}`, "invalid_message", ""},
		{`{"type":"user_message","content":5}`, "invalid_message", ""},
		{`{"type":"stop_agent"}`, "invalid_message", ""},
		{`{"type":"resume","since":-1}`, "invalid_message", ""},
		{`{"type":"ping","id":"` + strings.Repeat("i", 65) + `"}`, "invalid_message", ""},
		{`{"type":"stop_agent","run_id":"r","id":"n"}`, "not_found", "n"},
	}
	for _, tc := range cases {
		c.send(tc.frame)
		f := c.read()
		if f.Type != "error" || f.Code != tc.code || f.Ref != tc.ref || f.Message == "" {
			t.Fatalf("frame %.60q: got %s, want error %s ref %q", tc.frame, f.raw, tc.code, tc.ref)
		}
	}
	// The connection is still open and working.
	c.send(`{"type":"ping","id":"alive"}`)
	if f := c.read(); f.Type != "pong" {
		t.Fatalf("after errors: %s", f.raw)
	}
	if err := c.c.WriteMessage(websocket.BinaryMessage, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if f := c.read(); f.Code != "bad_json" {
		t.Fatalf("binary frame: %s", f.raw)
	}
}

func TestTooManyErrorsCloses4029(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--rate-limit", "1000", "--rate-burst", "1000")
	c, _ := s.connect("noisy")
	for i := 0; i < 21; i++ {
		c.send(`{nope`)
	}
	errs := 0
	for {
		f, err := c.readWithin(5 * time.Second)
		if err != nil {
			var ce *websocket.CloseError
			if !asCloseError(err, &ce) || ce.Code != 4029 {
				t.Fatalf("want close 4029, got %v", err)
			}
			break
		}
		if f.Type == "error" {
			errs++
		}
	}
	if errs != 21 {
		t.Fatalf("got %d error frames before 4029, want 21", errs)
	}
}

func TestRateLimited(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--rate-limit", "1", "--rate-burst", "3")
	c, _ := s.connect("fast")
	for i := 0; i < 5; i++ {
		c.send(fmt.Sprintf(`{"type":"ping","id":"%d"}`, i))
	}
	var pongs, limited int
	for i := 0; i < 5; i++ {
		f := c.read()
		switch {
		case f.Type == "pong":
			pongs++
		case f.Type == "error" && f.Code == "rate_limited":
			limited++
		default:
			t.Fatalf("unexpected %s", f.raw)
		}
	}
	if pongs != 3 || limited != 2 {
		t.Fatalf("pongs %d limited %d, want 3 and 2", pongs, limited)
	}
}

func TestFrameTooLargeCloses1009(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, _ := s.connect("big")
	c.send(`{"type":"ping","pad":"` + strings.Repeat("x", 70000) + `"}`)
	if code := c.expectClose(5 * time.Second); code != 1009 {
		t.Fatalf("close code %d, want 1009", code)
	}
}

func TestNoPongCloses4000(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--ping-interval", "200ms", "--pong-timeout", "200ms")
	c, est := s.connect("sleepy")
	if est.HBms != 200 {
		t.Fatalf("heartbeat_interval_ms %d", est.HBms)
	}
	// A client that answers pings stays: counted in pings rather than in
	// time, so a slow machine only makes the server's rounds slower. Ping
	// n+2 comes after ping n's pong deadline has passed; at 5 pings, every
	// round has been judged at least 3 times.
	var pings int
	c.c.SetPingHandler(func(data string) error {
		if pings++; pings == 5 {
			_ = c.c.SetReadDeadline(time.Now()) // done: end the read below
		}
		return c.c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	if _, err := c.readWithin(10 * time.Second); !isTimeout(err) || pings < 5 {
		t.Fatalf("a client answering pings: %v after %d pings", err, pings)
	}
	// Now stop answering: ignore pings.
	c2, _ := s.connect("sleepy")
	c2.c.SetPingHandler(func(string) error { return nil })
	if code := c2.expectClose(3 * time.Second); code != 4000 {
		t.Fatalf("close code %d, want 4000", code)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(interface{ Timeout() bool })
	return ok && ne.Timeout()
}

func TestTokenExpiryCloses4001(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tok, _, err := s.signer.Sign("brief", 1500*time.Millisecond, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := s.dial(withBearer(tok))
	if err != nil {
		t.Fatal(err)
	}
	defer c.c.Close()
	if code := c.expectClose(5 * time.Second); code != 4001 {
		t.Fatalf("close code %d, want 4001", code)
	}
}

func TestShutdownCloses1001(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, _ := s.connect("bye")
	go func() { _ = s.stop() }()
	if code := c.expectClose(10 * time.Second); code != 1001 {
		t.Fatalf("close code %d, want 1001", code)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("serve returned %v, want nil (exit 0)", err)
	}
}

func TestHTTPAPI(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tok := s.token("hal")

	t.Run("publish validation", func(t *testing.T) {
		cases := []struct {
			name   string
			key    string
			body   any
			status int
			code   string
		}{
			{"no key", "", map[string]any{"user_id": "hal", "type": "x"}, 401, "unauthorized"},
			{"wrong key", "nope", map[string]any{"user_id": "hal", "type": "x"}, 401, "unauthorized"},
			{"user JWT is not an API key", tok, map[string]any{"user_id": "hal", "type": "x"}, 401, "unauthorized"},
			{"bad json", testAPIKey, "{", 400, "bad_json"},
			{"no user", testAPIKey, map[string]any{"type": "x"}, 400, "invalid_request"},
			{"bad type", testAPIKey, map[string]any{"user_id": "hal", "type": "Bad Type"}, 400, "invalid_request"},
			{"data not an object", testAPIKey, map[string]any{"user_id": "hal", "type": "x", "data": []int{1}}, 400, "invalid_request"},
			{"reserved type without a run", testAPIKey, map[string]any{"user_id": "hal", "type": "agent_completed"}, 409, "reserved_type"},
			{"reserved type for a run not running", testAPIKey, map[string]any{"user_id": "hal", "type": "agent_completed", "run_id": "r1"}, 409, "run_not_running"},
		}
		for _, tc := range cases {
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			if got := s.do("POST", "/api/v1/publish", tc.key, tc.body, &e); got != tc.status || e.Error.Code != tc.code {
				t.Errorf("%s: status %d code %q, want %d %q", tc.name, got, e.Error.Code, tc.status, tc.code)
			}
		}
	})

	t.Run("publish idempotency and events", func(t *testing.T) {
		body := map[string]any{"user_id": "hal", "type": "build.done", "thread_id": "t1", "data": map[string]any{"ok": true}, "idempotency_key": "k-1"}
		var a, b struct {
			Seq   uint64 `json:"seq"`
			Epoch string `json:"epoch"`
		}
		s.do("POST", "/api/v1/publish", testAPIKey, body, &a)
		s.do("POST", "/api/v1/publish", testAPIKey, body, &b)
		if a.Seq == 0 || a != b {
			t.Fatalf("idempotent publish: %+v then %+v", a, b)
		}
		var ev struct {
			Epoch          string  `json:"epoch"`
			HeadSeq        uint64  `json:"head_seq"`
			ResyncRequired bool    `json:"resync_required"`
			Events         []frame `json:"events"`
		}
		if code := s.do("GET", "/api/v1/events?since=0&epoch="+a.Epoch, tok, nil, &ev); code != 200 {
			t.Fatalf("events: %d", code)
		}
		if ev.HeadSeq != a.Seq || len(ev.Events) != int(a.Seq) || ev.Events[len(ev.Events)-1].Type != "build.done" || ev.Events[len(ev.Events)-1].ThreadID != "t1" {
			t.Fatalf("events: %+v", ev)
		}
		if code := s.do("GET", "/api/v1/events?since=0&epoch=other", tok, nil, &ev); code != 200 || !ev.ResyncRequired || len(ev.Events) != 0 {
			t.Fatalf("events with a wrong epoch: %d %+v", code, ev)
		}
		if code := s.do("GET", "/api/v1/events?since=x", tok, nil, nil); code != 400 {
			t.Fatalf("since=x: %d", code)
		}
		if code := s.do("GET", "/api/v1/events", "", nil, nil); code != 401 {
			t.Fatalf("events without token: %d", code)
		}
		// Another user's events are not visible.
		var other struct {
			Events []frame `json:"events"`
		}
		s.do("GET", "/api/v1/events?since=0", s.token("ivy"), nil, &other)
		if len(other.Events) != 0 {
			t.Fatalf("ivy sees %d events of hal", len(other.Events))
		}
	})

	t.Run("wrong method is a JSON 405", func(t *testing.T) {
		for _, c := range []struct{ method, path string }{{"GET", "/api/v1/publish"}, {"DELETE", "/api/v1/runs/x"}, {"POST", "/healthz"}} {
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			if code := s.do(c.method, c.path, "", nil, &e); code != 405 || e.Error.Code != "method_not_allowed" {
				t.Errorf("%s %s: %d %q", c.method, c.path, code, e.Error.Code)
			}
		}
	})

	t.Run("operational", func(t *testing.T) {
		if code := s.do("GET", "/healthz", "", nil, nil); code != 200 {
			t.Fatalf("healthz %d", code)
		}
		if code := s.do("GET", "/readyz", "", nil, nil); code != 200 {
			t.Fatalf("readyz %d", code)
		}
		m := s.get("/metrics")
		for _, name := range []string{"agentwire_connections", "agentwire_frames_in_total", "agentwire_publish_to_write_seconds", "agentwire_auth_failures_total"} {
			if !strings.Contains(m, name) {
				t.Fatalf("metrics lack %s", name)
			}
		}
	})

	t.Run("dev login", func(t *testing.T) {
		var out struct {
			Token     string    `json:"token"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		if code := s.do("POST", "/auth/dev-login", "", map[string]string{"user_id": "alice"}, &out); code != 200 || out.Token == "" || out.ExpiresAt.IsZero() {
			t.Fatalf("dev-login: %d %+v", code, out)
		}
		c, _, err := s.dial(withBearer(out.Token))
		if err != nil {
			t.Fatalf("dev token rejected: %v", err)
		}
		c.c.Close()
		if code := s.do("POST", "/auth/dev-login", "", map[string]string{"user_id": ""}, nil); code != 400 {
			t.Fatalf("empty user: %d", code)
		}
		prod := startServer(t, "--dev=false")
		if code := prod.do("POST", "/auth/dev-login", "", map[string]string{"user_id": "alice"}, nil); code != 404 {
			t.Fatalf("dev-login without --dev: %d, want 404", code)
		}
	})
}
