// Package deploytest checks the deployment kit in deploy/: the Dockerfile's
// build and image layout (the static binary, run in an empty root), the
// Kubernetes manifests (strictly decoded into their API types, then checked
// against each other and against serve's flags) and the systemd unit. It
// has tests only.
package deploytest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// dockerfile is deploy/Dockerfile as the tests read it: instructions by
// stage, continuation lines joined, comments dropped.
type dockerfile struct {
	stages []*stage
}

type stage struct {
	from, name string
	ins        []instruction
}

type instruction struct {
	cmd  string // upper case: RUN, COPY, ENV, …
	args string // the rest of the line
	line int
}

func readDockerfile(t *testing.T, file string) *dockerfile {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var df dockerfile
	var cur strings.Builder
	start, n := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		cur.Reset()
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		switch {
		case in.cmd == "FROM":
			w := strings.Fields(in.args)
			s := &stage{from: w[0]}
			if len(w) == 3 && strings.EqualFold(w[1], "AS") {
				s.name = w[2]
			}
			df.stages = append(df.stages, s)
		case in.cmd == "ARG" && len(df.stages) == 0:
			// An ARG before the first FROM only parameterises FROMs.
		case len(df.stages) == 0:
			t.Fatalf("%s:%d: %s before the first FROM", file, in.line, in.cmd)
		default:
			s := df.stages[len(df.stages)-1]
			s.ins = append(s.ins, in)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(df.stages) != 2 {
		t.Fatalf("%s: %d stages, want 2 (build, then FROM scratch): deploytest reads this shape", file, len(df.stages))
	}
	return &df
}

// words splits a shell command line into words: single and double quotes,
// no expansion (the Dockerfile's commands use none).
func words(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, w.String())
				w.Reset()
				inWord = false
			}
		case r == '$' || r == '`':
			t.Fatalf("%q: deploytest runs this command itself and expands nothing", s)
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("%q: unterminated quote", s)
	}
	if inWord {
		out = append(out, w.String())
	}
	return out
}

// env reads an ENV instruction's key=value pairs.
func envPairs(t *testing.T, in instruction) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, w := range words(t, in.args) {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			t.Fatalf("line %d: ENV %q: want key=value", in.line, in.args)
		}
		m[k] = v
	}
	return m
}

// runCommand strips a RUN instruction's options (--mount=…).
func runCommand(in instruction) string {
	s := in.args
	for strings.HasPrefix(s, "--") {
		_, s, _ = strings.Cut(s, " ")
		s = strings.TrimSpace(s)
	}
	return s
}

// jsonArgs reads the exec form of ENTRYPOINT and CMD.
func jsonArgs(t *testing.T, in instruction) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.args), &v); err != nil {
		t.Fatalf("line %d: %s %s: want the exec form, a JSON array (scratch has no shell): %v", in.line, in.cmd, in.args, err)
	}
	return v
}

// pathPart strips what may stand before a path in one shell word: 2>, <,
// >>, --opt=, NAME=.
var pathPart = regexp.MustCompile(`^([0-9]*[<>]+&?|-[-A-Za-z0-9]*=|[A-Za-z_][A-Za-z0-9_]*=)`)

// caRoots is the CA bundle of the build image (a Debian one, as is this
// machine) that the image copies.
const caRoots = "/etc/ssl/certs/ca-certificates.crt"

// image is what the Dockerfile says about the build and the final image.
type image struct {
	buildEnv   map[string]string // the build stage's ENV
	goBuild    []string          // the go build command's words
	outDir     string            // where the build stage puts what the image takes
	binary     string            // goBuild's -o, under outDir
	rootfsRuns []rootfsRun       // the build stage's commands that lay out files under outDir
	copies     []imageCopy       // the final stage's COPY lines
	user       string            // USER
	uid, gid   int
	env        map[string]string // the final stage's ENV
	workdir    string
	expose     []string
	entrypoint []string
	cmd        []string
}

