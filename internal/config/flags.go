package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// UsageError is a mistake on the command line: the program exits with 2
// and prints the message, which carries one hint line, and no wall of
// usage text.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the mistake.
func (e UsageError) Unwrap() error { return e.Err }

// HelpError is what parsing answers to -h: Usage lists the flags, each with
// its environment variable and its default. It wraps flag.ErrHelp.
type HelpError struct{ Usage string }

func (e *HelpError) Error() string { return flag.ErrHelp.Error() }

// Unwrap returns flag.ErrHelp.
func (e *HelpError) Unwrap() error { return flag.ErrHelp }

// FlagSet is a flag.FlagSet whose String, Bool, Int, Float and Duration
// flags are each also read from an AGENTWIRE_… environment variable, which
// takes the place of the default and is named in the flag's help. Durations
// need a unit, and an error says so.
type FlagSet struct {
	*flag.FlagSet
	getenv func(string) string
	envErr []error
}

// NewFlagSet returns the flags of the command name, reading the environment
// through getenv.
func NewFlagSet(name string, getenv func(string) string) *FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// flag would print the whole list of flags after any mistake; Parse
	// lists them only for -h and answers a mistake with one hint line.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &FlagSet{FlagSet: fs, getenv: getenv}
}

func (f *FlagSet) env(name string) (string, bool) {
	v := f.getenv(name)
	return v, v != ""
}

// String defines a string flag name, also read from the variable env.
func (f *FlagSet) String(p *string, name, env, def, usage string) {
	if v, ok := f.env(env); ok {
		def = v
	}
	f.StringVar(p, name, def, usage+" ["+env+"]")
}

// Repeated defines a flag name that may be given many times, each value
// appended to *p; the variable env holds values separated by newlines or
// semicolons, used when the flag is not given.
func (f *FlagSet) Repeated(p *[]string, name, env, usage string) {
	if v, ok := f.env(env); ok {
		for _, s := range strings.FieldsFunc(v, func(r rune) bool { return r == '\n' || r == ';' }) {
			if s = strings.TrimSpace(s); s != "" {
				*p = append(*p, s)
			}
		}
	}
	f.Var(&repeated{p: p, fromEnv: len(*p) > 0}, name, usage+" (repeatable) ["+env+"]")
}

type repeated struct {
	p       *[]string
	fromEnv bool // *p holds the variable's values until the first flag
}

func (r *repeated) String() string {
	if r == nil || r.p == nil {
		return ""
	}
	return strings.Join(*r.p, "; ")
}

func (r *repeated) Set(s string) error {
	if r.fromEnv {
		*r.p, r.fromEnv = nil, false
	}
	*r.p = append(*r.p, s)
	return nil
}

// Bool defines a bool flag name, also read from the variable env (true,
// false, 1, 0, yes, no, on, off).
func (f *FlagSet) Bool(p *bool, name, env string, def bool, usage string) {
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

// Int defines an int flag name, also read from the variable env.
func (f *FlagSet) Int(p *int, name, env string, def int, usage string) {
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

// Float defines a float64 flag name, also read from the variable env.
func (f *FlagSet) Float(p *float64, name, env string, def float64, usage string) {
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

// Duration defines a duration flag name, also read from the variable env.
func (f *FlagSet) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
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
func (f *FlagSet) DurationVar(p *time.Duration, name string, def time.Duration, usage string) {
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

// Parse parses args. A mistake, in args or in a variable, is a UsageError
// naming the flag (or variable) with one hint line; -h is a *HelpError.
func (f *FlagSet) Parse(args []string) error {
	if err := f.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &HelpError{Usage: f.usage()}
		}
		return f.hint(err)
	}
	if len(f.envErr) > 0 {
		return UsageError{errors.Join(f.envErr...)}
	}
	if f.NArg() > 0 {
		return f.hint(fmt.Errorf("unexpected argument %q", f.Arg(0)))
	}
	return nil
}

// hint turns a mistake on the command line into its error plus one line
// saying where the flags are listed.
func (f *FlagSet) hint(err error) error {
	return UsageError{fmt.Errorf("%s: %w\nrun 'agentwire %s -h' to list its flags", f.Name(), err, f.Name())}
}

// usage is flag.PrintDefaults, naming durationValue's type.
func (f *FlagSet) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage of agentwire %s:\n", f.Name())
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
		b.WriteString(line + "\n")
	})
	return b.String()
}
