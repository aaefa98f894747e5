// Package sqlite opens cellar storage nodes on SQLite files, the embedded
// default, with the pure-Go modernc.org/sqlite driver (no cgo).
//
// Durability: the database runs in WAL mode with synchronous=FULL, so a
// commit returns only after the WAL is fsynced; an acknowledged put survives
// power loss. Writes go through one connection (SQLite has one writer) and
// use group commit so concurrent puts share a transaction and its fsync.
package sqlite

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

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

// Dialect is SQLite's dialect.
var Dialect = &sqlstore.Dialect{
	Name:       "sqlite",
	Migrations: []string{schema1, schema2, schema3, schema4},
	InsertSeq:  "INSERT INTO shard_seq (shard, last_added_id, fenced) VALUES (?, 0, 0) ON CONFLICT (shard) DO NOTHING",
	// The single write connection runs BEGIN IMMEDIATE, which already holds
	// the database's write lock for the whole transaction.
	LockSeq:    "SELECT last_added_id, fenced FROM shard_seq WHERE shard = ?",
	InsertCell: "INSERT INTO cells (shard, added_id, row_key, col, ref_key, body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (row_key, col, ref_key) DO NOTHING",
	// SQLITE_MAX_COMPOUND_SELECT defaults to 500.
	MaxUnion: 500,
	// modernc.org/sqlite prepares every query it is sent.
	PrepareReads: true,
	// One writer (above): group commit's transactions write a whole group
	// with a few set-based statements.
	BatchWrites: true,
	// SQLITE_MAX_VARIABLE_NUMBER in modernc.org/sqlite's build (SQLite's
	// default since 3.32.0).
	MaxParams:   32766,
	BatchInsert: "INSERT OR FAIL INTO",
	UpsertSeq:   " ON CONFLICT (shard) DO UPDATE SET last_added_id = excluded.last_added_id",
	UniqueViolation: func(err error) bool {
		var e *sqlite.Error
		return errors.As(err, &e) && (e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
	},
	Retryable: func(err error) bool {
		var e *sqlite.Error
		return errors.As(err, &e) && (e.Code()&0xff == sqlite3.SQLITE_BUSY || e.Code()&0xff == sqlite3.SQLITE_LOCKED)
	},
	Unavailable: func(err error) bool {
		var e *sqlite.Error
		return errors.As(err, &e) && (e.Code()&0xff == sqlite3.SQLITE_IOERR || e.Code()&0xff == sqlite3.SQLITE_CANTOPEN || e.Code()&0xff == sqlite3.SQLITE_FULL)
	},

	// Timelines and counters (schema version 2).
	ForUpdate:      "",
	InsertTimeline: "INSERT INTO timelines (timeline_key, cap, stored) VALUES (?, ?, 0) ON CONFLICT (timeline_key) DO NOTHING",
	InsertMember:   "INSERT INTO timeline_members (timeline_key, member, score) VALUES (?, ?, ?) ON CONFLICT (timeline_key, member) DO NOTHING",
	InsertFlush:    "INSERT INTO counter_flushes (flush_id, applied_at) VALUES (?, ?) ON CONFLICT (flush_id) DO NOTHING",
	// An overflow makes the sum a REAL, which the CHECK on counters.value
	// refuses.
	AddCounter: "INSERT INTO counters (counter_key, value) VALUES (?, ?) ON CONFLICT (counter_key) DO UPDATE SET value = counters.value + excluded.value",
	OutOfRange: func(err error) bool {
		var e *sqlite.Error
		return errors.As(err, &e) && e.Code() == sqlite3.SQLITE_CONSTRAINT_CHECK
	},
	// Secondary indexes (schema version 4).
	UpsertIndexEntry: "INSERT INTO index_entries (index_name, gen, shard, k1, k2, k3, k4, row_key, ref_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (index_name, gen, shard, k1, k2, k3, k4, row_key) DO UPDATE SET ref_key = excluded.ref_key",
	UpsertIndexRow:   "INSERT INTO index_rows (index_name, gen, row_key, locs) VALUES (?, ?, ?, ?) ON CONFLICT (index_name, gen, row_key) DO UPDATE SET locs = excluded.locs",
}

// Options configure a SQLite node.
type Options struct {
	sqlstore.Options
	// NoGroupCommit commits every put in its own transaction (for
	// benchmarks that measure what group commit buys).
	NoGroupCommit bool
	// MaxReaders bounds the read connections (default 8).
	MaxReaders int
	// CheckpointEvery is how often the WAL is checkpointed off the write
	// path (checkpoint.go); 0 means DefaultCheckpointEvery, and a negative
	// value leaves checkpoints to SQLite, inside the commits.
	CheckpointEvery time.Duration
}

// uriPath escapes a file path for a SQLite URI filename, where '?' and
// '#' would end the path and '%' starts an escape: a data directory such
// as /srv/a#1 must not open /srv/a.
var uriPath = strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23")

// FileURI is the DSN of the SQLite file at path with the driver
// parameters q, its path escaped for SQLite's URI filenames (every SQLite
// file cellar opens goes through it: nodes, the counter journal).
func FileURI(path string, q url.Values) string {
	// "file://x/..." would name x as the URI's authority: a path that
	// begins with "//", the same file as with one '/', is given one.
	if strings.HasPrefix(path, "//") {
		path = "/" + strings.TrimLeft(path, "/")
	}
	return "file:" + uriPath.Replace(path) + "?" + q.Encode()
}

// DSNs are the DSNs of a node's read connections and of its write
// connection for the SQLite file at path, with the checkpointer running
// every checkpointEvery (0: DefaultCheckpointEvery; negative: none, the
// checkpoints left to SQLite in the commits): the write connection's own
// checkpoints are then only a backstop.
func DSNs(path string, checkpointEvery time.Duration) (read, write string) {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(0)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	read = FileURI(path, q)
	write = read
	if checkpointEvery >= 0 {
		q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", backstopPages))
		write = FileURI(path, q)
	}
	return read, write
}

// Open opens (creating if opts.Create is set) the SQLite node at path.
func Open(ctx context.Context, path string, opts Options) (*sqlstore.Store, error) {
	if opts.Create {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("create directory for %s: %w", path, err)
		}
	} else if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("sqlite node %s: %s does not exist: run `cellar init` to create the datastore", opts.Name, path)
		}
		return nil, fmt.Errorf("open sqlite node %s: %w", opts.Name, err)
	}
	if opts.CheckpointEvery == 0 {
		opts.CheckpointEvery = DefaultCheckpointEvery
	}
	dsn, wdsn := DSNs(path, opts.CheckpointEvery)
	wdb, err := sql.Open("sqlite", wdsn)
	if err != nil {
		return nil, err
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxIdleTime(0)
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		wdb.Close()
		return nil, err
	}
	if opts.MaxReaders <= 0 {
		opts.MaxReaders = 8
	}
	db.SetMaxOpenConns(opts.MaxReaders)
	db.SetMaxIdleConns(opts.MaxReaders)
	for _, pool := range []*sql.DB{wdb, db} {
		if err := settle(ctx, pool); err != nil {
			db.Close()
			wdb.Close()
			return nil, fmt.Errorf("sqlite node %s: connect: %w", opts.Name, err)
		}
	}
	opts.GroupCommit = !opts.NoGroupCommit
	if opts.CheckpointEvery > 0 {
		opts.Background = checkpointer(db, opts.CheckpointEvery)
	}
	s, err := sqlstore.Open(ctx, db, wdb, Dialect, opts.Options)
	if err != nil {
		db.Close()
		wdb.Close()
		return nil, err
	}
	return s, nil
}

// settle opens pool's first connection, retrying while SQLite answers
// busy: several processes (or several opens in one) may meet on a new
// file, and switching it to WAL, which a new connection's pragmas do,
// needs a lock that SQLite refuses at once rather than wait where waiting
// could deadlock. Once the file is in WAL mode the pragma takes no lock.
func settle(ctx context.Context, pool *sql.DB) error {
	deadline := time.Now().Add(10 * time.Second)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		err := pool.PingContext(ctx)
		if err == nil || !Dialect.Retryable(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
