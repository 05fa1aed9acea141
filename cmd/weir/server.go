package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/server"
)

func newServerCmd() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a weir node (standalone with an embedded etcd unless etcd endpoints are configured)",
		Long: `Run a weir node. With no flags and no config file it starts a standalone node:
data in ./data, gRPC on 127.0.0.1:6570, metrics and health on 127.0.0.1:6571,
and an embedded etcd on 127.0.0.1:6579/6580.

Settings come from the defaults, then the --config YAML file (see
conf/weir.yaml), then WEIR_* environment variables, then these flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := conf.Load(configPath, os.Environ(), cmd.Flags())
			if err != nil {
				return err
			}
			log, err := newLogger(cfg.Log)
			if err != nil {
				return err
			}
			return runServer(cfg, log)
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "YAML config file (default: none, built-in defaults)")
	conf.BindFlags(cmd.Flags())
	return cmd
}

func runServer(cfg *conf.Config, log *slog.Logger) error {
	srv, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Before Start, so that a SIGHUP while it starts does not kill the
	// process (SIGHUP's default action); it is served once started.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = srv.Start(startCtx)
	cancel()
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		select {
		case <-hup:
			if err := srv.ReloadTLS(); err != nil {
				log.Error("TLS files not reloaded; the old ones stay in use", "err", err)
			} else {
				log.Info("TLS files reloaded")
			}
		case <-ctx.Done():
		}
	}
	log.Info("shutting down")
	if err := srv.Close(); err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	log.Info("stopped")
	return nil
}

func newLogger(c conf.Log) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.Format) {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("log.format: %q is not text or json", c.Format)
	}
}
