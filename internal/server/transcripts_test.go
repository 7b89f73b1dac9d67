package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/protocol"
)

// runWith stores a user message of thread th starting a run that ended
// with status and code, and its transcript evs (type, data pairs).
func (e *apiEnv) runWith(user, th string, at time.Time, status store.RunStatus, code string, evs ...string) string {
	e.t.Helper()
	ctx := context.Background()
	m := store.Message{ID: ulid.Make().String(), ThreadID: th, UserID: user, Role: store.RoleUser, Content: "q", CreatedAt: at}
	r := store.Run{ID: ulid.Make().String(), ThreadID: th, UserID: user, Agent: "demo", StartedAt: at, Node: "n", LeaseUntil: at.Add(time.Hour)}
	m.RunID, r.UserMessageID = r.ID, m.ID
	if _, err := e.store.StartRun(ctx, nil, m, r, 1); err != nil {
		e.t.Fatal(err)
	}
	var rev []store.RunEvent
	for i := 0; i+1 < len(evs); i += 2 {
		rev = append(rev, store.RunEvent{UserID: user, RunID: r.ID, Index: len(rev) + 1, Type: evs[i], Seq: uint64(i + 1), Epoch: "ep", TS: at, Data: []byte(evs[i+1])})
	}
	if len(rev) > 0 {
		if err := e.store.AppendRunEvents(ctx, user, r.ID, rev); err != nil {
			e.t.Fatal(err)
		}
	}
	if status != store.RunRunning {
		if err := e.store.FinishRun(ctx, store.Outcome{UserID: user, RunID: r.ID, Status: status, ErrorCode: code, ErrorMessage: "why: " + code}); err != nil {
			e.t.Fatal(err)
		}
	}
	return r.ID
}

type eventsPage struct {
	Events  []protocol.Event  `json:"-"`
	Raw     []json.RawMessage `json:"events"`
	Next    *string           `json:"next"`
	HasMore bool              `json:"has_more"`
}

func (e *apiEnv) runEvents(user, runID, query string) (int, eventsPage) {
	e.t.Helper()
	status, _, body := e.get(user, "/api/v1/runs/"+runID+"/events"+query)
	var p eventsPage
	if status == http.StatusOK {
		if err := json.Unmarshal(body, &p); err != nil {
			e.t.Fatalf("%s: %v", body, err)
		}
		for _, raw := range p.Raw {
			f, err := protocol.DecodeServerFrame(raw)
			if err != nil {
				e.t.Fatalf("event %s: %v", raw, err)
			}
			p.Events = append(p.Events, f.Event())
		}
	}
	return status, p
}

func evTypes(evs []protocol.Event) string {
	var s []string
	for _, ev := range evs {
		s = append(s, ev.Type)
	}
	return strings.Join(s, " ")
}

