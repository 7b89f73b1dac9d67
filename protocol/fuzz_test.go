package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzDecode checks that Decode never panics, always answers with either a
// valid canonical frame or a known error code, and agrees with encoding/json
// about what is a JSON object and what its fields hold.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"user_message","id":"c1","content":"what is 12*(3+4)?","thread_id":"t1","client_message_id":"k1"}`,
		`{"type":"stop_agent","id":"s1","run_id":"r1"}`,
		`{"type":"resume","since":41,"epoch":"e1"}`,
		`{"type":"ping","id":"p"}`,
		`{"type":"chat","payload":{"text":"hi","thread_id":"t"}}`,
		`{"type":"agent_request","payload":{"user_request":"hi"}}`,
		`{"type":"execute_agent","payload":{"message":"hi"}}`,
		`{"type":"start_agent","content":"hi","thread_id":"t"}`,
		`{"type":"session_restore","last_seq":7,"epoch":"e"}`,
		`{"type":"resume","since":18446744073709551616}`,
		`{"type":"resume","since":-1}`,
		`{"type":"resume","since":1e3}`,
		`{"type":"user_message","content":"\ud800\u00e9\n"}`,
		`{"type":"user_message","content":"x","client_message_id":"k\u0000"}`,
		`{"\u0074ype":"p\u0069ng"}`,
		`{"type":"ping","x":[[[[[[[[{"a":"]}"}]]]]]]]]}`,
		"{\"type\":\"user_message\",\"content\":\"\xff\"}",
		`{"type":"ping"`,
		`[]`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	known := map[ErrorCode]bool{CodeBadJSON: true, CodeUnknownType: true, CodeInvalidMessage: true}
	f.Fuzz(func(t *testing.T, msg []byte) {
		fr, e := Decode(msg)

		obj, isObject := referenceDecode(msg)

		if e != nil {
			if !known[e.Code] {
				t.Fatalf("unknown code %q", e.Code)
			}
			if e.Message == "" || len(e.Ref) > MaxIDBytes || !utf8.ValidString(e.Ref) {
				t.Fatalf("bad error %+v", e)
			}
			if fr != (Frame{}) {
				t.Fatalf("frame %+v returned with error %v", fr, e)
			}
			if (e.Code == CodeBadJSON) == isObject {
				t.Fatalf("code %s but encoding/json object decode ok=%v for %q", e.Code, isObject, msg)
			}
			if e.Ref != "" && obj["id"] != e.Ref {
				t.Fatalf("ref %q, id %v", e.Ref, obj["id"])
			}
			if !json.Valid(EncodeError(e)) {
				t.Fatalf("EncodeError(%+v) is not JSON", e)
			}
			return
		}

		if !isObject {
			t.Fatalf("accepted %q, which encoding/json does not decode as an object", msg)
		}
		switch fr.Type {
		case TypeUserMessage, TypeStopAgent, TypeResume, TypePing:
		default:
			t.Fatalf("non-canonical type %q", fr.Type)
		}
		if fr.Alias != "" && Replacement(fr.Alias) != fr.Type {
			t.Fatalf("alias %q for type %q", fr.Alias, fr.Type)
		}
		for _, s := range []string{fr.ID, fr.Content, fr.ThreadID, fr.ClientMessageID, fr.RunID, fr.Cursor.Epoch} {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 in %+v", fr)
			}
		}
		for _, s := range []string{fr.ID, fr.ThreadID, fr.ClientMessageID, fr.RunID, fr.Cursor.Epoch} {
			if strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
				t.Fatalf("control character in an id of %+v", fr)
			}
		}
		if strings.IndexByte(fr.Content, 0) >= 0 {
			t.Fatalf("NUL in content of %+v", fr)
		}
		if len(fr.ID) > MaxIDBytes || len(fr.ThreadID) > MaxKeyBytes || len(fr.ClientMessageID) > MaxKeyBytes ||
			len(fr.RunID) > MaxKeyBytes || len(fr.Cursor.Epoch) > MaxKeyBytes {
			t.Fatalf("field over its limit in %.200q", msg)
		}
		if fr.ID != "" && obj["id"] != fr.ID {
			t.Fatalf("id %q, encoding/json says %v", fr.ID, obj["id"])
		}
		if fr.Type == TypeUserMessage {
			if fr.Content == "" || len(fr.Content) > MaxContentBytes {
				t.Fatalf("content of %d bytes accepted", len(fr.Content))
			}
			if fr.Alias == "" && obj["content"] != fr.Content {
				t.Fatalf("content %q, encoding/json says %v", fr.Content, obj["content"])
			}
		} else if fr.Content != "" || fr.ThreadID != "" || fr.ClientMessageID != "" {
			t.Fatalf("user_message fields on %s", fr.Type)
		}
		if (fr.Type == TypeStopAgent) != (fr.RunID != "") {
			t.Fatalf("run_id %q on %s", fr.RunID, fr.Type)
		}
		if fr.Type != TypeResume && fr.Cursor != (Cursor{}) {
			t.Fatalf("resume fields on %s", fr.Type)
		}
		if fr.Cursor.None {
			t.Fatalf("resume %q decoded to no position", msg)
		}
		if fr.Type == TypeResume && fr.Alias == "" {
			n, ok := obj["since"].(json.Number)
			if want := "0"; ok {
				want = n.String()
				if strconv.FormatUint(fr.Cursor.Seq, 10) != want {
					t.Fatalf("since %d, encoding/json says %v", fr.Cursor.Seq, obj["since"])
				}
			} else if fr.Cursor.Seq != 0 {
				t.Fatalf("since %d, encoding/json says %v", fr.Cursor.Seq, obj["since"])
			}
		}
		if fr.Alias == "" {
			// EncodeFrame is Decode's inverse on what Decode accepts.
			back, e := Decode(EncodeFrame(&fr))
			if e != nil || back != fr {
				t.Fatalf("Decode(EncodeFrame(%+v)) = %+v, %v", fr, back, e)
			}
		}
	})
}

// referenceDecode decodes msg as one JSON object with encoding/json, keeping
// numbers as json.Number so that valid numbers beyond float64 do not fail.
func referenceDecode(msg []byte) (map[string]any, bool) {
	if !utf8.Valid(msg) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false // trailing data
	}
	return obj, true
}
