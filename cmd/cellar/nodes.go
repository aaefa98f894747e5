package main

import (
	"context"
	"fmt"

	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// openNode opens the node n. With create, missing schema is created; with
// lazy, the schema check waits for the node's first use.
func openNode(ctx context.Context, cfg *Config, n NodeConfig, shards int, create, lazy bool) (*sqlstore.Store, error) {
	opts := sqlstore.Options{Name: n.Name, ShardCount: shards, Create: create, Lazy: lazy, CoalesceReads: n.CoalesceReads}
	var (
		s   *sqlstore.Store
		err error
	)
	switch n.Driver {
	case "sqlite":
		s, err = sqlite.Open(ctx, cfg.sqlitePath(n), sqlite.Options{Options: opts, MaxReaders: n.MaxConns, CheckpointEvery: n.CheckpointEvery})
	case "postgres":
		s, err = postgres.Open(ctx, n.DSN, postgres.Options{Options: opts, MaxConns: n.MaxConns})
	case "mysql":
		s, err = mysql.Open(ctx, n.DSN, mysql.Options{Options: opts, MaxConns: n.MaxConns})
	default:
		err = fmt.Errorf("unknown driver %q", n.Driver)
	}
	if err != nil {
		return nil, fmt.Errorf("open node %s (%s): %w", n.Name, n.Driver, err)
	}
	return s, nil
}