type rootfsRun struct {
	dir     string // the WORKDIR it runs in, under outDir
	command string
}

type imageCopy struct {
	src, dst string
	chown    string
}

// readImage reads deploy/Dockerfile in the shape deploytest knows and fails
// on anything else, so the test cannot drift from what the image does.
func readImage(t *testing.T) *image {
	t.Helper()
	const file = "../Dockerfile"
	df := readDockerfile(t, file)
	build, final := df.stages[0], df.stages[1]
	im := &image{buildEnv: map[string]string{}, env: map[string]string{}, outDir: "/out"}
	workdir := "/"
	for _, in := range build.ins {
		switch in.cmd {
		case "WORKDIR":
			if path.IsAbs(in.args) {
				workdir = path.Clean(in.args)
			} else {
				workdir = path.Join(workdir, in.args)
			}
		case "ENV":
			for k, v := range envPairs(t, in) {
				im.buildEnv[k] = v
			}
		case "COPY":
			// The sources; the test builds from the checkout itself.
		case "RUN":
			cmd := runCommand(in)
			w := words(t, cmd)
			switch {
			case len(w) >= 2 && w[0] == "go" && w[1] == "build":
				if im.goBuild != nil {
					t.Fatalf("%s:%d: a second go build", file, in.line)
				}
				im.goBuild = w
			case len(w) == 3 && w[0] == "go" && w[1] == "mod" && w[2] == "download":
			case strings.HasPrefix(workdir, im.outDir+"/"):
				// The test runs these on this machine, as root: they may
				// touch nothing outside /out but read the CA roots.
				for _, w := range w {
					// A path after a redirection, an option's = or an
					// assignment's.
					w = pathPart.ReplaceAllString(w, "")
					switch {
					case w == caRoots:
					case strings.HasPrefix(w, "/"):
						t.Fatalf("%s:%d: RUN %q names %s: deploytest runs these commands on the host, so they may use paths under %s only (and read %s)", file, in.line, cmd, w, im.outDir, caRoots)
					case strings.Contains(w, "/") && !strings.HasPrefix(path.Join(workdir, w), im.outDir+"/"):
						t.Fatalf("%s:%d: RUN %q: %s leaves %s", file, in.line, cmd, w, im.outDir)
					}
				}
				im.rootfsRuns = append(im.rootfsRuns, rootfsRun{dir: workdir, command: cmd})
			default:
				t.Fatalf("%s:%d: RUN %q outside %s: deploytest lays out the image from the go build and commands run under %s; teach it this one", file, in.line, cmd, im.outDir, im.outDir)
			}
		default:
			t.Fatalf("%s:%d: %s in the build stage: deploytest does not know it", file, in.line, in.cmd)
		}
	}
	if im.goBuild == nil {
		t.Fatalf("%s: no go build in the build stage", file)
	}
	for i, w := range im.goBuild {
		if w == "-o" && i+1 < len(im.goBuild) {
			im.binary = im.goBuild[i+1]
		}
	}
	if !strings.HasPrefix(im.binary, im.outDir+"/") {
		t.Fatalf("%s: go build -o %q: want a path under %s", file, im.binary, im.outDir)
	}

	if final.from != "scratch" {
		t.Fatalf("%s: the final stage is FROM %s, want scratch", file, final.from)
	}
	for _, in := range final.ins {
		switch in.cmd {
		case "COPY":
			w := words(t, in.args)
			var c imageCopy
			from := ""
			for len(w) > 0 && strings.HasPrefix(w[0], "--") {
				k, v, _ := strings.Cut(w[0], "=")
				switch k {
				case "--from":
					from = v
				case "--chown":
					c.chown = v
				default:
					t.Fatalf("%s:%d: COPY %s: deploytest does not know it", file, in.line, k)
				}
				w = w[1:]
			}
			if from != build.name || len(w) != 2 || !strings.HasPrefix(w[0], im.outDir+"/") {
				t.Fatalf("%s:%d: COPY %s: want COPY --from=%s %s/… DEST", file, in.line, in.args, build.name, im.outDir)
			}
			c.src, c.dst = w[0], w[1]
			im.copies = append(im.copies, c)
		case "USER":
			im.user = in.args
			u, g, ok := strings.Cut(in.args, ":")
			var err1, err2 error
			im.uid, err1 = strconv.Atoi(u)
			im.gid, err2 = strconv.Atoi(g)
			if !ok || err1 != nil || err2 != nil {
				t.Fatalf("%s:%d: USER %s: want numeric UID:GID (Kubernetes' runAsNonRoot cannot check a name)", file, in.line, in.args)
			}
		case "ENV":
			for k, v := range envPairs(t, in) {
				im.env[k] = v
			}
		case "WORKDIR":
			im.workdir = in.args
		case "EXPOSE":
			im.expose = append(im.expose, strings.Fields(in.args)...)
		case "ENTRYPOINT":
			im.entrypoint = jsonArgs(t, in)
		case "CMD":
			im.cmd = jsonArgs(t, in)
		case "VOLUME", "LABEL":
		default:
			t.Fatalf("%s:%d: %s in the final stage: deploytest does not know it", file, in.line, in.cmd)
		}
	}
	return im
}

