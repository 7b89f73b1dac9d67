package httpx

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

type testEvent struct {
	UserID string          `json:"user_id"`
	Type   string          `json:"type"`
	Data   json.RawMessage `json:"data"`
	N      int             `json:"n"`
	Tags   []string        `json:"tags"`
}

type testBody struct {
	testEvent
	Events *[]testEvent `json:"events"`
}

// Unmarshal must agree with encoding/json: the same value when both
// accept, an error when encoding/json refuses, the same error text.
func TestUnmarshalAgreesWithEncodingJSON(t *testing.T) {
	ins := []string{
		`{"user_id":"u","type":"t","data":{"a":[1,2,{"b":null}]}}`,
		`{"User_ID":"u","TYPE":"t"}`,                 // case-insensitive names
		`{"user_id":"a","user_id":"b"}`,              // the last wins
		"{\"user_id\":\"a\xffb\",\"data\":\"\xfe\"}", // invalid UTF-8 (checked by callers)
		`{"user_id":"\ud800x","data":"\ud800"}`,      // lone surrogate
		`{"user_id":"a\"b\\","data":"[[[{{"}`,        // escapes, brackets in strings
		`{"data": { "a" : 1 } , "n" : -1.0e0 }`,      // whitespace, a float into int
		`{"events":[{"user_id":"u","data":{}},{"type":"x","n":2}]}`,
		`{"events":[]}`,
		`{"events":null}`,
		`{"unknown":{"deep":[[[]]]},"n":3}`,
		`{"n":99999999999999999999}`,
		`{"n":1.5}`,
		`{"n":"1"}`,
		`{"user_id":1}`,
		`{"events":[{"type":1}]}`,
		`{"events":{}}`,
		`{"data":{"a":1,}}`,
		`{"data":nul}`,
		`{"data":01}`,
		`{"data":-}`,
		`{"data":1e400}`,
		`{"data":[1,2]} x`,
		`{"data":1}{}`,
		`{"data":"a	b"}`,
		`{"data":[1,2}`,
		`{"data":`,
		`{"user_id":"u"`,
		"{\"data\":{}}\n\t ",          // trailing whitespace
		"\xef\xbb\xbf{\"data\":1}",    // a byte-order mark
		`{"data":{"a":1},"data":[2]}`, // a repeated RawMessage
		`{"tags":["a",null,"b"],"events":[{"tags":null}]}`,
		`{"data":"\u00e9\n\/"}`,
		`{"data":123456789012345678901234567890.5e-3}`,
		`null`,
		`[]`,
		`"x"`,
		``,
		`   `,
	}
	for _, in := range ins {
		var std, got testBody
		errStd := json.Unmarshal([]byte(in), &std)
		errGot := Unmarshal([]byte(in), &got)
		if (errStd == nil) != (errGot == nil) {
			t.Errorf("%q: encoding/json err %v, Unmarshal err %v", in, errStd, errGot)
			continue
		}
		if errStd != nil {
			// encoding/json names an embedded struct's field with its Go
			// type ("testEvent.n"); the JSON path alone is what a client
			// can use.
			if a, b := strings.ReplaceAll(jsonErrText(errStd), "testEvent.", ""), jsonErrText(errGot); a != b {
				t.Errorf("%q: error text %q, want %q", in, b, a)
			}
			continue
		}
		if !reflect.DeepEqual(std, got) {
			t.Errorf("%q: got %+v, want %+v", in, got, std)
		}
	}
}

func nested(n int, open, close string) string {
	return strings.Repeat(open, n) + strings.Repeat(close, n)
}

