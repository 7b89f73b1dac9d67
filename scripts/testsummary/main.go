// Command testsummary reads `go test -json` on stdin, prints what plain
// `go test` would (package results, and the output of failed tests) and
// writes one line naming every skipped suite and why to the file named by
// -o, so ./scripts/test can print it last: a skipped package otherwise
// reads "ok" like one that ran.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type key struct{ pkg, test string }

// skips are the reasons tests of one package were skipped, in first-seen
// order, with how many tests each.
type skips struct {
	pkg     string
	reasons []string
	count   map[string]int
}

func main() {
	out := flag.String("o", "", "file to write the skipped-suites line to (default: stdout, at the end)")
	trim := flag.String("trim", "", "prefix trimmed from package paths in the summary, e.g. the module path and a slash")
	flag.Parse()
	line, err := run(os.Stdin, os.Stdout, *trim)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
	if *out == "" {
		fmt.Println(line)
		return
	}
	if err := os.WriteFile(*out, []byte(line+"\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer, trim string) (string, error) {
	w := bufio.NewWriter(out)
	defer w.Flush()
	buf := map[key][]string{}
	var skipped []*skips
	byPkg := map[string]*skips{}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not an event (go vet or the build talking): show it as is.
			fmt.Fprintln(w, sc.Text())
			w.Flush()
			continue
		}
		k := key{e.Package, e.Test}
		switch {
		case e.Action == "build-output":
			fmt.Fprint(w, e.Output)
		case e.Action == "output" && e.Test == "":
			if e.Output != "PASS\n" { // plain go test prints only "ok pkg"
				fmt.Fprint(w, e.Output)
			}
		case e.Action == "output":
			buf[k] = append(buf[k], e.Output)
		case e.Action == "fail" && e.Test != "":
			lines := failed(e.Test, buf[k])
			delete(buf, k)
			// A subtest's report goes inside its parent's, indented, as
			// plain go test prints it.
			if i := strings.LastIndex(e.Test, "/"); i > 0 {
				if pk := (key{e.Package, e.Test[:i]}); buf[pk] != nil {
					for _, l := range lines {
						buf[pk] = append(buf[pk], "    "+l)
					}
					break
				}
			}
			fmt.Fprint(w, strings.Join(lines, ""))
		case e.Action == "fail": // the package: a panic or timeout leaves tests unfinished
			for bk, lines := range buf {
				if bk.pkg == e.Package {
					fmt.Fprint(w, strings.Join(failed(bk.test, lines), ""))
					delete(buf, bk)
				}
			}
		case e.Action == "skip" && e.Test != "":
			s := byPkg[e.Package]
			if s == nil {
				name := strings.TrimPrefix(e.Package, trim)
				if name == "" {
					name = "."
				}
				s = &skips{pkg: name, count: map[string]int{}}
				byPkg[e.Package] = s
				skipped = append(skipped, s)
			}
			r := reason(buf[k])
			if s.count[r] == 0 {
				s.reasons = append(s.reasons, r)
			}
			s.count[r]++
			delete(buf, k)
		case e.Action == "pass":
			delete(buf, k)
		}
		w.Flush()
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return summary(skipped), nil
}

// failed is the report of a failed test: its "--- FAIL" line first, then
// what it logged, without the "=== RUN" progress lines of -v.
func failed(test string, lines []string) []string {
	var head, body []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "=== "):
		case strings.HasPrefix(l, "--- FAIL: "+test+" "):
			head = append(head, l)
		default:
			body = append(body, l)
		}
	}
	return append(head, body...)
}

var location = regexp.MustCompile(`^\s*[\w.-]+\.go:\d+: ?`)

// reason is the first line of a skipped test's message, without the
// file:line prefix and the "!!!" it is shouted with.
func reason(lines []string) string {
	for _, l := range lines {
		if strings.HasPrefix(l, "=== ") || strings.Contains(l, "--- SKIP") {
			continue
		}
		l = strings.Trim(location.ReplaceAllString(l, ""), "! \t\r\n")
		if l != "" {
			return l
		}
	}
	return "no reason given"
}

func summary(skipped []*skips) string {
	if len(skipped) == 0 {
		return "skipped suites: none"
	}
	var parts []string
	for _, s := range skipped {
		var rs []string
		for _, r := range s.reasons {
			n := s.count[r]
			plural := "s"
			if n == 1 {
				plural = ""
			}
			rs = append(rs, fmt.Sprintf("%s [%d test%s]", r, n, plural))
		}
		parts = append(parts, s.pkg+" ("+strings.Join(rs, "; ")+")")
	}
	return fmt.Sprintf("skipped suites (%d): %s", len(skipped), strings.Join(parts, ", "))
}
