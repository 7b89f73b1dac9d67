package protocol

import (
	"strings"
	"testing"
)

type validCase struct {
	name string
	in   string
	want Frame
}

func TestDecodeValid(t *testing.T) {
	t.Parallel()
	maxContent := strings.Repeat("a", MaxContentBytes)
	maxID := strings.Repeat("i", MaxIDBytes)
	maxKey := strings.Repeat("k", MaxKeyBytes)
	cases := []validCase{
		// canonical types
		{"user_message minimal", `{"type":"user_message","content":"hi"}`,
			Frame{Type: TypeUserMessage, Content: "hi"}},
		{"user_message full", `{"type":"user_message","id":"c1","content":"what is 12*(3+4)?","thread_id":"01JD","client_message_id":"m-1"}`,
			Frame{Type: TypeUserMessage, ID: "c1", Content: "what is 12*(3+4)?", ThreadID: "01JD", ClientMessageID: "m-1"}},
		{"user_message null and empty optionals", `{"type":"user_message","content":"x","thread_id":null,"client_message_id":"","id":null}`,
			Frame{Type: TypeUserMessage, Content: "x"}},
		{"user_message escapes", `{"type":"user_message","content":"a\"b\\c\n\u00e9\ud83d\ude00"}`,
			Frame{Type: TypeUserMessage, Content: "a\"b\\c\né😀"}},
		{"user_message lone surrogate becomes U+FFFD", `{"type":"user_message","content":"\ud800"}`,
			Frame{Type: TypeUserMessage, Content: "\ufffd"}},
		{"user_message multibyte", `{"type":"user_message","content":"héllo 世界"}`,
			Frame{Type: TypeUserMessage, Content: "héllo 世界"}},
		{"user_message content at limit", `{"type":"user_message","content":"` + maxContent + `"}`,
			Frame{Type: TypeUserMessage, Content: maxContent}},
		{"user_message escaped content at limit", `{"type":"user_message","content":"` + strings.Repeat(`\u0061`, MaxContentBytes) + `"}`,
			Frame{Type: TypeUserMessage, Content: maxContent}},
		{"id at limit", `{"type":"ping","id":"` + maxID + `"}`,
			Frame{Type: TypePing, ID: maxID}},
		{"keys at limit", `{"type":"user_message","content":"x","thread_id":"` + maxKey + `","client_message_id":"` + maxKey + `"}`,
			Frame{Type: TypeUserMessage, Content: "x", ThreadID: maxKey, ClientMessageID: maxKey}},
		{"stop_agent", `{"type":"stop_agent","id":"s","run_id":"r1"}`,
			Frame{Type: TypeStopAgent, ID: "s", RunID: "r1"}},
		{"resume full", `{"type":"resume","since":41,"epoch":"e1"}`,
			Frame{Type: TypeResume, Cursor: Cursor{Seq: 41, Epoch: "e1"}}},
		{"resume since 0", `{"type":"resume","since":0}`,
			Frame{Type: TypeResume, Cursor: Cursor{Seq: 0}}},
		{"resume since max", `{"type":"resume","since":18446744073709551615}`,
			Frame{Type: TypeResume, Cursor: Cursor{Seq: 1<<64 - 1}}},
		{"resume empty", `{"type":"resume"}`,
			Frame{Type: TypeResume}},
		{"resume null since", `{"type":"resume","since":null,"epoch":null}`,
			Frame{Type: TypeResume}},
		{"ping", `{"type":"ping"}`, Frame{Type: TypePing}},
		{"ping with id", `{"id":"p1","type":"ping"}`, Frame{Type: TypePing, ID: "p1"}},

		// tolerated shapes
		{"whitespace", " \n\t{ \"type\" : \"ping\" , \"id\" : \"x\" }\r\n", Frame{Type: TypePing, ID: "x"}},
		{"unknown extra fields", `{"type":"ping","extra":{"a":[1,2,{"b":"}"}]},"n":-1.5e3,"t":true}`, Frame{Type: TypePing}},
		{"irrelevant fields of wrong type ignored", `{"type":"ping","content":5,"since":"x","run_id":[]}`, Frame{Type: TypePing}},
		{"payload ignored on canonical", `{"type":"user_message","content":"x","payload":7}`, Frame{Type: TypeUserMessage, Content: "x"}},
		{"duplicate key last wins", `{"type":"chat","type":"ping"}`, Frame{Type: TypePing}},
		{"escaped key", `{"\u0074ype":"ping"}`, Frame{Type: TypePing}},
		{"escaped type value", `{"type":"p\u0069ng"}`, Frame{Type: TypePing}},
		{"deep nesting in unused field", `{"type":"ping","x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`, Frame{Type: TypePing}},
		{"braces inside strings", `{"x":"{[\"]}","type":"ping"}`, Frame{Type: TypePing}},
	}
	// every user_message alias with every place its text and thread may be
	for _, alias := range []string{"chat", "agent_request", "execute_agent", "start_agent"} {
		cases = append(cases,
			validCase{alias + " content", `{"type":"` + alias + `","id":"a","content":"hi","thread_id":"t"}`,
				Frame{Type: TypeUserMessage, Alias: alias, ID: "a", Content: "hi", ThreadID: "t"}},
		)
		for _, field := range []string{"content", "text", "message", "user_request"} {
			cases = append(cases, validCase{alias + " payload." + field, `{"type":"` + alias + `","payload":{"` + field + `":"hi","thread_id":"pt"}}`,
				Frame{Type: TypeUserMessage, Alias: alias, Content: "hi", ThreadID: "pt"}})
		}
		cases = append(cases,
			validCase{alias + " first non-empty wins", `{"type":"` + alias + `","content":"","payload":{"content":null,"text":"","message":"m","user_request":"u"}}`,
				Frame{Type: TypeUserMessage, Alias: alias, Content: "m"}},
			validCase{alias + " top-level beats payload", `{"type":"` + alias + `","content":"c","thread_id":"t","payload":{"content":"p","thread_id":"pt"}}`,
				Frame{Type: TypeUserMessage, Alias: alias, Content: "c", ThreadID: "t"}},
			validCase{alias + " client_message_id", `{"type":"` + alias + `","payload":{"text":"x"},"client_message_id":"k","payload_extra":1}`,
				Frame{Type: TypeUserMessage, Alias: alias, Content: "x", ClientMessageID: "k"}},
			validCase{alias + " null payload with content", `{"type":"` + alias + `","content":"x","payload":null}`,
				Frame{Type: TypeUserMessage, Alias: alias, Content: "x"}},
		)
	}
	cases = append(cases,
		validCase{"session_restore last_seq", `{"type":"session_restore","id":"r","last_seq":7,"epoch":"e"}`,
			Frame{Type: TypeResume, Alias: "session_restore", ID: "r", Cursor: Cursor{Seq: 7, Epoch: "e"}}},
		validCase{"session_restore since", `{"type":"session_restore","since":9}`,
			Frame{Type: TypeResume, Alias: "session_restore", Cursor: Cursor{Seq: 9}}},
		validCase{"session_restore last_seq beats since", `{"type":"session_restore","since":9,"last_seq":3}`,
			Frame{Type: TypeResume, Alias: "session_restore", Cursor: Cursor{Seq: 3}}},
		validCase{"session_restore null last_seq falls back to since", `{"type":"session_restore","since":9,"last_seq":null}`,
			Frame{Type: TypeResume, Alias: "session_restore", Cursor: Cursor{Seq: 9}}},
		validCase{"session_restore empty", `{"type":"session_restore"}`,
			Frame{Type: TypeResume, Alias: "session_restore"}},
		validCase{"resume ignores last_seq", `{"type":"resume","last_seq":3}`,
			Frame{Type: TypeResume}},
	)

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode([]byte(tc.in))
			if err != nil {
				t.Fatalf("Decode(%.80q) error %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("Decode(%.80q)\n got %+.80v\nwant %+.80v", tc.in, got, tc.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	over := func(n int) string { return strings.Repeat("a", n+1) }
	cases := []struct {
		name  string
		in    string
		code  ErrorCode
		ref   string
		field string // must appear in the message when set
	}{
		// bad_json
		{"empty", ``, CodeBadJSON, "", ""},
		{"spaces", `   `, CodeBadJSON, "", ""},
		{"not json", `hello`, CodeBadJSON, "", ""},
		{"truncated", `{"type":"ping"`, CodeBadJSON, "", ""},
		{"trailing garbage", `{"type":"ping"}x`, CodeBadJSON, "", ""},
		{"two objects", `{"type":"ping"}{"type":"ping"}`, CodeBadJSON, "", ""},
		{"trailing comma", `{"type":"ping",}`, CodeBadJSON, "", ""},
		{"single quotes", `{'type':'ping'}`, CodeBadJSON, "", ""},
		{"array", `[{"type":"ping"}]`, CodeBadJSON, "", ""},
		{"string", `"ping"`, CodeBadJSON, "", ""},
		{"number", `42`, CodeBadJSON, "", ""},
		{"null", `null`, CodeBadJSON, "", ""},
		{"invalid utf-8 in value", "{\"type\":\"user_message\",\"id\":\"a\",\"content\":\"\xff\xfe\"}", CodeBadJSON, "", ""},
		{"invalid utf-8 outside", "{\"type\":\"ping\"}\xc3", CodeBadJSON, "", ""},
		{"overlong utf-8", "{\"type\":\"user_message\",\"content\":\"\xc0\xaf\"}", CodeBadJSON, "", ""},
		{"surrogate utf-8", "{\"type\":\"user_message\",\"content\":\"\xed\xa0\x80\"}", CodeBadJSON, "", ""},
		{"raw control char", "{\"type\":\"user_message\",\"content\":\"a\x01\"}", CodeBadJSON, "", ""},
		{"bom", "\xef\xbb\xbf{\"type\":\"ping\"}", CodeBadJSON, "", ""},
		{"nesting beyond parser limit", `{"type":"ping","x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, CodeBadJSON, "", ""},
		{"bad escape", `{"type":"p\qing"}`, CodeBadJSON, "", ""},

		// id
		{"id number", `{"type":"ping","id":1}`, CodeInvalidMessage, "", "id"},
		{"id object", `{"type":"ping","id":{}}`, CodeInvalidMessage, "", "id"},
		{"id too long", `{"type":"ping","id":"` + over(MaxIDBytes) + `"}`, CodeInvalidMessage, "", "id"},
		{"id too long escaped", `{"type":"ping","id":"` + strings.Repeat(`\u00e9`, 33) + `"}`, CodeInvalidMessage, "", "id"},
		{"bad id beats unknown type", `{"type":"nope","id":true}`, CodeInvalidMessage, "", "id"},
		{"id with NUL", `{"type":"ping","id":"a\u0000"}`, CodeInvalidMessage, "", "id"},
		{"id with DEL", `{"type":"ping","id":"a\u007f"}`, CodeInvalidMessage, "", "id"},

		// unknown_type
		{"missing type", `{"id":"a","content":"x"}`, CodeUnknownType, "a", "type"},
		{"empty object", `{}`, CodeUnknownType, "", "type"},
		{"null type", `{"type":null,"id":"a"}`, CodeUnknownType, "a", "type"},
		{"type number", `{"type":1,"id":"a"}`, CodeUnknownType, "a", "type"},
		{"type object", `{"type":{"name":"ping"},"id":"a"}`, CodeUnknownType, "a", "type"},
		{"unknown type", `{"type":"subscribe","id":"a"}`, CodeUnknownType, "a", ""},
		{"empty type", `{"type":"","id":"a"}`, CodeUnknownType, "a", ""},
		{"type wrong case", `{"type":"PING","id":"a"}`, CodeUnknownType, "a", ""},
		{"key wrong case", `{"Type":"ping","id":"a"}`, CodeUnknownType, "a", ""},
		{"server type", `{"type":"ack","id":"a"}`, CodeUnknownType, "a", ""},
		{"stream type", `{"type":"agent_started","id":"a"}`, CodeUnknownType, "a", ""},
		{"unknown type with bad fields", `{"type":"x","content":5,"id":"a"}`, CodeUnknownType, "a", ""},

		// user_message
		{"content missing", `{"type":"user_message","id":"a"}`, CodeInvalidMessage, "a", "content"},
		{"content null", `{"type":"user_message","id":"a","content":null}`, CodeInvalidMessage, "a", "content"},
		{"content empty", `{"type":"user_message","id":"a","content":""}`, CodeInvalidMessage, "a", "content"},
		{"content number", `{"type":"user_message","id":"a","content":42}`, CodeInvalidMessage, "a", "content"},
		{"content array", `{"type":"user_message","id":"a","content":["x"]}`, CodeInvalidMessage, "a", "content"},
		{"content object", `{"type":"user_message","id":"a","content":{"text":"x"}}`, CodeInvalidMessage, "a", "content"},
		{"content bool", `{"type":"user_message","id":"a","content":true}`, CodeInvalidMessage, "a", "content"},
		{"content over limit", `{"type":"user_message","id":"a","content":"` + over(MaxContentBytes) + `"}`, CodeInvalidMessage, "a", "content"},
		{"content over limit multibyte", `{"type":"user_message","id":"a","content":"` + strings.Repeat("é", MaxContentBytes/2) + `x"}`, CodeInvalidMessage, "a", "content"},
		{"content over limit escaped", `{"type":"user_message","id":"a","content":"` + strings.Repeat(`\n`, MaxContentBytes+1) + `"}`, CodeInvalidMessage, "a", "content"},
		{"thread_id number", `{"type":"user_message","id":"a","content":"x","thread_id":5}`, CodeInvalidMessage, "a", "thread_id"},
		{"thread_id too long", `{"type":"user_message","id":"a","content":"x","thread_id":"` + over(MaxKeyBytes) + `"}`, CodeInvalidMessage, "a", "thread_id"},
		{"client_message_id number", `{"type":"user_message","id":"a","content":"x","client_message_id":1}`, CodeInvalidMessage, "a", "client_message_id"},
		{"client_message_id too long", `{"type":"user_message","id":"a","content":"x","client_message_id":"` + over(MaxKeyBytes) + `"}`, CodeInvalidMessage, "a", "client_message_id"},
		// NUL and control characters: PostgreSQL refuses NUL in text, so every
		// store must see the same refusal here.
		{"client_message_id with NUL", `{"type":"user_message","id":"a","content":"x","client_message_id":"k\u0000"}`, CodeInvalidMessage, "a", "client_message_id"},
		{"client_message_id with newline", `{"type":"user_message","id":"a","content":"x","client_message_id":"k\n"}`, CodeInvalidMessage, "a", "client_message_id"},
		{"thread_id with NUL", `{"type":"user_message","id":"a","content":"x","thread_id":"\u0000"}`, CodeInvalidMessage, "a", "thread_id"},
		{"content with NUL", `{"type":"user_message","id":"a","content":"x\u0000y"}`, CodeInvalidMessage, "a", "content"},
		{"legacy payload content with NUL", `{"type":"chat","id":"a","payload":{"text":"\u0000"}}`, CodeInvalidMessage, "a", "payload.text"},
		{"run_id with NUL", `{"type":"stop_agent","id":"a","run_id":"r\u0000"}`, CodeInvalidMessage, "a", "run_id"},
		{"epoch with tab", `{"type":"resume","id":"a","epoch":"e\t"}`, CodeInvalidMessage, "a", "epoch"},

		// stop_agent
		{"run_id missing", `{"type":"stop_agent","id":"a"}`, CodeInvalidMessage, "a", "run_id"},
		{"run_id empty", `{"type":"stop_agent","id":"a","run_id":""}`, CodeInvalidMessage, "a", "run_id"},
		{"run_id number", `{"type":"stop_agent","id":"a","run_id":7}`, CodeInvalidMessage, "a", "run_id"},
		{"run_id too long", `{"type":"stop_agent","id":"a","run_id":"` + over(MaxKeyBytes) + `"}`, CodeInvalidMessage, "a", "run_id"},

		// resume
		{"since string", `{"type":"resume","id":"a","since":"5"}`, CodeInvalidMessage, "a", "since"},
		{"since negative", `{"type":"resume","id":"a","since":-1}`, CodeInvalidMessage, "a", "since"},
		{"since negative zero", `{"type":"resume","id":"a","since":-0}`, CodeInvalidMessage, "a", "since"},
		{"since float", `{"type":"resume","id":"a","since":1.5}`, CodeInvalidMessage, "a", "since"},
		{"since integral float", `{"type":"resume","id":"a","since":5.0}`, CodeInvalidMessage, "a", "since"},
		{"since exponent", `{"type":"resume","id":"a","since":1e3}`, CodeInvalidMessage, "a", "since"},
		{"since 2^64", `{"type":"resume","id":"a","since":18446744073709551616}`, CodeInvalidMessage, "a", "since"},
		{"since huge", `{"type":"resume","id":"a","since":` + strings.Repeat("9", 400) + `}`, CodeInvalidMessage, "a", "since"},
		{"since bool", `{"type":"resume","id":"a","since":true}`, CodeInvalidMessage, "a", "since"},
		{"since array", `{"type":"resume","id":"a","since":[1]}`, CodeInvalidMessage, "a", "since"},
		{"epoch number", `{"type":"resume","id":"a","since":1,"epoch":1}`, CodeInvalidMessage, "a", "epoch"},
		{"epoch too long", `{"type":"resume","id":"a","epoch":"` + over(MaxKeyBytes) + `"}`, CodeInvalidMessage, "a", "epoch"},
		{"last_seq negative", `{"type":"session_restore","id":"a","last_seq":-3}`, CodeInvalidMessage, "a", "last_seq"},
		{"last_seq string", `{"type":"session_restore","id":"a","last_seq":"3"}`, CodeInvalidMessage, "a", "last_seq"},
		{"session_restore bad since", `{"type":"session_restore","id":"a","since":1.1}`, CodeInvalidMessage, "a", "since"},

		// aliases
		{"chat no text", `{"type":"chat","id":"a"}`, CodeInvalidMessage, "a", "content"},
		{"chat empty texts", `{"type":"chat","id":"a","content":"","payload":{"content":"","text":"","message":"","user_request":""}}`, CodeInvalidMessage, "a", "content"},
		{"chat payload string", `{"type":"chat","id":"a","content":"x","payload":"hi"}`, CodeInvalidMessage, "a", "payload"},
		{"chat payload array", `{"type":"chat","id":"a","payload":[{"text":"hi"}]}`, CodeInvalidMessage, "a", "payload"},
		{"chat content number", `{"type":"chat","id":"a","content":1,"payload":{"text":"x"}}`, CodeInvalidMessage, "a", "content"},
		{"chat payload.text object", `{"type":"agent_request","id":"a","payload":{"text":{"x":1},"message":"m"}}`, CodeInvalidMessage, "a", "payload.text"},
		{"chat payload.message number", `{"type":"execute_agent","id":"a","payload":{"message":1}}`, CodeInvalidMessage, "a", "payload.message"},
		{"chat payload.user_request array", `{"type":"start_agent","id":"a","payload":{"user_request":[]}}`, CodeInvalidMessage, "a", "payload.user_request"},
		{"chat payload content too long", `{"type":"chat","id":"a","payload":{"content":"` + over(MaxContentBytes) + `"}}`, CodeInvalidMessage, "a", "payload.content"},
		{"chat thread_id number", `{"type":"chat","id":"a","content":"x","thread_id":1}`, CodeInvalidMessage, "a", "thread_id"},
		{"chat payload.thread_id number", `{"type":"chat","id":"a","content":"x","payload":{"thread_id":1}}`, CodeInvalidMessage, "a", "payload.thread_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Decode([]byte(tc.in))
			if err == nil {
				t.Fatalf("Decode(%.80q) = %+v, want error %s", tc.in, got, tc.code)
			}
			if got != (Frame{}) {
				t.Errorf("Decode(%.80q) returned a non-zero frame with an error: %+v", tc.in, got)
			}
			if err.Code != tc.code || err.Ref != tc.ref {
				t.Fatalf("Decode(%.80q) = code %q ref %q (%s), want code %q ref %q", tc.in, err.Code, err.Ref, err.Message, tc.code, tc.ref)
			}
			if tc.field != "" && !strings.Contains(err.Message, `"`+tc.field+`"`) && !strings.Contains(err.Message, tc.field) {
				t.Errorf("message %q does not name field %q", err.Message, tc.field)
			}
			if err.Message == "" {
				t.Errorf("empty message")
			}
		})
	}
}

// TestDecodeMessagesDoNotQuoteInput keeps client input out of error messages,
// which end up in logs.
func TestDecodeMessagesDoNotQuoteInput(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{"type":"SECRET-TYPE"}`,
		`{"type":"user_message","content":"` + strings.Repeat("SECRET", 6000) + `"}`,
		`{"type":"resume","since":"SECRET"}`,
	} {
		_, err := Decode([]byte(in))
		if err == nil || strings.Contains(err.Message, "SECRET") {
			t.Errorf("Decode(%.40q) = %v", in, err)
		}
	}
}

func TestErrorString(t *testing.T) {
	t.Parallel()
	e := &Error{Code: CodeNotFound, Message: "thread not found", Ref: "a"}
	if got, want := e.Error(), "protocol: not_found: thread not found"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

func TestAliases(t *testing.T) {
	t.Parallel()
	got := Aliases()
	want := []string{"chat", "agent_request", "execute_agent", "start_agent", "session_restore"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("Aliases() = %v, want %v", got, want)
	}
	got[0] = "mutated"
	if Aliases()[0] != "chat" {
		t.Fatal("Aliases() shares its backing array")
	}
	for _, a := range want {
		f, err := Decode([]byte(`{"type":"` + a + `","content":"x"}`))
		if err != nil || f.Alias != a || f.Type != Replacement(a) {
			t.Errorf("alias %s: frame %+v, err %v, Replacement %q", a, f, err, Replacement(a))
		}
	}
	for _, notAlias := range []string{"", TypeUserMessage, TypePing, "Chat"} {
		if r := Replacement(notAlias); r != "" {
			t.Errorf("Replacement(%q) = %q, want empty", notAlias, r)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	msg := []byte(`{"type":"user_message","id":"c-17","thread_id":"01JD3Q8Z9X4Y5W6V7T8S9R0P1N","client_message_id":"4f7c2e1a-9b3d-4c5e-8f6a-1b2c3d4e5f60","content":"Hello! What is 12*(3+4)? Please show the steps."}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDecodeAs(t *testing.T) {
	t.Parallel()
	f, e := DecodeAs(TypeUserMessage, []byte(`{"type":"stop_agent","id":"m1","content":"hi","thread_id":"t1","client_message_id":"c1"}`))
	if e != nil || f.Type != TypeUserMessage || f.ID != "m1" || f.Content != "hi" || f.ThreadID != "t1" || f.ClientMessageID != "c1" {
		t.Fatalf("DecodeAs = %+v, %v", f, e)
	}
	for body, code := range map[string]ErrorCode{`{}`: CodeInvalidMessage, `{"content":""}`: CodeInvalidMessage, `[]`: CodeBadJSON, `{`: CodeBadJSON} {
		if _, e := DecodeAs(TypeUserMessage, []byte(body)); e == nil || e.Code != code {
			t.Errorf("DecodeAs(%s) = %v, want %s", body, e, code)
		}
	}
}
