package protocol

import (
	"reflect"
	"strings"
	"testing"
)

func TestDecodeUserInput(t *testing.T) {
	t.Parallel()
	yes, text, choice := true, "6*7", "red"
	for _, tc := range []struct {
		in   string
		want InputAnswer
	}{
		{`{"type":"user_input","run_id":"r","request_id":"q","approved":true}`, InputAnswer{Approved: &yes}},
		{`{"type":"user_input","run_id":"r","request_id":"q","text":"6*7","approved":null}`, InputAnswer{Text: &text}},
		{`{"type":"user_input","run_id":"r","request_id":"q","choice":"red"}`, InputAnswer{Choice: &choice}},
	} {
		f, e := Decode([]byte(tc.in))
		if e != nil {
			t.Fatalf("%s: %v", tc.in, e)
		}
		if f.Type != TypeUserInput || f.RunID != "r" || f.RequestID != "q" || !reflect.DeepEqual(f.Answer, tc.want) {
			t.Fatalf("%s: %+v", tc.in, f)
		}
		// EncodeFrame is Decode's inverse.
		g, e := Decode(EncodeFrame(&f))
		if e != nil || !reflect.DeepEqual(g, f) {
			t.Fatalf("round trip of %s: %+v %v", tc.in, g, e)
		}
	}
	empty := ""
	if f, e := Decode([]byte(`{"type":"user_input","run_id":"r","request_id":"q","text":""}`)); e != nil || !reflect.DeepEqual(f.Answer, InputAnswer{Text: &empty}) {
		t.Fatalf("empty text: %+v %v", f, e)
	}
	for _, in := range []string{
		`{"type":"user_input","request_id":"q","approved":true}`,
		`{"type":"user_input","run_id":"r","approved":true}`,
		`{"type":"user_input","run_id":"r","request_id":"q"}`,
		`{"type":"user_input","run_id":"r","request_id":"q","approved":true,"text":"x"}`,
		`{"type":"user_input","run_id":"r","request_id":"q","approved":"true"}`,
		`{"type":"user_input","run_id":"r","request_id":"q","choice":""}`,
		`{"type":"user_input","run_id":"r","request_id":"q","text":"a\u0000b"}`,
		`{"type":"user_input","run_id":"r","request_id":"q","text":"` + strings.Repeat("x", MaxContentBytes+1) + `"}`,
	} {
		if _, e := Decode([]byte(in)); e == nil || e.Code != CodeInvalidMessage {
			t.Errorf("%.80s: %v, want invalid_message", in, e)
		}
	}
}
