package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cellar-db/cellar"
)

// The batched write path serves engines with a single writer
// (Dialect.BatchWrites: SQLite, whose one write connection begins every
// transaction IMMEDIATE and so holds the database's write lock from BEGIN
// to COMMIT). No other writer can change shard_seq or cells inside such a
// transaction, so it may read first and write afterwards, in a few
// set-based statements for a whole group instead of three statements per
// cell:
//
//  1. read the sequence rows of the group's shards (shard IN (...));
//  2. read the cells already stored under the group's keys
//     ((row_key, col, ref_key) IN (VALUES ...));
//  3. decide each item in turn, in the order the items come (by shard, and
//     in submission order within a shard): refused if its shard is fenced,
//     a replay or a conflict if its key is stored or was created by an
//     earlier item of the group, and otherwise created with its shard's
//     next added_id;
//  4. insert the created cells with multi-row INSERTs;
//  5. set last_added_id of every shard that advanced, with a multi-row
//     upsert that also creates the sequence row of a shard's first write.
//
// This keeps the ordering guarantee exactly as the row-lock protocol does:
// the lock is held until the commit is durable and visible, ids are handed
// out without gaps, and replays, conflicts and fenced puts consume none.
// A group behaves as if its puts had come one after another.
//
// The statements are prepared once per write connection and reused, and
// each covers a power-of-two number of rows, so a group of n items takes at
// most log2(n)+1 statements of each kind, out of a few dozen distinct
// prepared statements.

// maxBatchRows bounds the rows of one batched statement even where the
// parameter limit allows more: larger statements save little and take
// memory to keep prepared.
const maxBatchRows = 256

// maxBatchBytes bounds the bodies bound to one multi-row INSERT (beyond a
// single row): the driver copies every bound body, so a chunk of large
// bodies is split rather than copied whole.
const maxBatchBytes = 4 << 20

// batchKind names one of the batched statements.
type batchKind int

const (
	batchReadSeqs    batchKind = iota // shard
	batchReadCells                    // row_key, col, ref_key
	batchInsertCells                  // shard, added_id, row_key, col, ref_key, body, created_at
	batchSetSeqs                      // shard, last_added_id
)

// batchParams is the number of parameters one row of each kind binds.
var batchParams = [...]int{batchReadSeqs: 1, batchReadCells: 3, batchInsertCells: 7, batchSetSeqs: 2}

// batchSQL returns the statement of kind for rows rows, with '?'
// placeholders.
func batchSQL(d *Dialect, kind batchKind, rows int) string {
	var head, row, tail string
	switch kind {
	case batchReadSeqs:
		head, row, tail = "SELECT shard, last_added_id, fenced FROM shard_seq WHERE shard IN (", "?", ")"
	case batchReadCells:
		head, row, tail = "SELECT "+CellColumns+" FROM cells WHERE (row_key, col, ref_key) IN (VALUES ", "(?, ?, ?)", ")"
	case batchInsertCells:
		head, row = d.BatchInsert+" cells (shard, added_id, row_key, col, ref_key, body, created_at) VALUES ", "(?, ?, ?, ?, ?, ?, ?)"
	case batchSetSeqs:
		head, row, tail = d.BatchInsert+" shard_seq (shard, last_added_id, fenced) VALUES ", "(?, ?, 0)", d.UpsertSeq
	}
	var q strings.Builder
	q.WriteString(head)
	for i := 0; i < rows; i++ {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(row)
	}
	q.WriteString(tail)
	return d.Rebind(q.String())
}

// batchRows returns how many of n remaining rows (n >= 1) of kind the next
// statement takes: the largest power of two that is at most n,
// maxBatchRows, and what the dialect's parameter limit allows.
func (s *Store) batchRows(kind batchKind, n int) int {
	limit := min(n, maxBatchRows, s.d.MaxParams/batchParams[kind])
	k := 1
	for k*2 <= limit {
		k *= 2
	}
	return k
}

// stmtCache holds the batched statements, prepared on the write pool.
// database/sql keeps each prepared on the pool's one connection, and
// prepares it again on a connection that replaces it; a transaction uses
// it through Tx.StmtContext.
type stmtCache struct {
	s *Store

	// mu protects m and closed. It is never held while waiting for the
	// write connection: a transaction holding that connection takes mu in
	// stmt.
	mu     sync.Mutex
	m      map[stmtKey]*sql.Stmt // the kinds and sizes prepared so far
	closed bool
}

type stmtKey struct {
	kind batchKind
	rows int
}

func newStmtCache(s *Store) *stmtCache {
	return &stmtCache{s: s, m: make(map[stmtKey]*sql.Stmt)}
}

