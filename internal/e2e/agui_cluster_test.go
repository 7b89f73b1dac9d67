package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/agui"
	"github.com/agentwire/agentwire/internal/agui/aguitest"
	"github.com/agentwire/agentwire/internal/sse"
	"github.com/agentwire/agentwire/protocol"
)

// aguiPost POSTs body to an AG-UI endpoint of base and reads its events
// until stop holds for one (nil: to the end), then closes the response.
func aguiPost(t *testing.T, base, path, tok, lastID string, body any, stop func(agui.Event) bool) []aguitest.Item {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+tok)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s: %d %s", path, resp.StatusCode, raw)
	}
	return aguitest.Read(t, sse.NewReader(resp.Body, 0), stop)
}

// TestClusterAGUIResumeOnOtherNode: an AG-UI client's response from one
// node is cut mid-answer; /connect with its last id on the other node
// resumes the run (prelude, then the rest), and the assembled messages are
// those of the whole run. Another user gets 404 from both nodes.
func TestClusterAGUIResumeOnOtherNode(t *testing.T) {
	e := newClusterEnv(t)
	n1, n2 := e.startNode("n1", ""), e.startNode("n2", "")
	alice := e.user("alice")
	tok := n1.token(alice)
	thread := "agui-" + e.id
	user := agui.Message{ID: "m-" + e.id, Role: agui.RoleUser, Content: agui.String("please be slow: what is 6*7?")}
	in := agui.RunAgentInput{ThreadID: thread, RunID: "client-run", Messages: []agui.Message{user}}

	head := aguiPost(t, n1.URL, "/api/v1/agui", tok, "", in, func(ev agui.Event) bool { return ev.Type == agui.TextMessageContent })
	runID := head[0].RunID
	lastID := ""
	for _, it := range head {
		if it.ID != "" {
			lastID = it.ID
		}
	}
	last, err := protocol.ParseEventID(lastID)
	if err != nil || head[0].Type != agui.RunStarted || runID == "" {
		t.Fatalf("first response: last id %q (%v), first event %+v", lastID, err, head[0].Event)
	}

	tail := aguiPost(t, n2.URL, "/api/v1/agui/connect", tok, lastID, agui.ConnectInput{ThreadID: thread, RunID: runID}, nil)
	types := aguitest.Types(tail)
	if len(tail) < 5 || types[0] != "RUN_STARTED" || types[1] != "MESSAGES_SNAPSHOT" || types[2] != "TEXT_MESSAGE_START" ||
		types[len(types)-1] != "RUN_FINISHED" || tail[len(tail)-1].Outcome.Type != agui.OutcomeSuccess {
		t.Fatalf("resumed on n2: %s", strings.Join(types, " "))
	}
	if cur, _ := agui.MetadataCursor(tail[3].Metadata); cur.Seq != last.Seq+1 || cur.Epoch != last.Epoch {
		t.Fatalf("the tail starts at %+v, after %s", cur, lastID)
	}

	var msgs agui.Messages
	msgs.Add(user)
	for _, it := range append(head, tail...) {
		if it.Type == agui.MessagesSnapshot {
			msgs = agui.Messages{}
			for _, m := range it.Messages {
				msgs.Add(m)
			}
			continue
		}
		msgs.Apply(it.Event)
	}
	list := msgs.List()
	answer := list[len(list)-1]
	var result string
	for _, m := range list {
		if m.Role == agui.RoleTool {
			result = m.Text()
		}
	}
	if list[0].ID != user.ID || result != "42" || answer.Text() != "The calculator says 6*7 = 42." {
		b, _ := json.Marshal(list)
		t.Fatalf("assembled messages %s", b)
	}

	mallory := n1.token(e.user("mallory"))
	for _, n := range []*node{n1, n2} {
		if code, raw, _ := n.status("POST", "/api/v1/agui/connect", mallory, agui.ConnectInput{ThreadID: thread, RunID: runID}); code != http.StatusNotFound || errorCode(raw) != "not_found" {
			t.Fatalf("another user's connect on %s: %d %s", n.name, code, raw)
		}
		other := agui.RunAgentInput{ThreadID: thread, Messages: []agui.Message{{ID: "x-" + e.id, Role: agui.RoleUser, Content: agui.String("hi")}}}
		if code, raw, _ := n.status("POST", "/api/v1/agui", mallory, other); code != http.StatusNotFound || errorCode(raw) != "not_found" {
			t.Fatalf("another user's thread on %s: %d %s", n.name, code, raw)
		}
	}
}
