// Package mysql opens cellar storage nodes on MySQL and MariaDB databases
// with go-sql-driver/mysql.
package mysql

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"

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

//go:embed schema/5.sql
var schema5 string

// Dialect is MySQL's and MariaDB's dialect.
var Dialect = &sqlstore.Dialect{
	Name:       "mysql",
	Migrations: []string{schema1, schema2, schema3, schema4, schema5},
	InsertSeq:  "INSERT INTO shard_seq (shard, last_added_id, fenced) VALUES (?, 0, 0) ON DUPLICATE KEY UPDATE shard = shard",
	LockSeq:    "SELECT last_added_id, fenced FROM shard_seq WHERE shard = ? FOR UPDATE",
	// A no-op update affects 0 rows, as a skipped insert should. (INSERT
	// IGNORE would also swallow truncation and other errors.)
	InsertCell: "INSERT INTO cells (shard, added_id, row_key, col, ref_key, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE row_key = row_key",
	MaxUnion:   1000,
	// See Dialect.ParenUnion.
	ParenUnion: true,
	// The shard scan's ordering guarantee needs a locking read on InnoDB
	// (see sqlstore.Dialect.ScanLock), at the default REPEATABLE READ.
	ScanLock: " LOCK IN SHARE MODE",
	// See Dialect.StateTx.
	StateTx: &sql.TxOptions{Isolation: sql.LevelReadCommitted},
	// LENGTH counts bytes (CHAR_LENGTH counts characters). InnoDB keeps no
	// length apart from a BLOB, so the server reads the body to measure it,
	// but a scan no longer sends the bodies past its page.
	BodyBytes: "LENGTH(body)",
	UniqueViolation: func(err error) bool {
		return errNumber(err) == 1062
	},
	Retryable: func(err error) bool {
		n := errNumber(err)
		return n == 1213 || n == 1205 // deadlock, lock wait timeout
	},
	Unavailable: func(err error) bool {
		if errors.Is(err, mysql.ErrInvalidConn) {
			return true
		}
		n := errNumber(err)
		return n == 1040 || n == 1053 || n == 1927 // too many connections, shutdown, connection killed
	},
	Lock: func(ctx context.Context, conn *sql.Conn) (func(), error) {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK('cellar_migrate', 60)").Scan(&got); err != nil {
			return nil, err
		}
		if got.Int64 != 1 {
			return nil, fmt.Errorf("timed out waiting for another process's migration")
		}
		return func() {
			_, _ = conn.ExecContext(context.Background(), "SELECT RELEASE_LOCK('cellar_migrate')")
		}, nil
	},

	// Timelines and counters (schema version 2).
	ForUpdate:      " FOR UPDATE",
	InsertTimeline: "INSERT INTO timelines (timeline_key, cap, stored) VALUES (?, ?, 0) ON DUPLICATE KEY UPDATE timeline_key = timeline_key",
	InsertMember:   "INSERT INTO timeline_members (timeline_key, member, score) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE member = member",
	InsertFlush:    "INSERT INTO counter_flushes (flush_id, applied_at) VALUES (?, ?) ON DUPLICATE KEY UPDATE flush_id = flush_id",
	// VALUES(value) is the delta as a BIGINT, so the sum is BIGINT
	// arithmetic, which fails on overflow whatever the sql_mode (a DECIMAL
	// sum could be clamped into the column outside strict mode).
	AddCounter: "INSERT INTO counters (counter_key, value) VALUES (?, ?) ON DUPLICATE KEY UPDATE value = value + VALUES(value)",
	OutOfRange: func(err error) bool {
		n := errNumber(err)
		return n == 1690 || n == 1264 // BIGINT value is out of range; out of range value for column
	},
	// Secondary indexes (schema version 4).
	UpsertIndexEntry: "INSERT INTO index_entries (index_name, gen, shard, k1, k2, k3, k4, row_key, ref_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE ref_key = VALUES(ref_key)",
	UpsertIndexRow:   "INSERT INTO index_rows (index_name, gen, row_key, locs) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE locs = VALUES(locs)",
}

func errNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// Options configure a MySQL node.
type Options struct {
	sqlstore.Options
	// MaxConns bounds the node's connection pool (default 32).
	MaxConns int
}

// Database names the database dsn points at, as net(address)/database,
// or returns an error unless dsn parses as go-sql-driver's DSN.
func Database(dsn string) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("not a MySQL DSN (user:password@tcp(host:port)/database): %w", err)
	}
	return fmt.Sprintf("%s(%s)/%s", cfg.Net, cfg.Addr, cfg.DBName), nil
}

// Open opens the MySQL or MariaDB node at dsn, in go-sql-driver's format
// (user:password@tcp(host:port)/database).
func Open(ctx context.Context, dsn string, opts Options) (*sqlstore.Store, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse mysql dsn: %w", err)
	}
	// Client-side interpolation turns each query into one round trip
	// instead of prepare, execute and close. It is safe with the binary
	// and ASCII columns cellar uses.
	cfg.InterpolateParams = true
	// The node reads a statement's affected rows to tell an insert from a
	// key already there (INSERT ... ON DUPLICATE KEY UPDATE k = k, a
	// no-op). With clientFoundRows the server counts the matched row as
	// affected, and a conflict would pass for a created cell.
	cfg.ClientFoundRows = false
	// Strict mode makes a value that does not fit its column an error
	// instead of a warning and a silently truncated or clamped value. It
	// is the servers' default, but a server or a DSN may set another
	// sql_mode: keep whatever else it says and add STRICT_ALL_TABLES.
	// The driver sends each parameter as SET name = value, raw.
	mode := "@@SESSION.sql_mode"
	for k, v := range cfg.Params {
		if strings.EqualFold(k, "sql_mode") {
			// MySQL takes a bare word after SET sql_mode =, but not in an
			// expression: quote what is not quoted already.
			mode = sqlString(v)
			delete(cfg.Params, k)
		}
	}
	if cfg.Params == nil {
		cfg.Params = make(map[string]string)
	}
	cfg.Params["sql_mode"] = "CONCAT_WS(',', NULLIF(" + mode + ", ''), 'STRICT_ALL_TABLES')"
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(connector)
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

// sqlString returns a DSN's sql_mode value as a SQL string literal: as
// written if it is one already ('...' or "..."), else quoted.
func sqlString(v string) string {
	if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
		return v
	}
	return "'" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), "'", "''") + "'"
}
