package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/protocol"
)

func (failingStore) RenameThread(context.Context, string, string, string) (store.Thread, error) {
	return store.Thread{}, errors.New("down")
}

func (failingStore) DeleteThread(context.Context, string, string) error {
	return errors.New("down")
}

func TestHandleRenameThread(t *testing.T) {
	t.Parallel()
	db, threadID, _ := newStore(t)
	patch := func(db store.Store, user, id, body string) *httptest.ResponseRecorder {
		r := asUser(httptest.NewRequest(http.MethodPatch, "/api/v1/threads/"+id, strings.NewReader(body)), user)
		r.SetPathValue("id", id)
		return serve(handleRenameThread(db, discard), r)
	}
	var th protocol.Thread
	wantJSON(t, patch(db, "alice", threadID, `{"title":"  Trip <plans> ✈  "}`), http.StatusOK, &th)
	if th.ID != threadID || th.Title != "Trip <plans> ✈" || th.CreatedAt.IsZero() || th.UpdatedAt.IsZero() {
		t.Fatalf("renamed thread %+v", th)
	}
	var page protocol.ThreadsPage
	wantJSON(t, serve(handleThreads(db, discard), asUser(httptest.NewRequest(http.MethodGet, "/api/v1/threads", nil), "alice")), http.StatusOK, &page)
	if len(page.Threads) != 1 || page.Threads[0].Title != "Trip <plans> ✈" {
		t.Fatalf("threads after rename %+v", page.Threads)
	}
	wantError(t, patch(db, "bob", threadID, `{"title":"mine"}`), http.StatusNotFound, protocol.CodeNotFound)
	wantError(t, patch(db, "alice", "nope", `{"title":"x"}`), http.StatusNotFound, protocol.CodeNotFound)
	for _, body := range []string{`{}`, `{"title":null}`, `{"title":"   "}`, `{"title":"a\u0007b"}`, `{"title":"` + strings.Repeat("é", store.MaxTitleRunes+1) + `"}`} {
		wantError(t, patch(db, "alice", threadID, body), http.StatusBadRequest, protocol.CodeInvalidRequest)
	}
	wantError(t, patch(db, "alice", threadID, `{"title":`), http.StatusBadRequest, protocol.CodeBadJSON)
	wantError(t, patch(db, "alice", threadID, `{"title":"`+strings.Repeat("x", 200<<10)+`"}`), http.StatusRequestEntityTooLarge, protocol.CodeTooLarge)
	wantError(t, patch(failingStore{}, "alice", threadID, `{"title":"x"}`), http.StatusServiceUnavailable, protocol.CodeUnavailable)
}

func TestHandleDeleteThread(t *testing.T) {
	t.Parallel()
	db, threadID, runID := newStore(t)
	del := func(db store.Store, user, id string) *httptest.ResponseRecorder {
		r := asUser(httptest.NewRequest(http.MethodDelete, "/api/v1/threads/"+id, nil), user)
		r.SetPathValue("id", id)
		return serve(handleDeleteThread(db, discard), r)
	}
	messages := func() *httptest.ResponseRecorder {
		r := asUser(httptest.NewRequest(http.MethodGet, "/api/v1/threads/"+threadID+"/messages", nil), "alice")
		r.SetPathValue("id", threadID)
		return serve(handleMessages(db, discard), r)
	}
	// Its run is still running: nothing goes.
	wantError(t, del(db, "alice", threadID), http.StatusConflict, protocol.CodeConflict)
	wantJSON(t, messages(), http.StatusOK, &protocol.MessagesPage{})
	if err := db.FinishRun(context.Background(), store.Outcome{UserID: "alice", RunID: runID, Status: store.RunCompleted, EndedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	wantError(t, del(db, "bob", threadID), http.StatusNotFound, protocol.CodeNotFound)
	if rec := del(db, "alice", threadID); rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
		t.Fatalf("DELETE: %d %s, want 204 and no body", rec.Code, rec.Body)
	}
	wantError(t, messages(), http.StatusNotFound, protocol.CodeNotFound)
	if _, err := db.GetRun(context.Background(), "alice", runID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the thread's run after DELETE: %v, want ErrNotFound", err)
	}
	wantError(t, del(db, "alice", threadID), http.StatusNotFound, protocol.CodeNotFound)
	wantError(t, del(failingStore{}, "alice", threadID), http.StatusServiceUnavailable, protocol.CodeUnavailable)
}
