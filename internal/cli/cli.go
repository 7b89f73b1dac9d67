// Package cli is agentwire's command line: it parses a command and hands
// it to the package that does it — `serve` to config and app, `verify` to
// verify, `bench` to benchcmd; `token` is here. Every flag is also read from
// the AGENTWIRE_… environment variable named in its help.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/agentwire/agentwire/internal/auth"
	"github.com/agentwire/agentwire/internal/benchcmd"
	"github.com/agentwire/agentwire/internal/config"
	"github.com/agentwire/agentwire/internal/verify"
)

// Run executes agentwire with args (without the program name), reading the
// environment through getenv. It returns when the command is done; serve
// returns nil after a clean shutdown once ctx is cancelled. -h prints the
// command's flags on stderr and returns an error wrapping flag.ErrHelp.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], getenv, stdout, stderr)
	case "token":
		err = token(args[1:], getenv, stdout, stderr)
	case "verify":
		err = verify.Run(ctx, args[1:], getenv, stdout)
	case "bench":
		err = benchcmd.Run(ctx, args[1:], getenv, stdout)
	case "version", "-version", "--version":
		_, err = fmt.Fprintln(stdout, "agentwire", version(), "("+runtime.Version()+")")
	case "help", "-h", "--help":
		usage(stdout)
	default:
		err = config.UsageError{Err: fmt.Errorf("unknown command %q\nrun 'agentwire help' for the commands", args[0])}
	}
	if help := (*config.HelpError)(nil); errors.As(err, &help) {
		fmt.Fprint(stderr, help.Usage)
	}
	return err
}

var errUsage = errors.New("no command given")

// version is the module version the binary was built at (a tag, or a
// pseudo-version from the VCS revision), else the revision itself.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	return "devel-" + rev + dirty
}

func usage(w io.Writer) {
	fmt.Fprint(w, `agentwire: a real-time gateway between AI agents and the people who use them.

Usage:
  agentwire serve [flags]          run the gateway (agentwire serve -h lists the flags)
  agentwire token --user U [--ttl 1h]
                                   print a token signed with serve's key
  agentwire verify [--url U] (--token JWT | --dev-user U)
                                   check a running deployment end to end
  agentwire bench [--url U] (--token-secret S | --dev) [--mode publish|runs]
                                   load test a running deployment (agentwire bench -h)
  agentwire version                print the version
`)
}

// ExitCode maps Run's error to a process exit code.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage), errors.As(err, new(config.UsageError)):
		return 2
	}
	return 1
}

func token(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := config.NewFlagSet("token", getenv)
	k := config.Default().Keys
	k.Register(f)
	var user string
	var ttl time.Duration
	f.StringVar(&user, "user", "", "the token's subject (required)")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	if err := f.Parse(args); err != nil {
		return err
	}
	if user == "" {
		return config.UsageError{Err: errors.New("--user is required")}
	}
	if k.PublicKeyFile != "" || k.JWKSURL != "" {
		return errors.New("agentwire token signs HS256 only: it needs --jwt-secret or the generated secret, not a public key or JWKS")
	}
	// token only ever reads the secret serve uses: a new one here would sign
	// tokens that no server accepts.
	source := "--jwt-secret [AGENTWIRE_JWT_SECRET]"
	if k.Secret == "" {
		path := filepath.Join(k.DataDir, auth.SecretFile)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no JWT secret: %s does not exist; pass the server's --jwt-secret, or the --data-dir of a server that has started once (it creates the secret)", path)
		}
		source = path
	}
	cfg, err := k.Auth()
	if err != nil {
		return err
	}
	tok, _, err := auth.NewSigner(cfg.Secret).Sign(user, ttl, k.Issuer, k.Audience)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "agentwire: signed with the secret from", source)
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
