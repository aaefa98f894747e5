package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// runInit implements `cellar init`.
func runInit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", envOr("CELLAR_CONFIG", ""), "config file (YAML); default: the embedded SQLite datastore")
	dataDir := fs.String("data-dir", "", "data directory (overrides config)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: cellar init [--config FILE] [--data-dir DIR]\n\nCreates the datastore the config describes: the schema on every node, the\ndatastore record and the first shard map on the metadata node. Running it\nagain migrates nodes to this binary's schema and changes nothing else.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	cfg, err := loadConfigWith(*configPath, func(cfg *Config) {
		fs.Visit(func(f *flag.Flag) { // given, whatever its value, as serve does
			if f.Name == "data-dir" {
				cfg.DataDir = *dataDir
			}
		})
	})
	if err != nil {
		fmt.Fprintf(stderr, "cellar: %v\n", err)
		return 2
	}
	if err := initDatastore(ctx, cfg, newLogger(cfg, stderr)); err != nil {
		fmt.Fprintf(stderr, "cellar: init: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "datastore ready: %d shards over %d nodes, metadata on %s\n", cfg.Shards, len(cfg.Nodes), cfg.Metadata)
	return 0
}

// initDatastore creates or migrates every node, then writes the datastore
// record and the first shard map if the metadata node has none. It is
// idempotent, and refuses a config whose metadata node is not the one
// holding the nodes' shard map.
func initDatastore(ctx context.Context, cfg *Config, log *slog.Logger) error {
	if err := cfg.complete(); err != nil {
		return err
	}
	var meta *sqlstore.Store
	for _, n := range cfg.Nodes {
		s, err := openNode(ctx, cfg, n, cfg.Shards, true, false)
		if err != nil {
			return err
		}
		defer s.Close()
		if n.Name == cfg.Metadata {
			meta = s
			continue
		}
		// Another node holding a shard map is the metadata node of a
		// datastore already: a second one over the same nodes would send
		// rows to other nodes than the first does.
		switch _, err := s.ShardMap(ctx); {
		case err == nil:
			return cellar.Errorf(cellar.ECONFLICT, "node %s holds the shard map of a datastore already, and this config names %s as the metadata node: set metadata: %s", n.Name, cfg.Metadata, n.Name)
		case !errors.Is(err, cellar.ErrNotFound):
			return err
		}
	}
	if err := meta.CreateDatastore(ctx, sqlstore.Datastore{ShardCount: cfg.Shards}); err != nil {
		return err
	}
	m, err := cfg.initialMap()
	if err != nil {
		return err
	}
	have, err := meta.ShardMap(ctx)
	switch {
	case errors.Is(err, cellar.ErrNotFound):
		if err := meta.PutShardMap(ctx, m); err != nil && !errors.Is(err, cellar.ErrConflict) {
			return err
		}
		log.Info("created datastore", "shards", cfg.Shards, "nodes", len(cfg.Nodes), "metadata", cfg.Metadata)
	case err != nil:
		return err
	default:
		log.Info("datastore exists; its stored shard map is authoritative", "map_version", have.Version)
	}
	return nil
}

// parseExit is the exit status of a subcommand whose flags did not parse:
// 0 when help was asked for (-h), as for the other subcommands, else 2.
func parseExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}
