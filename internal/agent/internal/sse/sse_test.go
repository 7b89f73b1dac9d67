package sse

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

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
	err := Read(strings.NewReader(in), func(e Event) error {
		got = append(got, e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{{Data: `{"a":1}`}, {Name: "agent_thinking", Data: "one\ntwo"}, {Data: "[DONE]"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestReadStops(t *testing.T) {
	t.Parallel()
	stop := errors.New("stop")
	n := 0
	err := Read(strings.NewReader("data: 1\n\ndata: 2\n\n"), func(Event) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("err %v n %d", err, n)
	}
	err = Read(strings.NewReader("data: "+strings.Repeat("x", MaxLine+1)+"\n\n"), func(Event) error { return nil })
	if !errors.Is(err, ErrLineTooLong) {
		t.Errorf("long line: %v", err)
	}
	half := "data: " + strings.Repeat("x", MaxLine/2) + "\n"
	err = Read(strings.NewReader(half+half+half+"\n"), func(Event) error { return nil })
	if !errors.Is(err, ErrLineTooLong) {
		t.Errorf("long event of short lines: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	f.Add("data: x\n\nevent: e\ndata: y\r\n\r\n: c\n")
	f.Fuzz(func(t *testing.T, in string) {
		_ = Read(strings.NewReader(in), func(e Event) error {
			if strings.Contains(e.Name, "\n") {
				t.Fatalf("event name with newline: %q", e.Name)
			}
			return nil
		})
	})
}
