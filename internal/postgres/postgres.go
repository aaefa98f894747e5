// Package postgres opens cellar storage nodes on PostgreSQL databases with
// pgx (through database/sql, so the shared sqlstore implementation runs
// unchanged).
package postgres

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/cellar-db/cellar/internal/sqlstore"
)

//go:embed schema/1.sql
var schema1 string

//go:embed schema/2.sql
var schema2 string

//go:embed schema/3.sql
var schema3 string

//go:embed schema/4.sql
var schema4 string

// migrationLockID is the advisory lock key that serializes migrations.
const migrationLockID = 0x63656c6c6172 // "cellar"

// Dialect is PostgreSQL's dialect.
var Dialect = &sqlstore.Dialect{
	Name:       "postgres",
	Numbered:   true,
	Migrations: []string{schema1, schema2, schema3, schema4},
	// Set per transaction, not as a connection parameter: a database or
	// role may default to another level (under which concurrent writers
	// to a shard fail with serialization errors), and poolers such as
	// PgBouncer refuse unknown startup parameters.
	WriteTx:    &sql.TxOptions{Isolation: sql.LevelReadCommitted},
	InsertSeq:  "INSERT INTO shard_seq (shard, last_added_id, fenced) VALUES (?, 0, 0) ON CONFLICT (shard) DO NOTHING",
	LockSeq:    "SELECT last_added_id, fenced FROM shard_seq WHERE shard = ? FOR UPDATE",
	InsertCell: "INSERT INTO cells (shard, added_id, row_key, col, ref_key, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (row_key, col, ref_key) DO NOTHING",
	MaxUnion:   1000,
	// octet_length of a TOASTed body reads its length from the TOAST
	// pointer, without fetching the body.
	BodyBytes: "octet_length(body)",
	UniqueViolation: func(err error) bool {
		return sqlState(err) == "23505"
	},
	Retryable: func(err error) bool {
		s := sqlState(err)
		return s == "40001" || s == "40P01"
	},
	Unavailable: func(err error) bool {
		var ce *pgconn.ConnectError
		if errors.As(err, &ce) || errors.Is(err, pgconn.ErrConnClosed) {
			return true
		}
		s := sqlState(err)
		// 08: connection exception; 57P0x: shutdown, crash, cannot connect now; 53300: too many connections.
		return strings.HasPrefix(s, "08") || strings.HasPrefix(s, "57P0") || s == "53300"
	},
	Lock: func(ctx context.Context, conn *sql.Conn) (func(), error) {
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrationLockID); err != nil {
			return nil, err
		}
		return func() {
			_, _ = conn.ExecContext(context.Background(), "SELECT pg_advisory_unlock($1)", migrationLockID)
		}, nil
	},

	// Timelines and counters (schema version 2).
	ForUpdate:      " FOR UPDATE",
	InsertTimeline: "INSERT INTO timelines (timeline_key, cap, stored) VALUES (?, ?, 0) ON CONFLICT (timeline_key) DO NOTHING",
	InsertMember:   "INSERT INTO timeline_members (timeline_key, member, score) VALUES (?, ?, ?) ON CONFLICT (timeline_key, member) DO NOTHING",
	InsertFlush:    "INSERT INTO counter_flushes (flush_id, applied_at) VALUES (?, ?) ON CONFLICT (flush_id) DO NOTHING",
	AddCounter:     "INSERT INTO counters (counter_key, value) VALUES (?, ?) ON CONFLICT (counter_key) DO UPDATE SET value = counters.value + excluded.value",
	OutOfRange: func(err error) bool {
		return sqlState(err) == "22003" // numeric_value_out_of_range
	},
	// Secondary indexes (schema version 4).
	UpsertIndexEntry: "INSERT INTO index_entries (index_name, gen, shard, k1, k2, k3, k4, row_key, ref_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (index_name, gen, shard, k1, k2, k3, k4, row_key) DO UPDATE SET ref_key = excluded.ref_key",
	UpsertIndexRow:   "INSERT INTO index_rows (index_name, gen, row_key, locs) VALUES (?, ?, ?, ?) ON CONFLICT (index_name, gen, row_key) DO UPDATE SET locs = excluded.locs",
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// Options configure a PostgreSQL node.
type Options struct {
	sqlstore.Options
	// MaxConns bounds the node's connection pool (default 32).
	MaxConns int
}

// Database names the database dsn points at, as host:port/database, or
// returns an error unless dsn parses as a PostgreSQL connection string
// (pgx parses it only at the first connection, where a mistake would look
// like a node that is down). The error does not quote dsn, which may hold
// a password.
func Database(dsn string) (string, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		msg := "not a PostgreSQL connection string (a URL postgres://user@host:port/database?sslmode=... or key=value pairs)"
		if inner := errors.Unwrap(err); inner != nil {
			msg += ": " + inner.Error()
		}
		return "", errors.New(msg)
	}
	db := cfg.Database
	if db == "" {
		db = cfg.User // the server's default: the database named after the user
	}
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, db), nil
}

// Open opens the PostgreSQL node at dsn (a libpq-style URL or key=value
// string).
func Open(ctx context.Context, dsn string, opts Options) (*sqlstore.Store, error) {
	if _, err := Database(dsn); err != nil {
		return nil, err
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 32
	}
	db.SetMaxOpenConns(opts.MaxConns)
	db.SetMaxIdleConns(opts.MaxConns)
	s, err := sqlstore.Open(ctx, db, db, Dialect, opts.Options)
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}
