package sse

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestAppendEvent(t *testing.T) {
	t.Parallel()
	cases := []struct {
		ev   Event
		want string
	}{
		{Event{Data: []byte(`{"a":1}`)}, "data: {\"a\":1}\n\n"},
		{Event{ID: "e:1", Data: []byte(`x`)}, "id: e:1\ndata: x\n\n"},
		{Event{ID: "a\nb\r\x00c", Name: "n\r", Data: nil}, "id: abc\nevent: n\ndata: \n\n"},
		{Event{Data: []byte("one\ntwo\r\nthree\rfour\n")}, "data: one\ndata: two\ndata: three\ndata: four\ndata: \n\n"},
	}
	for _, tc := range cases {
		if got := string(AppendEvent(nil, tc.ev)); got != tc.want {
			t.Errorf("AppendEvent(%+v) = %q, want %q", tc.ev, got, tc.want)
		}
		// What is written reads back the same (but for dropped id bytes).
		r := NewReader(strings.NewReader(string(AppendEvent(nil, tc.ev))), 0)
		got, err := r.Next()
		if err != nil {
			t.Fatalf("read back %q: %v", tc.want, err)
		}
		wantData := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(tc.ev.Data))
		if string(got.Data) != wantData {
			t.Errorf("read back data %q, want %q", got.Data, wantData)
		}
	}
	if got := string(AppendComment(nil, "close 1001 bye\n")); got != ": close 1001 bye\n\n" {
		t.Errorf("AppendComment = %q", got)
	}
}

func TestReader(t *testing.T) {
	t.Parallel()
	in := ": hello\r\n" +
		"retry: 10\r\n" +
		"id: 1\r\n" +
		"event: x\r\n" +
		"data: a\r\n" +
		"data:b\r\n" +
		"\r\n" +
		"event: ignored\n\n" + // no data: not dispatched
		"data: c\r\r" + // CR line ends
		"id: \x00bad\ndata: d\n\n" +
		"data: cut"
	r := NewReader(strings.NewReader(in), 0)
	var comments []string
	r.OnComment(func(s string) { comments = append(comments, s) })
	want := []Event{{ID: "1", Name: "x", Data: []byte("a\nb")}, {ID: "1", Data: []byte("c")}, {ID: "1", Data: []byte("d")}}
	for i, w := range want {
		got, err := r.Next()
		if err != nil || got.ID != w.ID || got.Name != w.Name || !bytes.Equal(got.Data, w.Data) {
			t.Fatalf("event %d = %+v, %v; want %+v", i, got, err, w)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last event: %v, want EOF", err)
	}
	if len(comments) != 1 || comments[0] != "hello" {
		t.Fatalf("comments %q", comments)
	}
	if _, err := NewReader(strings.NewReader("data: "+strings.Repeat("x", 100)+"\n\n"), 50).Next(); !errors.Is(err, ErrTooLong) {
		t.Fatalf("over the bound: %v", err)
	}
}

// Read is Next for the agents' upstream answers: the same rules, but an
// event the end cuts off is still dispatched, and the bound counts an
// event's data over all its data lines.
func TestRead(t *testing.T) {
	t.Parallel()
	in := ": comment\r\n" +
		"data: {\"a\":1}\r\n\r\n" +
		"event: agent_thinking\n" +
		"id: 7\n" +
		"data:one\n" +
		"data: two\n\n" +
		"event: lonely\n\n" +
		"retry: 10\n\n" +
		"data: [DONE]"
	var got []Event
	err := Read(strings.NewReader(in), 0, func(e Event) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{{Data: []byte(`{"a":1}`)}, {ID: "7", Name: "agent_thinking", Data: []byte("one\ntwo")}, {ID: "7", Data: []byte("[DONE]")}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestReadStops(t *testing.T) {
	t.Parallel()
	stop := errors.New("stop")
	n := 0
	err := Read(strings.NewReader("data: 1\n\ndata: 2\n\n"), 0, func(Event) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("err %v n %d", err, n)
	}
	const max = 1 << 20
	err = Read(strings.NewReader("data: "+strings.Repeat("x", max+1)+"\n\n"), max, func(Event) error { return nil })
	if !errors.Is(err, ErrTooLong) {
		t.Errorf("long line: %v", err)
	}
	half := "data: " + strings.Repeat("x", max/2) + "\n"
	err = Read(strings.NewReader(half+half+half+"\n"), max, func(Event) error { return nil })
	if !errors.Is(err, ErrTooLong) {
		t.Errorf("long event of short lines: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add("data: x\n\nevent: e\ndata: y\r\n\r\n: c\n")
	f.Fuzz(func(t *testing.T, in string) {
		_ = Read(strings.NewReader(in), 64, func(e Event) error {
			if strings.ContainsAny(e.Name, "\r\n") || strings.ContainsAny(e.ID, "\r\n\x00") {
				t.Fatalf("event name or id with a line end: %q %q", e.Name, e.ID)
			}
			if len(e.Data) > 64 {
				t.Fatalf("event over the bound: %d bytes", len(e.Data))
			}
			return nil
		})
	})
}
