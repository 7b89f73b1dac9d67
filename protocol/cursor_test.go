package protocol

import (
	"errors"
	"net/url"
	"testing"
	"time"
)

func TestParseCursor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		since, epoch string
		want         Cursor
		bad          bool
	}{
		{"", "", Cursor{None: true}, false},
		{"", "e1", Cursor{Epoch: "e1"}, false},
		{"0", "", Cursor{}, false},
		{"41", "e1", Cursor{Seq: 41, Epoch: "e1"}, false},
		{"007", "", Cursor{Seq: 7}, false},
		{"18446744073709551615", "", Cursor{Seq: 1<<64 - 1}, false},
		{"18446744073709551616", "", Cursor{}, true},
		{"99999999999999999999999", "", Cursor{}, true},
		{"-1", "", Cursor{}, true},
		{"+1", "", Cursor{}, true},
		{"1.5", "", Cursor{}, true},
		{"1e3", "", Cursor{}, true},
		{" 1", "", Cursor{}, true},
		{"abc", "e", Cursor{}, true},
	}
	for _, tc := range cases {
		got, err := ParseCursor(tc.since, tc.epoch)
		if tc.bad {
			if !errors.Is(err, ErrBadSince) || got != (Cursor{}) {
				t.Errorf("ParseCursor(%q, %q) = %+v, %v; want ErrBadSince", tc.since, tc.epoch, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseCursor(%q, %q) = %+v, %v; want %+v", tc.since, tc.epoch, got, err, tc.want)
		}
	}
}

// The resume frame and the query read a since with the same parser, so
// they accept and refuse the same values.
func TestResumeFrameAndQueryAgree(t *testing.T) {
	t.Parallel()
	for _, since := range []string{"0", "41", "18446744073709551615", "18446744073709551616", "-1", "1.5", "1e3", `"5"`} {
		qc, qerr := ParseCursor(since, "e")
		f, ferr := Decode([]byte(`{"type":"resume","since":` + since + `,"epoch":"e"}`))
		if (qerr == nil) != (ferr == nil) {
			t.Errorf("since %s: query error %v, frame error %v", since, qerr, ferr)
			continue
		}
		if qerr == nil && f.Cursor != qc {
			t.Errorf("since %s: query %+v, frame %+v", since, qc, f.Cursor)
		}
	}
}

func TestCursorSetQueryRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range []Cursor{{None: true}, {}, {Seq: 9}, {Seq: 1<<64 - 1, Epoch: "e&=?"}} {
		q := url.Values{}
		c.SetQuery(q)
		q, _ = url.ParseQuery(q.Encode())
		got, err := ParseCursor(q.Get("since"), q.Get("epoch"))
		if err != nil || got != c {
			t.Errorf("%+v -> %q -> %+v, %v", c, q.Encode(), got, err)
		}
	}
}

func TestEncodeFrameRoundTrip(t *testing.T) {
	t.Parallel()
	for _, f := range []Frame{
		{Type: TypeUserMessage, ID: "c1", Content: "what is 12*(3+4)?\n<&>", ThreadID: "t", ClientMessageID: "k"},
		{Type: TypeUserMessage, Content: "x"},
		{Type: TypeStopAgent, ID: "s", RunID: "r1"},
		{Type: TypeResume, Cursor: Cursor{Seq: 41, Epoch: "e1"}},
		{Type: TypeResume},
		{Type: TypePing, ID: "p"},
	} {
		got, e := Decode(EncodeFrame(&f))
		if e != nil || got != f {
			t.Errorf("Decode(EncodeFrame(%+v)) = %+v, %v", f, got, e)
		}
	}
}

