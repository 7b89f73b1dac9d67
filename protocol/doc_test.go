package protocol

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// codeConsts returns every constant of this package declared with one of
// the given types, by type name, value (as written) and constant name.
// Reading the source, not a list, means a code added anywhere in the package
// is found.
func codeConsts(t *testing.T, types ...string) map[string]map[string]string {
	t.Helper()
	want := map[string]bool{}
	out := map[string]map[string]string{}
	for _, ty := range types {
		want[ty] = true
		out[ty] = map[string]string{}
	}
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		eachConst(f, func(vs *ast.ValueSpec, i int) {
			id, ok := vs.Type.(*ast.Ident)
			if !ok || !want[id.Name] {
				return
			}
			name := vs.Names[i]
			lit, ok := vs.Values[i].(*ast.BasicLit)
			if !ok {
				t.Fatalf("%s: %s must be a literal", fset.Position(name.Pos()), name.Name)
			}
			v := lit.Value
			if lit.Kind == token.STRING {
				if v, err = strconv.Unquote(v); err != nil {
					t.Fatal(err)
				}
			}
			out[id.Name][v] = name.Name
		})
	}
	return out
}

// eachConst calls fn for each constant f declares: the i-th name of vs.
func eachConst(f *ast.File, fn func(vs *ast.ValueSpec, i int)) {
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			for i := range vs.Names {
				fn(vs, i)
			}
		}
	}
}

// TestEveryCodeIsDocumented fails when a CloseCode, an ErrorCode or a
// ResyncReason is declared that docs/PROTOCOL.md does not name: the document
// is the contract a client is written against.
func TestEveryCodeIsDocumented(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	consts := codeConsts(t, "CloseCode", "ErrorCode", "ResyncReason")
	// The scan must see codes it is known to find, or it proves nothing.
	for ty, v := range map[string]string{"CloseCode": "4008", "ErrorCode": "too_many_runs", "ResyncReason": "history_expired"} {
		if consts[ty][v] == "" {
			t.Errorf("the scan found no %s %s: update codeConsts", ty, v)
		}
	}
	for v, name := range consts["CloseCode"] {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("close code %s = %s", name, v)
		}
		if got := CloseCode(n).String(); got != v {
			t.Errorf("%s.String() = %q, want %q", name, got, v)
		}
		if !regexp.MustCompile(`\b` + v + `\b`).MatchString(doc) {
			t.Errorf("close code %s (%s) is not in docs/PROTOCOL.md", v, name)
		}
	}
	for _, ty := range []string{"ErrorCode", "ResyncReason"} {
		for v, name := range consts[ty] {
			if !strings.Contains(doc, "`"+v+"`") {
				t.Errorf("%s %q (%s) is not in docs/PROTOCOL.md", ty, v, name)
			}
		}
	}
}

// The ways code outside this package could spell a wire code as a literal:
// a close code passed to a close function or counted as a metric label, an
// error code in a Code field, an error writer or a JSON error body.
var literalCode = []*regexp.Regexp{
	regexp.MustCompile(`\bClose\w*\s*(?:\w+\s*)?=\s*\d{4}\b`),
	regexp.MustCompile(`\b(?:Close|CloseAll|closeBody|terminate\w*)\(\s*\d{4}\b`),
	regexp.MustCompile(`\bWithLabelValues\("\d{4}"\)`),
	regexp.MustCompile(`\bCode\w*\s*(?:\w+\s*)?[:=]\s*"[a-z_]+"`),
	regexp.MustCompile(`\bwriteError\([^,]+,[^,]+,\s*"`),
	regexp.MustCompile(`"code"\s*:\s*"[a-z_]+"`),
	regexp.MustCompile(`\bReason\w*\s*(?:\w+\s*)?[:=]\s*"[a-z_]+"`),
}

// TestNoCodeLiteralOutsideProtocol keeps this package the one place that
// spells close codes, error codes and resync reasons: the rest of the module
// (tests aside, which check the wire independently) names the constants.
func TestNoCodeLiteralOutsideProtocol(t *testing.T) {
	t.Parallel()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "protocol", "node_modules", "testdata", ".git":
				if path != ".." {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, re := range literalCode {
			if m := re.Find(src); m != nil {
				t.Errorf("%s: %s: use the protocol constant", path, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRelayedTypesAreDocumented fails when a relayed event type is declared
// (relayed.go) that RelayedEventType does not accept or that section 4 of
// docs/PROTOCOL.md does not list as a row of its table.
func TestRelayedTypesAreDocumented(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), "relayed.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	eachConst(f, func(vs *ast.ValueSpec, i int) {
		name := vs.Names[i]
		lit, ok := vs.Values[i].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return
		}
		v, _ := strconv.Unquote(lit.Value)
		n++
		if !RelayedEventType(v) {
			t.Errorf("RelayedEventType(%s = %q) is false", name.Name, v)
		}
		if RunEventType(v) {
			t.Errorf("%s = %q is also a reserved run event type", name.Name, v)
		}
		if !strings.Contains(string(b), "| `"+v+"` |") {
			t.Errorf("relayed event type %q (%s) is not a row of docs/PROTOCOL.md section 4", v, name.Name)
		}
	})
	if n < 8 {
		t.Errorf("found %d relayed types in relayed.go, want at least 8: update the scan", n)
	}
}