func TestUnmarshalDepth(t *testing.T) {
	var v testBody
	ok := `{"data":` + nested(MaxDepth-1, "[", "]") + `}` // MaxDepth levels with the body's own
	if err := Unmarshal([]byte(ok), &v); err != nil {
		t.Fatalf("%d levels: %v", MaxDepth, err)
	}
	if err := json.Unmarshal([]byte(ok), &v); err != nil {
		t.Fatalf("encoding/json refuses %d levels: %v", MaxDepth, err)
	}
	for _, deep := range []string{
		`{"data":` + nested(MaxDepth, "[", "]") + `}`,
		`{"data":` + nested(MaxDepth, `{"a":`, "}") + `}`,
		`{"x":` + nested(MaxDepth, "[", "]") + `,"data":1}`,
		strings.Repeat("[", 1<<20), // 1 MiB of '[': refused before any decoding
	} {
		if err := Unmarshal([]byte(deep), &v); !errors.Is(err, ErrTooDeep) {
			t.Errorf("%d bytes nested past %d: err %v, want ErrTooDeep", len(deep), MaxDepth, err)
		}
		if json.Unmarshal([]byte(deep), &v) == nil {
			t.Errorf("encoding/json accepts what Unmarshal refuses")
		}
	}
	// Brackets inside strings, escaped quotes included, are not nesting.
	inStr := `{"data":"` + strings.Repeat(`[\"{`, MaxDepth+1) + `\\"}`
	if err := Unmarshal([]byte(inStr), &v); err != nil {
		t.Fatalf("brackets in a string counted: %v", err)
	}
}

func TestDepthWithin(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want bool
	}{
		{`[[]]`, 2, true},
		{`[[[]]]`, 2, false},
		{`{"a":{"b":[]}}`, 3, true},
		{`{"a":{"b":[]}}`, 2, false},
		{`["[[[["]`, 1, true},
		{`["\"[[[["]`, 1, true},
		{`["\\"[[[]]]]`, 1, false}, // the string ends at the second quote
		{`["\\\"[["]`, 1, true},
		{`["unterminated [[[[`, 1, true},
		{`]]]][[`, 2, true}, // not JSON: the decoder refuses it
	} {
		if got := depthWithin([]byte(c.in), c.max); got != c.want {
			t.Errorf("depthWithin(%q, %d) = %v, want %v", c.in, c.max, got, c.want)
		}
	}
}

// A batch of 100 publish events, 200 bytes of data each:
//
//	go test ./internal/httpx -run '^$' -bench Unmarshal -benchmem
func batchBody() []byte {
	var b strings.Builder
	b.WriteString(`{"events":[`)
	for i := range 100 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"user_id":"user-` + strings.Repeat("7", i%4+1) + `","type":"bench.event","data":{"t":1733220000000000000,"pad":"` + strings.Repeat("x", 200) + `"}}`)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

func BenchmarkUnmarshalBatch(b *testing.B) {
	body := batchBody()
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var v testBody
			if err := json.Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Unmarshal", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var v testBody
			if err := Unmarshal(body, &v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("depthWithin", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if !depthWithin(body, MaxDepth) {
				b.Fatal("too deep")
			}
		}
	})
}

// FuzzUnmarshalAgrees holds Unmarshal to encoding/json on any UTF-8 body
// (the publish paths refuse other bytes before decoding): both accept with
// the same value, or both refuse.
func FuzzUnmarshalAgrees(f *testing.F) {
	for _, s := range []string{
		`{"user_id":"u","type":"t","data":{"a":[1,2,{"b":null}]}}`,
		`{"User_ID":"u","TYPE":"t","user_id":"v"}`,
		`{"events":[{"user_id":"u","data":{}},{"type":"x","n":2,"tags":["a"]}]}`,
		`{"data":"\u00e9\ud800\n","n":-0,"tags":null}`,
		`{"data":1e400,"n":1E+2}`,
		`{"x":[[[{"y":[]}]]],"data":[true,false,null]}`,
		"{\"data\":{}}\r\n\t ",
		`{"data":[1,2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !utf8.Valid(b) {
			return
		}
		var std, got testBody
		errStd := json.Unmarshal(b, &std)
		errGot := Unmarshal(b, &got)
		if (errStd == nil) != (errGot == nil) {
			t.Fatalf("%q: encoding/json err %v, Unmarshal err %v", b, errStd, errGot)
		}
		if errStd == nil && !reflect.DeepEqual(std, got) {
			t.Fatalf("%q: got %+v, want %+v", b, got, std)
		}
	})
}
