package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentwire/agentwire/client"
	"github.com/agentwire/agentwire/protocol"
)

// Options.SSE: the stream over GET /api/v1/stream, requests over plain HTTP.
func TestSSE(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, ticket := range []bool{false, true} {
		t.Run(fmt.Sprintf("ticket=%v", ticket), func(t *testing.T) {
			user := fmt.Sprintf("sse-%v", ticket)
			c := dial(t, client.Options{URL: s.URL, Token: s.tokenFunc(user, nil), UseTicket: ticket, SSE: true})
			if est := c.Established(); est.UserID != user || est.HeartbeatIntervalMS != 15000 {
				t.Fatalf("established %+v", est)
			}
			ctx := ctxT(t)
			ack, err := c.SendMessage(ctx, "what is 12*(3+4)?", client.SendOptions{ClientMessageID: "c1"})
			if err != nil || ack.RunID == "" || ack.ClientMessageID != "c1" {
				t.Fatalf("ack %+v, %v", ack, err)
			}
			run, all := untilTerminal(t, c, ack.RunID)
			checkContiguous(t, all)
			if done, ok := run[len(run)-1].AgentCompleted(); !ok || done.FinalResponse == "" {
				t.Fatalf("last event %s", run[len(run)-1].Type)
			}
			again, err := c.SendMessage(ctx, "what is 12*(3+4)?", client.SendOptions{ClientMessageID: "c1"})
			if err != nil || again.RunID != ack.RunID {
				t.Fatalf("retried message: %+v, %v", again, err)
			}
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}

			slow, err := c.SendMessage(ctx, "slow please", client.SendOptions{ThreadID: ack.ThreadID})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Stop(ctx, slow.RunID); err != nil {
				t.Fatal(err)
			}
			run, _ = untilTerminal(t, c, slow.RunID)
			if e, ok := run[len(run)-1].AgentError(); !ok || e.Code != protocol.CodeCancelled {
				t.Fatalf("stopped run ended with %s", run[len(run)-1].Type)
			}

			var pe *client.Error
			if _, err := c.Stop(ctx, "no-such-run"); !errors.As(err, &pe) || pe.Code != protocol.CodeNotFound {
				t.Fatalf("stop of an unknown run: %v", err)
			}
			if _, err := c.SendMessage(ctx, "hi", client.SendOptions{ThreadID: "no-such-thread"}); !errors.As(err, &pe) || pe.Code != protocol.CodeNotFound {
				t.Fatalf("message in an unknown thread: %v", err)
			}
			if _, err := c.SendMessage(ctx, "", client.SendOptions{}); !errors.As(err, &pe) || pe.Code != protocol.CodeInvalidMessage {
				t.Fatalf("empty message: %v", err)
			}
		})
	}
}

// The server ends the SSE response when the token expires (4001); the Conn
// gets a fresh token and resumes with Last-Event-ID: a run that spans the
// drop arrives whole, each event once.
func TestSSEResumeAcrossTokenExpiry(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	var calls atomic.Int32
	token := func(context.Context) (string, error) {
		if calls.Add(1) == 1 {
			return s.tokenTTL("sse-expiring", 2*time.Second), nil
		}
		return s.tokenTTL("sse-expiring", time.Hour), nil
	}
	codes := make(chan protocol.CloseCode, 16)
	c := dial(t, client.Options{URL: s.URL, Token: token, SSE: true,
		OnDisconnect: func(code protocol.CloseCode, _ string, _ error) { codes <- code }})
	// Slow runs one after the other until one spans the drop (the token
	// lives one to two seconds, a slow run about two).
	var all []client.Event
	for spanned := false; !spanned; {
		before := c.Established().ConnectionID
		ack, err := c.SendMessage(ctxT(t), "please be slow: what is 6*7?", client.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, evs := untilTerminal(t, c, ack.RunID)
		all = append(all, evs...)
		spanned = c.Established().ConnectionID != before
		if len(all) > 200 {
			t.Fatal("no drop after many runs")
		}
	}
	checkContiguous(t, all)
	if code := <-codes; code != protocol.CloseTokenExpired || calls.Load() < 2 {
		t.Fatalf("disconnect code %v, Token called %d times; want 4001 then a fresh token", code, calls.Load())
	}
}