func TestRunEventsAndMessagesCarryTheTranscript(t *testing.T) {
	e := newAPI(t, nil)
	th, _ := e.thread("ann", nil)
	t0 := time.Now().Add(-time.Minute)
	stopped := e.runWith("ann", th, t0, store.RunCancelled, "cancelled",
		"agent_started", `{"agent":"demo"}`,
		"agent_thinking", `{"text":"hmm"}`,
		"tool_executing", `{"tool_call_id":"c1","tool":"calculator","args":{"expression":"2+2"}}`,
		"tool_completed", `{"tool_call_id":"c1","tool":"calculator","ok":true,"result":4,"duration_ms":2}`,
		"agent_message_delta", `{"delta":"it is","message_id":"m"}`,
		"agent_error", `{"code":"cancelled","message":"stopped by the user","duration_ms":9}`)
	lost := e.runWith("ann", th, t0.Add(time.Second), store.RunFailed, "node_lost", "agent_started", `{"agent":"demo"}`)

	status, p := e.runEvents("ann", stopped, "")
	want := "agent_started agent_thinking tool_executing tool_completed agent_message_delta agent_error"
	if status != http.StatusOK || evTypes(p.Events) != want || p.HasMore {
		t.Fatalf("events: %d %q more %v", status, evTypes(p.Events), p.HasMore)
	}
	if ev := p.Events[2]; ev.RunID != stopped || ev.ThreadID != th || ev.Seq != 5 || ev.Epoch != "ep" {
		t.Errorf("stream form: %+v", ev)
	}
	// Paged.
	_, p1 := e.runEvents("ann", stopped, "?limit=4")
	if len(p1.Events) != 4 || p1.Next == nil {
		t.Fatalf("page 1: %q next %v", evTypes(p1.Events), p1.Next)
	}
	_, p2 := e.runEvents("ann", stopped, "?limit=4&after="+*p1.Next)
	if evTypes(p2.Events) != "agent_message_delta agent_error" || p2.HasMore {
		t.Fatalf("page 2: %q", evTypes(p2.Events))
	}
	// A run ended by a reaper has its end made from its outcome.
	_, pl := e.runEvents("ann", lost, "")
	if evTypes(pl.Events) != "agent_started agent_error" || !strings.Contains(string(pl.Raw[1]), `"code":"node_lost"`) {
		t.Fatalf("lost run: %q %s", evTypes(pl.Events), pl.Raw)
	}
	// Another user's run, a bad cursor.
	if status, _ := e.runEvents("bob", stopped, ""); status != http.StatusNotFound {
		t.Errorf("another user's run: %d", status)
	}
	if status, _ := e.runEvents("ann", stopped, "?after=x"); status != http.StatusBadRequest {
		t.Errorf("bad after: %d", status)
	}

	// The thread's messages carry each run with its steps.
	status, _, body := e.get("ann", "/api/v1/threads/"+th+"/messages")
	if status != http.StatusOK {
		t.Fatalf("messages: %d %s", status, body)
	}
	var page protocol.MessagesPage
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 2 || page.Messages[0].Run == nil || page.Messages[1].Run == nil {
		t.Fatalf("messages: %s", body)
	}
	r0 := page.Messages[0].Run
	if r0.ID != stopped || r0.Status != "cancelled" || len(r0.Events) != 6 || !strings.Contains(string(r0.Events[4]), `"delta":"it is"`) {
		t.Errorf("first run: %+v", r0)
	}
	if r1 := page.Messages[1].Run; r1.ErrorCode != "node_lost" || len(r1.Events) != 2 {
		t.Errorf("second run: %+v", r1)
	}
}

// The transcripts of a page count against its byte bound: a page whose
// runs' transcripts do not fit ends early, and the next one goes on.
func TestMessagesPageBoundsTranscripts(t *testing.T) {
	e := newAPI(t, nil)
	th, _ := e.thread("cy", nil)
	t0 := time.Now().Add(-time.Minute)
	big := fmt.Sprintf(`{"text":%q}`, strings.Repeat("x", 200<<10))
	var runs []string
	for i := range 8 {
		runs = append(runs, e.runWith("cy", th, t0.Add(time.Duration(i)*time.Second), store.RunCompleted, "",
			"agent_thinking", big, "agent_thinking", big))
	}
	var got []string
	for _, dir := range []string{"", "before"} {
		got = got[:0]
		q := ""
		if dir == "before" {
			// Start after the last message: page backwards from a new one.
			last := store.Message{ID: ulid.Make().String(), ThreadID: th, UserID: "cy", Role: store.RoleAssistant, Content: "end", CreatedAt: t0.Add(time.Hour)}
			if err := e.store.AddMessage(context.Background(), last); err != nil {
				t.Fatal(err)
			}
			q = "?before=" + last.ID
		}
		for pages := 0; ; pages++ {
			status, _, body := e.get("cy", "/api/v1/threads/"+th+"/messages"+q)
			if status != http.StatusOK || len(body) > 2<<20 {
				t.Fatalf("%s page %d: %d, %d bytes", dir, pages, status, len(body))
			}
			var page protocol.MessagesPage
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, m := range page.Messages {
				if m.Run != nil {
					if len(m.Run.Events) != 2 {
						t.Fatalf("run %s with %d events", m.Run.ID, len(m.Run.Events))
					}
					ids = append(ids, m.Run.ID)
				}
			}
			if dir == "before" {
				got = append(ids, got...)
			} else {
				got = append(got, ids...)
			}
			if !page.HasMore {
				break
			}
			if pages > 10 {
				t.Fatal("too many pages")
			}
			q = "?after=" + page.Next
			if dir == "before" {
				q = "?before=" + page.Next
			}
		}
		if strings.Join(got, ",") != strings.Join(runs, ",") {
			t.Errorf("%s: runs %v, want %v", dir, got, runs)
		}
	}
}