// A client reads back what the server encodes.
func TestDecodeServerFrame(t *testing.T) {
	t.Parallel()
	ev := Event{Type: TypeAgentError, Seq: 7, Epoch: "e", TS: time.Now(), ThreadID: "t", RunID: "r",
		Data: []byte(`{"code":"cancelled","message":"stopped","duration_ms":3}`)}
	f, err := DecodeServerFrame(EncodeEvent(ev))
	if err != nil {
		t.Fatal(err)
	}
	got := f.Event()
	if got.Type != ev.Type || got.Seq != 7 || got.Epoch != "e" || got.RunID != "r" || got.TS.IsZero() || !got.Terminal() {
		t.Fatalf("event %+v", got)
	}
	if d, ok := got.AgentError(); !ok || d.Code != CodeCancelled || d.DurationMS != 3 {
		t.Fatalf("AgentError() = %+v, %v", d, ok)
	}
	if _, ok := got.AgentCompleted(); ok {
		t.Fatal("AgentCompleted() of an agent_error")
	}
	a := AckFrame{Ref: "c", ThreadID: "t", RunID: "r", MessageID: "m"}
	if f, _ := DecodeServerFrame(EncodeAck(a)); f.Type != TypeAck || f.Ack() != a {
		t.Fatalf("ack %+v", f)
	}
	e := &Error{Code: CodeTooManyRuns, Message: "wait", Ref: "c"}
	if f, _ := DecodeServerFrame(EncodeError(e)); f.Type != TypeError || *f.Err() != *e {
		t.Fatalf("error %+v", f)
	}
	r := ResyncRequired{Epoch: "e2", HeadSeq: 9, Reason: ReasonTooOld}
	if f, _ := DecodeServerFrame(EncodeResync(r.Epoch, r.HeadSeq, r.Reason)); f.Type != TypeResyncRequired || f.Resync() != r {
		t.Fatalf("resync %+v", f)
	}
}

func TestCloseCodeString(t *testing.T) {
	t.Parallel()
	if CloseSlowConsumer.String() != "4008" || CloseCode(4321).String() != "4321" || CodeNodeLost.String() != "node_lost" {
		t.Fatal("String")
	}
}

func TestEventID(t *testing.T) {
	t.Parallel()
	if got := EventID("01HX:a", 42); got != "01HX:a:42" {
		t.Fatalf("EventID = %q", got)
	}
	cases := []struct {
		id   string
		want Cursor
		bad  bool
	}{
		{"", Cursor{None: true}, false},
		{"E:0", Cursor{Epoch: "E"}, false},
		{"E:41", Cursor{Seq: 41, Epoch: "E"}, false},
		{"01HX:a:42", Cursor{Seq: 42, Epoch: "01HX:a"}, false},
		{":7", Cursor{Seq: 7}, false},
		{"E", Cursor{}, true},
		{"E:", Cursor{}, true},
		{"E:-1", Cursor{}, true},
		{"E:18446744073709551616", Cursor{}, true},
	}
	for _, tc := range cases {
		got, err := ParseEventID(tc.id)
		if tc.bad != (err != nil) || got != tc.want {
			t.Errorf("ParseEventID(%q) = %+v, %v", tc.id, got, err)
		}
		if tc.bad && !errors.Is(err, ErrBadEventID) {
			t.Errorf("ParseEventID(%q): %v, want ErrBadEventID", tc.id, err)
		}
	}
}

func TestFrameCursor(t *testing.T) {
	t.Parallel()
	ev := EncodeEvent(Event{Type: `a"b\`, Seq: 9, Epoch: "E1", TS: time.Now(), RunID: "r"})
	if c, ok := FrameCursor(ev); !ok || c != (Cursor{Seq: 9, Epoch: "E1"}) {
		t.Fatalf("FrameCursor(event) = %+v, %v", c, ok)
	}
	for _, f := range [][]byte{
		EncodeConnectionEstablished(ConnectionEstablished{Epoch: "E1", HeadSeq: 3}),
		EncodeResync("E1", 3, ReasonEpochChanged),
		EncodeAck(AckFrame{Ref: "1"}),
		[]byte(`{"type":"x","seq":1,"epoch":"a\"b"}`),
		[]byte(`{"type":"x","seq":,"epoch":"E"}`),
		[]byte(`{"type":"x`),
		nil,
	} {
		if c, ok := FrameCursor(f); ok {
			t.Errorf("FrameCursor(%s) = %+v, want not an event", f, c)
		}
	}
}
