package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/agentwire/agentwire/internal/app"
	"github.com/agentwire/agentwire/internal/config"
)

// serve is `agentwire serve`: load the config, build the app, say where it
// listens, serve until ctx is done, shut down.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "listening on http://%s\n", a.Addr())
	err = a.Run(ctx)
	// Shutdown has its own bounds (--drain-timeout, --shutdown-timeout):
	// ctx is already done.
	a.Shutdown(context.WithoutCancel(ctx))
	return err
}
