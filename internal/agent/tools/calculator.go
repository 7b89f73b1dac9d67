package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Limits of the calculator's input.
const (
	MaxExpressionLen   = 256 // bytes
	MaxExpressionDepth = 64  // nested parentheses, signs and powers
)

// ErrDivisionByZero is returned by Evaluate for x/0 and x%0 (and 0^-n).
var ErrDivisionByZero = errors.New("division by zero")

// SyntaxError is an expression that does not parse.
type SyntaxError struct {
	Pos int // byte offset, 0-based
	Msg string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("syntax error at position %d: %s", e.Pos+1, e.Msg)
}

// Calculator returns the calculator tool: {"expression": "12*(3+4)"} → 84.
func Calculator() Tool { return calculator{} }

type calculator struct{}

func (calculator) Name() string { return "calculator" }

func (calculator) Description() string {
	return "Evaluates an arithmetic expression exactly as written and returns the number. " +
		"Supports + - * / % ^ (power, right-associative), unary minus, parentheses, decimals and scientific notation (1.5e3)."
}

func (calculator) Parameters() json.RawMessage {
	return json.RawMessage(`{"type":"object","properties":{"expression":{"type":"string","description":"the arithmetic expression, e.g. 12*(3+4)"}},"required":["expression"],"additionalProperties":false}`)
}

func (calculator) Call(_ context.Context, args json.RawMessage) (any, error) {
	var in struct {
		Expression *string `json:"expression"`
	}
	if err := decodeArgs(args, &in); err != nil {
		return nil, err
	}
	if in.Expression == nil {
		return nil, errors.New(`missing argument "expression"`)
	}
	return Evaluate(*in.Expression)
}

// Evaluate computes an arithmetic expression: + - * / % ^ with the usual
// precedence (^ binds tighter than unary minus, so -2^2 is -4, and is
// right-associative), parentheses, decimals and scientific notation.
// Non-integer results are rounded to 15 significant digits, so 0.1+0.2 is 0.3.
// Errors: *SyntaxError, ErrDivisionByZero, and plain errors for a result that
// is not a finite real number or input over the limits.
func Evaluate(expr string) (float64, error) {
	n, err := parse(expr)
	if err != nil {
		return 0, err
	}
	v, err := n.eval()
	if err != nil {
		return 0, err
	}
	if v != math.Trunc(v) {
		v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'g', 15, 64), 64)
	}
	if v == 0 {
		v = 0 // no "-0"
	}
	return v, nil
}

// Check reports whether expr parses, without evaluating it: "1/0" passes.
func Check(expr string) error {
	_, err := parse(expr)
	return err
}

// FormatNumber writes v the way a person expects: integers without a
// fraction (84, not 84.0 or 8.4e+01), other numbers in their shortest exact
// decimal form, exponent notation only for very large or very small values.
func FormatNumber(v float64) string {
	if a := math.Abs(v); a != 0 && (a < 1e-6 || a >= 1e21) {
		return strconv.FormatFloat(v, 'e', -1, 64)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// node is a parsed expression.
type node struct {
	op   byte // 0: number; '~': negation; otherwise a binary operator
	num  float64
	l, r *node
}

func (n *node) eval() (float64, error) {
	if n.op == 0 {
		return n.num, nil
	}
	l, err := n.l.eval()
	if err != nil {
		return 0, err
	}
	if n.op == '~' {
		return -l, nil
	}
	r, err := n.r.eval()
	if err != nil {
		return 0, err
	}
	var v float64
	switch n.op {
	case '+':
		v = l + r
	case '-':
		v = l - r
	case '*':
		v = l * r
	case '/':
		if r == 0 {
			return 0, ErrDivisionByZero
		}
		v = l / r
	case '%':
		if r == 0 {
			return 0, ErrDivisionByZero
		}
		v = math.Mod(l, r)
	case '^':
		if l == 0 && r < 0 {
			return 0, ErrDivisionByZero
		}
		v = math.Pow(l, r)
	}
	switch {
	case math.IsNaN(v):
		return 0, fmt.Errorf("%s %c %s is not a real number", FormatNumber(l), n.op, FormatNumber(r))
	case math.IsInf(v, 0):
		return 0, errors.New("result is too large (overflow)")
	}
	return v, nil
}

type parser struct {
	s     string
	pos   int
	depth int
}

func parse(expr string) (*node, error) {
	if len(expr) > MaxExpressionLen {
		return nil, fmt.Errorf("expression is too long: %d characters, at most %d", len(expr), MaxExpressionLen)
	}
	p := &parser{s: expr}
	p.skipSpace()
	if p.pos == len(p.s) {
		return nil, errors.New("empty expression")
	}
	n, err := p.expr()
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.s) {
		if p.s[p.pos] == ')' {
			return nil, p.errorf("unmatched )")
		}
		return nil, p.errorf("unexpected %s", p.describe())
	}
	return n, nil
}

func (p *parser) errorf(format string, a ...any) error {
	return &SyntaxError{Pos: p.pos, Msg: fmt.Sprintf(format, a...)}
}

func (p *parser) describe() string {
	if p.pos >= len(p.s) {
		return "end of expression"
	}
	r := p.s[p.pos]
	if r < 0x20 || r >= 0x7f {
		return fmt.Sprintf("character %q", []rune(p.s[p.pos:])[0])
	}
	return fmt.Sprintf("%q", string(r))
}

func (p *parser) skipSpace() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t' || p.s[p.pos] == '\n' || p.s[p.pos] == '\r') {
		p.pos++
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (p *parser) peek() byte {
	p.skipSpace()
	if p.pos < len(p.s) {
		return p.s[p.pos]
	}
	return 0
}

func (p *parser) enter() error {
	p.depth++
	if p.depth > MaxExpressionDepth {
		return fmt.Errorf("expression nests too deeply (more than %d levels)", MaxExpressionDepth)
	}
	return nil
}

// expr = term { ("+" | "-") term }
func (p *parser) expr() (*node, error) {
	l, err := p.term()
	if err != nil {
		return nil, err
	}
	for {
		op := p.peek()
		if op != '+' && op != '-' {
			return l, nil
		}
		p.pos++
		r, err := p.term()
		if err != nil {
			return nil, err
		}
		l = &node{op: op, l: l, r: r}
	}
}

// term = unary { ("*" | "/" | "%") unary }
func (p *parser) term() (*node, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		op := p.peek()
		if op != '*' && op != '/' && op != '%' {
			return l, nil
		}
		p.pos++
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		l = &node{op: op, l: l, r: r}
	}
}

