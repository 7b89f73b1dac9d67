package main

import (
	"strings"
	"testing"
)

// Recorded from `go test -json` (Time and Elapsed removed), plus a second
// package whose only test passed.
const recorded = `{"Action":"run","Package":"m/x","Test":"TestA"}
{"Action":"output","Package":"m/x","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"output","Package":"m/x","Test":"TestA","Output":"    a_test.go:3: noise\n"}
{"Action":"run","Package":"m/x","Test":"TestA/sub"}
{"Action":"output","Package":"m/x","Test":"TestA/sub","Output":"=== RUN   TestA/sub\n"}
{"Action":"output","Package":"m/x","Test":"TestA/sub","Output":"    a_test.go:3: boom\n"}
{"Action":"output","Package":"m/x","Test":"TestA/sub","Output":"--- FAIL: TestA/sub (0.00s)\n"}
{"Action":"fail","Package":"m/x","Test":"TestA/sub"}
{"Action":"output","Package":"m/x","Test":"TestA","Output":"--- FAIL: TestA (0.00s)\n"}
{"Action":"fail","Package":"m/x","Test":"TestA"}
{"Action":"run","Package":"m/x","Test":"TestB"}
{"Action":"output","Package":"m/x","Test":"TestB","Output":"=== RUN   TestB\n"}
{"Action":"output","Package":"m/x","Test":"TestB","Output":"    a_test.go:4: !!! no thing: B NOT TESTED !!!\n"}
{"Action":"output","Package":"m/x","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}
{"Action":"skip","Package":"m/x","Test":"TestB"}
{"Action":"run","Package":"m/x","Test":"TestC"}
{"Action":"output","Package":"m/x","Test":"TestC","Output":"=== RUN   TestC\n"}
{"Action":"output","Package":"m/x","Test":"TestC","Output":"    a_test.go:5: !!! no thing: B NOT TESTED !!!\n"}
{"Action":"output","Package":"m/x","Test":"TestC","Output":"--- SKIP: TestC (0.00s)\n"}
{"Action":"skip","Package":"m/x","Test":"TestC"}
{"Action":"run","Package":"m/x","Test":"TestD"}
{"Action":"output","Package":"m/x","Test":"TestD","Output":"=== RUN   TestD\n"}
{"Action":"output","Package":"m/x","Test":"TestD","Output":"--- PASS: TestD (0.00s)\n"}
{"Action":"pass","Package":"m/x","Test":"TestD"}
{"Action":"output","Package":"m/x","Output":"FAIL\n"}
{"Action":"output","Package":"m/x","Output":"FAIL\tm/x\t0.046s\n"}
{"Action":"fail","Package":"m/x"}
{"Action":"run","Package":"m/y","Test":"TestE"}
{"Action":"output","Package":"m/y","Test":"TestE","Output":"=== RUN   TestE\n"}
{"Action":"output","Package":"m/y","Test":"TestE","Output":"--- PASS: TestE (0.00s)\n"}
{"Action":"pass","Package":"m/y","Test":"TestE"}
{"Action":"output","Package":"m/y","Output":"PASS\n"}
{"Action":"output","Package":"m/y","Output":"ok  \tm/y\t0.01s\n"}
{"Action":"pass","Package":"m/y"}
`

func TestPlainOutputAndSkips(t *testing.T) {
	var out strings.Builder
	line, err := run(strings.NewReader(recorded), &out, "m/")
	if err != nil {
		t.Fatal(err)
	}
	// What plain `go test` prints for the same run.
	want := "--- FAIL: TestA (0.00s)\n" +
		"    a_test.go:3: noise\n" +
		"    --- FAIL: TestA/sub (0.00s)\n" +
		"        a_test.go:3: boom\n" +
		"FAIL\n" +
		"FAIL\tm/x\t0.046s\n" +
		"ok  \tm/y\t0.01s\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
	if want := "skipped suites (1): x (no thing: B NOT TESTED [2 tests])"; line != want {
		t.Errorf("summary %q, want %q", line, want)
	}
}

func TestNoSkips(t *testing.T) {
	var out strings.Builder
	line, err := run(strings.NewReader(recorded[strings.Index(recorded, `{"Action":"run","Package":"m/y"`):]), &out, "m/")
	if err != nil {
		t.Fatal(err)
	}
	if line != "skipped suites: none" {
		t.Errorf("summary %q", line)
	}
}