// prepare prepares, unless that is done, every statement a transaction of
// items cells in shards shards may run: the sizes batchRows can return
// for at most that many rows. It runs before the transaction begins: the
// write pool's one connection is the transaction's until it ends, so
// nothing could be prepared on the pool during it. Sizes are prepared as
// groups first need them, so the first small write does not wait for the
// statements of 256 rows.
//
// Without group commit several puts run this at once, while another put's
// transaction holds the connection and looks its statements up in stmt;
// so prepare finds the missing sizes under mu, prepares them without it,
// and stores them under it again, closing any another caller stored
// meanwhile.
func (c *stmtCache) prepare(ctx context.Context, shards, items int) error {
	missing, err := c.missing(shards, items)
	if err != nil || len(missing) == 0 {
		return err
	}
	prepared := make(map[stmtKey]*sql.Stmt, len(missing))
	for _, k := range missing {
		st, err := c.s.wdb.PrepareContext(ctx, batchSQL(c.s.d, k.kind, k.rows))
		if err != nil {
			return errors.Join(fmt.Errorf("prepare batched writes: %w", err), closeStmts(prepared))
		}
		prepared[k] = st
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.Join(sql.ErrConnDone, closeStmts(prepared))
	}
	for k, st := range prepared {
		if _, ok := c.m[k]; !ok {
			c.m[k] = st
			delete(prepared, k)
		}
	}
	c.mu.Unlock()
	// What is left another caller prepared too and stored first.
	if err := closeStmts(prepared); err != nil {
		return fmt.Errorf("close duplicate batched statements: %w", err)
	}
	return nil
}

// missing returns the keys of the statements prepare must prepare for
// shards shards and items items that are not prepared yet.
func (c *stmtCache) missing(shards, items int) ([]stmtKey, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, sql.ErrConnDone
	}
	var keys []stmtKey
	bound := [...]int{batchReadSeqs: shards, batchReadCells: items, batchInsertCells: items, batchSetSeqs: shards}
	for kind, n := range bound {
		kind := batchKind(kind)
		for rows := 1; rows <= c.s.batchRows(kind, n); rows *= 2 {
			if k := (stmtKey{kind, rows}); c.m[k] == nil {
				keys = append(keys, k)
			}
		}
	}
	return keys, nil
}

func closeStmts(m map[stmtKey]*sql.Stmt) error {
	var errs []error
	for _, st := range m {
		errs = append(errs, st.Close())
	}
	return errors.Join(errs...)
}

// stmt returns the prepared statement of kind for rows rows (a size
// batchRows returns), once prepare has prepared it.
func (c *stmtCache) stmt(kind batchKind, rows int) (*sql.Stmt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.m[stmtKey{kind, rows}]
	if !ok {
		return nil, fmt.Errorf("no prepared statement of kind %d for %d rows", kind, rows)
	}
	return st, nil
}

// close closes the prepared statements; later stmt calls fail.
func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	err := closeStmts(c.m)
	c.m = nil
	return err
}

// cellKey is a cell's key as a map key.
type cellKey struct {
	row, col string
	ref      int64
}

// seqRow is a shard's sequence row as the transaction goes.
type seqRow struct {
	last   int64 // last_added_id as read
	next   int64 // last_added_id after this transaction's inserts
	fenced bool
}

