// Command holdfast is the Holdfast control plane: it watches Kubernetes Services and
// EndpointSlices and serves them over xDS to Envoy sidecars and proxyless gRPC clients.
// "holdfast bootstrap" prints a client bootstrap that points at it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/holdfast/holdfast/internal/version"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain returns the process exit code: 0 on success (including a clean SIGTERM), 1 on a
// runtime failure, 2 on bad usage.
func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "bootstrap" {
		return bootstrapMain(args[1:], stdout, stderr)
	}
	if wantsVersion(args) {
		fmt.Fprintln(stdout, "holdfast", version.String())
		return 0
	}
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err = cfg.checkEnvironment()
	}
	if err != nil {
		fmt.Fprintf(stderr, "holdfast: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("holdfast stopped", "err", err)
		return 1
	}
	log.Info("holdfast stopped cleanly")
	return 0
}

// wantsVersion says whether args ask for the version (--version, anywhere before "--").
func wantsVersion(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "--version", "-version":
			return true
		}
	}
	return false
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel) // validated with the config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
