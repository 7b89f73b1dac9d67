package protocol_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The patterns by which the server's sources name what goes on the wire:
// close codes (constants, literal Close/closeBody calls, metric labels),
// error codes (Code… constants, writeError calls) and resync reasons.
var (
	closeCodePatterns = []*regexp.Regexp{
		regexp.MustCompile(`\bClose\w*\s*(?:\w+\s*)?=\s*(\d{4})\b`),
		regexp.MustCompile(`\b(?:Close|closeBody)\((\d{4})\b`),
		regexp.MustCompile(`Closes\.WithLabelValues\("(\d{4})"\)`),
	}
	codePatterns = []*regexp.Regexp{
		regexp.MustCompile(`\bCode\w*\s*(?:\w+\s*)?=\s*"([a-z_]+)"`),
		regexp.MustCompile(`\bwriteError\([^,]+,[^,]+,\s*"([a-z_]+)"`),
		regexp.MustCompile(`\bReason\w*\s*(?:\w+\s*)?=\s*"([a-z_]+)"`),
	}
)

// TestEveryCodeIsDocumented fails when the server can send a close code, an
// error code or a resync reason that docs/PROTOCOL.md does not name: the
// document is the contract a client is written against.
func TestEveryCodeIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	closes, codes := map[string]string{}, map[string]string{}
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, re := range closeCodePatterns {
			for _, m := range re.FindAllStringSubmatch(string(src), -1) {
				closes[m[1]] = path
			}
		}
		for _, re := range codePatterns {
			for _, m := range re.FindAllStringSubmatch(string(src), -1) {
				codes[m[1]] = path
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The scan must see the codes it is known to find, or it proves nothing.
	for _, c := range []string{"1001", "1009", "4000", "4001", "4008", "4029"} {
		if closes[c] == "" {
			t.Errorf("the scan found no close code %s in internal/: update the patterns", c)
		}
	}
	for _, c := range []string{"bad_json", "rate_limited", "too_many_runs", "node_lost", "unauthorized", "too_large", "history_expired"} {
		if codes[c] == "" {
			t.Errorf("the scan found no code %q in internal/: update the patterns", c)
		}
	}
	for _, c := range sortedKeys(closes) {
		if !regexp.MustCompile(`\b` + c + `\b`).Match(doc) {
			t.Errorf("close code %s (sent in %s) is not in docs/PROTOCOL.md", c, closes[c])
		}
	}
	for _, c := range sortedKeys(codes) {
		if !strings.Contains(string(doc), "`"+c+"`") {
			t.Errorf("code %q (in %s) is not in docs/PROTOCOL.md", c, codes[c])
		}
	}
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