// tryWriteBatch runs one write transaction on the batched path. items are
// sorted by shard. On error the transaction is rolled back and no result is
// set.
func (s *Store) tryWriteBatch(ctx context.Context, items []*writeItem) error {
	var shards []int
	for i, it := range items {
		if i == 0 || it.shard != items[i-1].shard {
			shards = append(shards, it.shard)
		}
	}
	if err := s.stmts.prepare(ctx, len(shards), len(items)); err != nil {
		return err
	}
	tx, err := s.wdb.BeginTx(ctx, s.d.WriteTx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	seqs, err := s.readSeqs(ctx, tx, shards)
	if err != nil {
		return err
	}
	// stored holds the cell under each key as of the item being decided:
	// those read now, and those the group creates as it goes, with bodies.
	stored, err := s.readCells(ctx, tx, items)
	if err != nil {
		return err
	}
	results := make([]cellar.PutResult, len(items))
	now := s.now().UTC().Truncate(time.Millisecond)
	var created []int // indexes into items, ascending, so by shard
	for i, it := range items {
		seq := seqs[it.shard]
		if seq.fenced {
			results[i].Err = s.fencedError(it.shard)
			continue
		}
		k := cellKey{it.cell.RowKey, it.cell.Column, it.cell.RefKey}
		if old, ok := stored[k]; ok {
			results[i] = replay(old, it.cell)
			continue
		}
		seq.next++
		c := cellar.Cell{Key: it.cell.Key, Shard: it.shard, AddedID: seq.next, CreatedAt: now}
		results[i] = cellar.PutResult{Created: true, Cell: c}
		c.Body = it.cell.Body
		stored[k] = c
		created = append(created, i)
	}
	if err := s.insertCells(ctx, tx, items, results, created, now); err != nil {
		return err
	}
	if err := s.setSeqs(ctx, tx, shards, seqs); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	for i, it := range items {
		*it.res = results[i]
	}
	return nil
}

func (s *Store) fencedError(shard int) error {
	return cellar.Errorf(cellar.EUNAVAILABLE, "shard %d is fenced on node %s (moving); retry shortly", shard, s.name)
}

// readSeqs reads the sequence rows of shards. A shard without a row yet
// (never written) starts at 0, unfenced.
func (s *Store) readSeqs(ctx context.Context, tx *sql.Tx, shards []int) (map[int]*seqRow, error) {
	seqs := make(map[int]*seqRow, len(shards))
	for _, sh := range shards {
		seqs[sh] = &seqRow{}
	}
	for rest := shards; len(rest) > 0; {
		n := s.batchRows(batchReadSeqs, len(rest))
		args := make([]any, n)
		for i, sh := range rest[:n] {
			args[i] = sh
		}
		err := s.batchQuery(ctx, tx, batchReadSeqs, args, func(rows *sql.Rows) error {
			var sh int
			var last int64
			var fenced int
			if err := rows.Scan(&sh, &last, &fenced); err != nil {
				return err
			}
			seq, ok := seqs[sh]
			if !ok {
				return fmt.Errorf("unrequested shard %d", sh)
			}
			seq.last, seq.next, seq.fenced = last, last, fenced != 0
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read sequences: %w", err)
		}
		rest = rest[n:]
	}
	return seqs, nil
}

// readCells reads the stored cells under the keys of items.
func (s *Store) readCells(ctx context.Context, tx *sql.Tx, items []*writeItem) (map[cellKey]cellar.Cell, error) {
	stored := make(map[cellKey]cellar.Cell, len(items))
	for rest := items; len(rest) > 0; {
		n := s.batchRows(batchReadCells, len(rest))
		args := make([]any, 0, 3*n)
		for _, it := range rest[:n] {
			args = append(args, []byte(it.cell.RowKey), it.cell.Column, it.cell.RefKey)
		}
		err := s.batchQuery(ctx, tx, batchReadCells, args, func(rows *sql.Rows) error {
			var c cellar.Cell
			if err := scanCell(rows, &c); err != nil {
				return err
			}
			stored[cellKey{c.RowKey, c.Column, c.RefKey}] = c
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read existing cells: %w", err)
		}
		rest = rest[n:]
	}
	return stored, nil
}

// insertCells inserts the created items, whose results hold their ids.
func (s *Store) insertCells(ctx context.Context, tx *sql.Tx, items []*writeItem, results []cellar.PutResult, created []int, now time.Time) error {
	for rest := created; len(rest) > 0; {
		n := s.batchRows(batchInsertCells, len(rest))
		// Halve a chunk whose bodies are large; a single row goes as it is.
		for n > 1 && bodyBytes(items, rest[:n]) > maxBatchBytes {
			n /= 2
		}
		args := make([]any, 0, 7*n)
		for _, i := range rest[:n] {
			c, r := items[i].cell, &results[i].Cell
			args = append(args, r.Shard, r.AddedID, []byte(c.RowKey), c.Column, c.RefKey, []byte(c.Body), now.UnixMilli())
		}
		if err := s.batchExec(ctx, tx, batchInsertCells, n, args); err != nil {
			return fmt.Errorf("insert cells: %w", err)
		}
		rest = rest[n:]
	}
	return nil
}

func bodyBytes(items []*writeItem, idx []int) int {
	n := 0
	for _, i := range idx {
		n += len(items[i].cell.Body)
	}
	return n
}

// setSeqs writes last_added_id of the shards that advanced.
func (s *Store) setSeqs(ctx context.Context, tx *sql.Tx, shards []int, seqs map[int]*seqRow) error {
	var args []any
	for _, sh := range shards {
		if seq := seqs[sh]; seq.next != seq.last {
			args = append(args, sh, seq.next)
		}
	}
	for len(args) > 0 {
		n := s.batchRows(batchSetSeqs, len(args)/2)
		if err := s.batchExec(ctx, tx, batchSetSeqs, n, args[:2*n]); err != nil {
			return fmt.Errorf("advance sequences: %w", err)
		}
		args = args[2*n:]
	}
	return nil
}

// batchQuery runs the read of kind with args (a whole number of rows) in
// tx, calling scan for each row.
func (s *Store) batchQuery(ctx context.Context, tx *sql.Tx, kind batchKind, args []any, scan func(*sql.Rows) error) error {
	st, err := s.stmts.stmt(kind, len(args)/batchParams[kind])
	if err != nil {
		return err
	}
	rows, err := tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// batchExec runs the write of kind for n rows with args in tx, and checks
// that it wrote n rows.
func (s *Store) batchExec(ctx context.Context, tx *sql.Tx, kind batchKind, n int, args []any) error {
	st, err := s.stmts.stmt(kind, n)
	if err != nil {
		return err
	}
	r, err := tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	if err != nil {
		return err
	}
	got, err := r.RowsAffected()
	if err != nil {
		return err
	}
	if got != int64(n) {
		return fmt.Errorf("wrote %d rows; want %d", got, n)
	}
	return nil
}