// TestDockerfile checks what the image promises: a static, trimmed build,
// an empty base, a non-root numeric user, CA roots, a data dir the user
// owns, and a listen address that matches EXPOSE.
func TestDockerfile(t *testing.T) {
	im := readImage(t)
	if im.buildEnv["CGO_ENABLED"] != "0" {
		t.Errorf("build stage: CGO_ENABLED=%q, want 0 (a static binary for FROM scratch)", im.buildEnv["CGO_ENABLED"])
	}
	build := strings.Join(im.goBuild, " ")
	for _, want := range []string{"-trimpath", "-ldflags=-s -w", "./cmd/agentwire"} {
		if !strings.Contains(build, want) {
			t.Errorf("go build: %q lacks %q", build, want)
		}
	}
	if im.uid == 0 || im.gid == 0 {
		t.Errorf("USER %s: want a non-root UID and GID", im.user)
	}
	dests := map[string]imageCopy{}
	for _, c := range im.copies {
		dests[c.dst] = c
	}
	if c, ok := dests["/agentwire"]; !ok || c.src != im.binary {
		t.Errorf("COPY: want %s copied to /agentwire, the ENTRYPOINT", im.binary)
	}
	if want := []string{"/agentwire"}; fmt.Sprint(im.entrypoint) != fmt.Sprint(want) {
		t.Errorf("ENTRYPOINT %q, want %q", im.entrypoint, want)
	}
	if fmt.Sprint(im.cmd) != fmt.Sprint([]string{"serve"}) {
		t.Errorf("CMD %q, want [serve]", im.cmd)
	}
	dataDir := im.env["AGENTWIRE_DATA_DIR"]
	if dataDir == "" || !path.IsAbs(dataDir) {
		t.Errorf("ENV AGENTWIRE_DATA_DIR=%q: want an absolute path (the default ./data depends on the working directory)", dataDir)
	}
	owned := false
	for _, c := range im.copies {
		if strings.TrimSuffix(c.dst, "/") == dataDir && c.chown == im.user {
			owned = true
		}
	}
	if !owned {
		t.Errorf("the data dir %s is not copied with --chown=%s: the user could not write the SQLite file", dataDir, im.user)
	}
	addr := im.env["AGENTWIRE_ADDR"]
	_, port, ok := strings.Cut(addr, ":")
	if !ok || strings.HasPrefix(addr, "127.") || strings.HasPrefix(addr, "localhost") {
		t.Errorf("ENV AGENTWIRE_ADDR=%q: want every interface (:PORT); serve's default is loopback only", addr)
	}
	if fmt.Sprint(im.expose) != fmt.Sprint([]string{port}) {
		t.Errorf("EXPOSE %v, want the port of AGENTWIRE_ADDR %q", im.expose, port)
	}
}
