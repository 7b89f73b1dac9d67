// Command agentwire is a real-time gateway between AI agents and the people
// who use them. See the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/agentwire/agentwire/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "agentwire:", err)
	}
	if errors.Is(err, flag.ErrHelp) {
		err = nil
	}
	os.Exit(cli.ExitCode(err))
}
