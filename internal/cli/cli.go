// Package cli is agentwire's command line: `serve`, `token`, `verify` and
// `bench`. Every flag is also read from the AGENTWIRE_… environment variable
// named in its help.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/agentwire/agentwire/internal/auth"
)

// Run executes agentwire with args (without the program name), reading the
// environment through getenv. It returns when the command is done; serve
// returns nil after a clean shutdown once ctx is cancelled.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr)
	case "token":
		return token(ctx, args[1:], getenv, stdout, stderr)
	case "verify":
		return verify(ctx, args[1:], getenv, stdout, stderr)
	case "bench":
		return bench(ctx, args[1:], getenv, stdout, stderr)
	case "version", "-version", "--version":
		_, err := fmt.Fprintln(stdout, "agentwire", version(), "("+runtime.Version()+")")
		return err
	case "help", "-h", "--help":
		usage(stdout)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q\nrun 'agentwire help' for the commands", args[0])}
}

var errUsage = errors.New("no command given")

// usageError is a mistake on the command line: exit code 2, and no wall of
// usage text (the message carries one hint line).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

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

// flagSet wraps flag.FlagSet so each flag names its environment variable and
// takes its default from it.
type flagSet struct {
	*flag.FlagSet
	getenv func(string) string
	envErr []error
	stderr io.Writer
}

func newFlagSet(name string, getenv func(string) string, stderr io.Writer) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// flag would print the whole list of flags after any mistake; parse
	// prints it only for -h and answers a mistake with one hint line.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, getenv: getenv, stderr: stderr}
}

func (f *flagSet) env(name string) (string, bool) {
	v := f.getenv(name)
	return v, v != ""
}

func (f *flagSet) String(p *string, name, env, def, usage string) {
	if v, ok := f.env(env); ok {
		def = v
	}
	f.StringVar(p, name, def, usage+" ["+env+"]")
}

func (f *flagSet) Bool(p *bool, name, env string, def bool, usage string) {
	if v, ok := f.env(env); ok {
		switch strings.ToLower(v) {
		case "1", "true", "yes", "on":
			def = true
		case "0", "false", "no", "off":
			def = false
		default:
			f.envErr = append(f.envErr, fmt.Errorf("%s=%q: want true or false", env, v))
		}
	}
	f.BoolVar(p, name, def, usage+" ["+env+"]")
}

func (f *flagSet) Int(p *int, name, env string, def int, usage string) {
	if v, ok := f.env(env); ok {
		var n int
		if _, err := fmt.Sscan(v, &n); err != nil {
			f.envErr = append(f.envErr, fmt.Errorf("%s=%q: want an integer", env, v))
		} else {
			def = n
		}
	}
	f.IntVar(p, name, def, usage+" ["+env+"]")
}

func (f *flagSet) Float(p *float64, name, env string, def float64, usage string) {
	if v, ok := f.env(env); ok {
		var n float64
		if _, err := fmt.Sscan(v, &n); err != nil {
			f.envErr = append(f.envErr, fmt.Errorf("%s=%q: want a number", env, v))
		} else {
			def = n
		}
	}
	f.Float64Var(p, name, def, usage+" ["+env+"]")
}

func (f *flagSet) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v, ok := f.env(env); ok {
		d, err := parseDuration(v)
		if err != nil {
			f.envErr = append(f.envErr, fmt.Errorf("%s=%q: %w", env, v, err))
		} else {
			def = d
		}
	}
	f.DurationVar(p, name, def, usage+" ["+env+"]")
}

// DurationVar is flag's, with an error that says what to write.
func (f *flagSet) DurationVar(p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	f.Var((*durationValue)(p), name, usage)
}

type durationValue time.Duration

func (d *durationValue) String() string { return time.Duration(*d).String() }

func (d *durationValue) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

// parseDuration is time.ParseDuration; a bare number gets an error saying
// that a unit is needed rather than "missing unit in duration".
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err == nil {
		return d, nil
	}
	if _, nerr := strconv.ParseFloat(s, 64); nerr == nil && s != "0" {
		return 0, fmt.Errorf("a duration needs a unit: write %ss (or %sms, %sm, %sh)", s, s, s, s)
	}
	return 0, errors.New("want a duration with a unit, like 500ms, 25s or 10m")
}

func (f *flagSet) parse(args []string) error {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.printDefaults()
			return err
		}
		return f.hint(err)
	}
	if len(f.envErr) > 0 {
		return usageError{errors.Join(f.envErr...)}
	}
	if f.NArg() > 0 {
		return f.hint(fmt.Errorf("unexpected argument %q", f.Arg(0)))
	}
	return nil
}

