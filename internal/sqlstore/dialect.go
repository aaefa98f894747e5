package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
)

// Dialect holds what differs between SQL engines. Queries in this package
// are written with '?' placeholders; Rebind rewrites them for the engine.
type Dialect struct {
	// Name is the engine's name: "sqlite", "postgres" or "mysql".
	Name string
	// Numbered placeholders ($1, $2, ...) instead of '?'.
	Numbered bool
	// Migrations are the schema versions in order: Migrations[0] creates
	// version 1. Each is a script of statements separated by ";\n".
	Migrations []string
	// WriteTx are the options every write transaction begins with; nil
	// for the server's default. The write protocol (lock a row, then
	// write) is written for PostgreSQL's READ COMMITTED and MySQL's
	// REPEATABLE READ.
	WriteTx *sql.TxOptions
	// StateTx are the options of the transactions of state rows (the
	// inTx ones: triggers and their shards, consumers and parked cells,
	// index records, timelines, counters); nil for WriteTx. On InnoDB they
	// run at READ COMMITTED: under REPEATABLE READ a locking read or an
	// update that finds no row locks the gap where it would be, and two
	// transactions creating rows in one gap (two triggers, consumers or
	// timelines at once) deadlock on each other's gap locks, again and
	// again under load. The protocol needs no gap locks: it is the one
	// PostgreSQL runs, which has none (a row created twice at once is a
	// unique violation, retried). It costs a statement per transaction.
	StateTx *sql.TxOptions
	// InsertSeq creates a shard's sequence row if it is missing, and does
	// nothing otherwise. Arguments: shard.
	InsertSeq string
	// LockSeq reads a shard's sequence row and locks it until the end of the
	// transaction. Arguments: shard. Columns: last_added_id, fenced.
	LockSeq string
	// InsertCell inserts a cell unless one with the same (row_key, col,
	// ref_key) exists, affecting 0 rows then. It must still fail on any other
	// constraint. Arguments: shard, added_id, row_key, col, ref_key, body,
	// created_at.
	InsertCell string
	// ForUpdate is appended to a SELECT to lock the rows it reads until the
	// end of the transaction. Empty for SQLite, whose write transactions
	// already hold the database's write lock.
	ForUpdate string
	// InsertTimeline creates a timeline's row unless it exists, affecting 0
	// rows then. Arguments: timeline_key, cap.
	InsertTimeline string
	// InsertMember inserts a timeline member unless the timeline holds it,
	// affecting 0 rows then. Arguments: timeline_key, member, score.
	InsertMember string
	// InsertFlush records an applied counter flush unless it is recorded,
	// affecting 0 rows then. Arguments: flush_id, applied_at.
	InsertFlush string
	// AddCounter adds a delta to a counter, creating it if it is missing.
	// It must fail, with an error OutOfRange reports, rather than let the
	// value leave int64. Arguments: counter_key, delta.
	AddCounter string
	// OutOfRange reports the error of AddCounter on int64 overflow.
	OutOfRange func(error) bool
	// UniqueViolation reports a unique or primary key violation.
	UniqueViolation func(error) bool
	// ScanLock, if not empty, is appended to the shard scan to make it a
	// locking read. InnoDB may let a transaction's row locks go before its
	// commit is visible to new snapshots, so a later added_id could be seen
	// while an earlier one is not yet: a locking read sees the latest
	// committed rows, waits for uncommitted ones, and (under REPEATABLE
	// READ) its next-key locks keep a lower added_id out of a gap it passed.
	ScanLock string
	// BodyBytes is the SQL expression of a cell's body length in bytes. A
	// shard scan then asks the server only for the bodies its page keeps
	// (see Store.scan). Empty for SQLite, in process: closing the rows
	// stops its statement.
	BodyBytes string
	// MaxUnion is the most SELECTs one UNION ALL statement may join.
	MaxUnion int
	// ParenUnion makes a batchGet's branches parenthesized SELECTs
	// instead of derived tables: MariaDB materializes every derived table,
	// and one with a BLOB column (body) in an on-disk temporary table, which
	// made a 10-key batchGet 5× slower than the same branches in
	// parentheses.
	ParenUnion bool
	// PrepareReads makes a node prepare its point-read statements once
	// (readstmts.go) instead of sending their SQL each time: for a driver
	// that would parse every query anew.
	PrepareReads bool
	// BatchWrites selects the batched write path for cells (batchwrite.go):
	// a few set-based statements per transaction instead of row locks and
	// three statements per cell. Only for an engine whose write
	// transactions run one at a time from BEGIN to COMMIT (SQLite's one
	// write connection with BEGIN IMMEDIATE), so that a transaction may read
	// sequence rows and keys first and write after. Engines with concurrent
	// writers keep the row-lock protocol.
	BatchWrites bool
	// MaxParams is the most bound parameters one statement may have; the
	// batched path chunks its statements to stay within it.
	MaxParams int
	// BatchInsert begins the batched path's multi-row inserts in place of
	// "INSERT INTO". SQLite's is "INSERT OR FAIL INTO": a multi-row INSERT
	// that may abort halfway must first copy every page it changes to a
	// statement journal, so that it can undo its own rows; FAIL keeps them
	// instead, which is never seen, since the batched path rolls the whole
	// transaction back on any error.
	BatchInsert string
	// UpsertSeq, for the batched path, is appended to a multi-row
	// "<BatchInsert> shard_seq (shard, last_added_id, fenced) VALUES ..."
	// so that it sets last_added_id of the rows that exist.
	UpsertSeq string
	// Retryable reports errors after which the whole transaction may be
	// retried (deadlocks, serialization failures, busy files).
	Retryable func(error) bool
	// Unavailable reports engine-specific errors that mean the node cannot
	// be reached (in addition to the network errors every engine shares).
	Unavailable func(error) bool
	// UpsertIndexEntry writes an index entry, or sets ref_key of the one at
	// the same key. Arguments: index_name, gen, shard, k1, k2, k3, k4,
	// row_key, ref_key.
	UpsertIndexEntry string
	// UpsertIndexRow writes a row's record of where its index entries are,
	// replacing any. Arguments: index_name, gen, row_key, locs.
	UpsertIndexRow string
	// Lock takes an engine-wide lock for schema migrations on conn, and
	// returns the function that releases it. Nil means no lock is needed.
	Lock func(ctx context.Context, conn *sql.Conn) (unlock func(), err error)
}

// Rebind rewrites '?' placeholders for the dialect. Queries here never hold
// '?' inside string literals.
func (d *Dialect) Rebind(q string) string {
	if !d.Numbered {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// isUnavailable reports errors that mean the node could not be reached or
// did not answer in time.
func (d *Dialect) isUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, sql.ErrConnDone) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return d.Unavailable != nil && d.Unavailable(err)
}
