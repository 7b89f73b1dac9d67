// Package aguitest reads the AG-UI events of an event stream in tests (the
// server's and the end-to-end suites).
package aguitest

import (
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/agentwire/agentwire/internal/agui"
	"github.com/agentwire/agentwire/internal/sse"
)

// Item is one AG-UI event as read, with the SSE id it set: "" when it set
// none (the id in force is an earlier event's).
type Item struct {
	ID string
	agui.Event
}

// Read reads AG-UI events from r until stop holds for one (nil: to the end
// of the stream) and returns them. A malformed event fails t.
func Read(t testing.TB, r *sse.Reader, stop func(agui.Event) bool) []Item {
	t.Helper()
	var out []Item
	prev := ""
	for {
		ev, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read an AG-UI event: %v", err)
		}
		it := Item{}
		if err := json.Unmarshal(ev.Data, &it.Event); err != nil {
			t.Fatalf("AG-UI event %q: %v", ev.Data, err)
		}
		if ev.ID != prev {
			it.ID, prev = ev.ID, ev.ID
		}
		out = append(out, it)
		if stop != nil && stop(it.Event) {
			return out
		}
	}
}

// Types lists the items' event types.
func Types(items []Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = string(it.Type)
	}
	return out
}
