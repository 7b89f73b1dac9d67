package demo

import (
	"strings"

	"github.com/agentwire/agentwire/internal/agent/tools"
)

// FindExpression's work on a hostile message (32 KiB of digits and
// brackets) is bounded: past these many candidates or parses it gives up.
const (
	maxCandidates    = 100_000
	maxParseAttempts = 5000
)

// FindExpression returns the longest substring of text that is arithmetic:
// made of digits, operators (+ - * / % ^), parentheses, dots and spaces,
// containing at least one binary operator, and parsing as an expression (it
// may still fail to evaluate, like 1/0). Among equally long ones it returns
// the first. "what is 12*(3+4)?" → "12*(3+4)"; "-5" and "3.14" are not
// arithmetic.
func FindExpression(text string) (string, bool) {
	type span struct{ start, end int }
	var runs []span
	longest := 0
	for i := 0; i < len(text); {
		if !exprByte(text[i]) {
			i++
			continue
		}
		j := i
		for j < len(text) && exprByte(text[j]) {
			j++
		}
		if hasBinaryOperator(text[i:j]) {
			runs = append(runs, span{i, j})
			longest = max(longest, j-i)
		}
		i = j
	}
	candidates, attempts := 0, 0
	for n := min(longest, tools.MaxExpressionLen); n >= 3; n-- {
		for _, r := range runs {
			for i := r.start; i+n <= r.end; i++ {
				s := text[i : i+n]
				if candidates++; candidates > maxCandidates {
					return "", false
				}
				if !startByte(s[0]) || !endByte(s[n-1]) || !hasBinaryOperator(s) {
					continue
				}
				if attempts++; attempts > maxParseAttempts {
					return "", false
				}
				if tools.Check(s) == nil {
					return s, true
				}
			}
		}
	}
	return "", false
}

func exprByte(c byte) bool {
	return c >= '0' && c <= '9' || strings.IndexByte("+-*/%^(). ", c) >= 0
}

func startByte(c byte) bool { return c >= '0' && c <= '9' || strings.IndexByte("(.-+", c) >= 0 }

func endByte(c byte) bool { return c >= '0' && c <= '9' || c == ')' || c == '.' }

// hasBinaryOperator reports whether s has an operator right after an
// operand (a digit, a dot or a closing parenthesis, spaces aside).
func hasBinaryOperator(s string) bool {
	afterOperand := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ':
		case c >= '0' && c <= '9' || c == '.' || c == ')':
			afterOperand = true
		case strings.IndexByte("+-*/%^", c) >= 0:
			if afterOperand {
				return true
			}
		default:
			afterOperand = false
		}
	}
	return false
}
