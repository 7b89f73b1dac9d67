package client_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/client"
	"github.com/agentwire/agentwire/protocol"
)

// The REST helpers against the real server: a dev login, pages of threads
// and messages, a run's transcript, and a publish (API key) that the
// user's Conn receives.
func TestRESTHelpers(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-keys", "test-publish-key")
	hc := &http.Client{Transport: &http.Transport{}}
	ctx := ctxT(t)
	if tok, err := client.DevLogin(ctx, hc, s.URL, "rest-user"); err != nil || tok.Token == "" || time.Until(tok.ExpiresAt) < time.Hour {
		t.Fatalf("DevLogin: %+v, %v", tok, err)
	}
	var he *client.HTTPError
	if _, err := client.DevLogin(ctx, hc, s.URL, "not a valid id!"); !errors.As(err, &he) || he.Status != 400 {
		t.Fatalf("DevLogin of a bad id: %v", err)
	}
	c := dial(t, client.Options{URL: s.URL, Token: client.DevTokens(hc, s.URL, "rest-user")})
	if c.Established().UserID != "rest-user" {
		t.Fatalf("established %+v", c.Established())
	}
	first, err := c.Send(ctx, "what is 12*(3+4)?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	final, err := first.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Send(ctx, "what is 1+1?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	// Threads, a page of one at a time.
	var threads []string
	for p := (client.Page{Limit: 1}); ; {
		page, err := c.ThreadsPage(ctx, p)
		if err != nil || len(page.Threads) != 1 {
			t.Fatalf("threads page %+v, %v", page, err)
		}
		threads = append(threads, page.Threads[0].ID)
		if !page.HasMore {
			break
		}
		p.After = page.Next
	}
	if len(threads) != 2 || threads[0] != second.ThreadID || threads[1] != first.ThreadID {
		t.Fatalf("threads %v, want %s then %s", threads, second.ThreadID, first.ThreadID)
	}
	// Messages: the first page of one, then the rest.
	page, err := c.MessagesPage(ctx, first.ThreadID, client.Page{Limit: 1})
	if err != nil || len(page.Messages) != 1 || page.Messages[0].ID != first.MessageID || !page.HasMore {
		t.Fatalf("messages page %+v, %v", page, err)
	}
	rest, err := c.MessagesPage(ctx, first.ThreadID, client.Page{After: page.Next})
	if err != nil || len(rest.Messages) != 1 || rest.Messages[0].Role != "assistant" || rest.HasMore {
		t.Fatalf("messages after %s: %+v, %v", page.Next, rest, err)
	}
	if _, err := c.MessagesPage(ctx, "no-such-thread", client.Page{}); !errors.As(err, &he) || he.Status != 404 {
		t.Fatalf("unknown thread: %v", err)
	}
	// The transcript: from agent_started to the terminal event (seq 0).
	tr, err := c.RunEvents(ctx, first.RunID)
	if err != nil || len(tr) < 3 || tr[0].Type != protocol.TypeAgentStarted || tr[len(tr)-1].Type != final.Type || tr[len(tr)-1].Seq != 0 {
		t.Fatalf("transcript %+v, %v", tr, err)
	}
	for _, ev := range tr {
		if ev.RunID != first.RunID {
			t.Fatalf("transcript event %s of run %s", ev.Type, ev.RunID)
		}
	}

	// Publish: the user's Conn gets the event at the seq the answer gives.
	pub := &client.Publisher{URL: s.URL, APIKey: "test-publish-key", HTTPClient: hc}
	data, _ := json.Marshal(map[string]string{"note": "hello"})
	pos, err := pub.Publish(ctx, client.PublishRequest{UserID: "rest-user", Type: "app.note", Data: data})
	if err != nil || pos.Seq == 0 || pos.Epoch != c.Established().Epoch {
		t.Fatalf("Publish: %+v, %v", pos, err)
	}
	for ev := range c.Events() {
		if ev.Type == "app.note" {
			if ev.Seq != pos.Seq || !strings.Contains(string(ev.Data), "hello") {
				t.Fatalf("published event %+v, answer %+v", ev, pos)
			}
			break
		}
	}
	bad := &client.Publisher{URL: s.URL, APIKey: "wrong", HTTPClient: hc}
	if _, err := bad.Publish(ctx, client.PublishRequest{UserID: "rest-user", Type: "app.note"}); !errors.As(err, &he) || he.Status != 401 {
		t.Fatalf("publish with a wrong key: %v", err)
	}
}

// Rename and delete a thread. The endpoints come with the chat page's
// branch: where the server has no such route (its catch-all 404, "no such
// endpoint", for a thread that exists) the test says so and skips.
func TestRenameDeleteThread(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc("renamer", nil), RunsOnly: true})
	ctx := ctxT(t)
	r, err := c.Send(ctx, "what is 1+1?", client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	th, err := c.RenameThread(ctx, r.ThreadID, "  Sums  ")
	var he *client.HTTPError
	if errors.As(err, &he) && he.Status == 404 && he.Message == "no such endpoint" {
		t.Skip("this server has no PATCH /api/v1/threads/{id}")
	}
	if err != nil || th.ID != r.ThreadID || th.Title != "Sums" {
		t.Fatalf("RenameThread: %+v, %v", th, err)
	}
	if page, err := c.ThreadsPage(ctx, client.Page{}); err != nil || len(page.Threads) != 1 || page.Threads[0].Title != "Sums" {
		t.Fatalf("threads after the rename: %+v, %v", page, err)
	}
	if _, err := c.RenameThread(ctx, r.ThreadID, "   "); !errors.As(err, &he) || he.Status != 400 {
		t.Fatalf("blank title: %v", err)
	}

	// A thread with a run in progress is kept until the run ends.
	slow, err := c.Send(ctx, "slow: what is 2+2?", client.SendOptions{ThreadID: r.ThreadID})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteThread(ctx, r.ThreadID); !errors.As(err, &he) || he.Status != 409 || he.Code != protocol.CodeConflict {
		t.Fatalf("delete while a run is in progress: %v", err)
	}
	if err := slow.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteThread(ctx, r.ThreadID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MessagesPage(ctx, r.ThreadID, client.Page{}); !errors.As(err, &he) || he.Status != 404 {
		t.Fatalf("messages of the deleted thread: %v", err)
	}
	if _, err := c.Run(ctx, r.RunID); !errors.As(err, &he) || he.Status != 404 {
		t.Fatalf("run of the deleted thread: %v", err)
	}
	if err := c.DeleteThread(ctx, r.ThreadID); !errors.As(err, &he) || he.Status != 404 || he.Code != protocol.CodeNotFound {
		t.Fatalf("second delete: %v", err)
	}
}