// unary = ("-" | "+") unary | power
func (p *parser) unary() (*node, error) {
	op := p.peek()
	if op != '-' && op != '+' {
		return p.power()
	}
	p.pos++
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	n, err := p.unary()
	if err != nil {
		return nil, err
	}
	if op == '+' {
		return n, nil
	}
	return &node{op: '~', l: n}, nil
}

// power = primary [ "^" unary ]   (right-associative: 2^3^2 = 2^9)
func (p *parser) power() (*node, error) {
	base, err := p.primary()
	if err != nil {
		return nil, err
	}
	if p.peek() != '^' {
		return base, nil
	}
	p.pos++
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	exp, err := p.unary()
	if err != nil {
		return nil, err
	}
	return &node{op: '^', l: base, r: exp}, nil
}

// primary = number | "(" expr ")"
func (p *parser) primary() (*node, error) {
	c := p.peek()
	switch {
	case c == '(':
		open := p.pos
		p.pos++
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		n, err := p.expr()
		if err != nil {
			return nil, err
		}
		if p.peek() != ')' {
			if p.pos >= len(p.s) {
				return nil, &SyntaxError{Pos: open, Msg: "unclosed ("}
			}
			return nil, p.errorf("expected ) but found %s", p.describe())
		}
		p.pos++
		return n, nil
	case c >= '0' && c <= '9' || c == '.':
		return p.number()
	case c == 0:
		return nil, p.errorf("expression ends where a number was expected")
	default:
		return nil, p.errorf("expected a number or ( but found %s", p.describe())
	}
}

// number = digits [ "." digits ] | "." digits, then [ ("e"|"E") ["+"|"-"] digits ]
func (p *parser) number() (*node, error) {
	start := p.pos
	digits := p.digits()
	if p.pos < len(p.s) && p.s[p.pos] == '.' {
		p.pos++
		digits += p.digits()
	}
	if digits == 0 {
		p.pos = start
		return nil, p.errorf("expected a number but found %s", p.describe())
	}
	if p.pos < len(p.s) && (p.s[p.pos] == 'e' || p.s[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.s) && (p.s[p.pos] == '+' || p.s[p.pos] == '-') {
			p.pos++
		}
		if p.digits() == 0 {
			return nil, p.errorf("exponent of %q has no digits", p.s[start:p.pos])
		}
	}
	v, err := strconv.ParseFloat(p.s[start:p.pos], 64)
	if err != nil {
		// The syntax was checked above, so this is ErrRange: too large.
		return nil, &SyntaxError{Pos: start, Msg: fmt.Sprintf("number %s is too large", p.s[start:p.pos])}
	}
	return &node{num: v}, nil
}

func (p *parser) digits() int {
	n := 0
	for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
		p.pos++
		n++
	}
	return n
}