// hint turns a mistake on the command line into its error plus one line
// saying where the flags are listed.
func (f *flagSet) hint(err error) error {
	return usageError{fmt.Errorf("%s: %w\nrun 'agentwire %s -h' to list its flags", f.Name(), err, f.Name())}
}

// printDefaults is flag.PrintDefaults, naming durationValue's type.
func (f *flagSet) printDefaults() {
	w := f.stderr
	fmt.Fprintf(w, "Usage of agentwire %s:\n", f.Name())
	f.VisitAll(func(fl *flag.Flag) {
		typ, usage := flag.UnquoteUsage(fl)
		if _, ok := fl.Value.(*durationValue); ok {
			typ = "duration"
		}
		line := "  -" + fl.Name
		if typ != "" {
			line += " " + typ
		}
		line += "\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t")
		switch fl.DefValue {
		case "", "0", "0s", "false":
		default:
			if typ == "string" {
				line += fmt.Sprintf(" (default %q)", fl.DefValue)
			} else {
				line += fmt.Sprintf(" (default %v)", fl.DefValue)
			}
		}
		fmt.Fprintln(w, line)
	})
}

// keyFlags are the flags that choose how tokens are verified and signed,
// shared by serve and token so both use the same key.
type keyFlags struct {
	dataDir, secret, publicKeyFile, jwksURL, issuer, audience string
}

func (k *keyFlags) register(f *flagSet) {
	f.String(&k.dataDir, "data-dir", "AGENTWIRE_DATA_DIR", "./data", "directory for agentwire's files (the generated JWT secret)")
	f.String(&k.secret, "jwt-secret", "AGENTWIRE_JWT_SECRET", "", "HS256 secret for user tokens")
	f.String(&k.publicKeyFile, "jwt-public-key-file", "AGENTWIRE_JWT_PUBLIC_KEY_FILE", "", "PEM public key (RSA, EC P-256 or Ed25519) for user tokens")
	f.String(&k.jwksURL, "jwks-url", "AGENTWIRE_JWKS_URL", "", "JWKS URL for user tokens")
	f.String(&k.issuer, "jwt-issuer", "AGENTWIRE_JWT_ISSUER", "", "required iss claim, when set")
	f.String(&k.audience, "jwt-audience", "AGENTWIRE_JWT_AUDIENCE", "", "required aud claim, when set")
}

// keys resolves the verification config and, for HS256, the signing secret.
// With no key configured the secret is generated once and kept in the data dir.
func (k *keyFlags) keys() (auth.Config, []byte, error) {
	cfg := auth.Config{PublicKeyFile: k.publicKeyFile, JWKSURL: k.jwksURL, Issuer: k.issuer, Audience: k.audience}
	n := 0
	for _, s := range []string{k.secret, k.publicKeyFile, k.jwksURL} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return cfg, nil, errors.New("set only one of --jwt-secret, --jwt-public-key-file and --jwks-url")
	}
	switch {
	case k.secret != "":
		cfg.Secret = []byte(k.secret)
	case n == 0:
		secret, err := auth.LoadOrCreateSecret(k.dataDir)
		if err != nil {
			return cfg, nil, fmt.Errorf("--data-dir %s: %w", k.dataDir, err)
		}
		cfg.Secret = secret
	}
	return cfg, cfg.Secret, nil
}

func token(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	f := newFlagSet("token", getenv, stderr)
	var k keyFlags
	k.register(f)
	var user string
	var ttl time.Duration
	f.StringVar(&user, "user", "", "the token's subject (required)")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	if err := f.parse(args); err != nil {
		return err
	}
	if user == "" {
		return usageError{errors.New("--user is required")}
	}
	if k.publicKeyFile != "" || k.jwksURL != "" {
		return errors.New("agentwire token signs HS256 only: it needs --jwt-secret or the generated secret, not a public key or JWKS")
	}
	// token only ever reads the secret serve uses: a new one here would sign
	// tokens that no server accepts.
	source := "--jwt-secret [AGENTWIRE_JWT_SECRET]"
	if k.secret == "" {
		path := filepath.Join(k.dataDir, auth.SecretFile)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no JWT secret: %s does not exist; pass the server's --jwt-secret, or the --data-dir of a server that has started once (it creates the secret)", path)
		}
		source = path
	}
	_, secret, err := k.keys()
	if err != nil {
		return err
	}
	tok, _, err := auth.NewSigner(secret).Sign(user, ttl, k.issuer, k.audience)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "agentwire: signed with the secret from", source)
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
