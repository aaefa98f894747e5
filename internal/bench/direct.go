package bench

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// The statements sqlstore issues, copied here because sqlstore keeps them
// unexported; the sequence and insert statements come from the dialect.
// They must be kept in step with internal/sqlstore/store.go.
// direct issues cellar's SQL straight through database/sql: the floor that
// cellar's HTTP API is measured against. Statements are rebound once, and
// results are scanned into the same Go types sqlstore uses.
type direct struct {
	db, wdb *sql.DB
	d       *sqlstore.Dialect
	shards  int

	get, latest, batchGet                     string
	getStmt, latestStmt, batchGetStmt         *sql.Stmt // prepared where the node prepares its reads
	insertSeq, lockSeq, insertCell, updateSeq string
	seqKnown                                  sync.Map // shards whose sequence row exists
}

func newDirect(db, wdb *sql.DB, d *sqlstore.Dialect, shards int) *direct {
	// A node's batchGet asks for the exact keys first, then the latest.
	e := 0
	for j := range batchKeys {
		if batchExact(j) {
			e++
		}
	}
	exact := make([]bool, batchKeys)
	for j := range exact {
		exact[j] = j < e
	}
	x := &direct{
		db: db, wdb: wdb, d: d, shards: shards,
		get:        d.Rebind(sqlstore.GetCellSQL),
		latest:     d.Rebind(sqlstore.LatestCellSQL),
		batchGet:   d.Rebind(sqlstore.BatchGetSQL(d, exact)),
		insertSeq:  d.Rebind(d.InsertSeq),
		lockSeq:    d.Rebind(d.LockSeq),
		insertCell: d.Rebind(d.InsertCell),
		updateSeq:  d.Rebind(sqlstore.AdvanceSeqSQL),
	}
	if d.PrepareReads {
		// As the node does; a statement that fails to prepare is sent
		// as SQL, and its queries report the error.
		ctx := context.Background()
		x.getStmt, _ = db.PrepareContext(ctx, x.get)
		x.latestStmt, _ = db.PrepareContext(ctx, x.latest)
		x.batchGetStmt, _ = db.PrepareContext(ctx, x.batchGet)
	}
	return x
}

// queryRow and query run q, through st if it was prepared.
func (x *direct) queryRow(ctx context.Context, st *sql.Stmt, q string, args ...any) *sql.Row {
	if st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return x.db.QueryRowContext(ctx, q, args...)
}

func (x *direct) query(ctx context.Context, st *sql.Stmt, q string, args ...any) (*sql.Rows, error) {
	if st != nil {
		return st.QueryContext(ctx, args...)
	}
	return x.db.QueryContext(ctx, q, args...)
}

// scanned holds a cell's columns as sqlstore scans them.
type scanned struct {
	row, body           []byte
	col                 string
	ref, added, created int64
	shard               int
}

func (s *scanned) dest() []any {
	return []any{&s.row, &s.col, &s.ref, &s.shard, &s.added, &s.created, &s.body}
}

// op returns the direct form of the named operation for one worker.
func (x *direct) op(name string, wl *workload) op {
	switch name {
	case "get":
		return func(ctx context.Context) error {
			row, ref := wl.readKey()
			var s scanned
			return x.queryRow(ctx, x.getStmt, x.get, []byte(row), column, ref).Scan(s.dest()...)
		}
	case "latest":
		return func(ctx context.Context) error {
			row, _ := wl.readKey()
			var s scanned
			return x.queryRow(ctx, x.latestStmt, x.latest, []byte(row), column).Scan(s.dest()...)
		}
	case "batchGet":
		return func(ctx context.Context) error { return x.batch(ctx, wl.batchKeys()) }
	case "put":
		return func(ctx context.Context) error { return x.put(ctx, wl.newCell()) }
	}
	panic("bench: unknown op " + name)
}

func (x *direct) batch(ctx context.Context, keys []cellar.LookupKey) error {
	args := make([]any, 0, 3*len(keys))
	for _, exact := range []bool{true, false} {
		for _, k := range keys {
			if (k.RefKey != nil) != exact {
				continue
			}
			args = append(args, []byte(k.RowKey), k.Column)
			if k.RefKey != nil {
				args = append(args, *k.RefKey)
			}
		}
	}
	rows, err := x.query(ctx, x.batchGetStmt, x.batchGet, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	found := 0
	for rows.Next() {
		var j int
		var s scanned
		if err := rows.Scan(append([]any{&j}, s.dest()...)...); err != nil {
			return err
		}
		found++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if found != len(keys) {
		return fmt.Errorf("batch get found %d of %d cells", found, len(keys))
	}
	return nil
}

// createSeqs creates every shard's sequence row in one transaction.
func (x *direct) createSeqs(ctx context.Context) error {
	tx, err := x.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create sequences: %w", err)
	}
	defer tx.Rollback()
	for shard := range x.shards {
		if _, err := tx.ExecContext(ctx, x.insertSeq, shard); err != nil {
			return fmt.Errorf("create sequence of shard %d: %w", shard, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create sequences: %w", err)
	}
	for shard := range x.shards {
		x.seqKnown.Store(shard, struct{}{})
	}
	return nil
}

// put writes c as sqlstore writes one cell without group commit: the
// shard's sequence row created once outside any transaction, then BEGIN,
// lock the sequence row, insert, advance the sequence, COMMIT, retried on
// the errors the dialect calls retryable.
func (x *direct) put(ctx context.Context, c cellar.NewCell) error {
	shard := cellar.ShardOf(c.RowKey, x.shards)
	if _, ok := x.seqKnown.Load(shard); !ok {
		if _, err := x.wdb.ExecContext(ctx, x.insertSeq, shard); err != nil {
			return fmt.Errorf("create sequence of shard %d: %w", shard, err)
		}
		x.seqKnown.Store(shard, struct{}{})
	}
	var err error
	for attempt := 0; ; attempt++ {
		err = x.tryPut(ctx, shard, c)
		if err == nil || attempt == 5 || !x.d.Retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
}

func (x *direct) tryPut(ctx context.Context, shard int, c cellar.NewCell) error {
	tx, err := x.wdb.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var last int64
	var fenced int
	if err := tx.QueryRowContext(ctx, x.lockSeq, shard).Scan(&last, &fenced); err != nil {
		return fmt.Errorf("lock sequence of shard %d: %w", shard, err)
	}
	r, err := tx.ExecContext(ctx, x.insertCell, shard, last+1, []byte(c.RowKey), c.Column, c.RefKey, []byte(c.Body),
		time.Now().UTC().Truncate(time.Millisecond).UnixMilli())
	if err != nil {
		return fmt.Errorf("insert cell: %w", err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return fmt.Errorf("insert cell: %w", err)
	}
	if n != 1 {
		return fmt.Errorf("insert cell: cell %q exists", c.RowKey)
	}
	if _, err := tx.ExecContext(ctx, x.updateSeq, last+1, shard); err != nil {
		return fmt.Errorf("advance sequence of shard %d: %w", shard, err)
	}
	return tx.Commit()
}
