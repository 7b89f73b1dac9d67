package tools

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestEvaluate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		expr string
		want float64
	}{
		{"12*(3+4)", 84},
		{"1+2*3", 7},
		{"(1+2)*3", 9},
		{"10-4-3", 3},
		{"100/10/5", 2},
		{"7%3", 1},
		{"-7%3", -1},
		{"2^10", 1024},
		{"2^3^2", 512},
		{"-2^2", -4},
		{"(-2)^2", 4},
		{"2^-1", 0.5},
		{"--3", 3},
		{"+3", 3},
		{"-(1+2)", -3},
		{"1.5*2", 3},
		{".5+.25", 0.75},
		{"3.", 3},
		{"1e3", 1000},
		{"2.5E-3*1000", 2.5},
		{"1e+2", 100},
		{"0.1+0.2", 0.3},
		{"1/3", 0.333333333333333},
		{"  12 * ( 3 + 4 )  ", 84},
		{"2 ^ 0.5 ^ 2", math.Pow(2, 0.25)},
		{"1e-400", 0},
		{"-0", 0},
		{"9007199254740993", 9007199254740992},
	}
	for _, tt := range tests {
		got, err := Evaluate(tt.expr)
		if err != nil {
			t.Errorf("Evaluate(%q): %v", tt.expr, err)
			continue
		}
		if got != tt.want && math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("Evaluate(%q) = %v, want %v", tt.expr, got, tt.want)
		}
	}
}

func TestEvaluateErrors(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("(", 65) + "1" + strings.Repeat(")", 65)
	okDeep := strings.Repeat("(", 64) + "1" + strings.Repeat(")", 64)
	if v, err := Evaluate(okDeep); err != nil || v != 1 {
		t.Fatalf("64 levels: %v, %v", v, err)
	}
	tests := []struct {
		expr    string
		wantMsg string
		syntax  bool
	}{
		{"", "empty expression", false},
		{"   ", "empty expression", false},
		{"1/0", "division by zero", false},
		{"5%0", "division by zero", false},
		{"0^-1", "division by zero", false},
		{"1/(2-2)", "division by zero", false},
		{"10^400", "too large", false},
		{"1e308*10", "too large", false},
		{"1e400", "too large", true},
		{"(-8)^(1/3)", "not a real number", false},
		{"1+", "ends where a number was expected", true},
		{"1 2", `unexpected "2"`, true},
		{"2(3)", `unexpected "("`, true},
		{"12*(3+4)?", `unexpected "?"`, true},
		{"(1+2", "unclosed (", true},
		{"1+2)", "unmatched )", true},
		{"()", `found ")"`, true},
		{"1e", "exponent", true},
		{"1e+", "exponent", true},
		{".", "expected a number", true},
		{"1..2", `unexpected "."`, true},
		{"abc", `found "a"`, true},
		{"1+é", "character 'é'", true},
		{"2**3", `found "*"`, true},
		{"Infinity", `found "I"`, true},
		{"NaN", `found "N"`, true},
		{"0x10", `unexpected "x"`, true},
		{strings.Repeat("1+", 128) + "1", "too long", false},
		{deep, "nests too deeply", false},
		{strings.Repeat("-", 65) + "1", "nests too deeply", false},
		{"2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2^2", "nests too deeply", false},
	}
	for _, tt := range tests {
		_, err := Evaluate(tt.expr)
		if err == nil {
			t.Errorf("Evaluate(%q): no error, want %q", tt.expr, tt.wantMsg)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("Evaluate(%q) = %q, want it to contain %q", tt.expr, err, tt.wantMsg)
		}
		var se *SyntaxError
		if errors.As(err, &se) != tt.syntax {
			t.Errorf("Evaluate(%q): syntax error = %v, want %v (%v)", tt.expr, !tt.syntax, tt.syntax, err)
		}
	}
	if _, err := Evaluate("1/0"); !errors.Is(err, ErrDivisionByZero) {
		t.Errorf("1/0: %v is not ErrDivisionByZero", err)
	}
	if err := Check("1/0"); err != nil {
		t.Errorf("Check(1/0) = %v, want nil: it parses", err)
	}
}

func TestFormatNumber(t *testing.T) {
	t.Parallel()
	tests := map[float64]string{
		84:                  "84",
		-3:                  "-3",
		0.5:                 "0.5",
		0.3:                 "0.3",
		1e20:                "100000000000000000000",
		1e21:                "1e+21",
		1.5e-7:              "1.5e-07",
		0:                   "0",
		9007199254740992:    "9007199254740992",
		0.333333333333333:   "0.333333333333333",
		123456789.123456789: "123456789.12345679",
	}
	for v, want := range tests {
		if got := FormatNumber(v); got != want {
			t.Errorf("FormatNumber(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestCalculatorTool(t *testing.T) {
	t.Parallel()
	c := Calculator()
	ctx := context.Background()
	got, err := c.Call(ctx, json.RawMessage(`{"expression":"12*(3+4)"}`))
	if err != nil || got != 84.0 {
		t.Fatalf("Call = %v, %v; want 84", got, err)
	}
	b, _ := json.Marshal(got)
	if string(b) != "84" {
		t.Errorf("result marshals as %s, want 84", b)
	}
	for _, args := range []string{`{}`, ``, `null`, `{"expr":"1"}`} {
		if _, err := c.Call(ctx, json.RawMessage(args)); err == nil || !strings.Contains(err.Error(), `missing argument "expression"`) {
			t.Errorf("args %s: err = %v", args, err)
		}
	}
	if _, err := c.Call(ctx, json.RawMessage(`[1]`)); err == nil || !strings.Contains(err.Error(), "JSON object") {
		t.Errorf("array args: err = %v", err)
	}
	if _, err := c.Call(ctx, json.RawMessage(`{"expression":"1/0"}`)); !errors.Is(err, ErrDivisionByZero) {
		t.Errorf("1/0: err = %v", err)
	}
	if !json.Valid(c.Parameters()) {
		t.Error("Parameters is not valid JSON")
	}
}

// FuzzEvaluate checks that no input panics, that every success is a finite
// number that formats and parses back, and that Check agrees with Evaluate
// on what parses.
func FuzzEvaluate(f *testing.F) {
	for _, s := range []string{"12*(3+4)", "2^3^2", "-2^-2", "1e308*10", "1/0", "((1))", ".5e-3%2", "1 2", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		v, err := Evaluate(expr)
		checkErr := Check(expr)
		var se *SyntaxError
		if err == nil {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("Evaluate(%q) = %v", expr, v)
			}
			back, perr := strconv.ParseFloat(FormatNumber(v), 64)
			if perr != nil || back != v {
				t.Fatalf("FormatNumber(%v) = %q does not parse back: %v", v, FormatNumber(v), perr)
			}
			if checkErr != nil {
				t.Fatalf("Check(%q) = %v but Evaluate succeeded", expr, checkErr)
			}
		} else if errors.As(err, &se) && checkErr == nil {
			t.Fatalf("Evaluate(%q) = syntax error %v but Check passed", expr, err)
		}
	})
}
