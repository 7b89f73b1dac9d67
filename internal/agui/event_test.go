package agui

import (
	"encoding/json"
	"testing"
)

func TestTextReadsStringsAndParts(t *testing.T) {
	cases := map[string]string{
		`"hello"`: "hello",
		`[{"type":"text","text":"a"},{"type":"image","url":"x"},{"type":"text","text":"b"}]`: "ab",
		`{"x":1}`: "",
		``:        "",
	}
	for in, want := range cases {
		if got := Text(json.RawMessage(in)); got != want {
			t.Errorf("Text(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestEventRoundTrip(t *testing.T) {
	e := Event{Type: TextMessageContent, MessageID: "m1", Delta: String("hi <b>")}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"type":"TEXT_MESSAGE_CONTENT","messageId":"m1","delta":"hi \u003cb\u003e"}`; got != want {
		t.Fatalf("marshal = %s, want %s", got, want)
	}
	var back Event
	if err := json.Unmarshal([]byte(`{"type":"STATE_DELTA","delta":[{"op":"add","path":"/a","value":1}],"extra":true}`), &back); err != nil {
		t.Fatal(err)
	}
	if back.Type != StateDelta || string(back.Delta) != `[{"op":"add","path":"/a","value":1}]` || back.DeltaText() != "" {
		t.Fatalf("decoded %+v", back)
	}
}
