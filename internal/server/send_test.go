package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentwire/agentwire/protocol"
)

// fakeSender answers as runs.Manager would, recording what it was given.
type fakeSender struct {
	user   string
	frame  protocol.Frame
	ctxErr error // the context's error when called
	err    *protocol.Error
	calls  int
	onCall func()
}

func (f *fakeSender) answer(ctx context.Context, user string, fr *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	f.calls++
	if f.onCall != nil {
		f.onCall()
	}
	f.user, f.frame, f.ctxErr = user, *fr, ctx.Err()
	if f.err != nil {
		return protocol.AckFrame{}, f.err
	}
	return protocol.AckFrame{Ref: fr.ID, ThreadID: "t1", RunID: "r1", MessageID: "m1"}, nil
}

func (f *fakeSender) UserMessage(ctx context.Context, user string, fr *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	return f.answer(ctx, user, fr)
}

func (f *fakeSender) StopAgent(ctx context.Context, user string, fr *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	return f.answer(ctx, user, fr)
}

func (f *fakeSender) UserInput(ctx context.Context, user string, fr *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	return f.answer(ctx, user, fr)
}

func TestRunInput(t *testing.T) {
	t.Parallel()
	f := &fakeSender{}
	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/runs/{id}/input", handleRunInput(f))
	rec := serve(mux, asUser(httptest.NewRequest("POST", "/api/v1/runs/r1/input", strings.NewReader(`{"request_id":"q1","approved":true,"run_id":"ignored"}`)), "bob"))
	var ack map[string]string
	wantJSON(t, rec, 200, &ack)
	if ack["type"] != "ack" || f.user != "bob" || f.frame.Type != protocol.TypeUserInput || f.frame.RunID != "r1" ||
		f.frame.RequestID != "q1" || f.frame.Answer.Approved == nil || !*f.frame.Answer.Approved {
		t.Fatalf("ack %v, sender got %s %+v", ack, f.user, f.frame)
	}
	for _, tc := range []struct {
		body   string
		status int
		code   protocol.ErrorCode
	}{
		{`[]`, 400, protocol.CodeBadJSON},
		{`{"approved":true}`, 400, protocol.CodeInvalidMessage},
		{`{"request_id":"q1"}`, 400, protocol.CodeInvalidMessage},
		{`{"request_id":"q1","approved":true,"text":"x"}`, 400, protocol.CodeInvalidMessage},
		{`{"request_id":"q1","approved":"yes"}`, 400, protocol.CodeInvalidMessage},
	} {
		f := &fakeSender{}
		mux := http.NewServeMux()
		mux.Handle("POST /api/v1/runs/{id}/input", handleRunInput(f))
		wantError(t, serve(mux, asUser(httptest.NewRequest("POST", "/api/v1/runs/r1/input", strings.NewReader(tc.body)), "bob")), tc.status, tc.code)
		if f.calls != 0 {
			t.Fatalf("%s: the sender was called", tc.body)
		}
	}
	f = &fakeSender{err: &protocol.Error{Code: protocol.CodeConflict, Message: "already answered"}}
	mux = http.NewServeMux()
	mux.Handle("POST /api/v1/runs/{id}/input", handleRunInput(f))
	wantError(t, serve(mux, asUser(httptest.NewRequest("POST", "/api/v1/runs/r1/input", strings.NewReader(`{"request_id":"q1","text":"x"}`)), "bob")), 409, protocol.CodeConflict)
}

func TestSendMessage(t *testing.T) {
	t.Parallel()
	f := &fakeSender{}
	body := `{"type":"chat","id":"a1","content":"hi","thread_id":"t1","client_message_id":"c1"}`
	rec := serve(handleSendMessage(f), asUser(httptest.NewRequest("POST", "/api/v1/messages", strings.NewReader(body)), "alice"))
	var ack map[string]string
	wantJSON(t, rec, 200, &ack)
	if ack["type"] != "ack" || ack["ref"] != "a1" || ack["run_id"] != "r1" || ack["thread_id"] != "t1" || ack["message_id"] != "m1" {
		t.Fatalf("ack %v", ack)
	}
	if f.user != "alice" || f.frame.Type != protocol.TypeUserMessage || f.frame.Alias != "" || f.frame.Content != "hi" || f.frame.ClientMessageID != "c1" {
		t.Fatalf("sender got %s %+v", f.user, f.frame)
	}

	for _, tc := range []struct {
		body   string
		status int
		code   protocol.ErrorCode
	}{
		{`{`, 400, protocol.CodeBadJSON},
		{`"hi"`, 400, protocol.CodeBadJSON},
		{`{"content":""}`, 400, protocol.CodeInvalidMessage},
		{`{"content":"x","thread_id":"a\u0000b"}`, 400, protocol.CodeInvalidMessage},
		{`{"content":"` + strings.Repeat("x", 129<<10) + `"}`, 413, protocol.CodeTooLarge},
	} {
		f := &fakeSender{}
		rec := serve(handleSendMessage(f), asUser(httptest.NewRequest("POST", "/api/v1/messages", strings.NewReader(tc.body)), "alice"))
		wantError(t, rec, tc.status, tc.code)
		if f.calls != 0 {
			t.Fatalf("%.30s: the sender was called", tc.body)
		}
	}
	// The sender's errors become statuses.
	for code, status := range map[protocol.ErrorCode]int{
		protocol.CodeNotFound:    404,
		protocol.CodeTooManyRuns: 429,
		protocol.CodeInternal:    503,
	} {
		f := &fakeSender{err: &protocol.Error{Code: code, Message: "no"}}
		rec := serve(handleSendMessage(f), asUser(httptest.NewRequest("POST", "/api/v1/messages", strings.NewReader(`{"content":"x"}`)), "alice"))
		wantError(t, rec, status, code)
	}
}

// A client that goes away does not cancel what its message started.
func TestSendOutlivesTheClient(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeSender{onCall: cancel}
	r := httptest.NewRequestWithContext(ctx, "POST", "/api/v1/messages", strings.NewReader(`{"content":"x"}`))
	serve(handleSendMessage(f), asUser(r, "alice"))
	if f.calls != 1 || f.ctxErr != nil {
		t.Fatalf("calls %d, context error %v: the client's leaving reached the sender", f.calls, f.ctxErr)
	}
}

func TestStopRun(t *testing.T) {
	t.Parallel()
	f := &fakeSender{}
	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/runs/{id}/stop", handleStopRun(f))
	rec := serve(mux, asUser(httptest.NewRequest("POST", "/api/v1/runs/r1/stop", nil), "bob"))
	var ack map[string]string
	wantJSON(t, rec, 200, &ack)
	if ack["type"] != "ack" || ack["run_id"] != "r1" || f.user != "bob" || f.frame.Type != protocol.TypeStopAgent || f.frame.RunID != "r1" {
		t.Fatalf("ack %v, sender got %s %+v", ack, f.user, f.frame)
	}
	f = &fakeSender{err: &protocol.Error{Code: protocol.CodeNotFound, Message: "no such run"}}
	mux = http.NewServeMux()
	mux.Handle("POST /api/v1/runs/{id}/stop", handleStopRun(f))
	wantError(t, serve(mux, asUser(httptest.NewRequest("POST", "/api/v1/runs/someone-elses/stop", nil), "bob")), 404, protocol.CodeNotFound)
	rec = serve(mux, asUser(httptest.NewRequest("POST", "/api/v1/runs/"+strings.Repeat("r", 200)+"/stop", nil), "bob"))
	wantError(t, rec, 400, protocol.CodeInvalidMessage)
}
