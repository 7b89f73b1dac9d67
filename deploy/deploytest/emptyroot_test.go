package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentwire/agentwire/internal/testproc"
	"github.com/agentwire/agentwire/internal/verify"
)

// staticBuild is the binary built once per test binary with the
// Dockerfile's go build line.
var staticBuild struct {
	once sync.Once
	dir  string // the build stage's /out
	took time.Duration
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if staticBuild.dir != "" {
		_ = os.RemoveAll(staticBuild.dir)
	}
	os.Exit(code)
}

// buildStatic runs the Dockerfile's go build (with its build stage's ENV)
// from the repository root, the build stage's /out mapped to a temporary
// directory, and returns that directory.
func buildStatic(t *testing.T, im *image) string {
	t.Helper()
	staticBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "agentwire-deploytest-")
		if err != nil {
			staticBuild.err = err
			return
		}
		staticBuild.dir = dir
		args := append([]string(nil), im.goBuild[1:]...)
		for i, a := range args {
			if a == "-o" {
				args[i+1] = filepath.Join(dir, strings.TrimPrefix(im.binary, im.outDir+"/"))
			}
		}
		// -trimpath shares no cached package with the suite's other builds:
		// cold, it compiles everything, the standard library included (2 min
		// of CPU, 5 min on a loaded 2-core machine).
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goCommand(), args...)
		cmd.Dir = "../.."
		cmd.Env = os.Environ()
		for k, v := range im.buildEnv {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			staticBuild.err = fmt.Errorf("%s: %v\n%s", strings.Join(im.goBuild, " "), err, out)
			return
		}
		staticBuild.took = time.Since(start)
	})
	if staticBuild.err != nil {
		t.Fatal(staticBuild.err)
	}
	t.Logf("static build (%s): %v", strings.Join(im.goBuild, " "), staticBuild.took.Round(100*time.Millisecond))
	return staticBuild.dir
}

func goCommand() string {
	if p := filepath.Join(os.Getenv("GOROOT"), "bin", "go"); os.Getenv("GOROOT") != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

// TestStaticBinary checks that the Dockerfile's build is static: no
// program interpreter and no shared library, so it runs in an empty root.
func TestStaticBinary(t *testing.T) {
	im := readImage(t)
	out := buildStatic(t, im)
	bin := filepath.Join(out, strings.TrimPrefix(im.binary, im.outDir+"/"))
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter (PT_INTERP): it is dynamically linked", bin)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Errorf("%s needs shared libraries (DT_NEEDED): %v", bin, libs)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("%s has a symbol table: -ldflags '-s -w' should strip it", bin)
	}
}

// TestEmptyRoot lays out the image's files as the Dockerfile does (its
// build, its commands under /out, its final stage's COPY lines) in an
// otherwise empty directory, runs the image's ENTRYPOINT and CMD inside it
// (chroot as the image's USER, with only the image's ENV, plus --dev and a
// free loopback port), and runs `agentwire verify`'s golden path against it
// from outside; then SIGTERM must drain and exit 0.
func TestEmptyRoot(t *testing.T) {
	im := readImage(t)
	attr, why := isolation(im)
	if attr == nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot run the empty-root test: %s; CI=true: it must run in CI", why)
		}
		t.Skipf("SKIPPED: cannot run the empty-root test: %s (run it as root; it fails under CI=true)", why)
	}
	out := buildStatic(t, im)

	// The build stage's commands that lay out files, in a copy of /out.
	stageOut := t.TempDir()
	if err := os.CopyFS(stageOut, os.DirFS(out)); err != nil {
		t.Fatal(err)
	}
	for _, r := range im.rootfsRuns {
		dir := filepath.Join(stageOut, strings.TrimPrefix(r.dir, im.outDir+"/"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/bin/sh", "-ec", r.command)
		cmd.Dir = dir
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("RUN %s (in %s): %v\n%s", r.command, r.dir, err, o)
		}
	}

	// The final stage: scratch and its COPY lines, nothing else.
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range im.copies {
		src := filepath.Join(stageOut, strings.TrimPrefix(c.src, im.outDir+"/"))
		if err := copyInto(root, src, c.dst, c.chown); err != nil {
			t.Fatalf("COPY %s %s: %v", c.src, c.dst, err)
		}
	}
	listRoot(t, root)
	for _, want := range []string{"agentwire", "etc/ssl/certs/ca-certificates.crt", "tmp", strings.TrimPrefix(im.env["AGENTWIRE_DATA_DIR"], "/")} {
		if _, err := os.Stat(filepath.Join(root, want)); err != nil {
			t.Errorf("the image lacks /%s: %v", want, err)
		}
	}

	// The image's environment only, on a free loopback port (the image
	// listens on every interface of its own network; here it shares the
	// host's) and --dev, for verify's dev-login.
	env := []string{}
	for k, v := range im.env {
		env = append(env, k+"="+v)
	}
	env = append(env, "AGENTWIRE_ADDR=127.0.0.1:0", "AGENTWIRE_DEV=true")
	argv := append(append([]string(nil), im.entrypoint...), im.cmd...)
	cmd := exec.Command(filepath.Join(root, argv[0]), argv[1:]...)
	cmd.Path = argv[0] // resolved inside the chroot
	cmd.Args = argv
	cmd.Env = env
	cmd.Dir = im.workdir
	cmd.SysProcAttr = attr
	cmd.SysProcAttr.Chroot = root
	var stderr testproc.SyncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v in %s: %v", argv, root, err)
	}
	// exited is closed once the process is gone, waitErr set before.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	url, err := listeningOn(stdout, exited, 60*time.Second)
	if err != nil {
		select {
		case <-exited:
			err = fmt.Errorf("%w: %v", err, waitErr)
		default:
		}
	}
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, testproc.Tail(stderr.String(), 40))
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	t.Logf("agentwire serve in the empty root %s, as %s: %s", root, im.user, url)

	for _, p := range []string{"/healthz", "/readyz"} {
		res, err := http.Get(url + p)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", p, res.StatusCode)
		}
	}

	// The golden path: connect, send, agent_started … agent_completed,
	// resume, a second tab and user (see README, "Verify a deployment").
	var report bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	verr := verify.Run(ctx, []string{"--url", url, "--dev-user", "deploytest-alice", "--timeout", "60s"}, func(string) string { return "" }, &report)
	t.Logf("agentwire verify:\n%s", indent(report.String()))
	if verr != nil {
		t.Errorf("verify: %v\nstderr:\n%s", verr, testproc.Tail(stderr.String(), 40))
	}

	// Written by the image's user in its data dir: the SQLite file and the
	// generated secret.
	dataDir := filepath.Join(root, im.env["AGENTWIRE_DATA_DIR"])
	for _, name := range []string{"agentwire.db", "jwt-secret"} {
		fi, err := os.Stat(filepath.Join(dataDir, name))
		if err != nil {
			t.Errorf("the data dir: %v", err)
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && (int(st.Uid) != im.uid || int(st.Gid) != im.gid) {
			t.Errorf("%s is owned by %d:%d, want the image's user %s", name, st.Uid, st.Gid, im.user)
		}
	}

	// SIGTERM: drain, close, exit 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("after SIGTERM: %v, want exit 0\nstderr:\n%s", waitErr, testproc.Tail(stderr.String(), 40))
		}
	case <-time.After(60 * time.Second):
		t.Errorf("still running 60 s after SIGTERM\nstderr:\n%s", testproc.Tail(stderr.String(), 40))
	}
}

