package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// odd exercises JSON escaping in every string field.
const odd = "q\"b\\s\n\t\x00<&>\u2028é"

func TestEncodeFrames(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		got  []byte
		want map[string]any // exact: no missing and no extra fields
	}{
		{"ack full", EncodeAck(AckFrame{Ref: "c1", ThreadID: "t1", RunID: "r1", MessageID: "m1"}),
			map[string]any{"type": "ack", "ref": "c1", "thread_id": "t1", "run_id": "r1", "message_id": "m1"}},
		{"ack stop", EncodeAck(AckFrame{Ref: "c2", RunID: "r1"}),
			map[string]any{"type": "ack", "ref": "c2", "run_id": "r1"}},
		{"ack no ref", EncodeAck(AckFrame{ThreadID: "t1", RunID: "r1", MessageID: "m1"}),
			map[string]any{"type": "ack", "thread_id": "t1", "run_id": "r1", "message_id": "m1"}},
		{"ack empty", EncodeAck(AckFrame{}), map[string]any{"type": "ack"}},
		{"ack escaping", EncodeAck(AckFrame{Ref: odd, ThreadID: odd, RunID: odd, MessageID: odd}),
			map[string]any{"type": "ack", "ref": odd, "thread_id": odd, "run_id": odd, "message_id": odd}},
		{"pong", EncodePong("p1"), map[string]any{"type": "pong", "ref": "p1"}},
		{"pong no ref", EncodePong(""), map[string]any{"type": "pong"}},
		{"pong escaping", EncodePong(odd), map[string]any{"type": "pong", "ref": odd}},
		{"error", EncodeError(&Error{Code: CodeInvalidMessage, Message: `missing field "content"`, Ref: "a"}),
			map[string]any{"type": "error", "code": "invalid_message", "message": `missing field "content"`, "ref": "a"}},
		{"error no ref", EncodeError(&Error{Code: CodeBadJSON, Message: "frame is not valid JSON"}),
			map[string]any{"type": "error", "code": "bad_json", "message": "frame is not valid JSON"}},
		{"error escaping", EncodeError(&Error{Code: ErrorCode(odd), Message: odd, Ref: odd}),
			map[string]any{"type": "error", "code": odd, "message": odd, "ref": odd}},
		{"error nil", EncodeError(nil),
			map[string]any{"type": "error", "code": "internal_error", "message": "internal error"}},
		{"resync", EncodeResync("e2", 41, "epoch_changed"),
			map[string]any{"type": "resync_required", "epoch": "e2", "head_seq": json.Number("41"), "reason": "epoch_changed"}},
		{"resync max head", EncodeResync(odd, 1<<64-1, ResyncReason(odd)),
			map[string]any{"type": "resync_required", "epoch": odd, "head_seq": json.Number("18446744073709551615"), "reason": odd}},
		{"resync empty", EncodeResync("", 0, ""),
			map[string]any{"type": "resync_required", "epoch": "", "head_seq": json.Number("0"), "reason": ""}},
		{"connection_established", EncodeConnectionEstablished(ConnectionEstablished{ConnectionID: "c", UserID: "alice", Epoch: "e", HeadSeq: 41, HeartbeatIntervalMS: 25000, MaxMessageBytes: 65536}),
			map[string]any{"type": "connection_established", "connection_id": "c", "user_id": "alice", "protocol": "agentwire.v1", "epoch": "e",
				"head_seq": json.Number("41"), "heartbeat_interval_ms": json.Number("25000"), "max_message_bytes": json.Number("65536")}},
		{"connection_established zero", EncodeConnectionEstablished(ConnectionEstablished{}),
			map[string]any{"type": "connection_established", "connection_id": "", "user_id": "", "protocol": "agentwire.v1", "epoch": "",
				"head_seq": json.Number("0"), "heartbeat_interval_ms": json.Number("0"), "max_message_bytes": json.Number("0")}},
		{"connection_established escaping", EncodeConnectionEstablished(ConnectionEstablished{ConnectionID: odd, UserID: odd, Epoch: odd, HeadSeq: 1<<64 - 1}),
			map[string]any{"type": "connection_established", "connection_id": odd, "user_id": odd, "protocol": "agentwire.v1", "epoch": odd,
				"head_seq": json.Number("18446744073709551615"), "heartbeat_interval_ms": json.Number("0"), "max_message_bytes": json.Number("0")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := decodeObject(t, tc.got)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("frame %s\n got %#v\nwant %#v", tc.got, got, tc.want)
			}
		})
	}
}

func TestEncodeDeprecation(t *testing.T) {
	t.Parallel()
	for _, alias := range Aliases() {
		t.Run(alias, func(t *testing.T) {
			t.Parallel()
			b := EncodeDeprecation(alias)
			got := decodeObject(t, b)
			if len(got) != 4 || got["type"] != "deprecation" || got["alias"] != alias || got["replacement"] != Replacement(alias) {
				t.Fatalf("frame %s", b)
			}
			msg, _ := got["message"].(string)
			if !strings.Contains(msg, alias) || !strings.Contains(msg, Replacement(alias)) {
				t.Fatalf("message %q names neither the alias nor its replacement", msg)
			}
		})
	}
	if got := decodeObject(t, EncodeDeprecation("session_restore")); got["replacement"] != "resume" {
		t.Fatalf("session_restore replacement = %v", got["replacement"])
	}
	if got := decodeObject(t, EncodeDeprecation("chat")); got["replacement"] != "user_message" {
		t.Fatalf("chat replacement = %v", got["replacement"])
	}
	if got := decodeObject(t, EncodeDeprecation(odd)); got["alias"] != odd || got["replacement"] != "" {
		t.Fatalf("unknown alias frame = %v", got)
	}
}

// TestEncodeErrorFromDecode sends every decode error back through
// EncodeError, as the transport does.
func TestEncodeErrorFromDecode(t *testing.T) {
	t.Parallel()
	for _, in := range []string{`nope`, `{"id":"x"}`, `{"type":"user_message","id":"x"}`} {
		_, e := Decode([]byte(in))
		got := decodeObject(t, EncodeError(e))
		if got["code"] != string(e.Code) || got["message"] != e.Message || got["ref"] != nilIfEmpty(e.Ref) {
			t.Fatalf("EncodeError(%+v) = %v", e, got)
		}
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// decodeObject strictly decodes one JSON object, keeping numbers exact.
func decodeObject(t *testing.T, b []byte) map[string]any {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("not valid JSON: %q", b)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return m
}

func BenchmarkEncodeAck(b *testing.B) {
	a := AckFrame{Ref: "c-17", ThreadID: "01JD3Q8Z9X4Y5W6V7T8S9R0P1N", RunID: "01JD3Q8Z9X4Y5W6V7T8S9R0P1P", MessageID: "01JD3Q8Z9X4Y5W6V7T8S9R0P1Q"}
	b.ReportAllocs()
	for b.Loop() {
		_ = EncodeAck(a)
	}
}
