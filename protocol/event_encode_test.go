package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestEncodeEventRoundTrip(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 11, 26, 9, 30, 0, 123000000, time.UTC)
	cases := []struct {
		name string
		ev   Event
	}{
		{"minimal", Event{Seq: 1, Epoch: "e1", TS: ts, Type: "x"}},
		{"full", Event{Seq: 42, Epoch: "e\"2", TS: ts, Type: "agent_message_delta", ThreadID: "t<1>", RunID: "r&1", Data: json.RawMessage(`{"delta":"héllo\n"}`)}},
		{"odd strings", Event{Seq: 7, Epoch: "\x00\x1f\u2028", TS: ts, Type: "a\xffb", ThreadID: "\t\\"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := EncodeEvent(tc.ev)
			var got struct {
				Type     string          `json:"type"`
				Seq      uint64          `json:"seq"`
				Epoch    string          `json:"epoch"`
				TS       time.Time       `json:"ts"`
				ThreadID string          `json:"thread_id"`
				RunID    string          `json:"run_id"`
				Data     json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("frame %q is not JSON: %v", b, err)
			}
			want, _ := json.Marshal(tc.ev.Type) // encoding/json also maps invalid UTF-8 to U+FFFD
			var wantType string
			_ = json.Unmarshal(want, &wantType)
			if got.Type != wantType || got.Seq != tc.ev.Seq || !got.TS.Equal(ts) || got.RunID != tc.ev.RunID {
				t.Fatalf("round trip mismatch: %+v from %q", got, b)
			}
			if tc.ev.Data == nil && string(got.Data) != "{}" {
				t.Fatalf("nil data encoded as %s", got.Data)
			}
		})
	}
}

func BenchmarkEncodeEvent(b *testing.B) {
	ev := Event{Seq: 123456, Epoch: "01JD0000000000000000000000", TS: time.Now(), Type: "agent_message_delta", ThreadID: "01JD0000000000000000000001", RunID: "01JD0000000000000000000002", Data: json.RawMessage(`{"message_id":"m1","delta":"The answer is 84."}`)}
	b.ReportAllocs()
	for b.Loop() {
		_ = EncodeEvent(ev)
	}
}

// Frames are JSON for WebSocket and API clients, not HTML: <, > and & stay
// one byte each (escaped they take six), and the result is still JSON.
func TestNoHTMLEscaping(t *testing.T) {
	t.Parallel()
	const s = `<b>&amp;</b>`
	data, err := MarshalData(map[string]any{"content": s, "raw": json.RawMessage(`{"x":"<&>"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"content":"<b>&amp;</b>","raw":{"x":"<&>"}}`; string(data) != want {
		t.Fatalf("MarshalData = %s, want %s", data, want)
	}
	ev := Event{Seq: 1, Epoch: "e", TS: time.Now(), Type: "x", ThreadID: s, Data: data}
	b := EncodeEvent(ev)
	var got struct {
		ThreadID string `json:"thread_id"`
		Data     struct {
			Content string `json:"content"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("frame %q is not JSON: %v", b, err)
	}
	if got.ThreadID != s || got.Data.Content != s {
		t.Fatalf("round trip: %+v", got)
	}
	if bytes.Contains(b, []byte(`\u00`)) {
		t.Fatalf("frame %s has escapes", b)
	}
}