// isolation returns how to run the image's user in a chroot: as root, a
// chroot and the image's UID:GID; otherwise a new user namespace mapping
// the current user to root inside it (chroot needs CAP_SYS_CHROOT), when
// the kernel allows one. nil and why when neither is possible.
func isolation(im *image) (*syscall.SysProcAttr, string) {
	if os.Geteuid() == 0 {
		return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(im.uid), Gid: uint32(im.gid)}}, ""
	}
	// Probe: the same clone a run would make.
	probe := exec.Command("/proc/self/exe", "-test.run=^$")
	probe.SysProcAttr = userNS()
	if err := probe.Run(); err != nil {
		return nil, fmt.Sprintf("not root and no unprivileged user namespace (%v)", err)
	}
	return userNS(), ""
}

func userNS() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}},
	}
}

// copyInto is the final stage's COPY src dst: a directory's contents into
// dst, a file to dst; with chown (UID:GID) what it creates is owned so.
func copyInto(root, src, dst, chown string) error {
	uid, gid := -1, -1
	if chown != "" {
		u, g, _ := strings.Cut(chown, ":")
		var err error
		if uid, err = strconv.Atoi(u); err != nil {
			return fmt.Errorf("--chown=%s: want numeric UID:GID", chown)
		}
		if gid, err = strconv.Atoi(g); err != nil {
			return fmt.Errorf("--chown=%s: want numeric UID:GID", chown)
		}
	}
	target := filepath.Join(root, dst)
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		if strings.HasSuffix(dst, "/") {
			target = filepath.Join(target, filepath.Base(src))
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if err := copyFile(src, target, fi.Mode()); err != nil {
			return err
		}
		return lchown(target, uid, gid)
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(target, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(to, 0o755); err != nil {
				return err
			}
			// Mkdir applies the umask; COPY keeps the mode (/tmp's sticky bit).
			if err := os.Chmod(to, info.Mode()&fs.ModePerm|info.Mode()&fs.ModeSticky); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := copyFile(p, to, info.Mode()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: only files and directories are expected", p)
		}
		return lchown(to, uid, gid)
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, mode.Perm()); err != nil {
		return err
	}
	return os.Chmod(dst, mode.Perm())
}

// lchown is COPY --chown; without root (a user namespace maps this user to
// root inside) the files stay this user's, which is root there.
func lchown(p string, uid, gid int) error {
	if uid < 0 || os.Geteuid() != 0 {
		return nil
	}
	return os.Lchown(p, uid, gid)
}

// listRoot logs every path in the root, so a failure shows what was there.
func listRoot(t *testing.T, root string) {
	t.Helper()
	var b strings.Builder
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		owner := ""
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			owner = fmt.Sprintf("%d:%d", st.Uid, st.Gid)
		}
		fmt.Fprintf(&b, "  %v %s /%s\n", info.Mode(), owner, strings.TrimPrefix(rel, "."))
		return nil
	})
	t.Logf("the empty root holds only:\n%s", b.String())
}

// listeningOn reads serve's "listening on URL" line.
func listeningOn(stdout io.Reader, exited <-chan struct{}, d time.Duration) (string, error) {
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				line <- u
				return
			}
		}
		close(line)
	}()
	select {
	case u, ok := <-line:
		if !ok {
			return "", errors.New("serve closed its stdout before saying where it listens")
		}
		return u, nil
	case <-exited:
		return "", errors.New("serve exited at start")
	case <-time.After(d):
		return "", fmt.Errorf("serve did not say where it listens within %v", d)
	}
}

func indent(s string) string {
	return "| " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n| ")
}
