// Package sqlstore is the one database/sql implementation of a cellar
// storage node, shared by the sqlite, postgres and mysql packages, which
// supply a Dialect and open the connection pools.
//
// The ordering guarantee rests on one row per shard in shard_seq: every
// write transaction locks the row of each shard it writes (in ascending
// shard order, so transactions cannot deadlock on them), takes the next
// added_ids from it, and holds the lock until commit. Writers to a shard
// therefore commit one after another in added_id order, and a reader that
// has seen added_id X can never later see a smaller one appear. Database
// auto-increment would not do: it hands out ids before commit, so a later
// id can become visible before an earlier one. On SQLite the lock is the
// engine's single writer, and a transaction writes a whole group of cells
// with a few set-based statements (batchwrite.go).
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellar-db/cellar"
)

// Options configure a Store.
type Options struct {
	// Name identifies the node in errors and logs.
	Name string
	// ShardCount is the datastore's number of logical shards.
	ShardCount int
	// GroupCommit makes concurrent puts share one transaction (used for
	// SQLite, whose single writer would otherwise commit, and fsync, once
	// per put).
	GroupCommit bool
	// MaxGroup bounds the cells in one group commit (default 512).
	MaxGroup int
	// Now returns the current time (default time.Now); tests inject a clock.
	Now func() time.Time
	// Create applies schema migrations on open instead of refusing a node
	// without the current schema.
	Create bool
	// Lazy defers the schema check to Check or the first operation, so a
	// server can start while a node is down; until the node answers, its
	// operations fail with ErrUnavailable.
	Lazy bool
	// CoalesceReads is how many get (and, apart, latest) statements the
	// node runs at once before further ones wait and are read together in
	// one statement (coalesce.go); 0 means DefaultCoalesceReads and a
	// negative value turns coalescing off.
	CoalesceReads int
	// Background, if set, runs in a goroutine of its own while the store
	// is open (SQLite's checkpointer); Close cancels its context and waits
	// for it to return before closing the pools.
	Background func(ctx context.Context)
}

// Store is one storage node. It implements cellar.Store.
type Store struct {
	name       string
	db         *sql.DB // reads, metadata
	wdb        *sql.DB // cell writes; the same as db except for SQLite
	d          *Dialect
	shardCount int
	now        func() time.Time

	seqKnown sync.Map // shard (int) -> struct{}: sequence rows known to exist

	stmts *stmtCache // prepared statements of the batched write path; nil without it

	group *committer // nil without group commit

	getc, latestc *coalescer // nil without read coalescing

	reads  sync.Map     // point-read statements (readstmts.go): key -> *readStmt
	nreads atomic.Int64 // entries in reads

	checked atomic.Bool // the schema version was found to be current

	stopBackground context.CancelFunc // nil without Options.Background
	background     sync.WaitGroup
}

var _ cellar.Store = (*Store)(nil)

// Open returns a Store over db (reads) and wdb (writes; may be db). It
// checks the node's schema version, or migrates it if opts.Create is set.
// The Store owns db and wdb and closes them in Close.
func Open(ctx context.Context, db, wdb *sql.DB, d *Dialect, opts Options) (*Store, error) {
	if opts.ShardCount < 1 || opts.ShardCount > cellar.MaxShardCount {
		return nil, fmt.Errorf("shard count %d out of range", opts.ShardCount)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxGroup <= 0 {
		opts.MaxGroup = 512
	}
	s := &Store{name: opts.Name, db: db, wdb: wdb, d: d, shardCount: opts.ShardCount, now: opts.Now}
	if opts.CoalesceReads == 0 {
		opts.CoalesceReads = DefaultCoalesceReads
	}
	if opts.CoalesceReads > 0 {
		s.getc = newCoalescer(s, opts.CoalesceReads, "get cell")
		s.latestc = newCoalescer(s, opts.CoalesceReads, "get latest cell")
	}
	if d.BatchWrites {
		s.stmts = newStmtCache(s)
	}
	if opts.Create {
		if err := Migrate(ctx, wdb, d); err != nil {
			return nil, fmt.Errorf("node %s: %w", opts.Name, err)
		}
	}
	if !opts.Lazy {
		if err := s.Check(ctx); err != nil {
			return nil, err
		}
	}
	if opts.GroupCommit {
		s.group = startCommitter(s, opts.MaxGroup)
	}
	if opts.Background != nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopBackground = cancel
		s.background.Add(1)
		go func() {
			defer s.background.Done()
			opts.Background(ctx)
		}()
	}
	return s, nil
}

// Check verifies that the node answers and has the schema version this
// binary needs. Once it has succeeded it is not repeated.
func (s *Store) Check(ctx context.Context) error {
	if s.checked.Load() {
		return nil
	}
	if err := checkSchema(ctx, s.db, s.d, s.name); err != nil {
		return err
	}
	s.checked.Store(true)
	return nil
}

// ready runs Check for operations, reporting a node with the wrong schema
// as unavailable: the client did nothing wrong.
func (s *Store) ready(ctx context.Context) error {
	if s.checked.Load() {
		return nil
	}
	err := s.Check(ctx)
	if err != nil && cellar.ErrorCode(err) == cellar.EINVALID {
		return cellar.Unavailable(err, "node %s cannot serve: %s", s.name, cellar.ErrorMessage(err))
	}
	return err
}

// Name returns the node's name.
func (s *Store) Name() string { return s.name }

// DB returns the node's read pool, for tools that issue their own SQL
// (benchmarks comparing against the bare driver).
func (s *Store) DB() *sql.DB { return s.db }

// Close stops the group committer and the background loop, closes the
// prepared statements and the connection pools.
func (s *Store) Close() error {
	if s.group != nil {
		s.group.stop()
	}
	if s.stopBackground != nil {
		s.stopBackground()
		s.background.Wait()
	}
	err := s.closeReads()
	if s.stmts != nil {
		if err2 := s.stmts.close(); err == nil {
			err = err2
		}
	}
	if err2 := s.db.Close(); err == nil {
		err = err2
	}
	if s.wdb != s.db {
		if err2 := s.wdb.Close(); err == nil {
			err = err2
		}
	}
	return err
}

// wrap turns a driver error into a cellar error: unavailable when the node
// could not be reached or did not answer in time, or when transactions
// kept colliding (a deadlock or lock wait that retries did not get past:
// the node is busy, and a later try may pass); internal otherwise.
func (s *Store) wrap(err error, format string, args ...any) error {
	var ce *cellar.Error
	if errors.As(err, &ce) {
		return err
	}
	op := fmt.Sprintf(format, args...)
	if s.d.isUnavailable(err) {
		return cellar.Unavailable(err, "node %s is unavailable (%s)", s.name, op)
	}
	if s.d.Retryable != nil && s.d.Retryable(err) {
		return cellar.Unavailable(err, "node %s is busy: transactions kept colliding (%s); retry", s.name, op)
	}
	return cellar.Internal(err, "node %s: %s", s.name, op)
}

// The statements of the cell read and write paths, with '?' placeholders
// (Dialect.Rebind turns them into the engine's). They are exported so that
// benchmarks issue exactly what a node issues.
const (
	CellColumns   = "row_key, col, ref_key, shard, added_id, created_at, body"
	GetCellSQL    = "SELECT " + CellColumns + " FROM cells WHERE row_key = ? AND col = ? AND ref_key = ?"
	LatestCellSQL = "SELECT " + CellColumns + " FROM cells WHERE row_key = ? AND col = ? ORDER BY ref_key DESC LIMIT 1"
	AdvanceSeqSQL = "UPDATE shard_seq SET last_added_id = ? WHERE shard = ?"
)

// BatchGetSQL returns the one statement BatchGet issues on d for
// len(exact) keys: a UNION ALL of index lookups, branch j an exact ref_key
// if exact[j] and the latest cell otherwise, each answering with its
// branch number as column i. Its arguments are row_key, column (and
// ref_key when exact) for each key in turn. Each branch is a derived
// table (SQLite allows ORDER BY and LIMIT in a compound member no other
// way) or, with Dialect.ParenUnion, a parenthesized SELECT.
func BatchGetSQL(d *Dialect, exact []bool) string {
	var q strings.Builder
	for j, e := range exact {
		if j > 0 {
			q.WriteString(" UNION ALL ")
		}
		if d.ParenUnion {
			q.WriteString("(")
		} else {
			q.WriteString("SELECT * FROM (")
		}
		// The branch number is a literal we generate, not client input.
		fmt.Fprintf(&q, "SELECT %d AS i, %s FROM cells WHERE row_key = ? AND col = ?", j, CellColumns)
		if e {
			q.WriteString(" AND ref_key = ?")
		} else {
			q.WriteString(" ORDER BY ref_key DESC LIMIT 1")
		}
		if d.ParenUnion {
			q.WriteString(")")
		} else {
			fmt.Fprintf(&q, ") t%d", j)
		}
	}
	return q.String()
}

// scanCell reads the columns of CellColumns.
func scanCell(sc interface{ Scan(...any) error }, c *cellar.Cell) error {
	var row []byte
	var created int64
	var body []byte
	if err := sc.Scan(&row, &c.Column, &c.RefKey, &c.Shard, &c.AddedID, &created, &body); err != nil {
		return err
	}
	c.RowKey = string(row)
	c.CreatedAt = time.UnixMilli(created).UTC()
	c.Body = body
	return nil
}

// Get implements cellar.Store.
func (s *Store) Get(ctx context.Context, k cellar.Key) (cellar.Cell, error) {
	var c cellar.Cell
	if err := k.Validate(); err != nil {
		return c, err
	}
	if err := s.ready(ctx); err != nil {
		return c, err
	}
	if s.getc != nil {
		return s.getc.read(ctx, cellar.LookupKey{RowKey: k.RowKey, Column: k.Column, RefKey: &k.RefKey},
			func(ctx context.Context) (cellar.Cell, error) { return s.get(ctx, k) })
	}
	return s.get(ctx, k)
}

func (s *Store) get(ctx context.Context, k cellar.Key) (cellar.Cell, error) {
	var c cellar.Cell
	err := scanCell(s.queryRowRead(ctx, s.readStmt(GetCellSQL, getCellSQL),
		[]byte(k.RowKey), k.Column, k.RefKey), &c)
	if errors.Is(err, sql.ErrNoRows) {
		return c, notFound(k.RowKey, k.Column, &k.RefKey)
	}
	if err != nil {
		return c, s.wrap(err, "get cell")
	}
	return c, nil
}

// Latest implements cellar.Store.
func (s *Store) Latest(ctx context.Context, rowKey, column string) (cellar.Cell, error) {
	var c cellar.Cell
	if err := (cellar.LookupKey{RowKey: rowKey, Column: column}).Validate(); err != nil {
		return c, err
	}
	if err := s.ready(ctx); err != nil {
		return c, err
	}
	if s.latestc != nil {
		return s.latestc.read(ctx, cellar.LookupKey{RowKey: rowKey, Column: column},
			func(ctx context.Context) (cellar.Cell, error) { return s.latest(ctx, rowKey, column) })
	}
	return s.latest(ctx, rowKey, column)
}

func (s *Store) latest(ctx context.Context, rowKey, column string) (cellar.Cell, error) {
	var c cellar.Cell
	err := scanCell(s.queryRowRead(ctx, s.readStmt(LatestCellSQL, latestCellSQL),
		[]byte(rowKey), column), &c)
	if errors.Is(err, sql.ErrNoRows) {
		return c, notFound(rowKey, column, nil)
	}
	if err != nil {
		return c, s.wrap(err, "get latest cell")
	}
	return c, nil
}

func notFound(rowKey, column string, refKey *int64) error {
	if refKey == nil {
		return cellar.Errorf(cellar.ENOTFOUND, "no cell in row %q column %s", rowKey, column)
	}
	return cellar.Errorf(cellar.ENOTFOUND, "no cell %q/%s/%d", rowKey, column, *refKey)
}

// Row implements cellar.Store.
func (s *Store) Row(ctx context.Context, rowKey string, columns []string) ([]cellar.Cell, error) {
	if err := cellar.ValidateRowKey(rowKey); err != nil {
		return nil, err
	}
	args := []any{[]byte(rowKey)}
	q := "SELECT " + CellColumns + " FROM cells c WHERE row_key = ?" +
		" AND ref_key = (SELECT MAX(ref_key) FROM cells m WHERE m.row_key = c.row_key AND m.col = c.col)"
	if len(columns) > 0 {
		for _, col := range columns {
			if err := cellar.ValidateColumn(col); err != nil {
				return nil, err
			}
			args = append(args, col)
		}
		q += " AND col IN (?" + strings.Repeat(", ?", len(columns)-1) + ")"
	}
	q += " ORDER BY col"
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, s.d.Rebind(q), args...)
	if err != nil {
		return nil, s.wrap(err, "get row")
	}
	defer rows.Close()
	// The bound is checked as the cells arrive, so that a row past it is
	// never held whole (its rows are still read to the end by the
	// PostgreSQL and MySQL drivers, but dropped).
	cells := []cellar.Cell{}
	size := 0
	for rows.Next() {
		var c cellar.Cell
		if err := scanCell(rows, &c); err != nil {
			return nil, s.wrap(err, "get row")
		}
		if size += len(c.Body); len(cells) > 0 && size > cellar.MaxBatchGetBytes {
			return nil, cellar.RowBytesError(rowKey)
		}
		cells = append(cells, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.wrap(err, "get row")
	}
	return cells, nil
}

// BatchGet implements cellar.Store. It reads all keys in one statement (a
// UNION ALL of index lookups; more than one only past the engine's limit on
// compound selects).
func (s *Store) BatchGet(ctx context.Context, keys []cellar.LookupKey) []cellar.GetResult {
	res := make([]cellar.GetResult, len(keys))
	var valid []int
	for i, k := range keys {
		if err := k.Validate(); err != nil {
			res[i].Err = err
			continue
		}
		valid = append(valid, i)
	}
	if len(valid) > 0 {
		if err := s.ready(ctx); err != nil {
			for _, i := range valid {
				res[i].Err = err
			}
			return res
		}
	}
	// The bodies this call holds are bounded as an answer's are (the HTTP
	// layer's batchGet): 1000 keys of 1 MiB bodies would otherwise take a
	// GiB. Past the bound a cell is dropped as it arrives, its result
	// cellar.BatchBytesError; the first is always kept.
	budget := &bodyBudget{left: cellar.MaxBatchGetBytes}
	for len(valid) > 0 {
		n := min(len(valid), s.d.MaxUnion)
		s.batchGetBounded(ctx, keys, valid[:n], res, budget)
		valid = valid[n:]
	}
	return res
}

// bodyBudget is what is left of a BatchGet's bound on the bodies it keeps.
type bodyBudget struct{ left, kept int }

// take reports whether a body of n bytes is kept: the first always, then
// those that fit.
func (b *bodyBudget) take(n int) bool {
	if b.kept > 0 && n > b.left {
		return false
	}
	b.left -= n
	b.kept++
	return true
}

// batchGet reads keys[idx[j]] into res[idx[j]] in one statement, without a
// bound on the bodies (the coalesced point reads: at most maxCoalesced).
func (s *Store) batchGet(ctx context.Context, keys []cellar.LookupKey, idx []int, res []cellar.GetResult) {
	s.batchGetBounded(ctx, keys, idx, res, nil)
}

// batchGetBounded is batchGet keeping only the bodies budget allows (all
// if it is nil).
func (s *Store) batchGetBounded(ctx context.Context, keys []cellar.LookupKey, idx []int, res []cellar.GetResult, budget *bodyBudget) {
	// Branch b of the statement answers idx[order[b]]. The exact keys come
	// first, then the latest: so the statement's shape is two counts, and
	// one statement serves every batch of those counts. Under a bound,
	// though, the bodies are kept in the order they arrive, which is the
	// branches' (UNION ALL runs them in turn on every backend), and the
	// bound is the answer's, counted in request order (the first cell
	// always kept): a bounded batch mixing exact and latest keys has its
	// branches in request order, in a statement of its pattern (kept as
	// the others are, up to maxReadStmts in all).
	e := 0
	for _, i := range idx {
		if keys[i].RefKey != nil {
			e++
		}
	}
	order := make([]int, 0, len(idx))
	var key any = batchShape{e, len(idx) - e}
	if budget != nil && e > 0 && e < len(idx) {
		pattern := make([]byte, len(idx))
		for j, i := range idx {
			order = append(order, j)
			pattern[j] = 'l'
			if keys[i].RefKey != nil {
				pattern[j] = 'e'
			}
		}
		key = batchPattern(pattern)
	} else {
		for _, exact := range []bool{true, false} {
			for j, i := range idx {
				if (keys[i].RefKey != nil) == exact {
					order = append(order, j)
				}
			}
		}
	}
	rs := s.readStmt(key, func() string {
		exact := make([]bool, len(order))
		for b, j := range order {
			exact[b] = keys[idx[j]].RefKey != nil
		}
		return BatchGetSQL(s.d, exact)
	})
	args := make([]any, 0, 2*len(idx)+e)
	for _, j := range order {
		k := keys[idx[j]]
		args = append(args, []byte(k.RowKey), k.Column)
		if k.RefKey != nil {
			args = append(args, *k.RefKey)
		}
	}
	fail := func(err error) {
		err = s.wrap(err, "batch get")
		for _, i := range idx {
			res[i] = cellar.GetResult{Err: err} // also over a cell read before the failure
		}
	}
	rows, err := s.queryRead(ctx, rs, args...)
	if err != nil {
		fail(err)
		return
	}
	defer rows.Close()
	found := make([]bool, len(idx))
	for rows.Next() {
		var b int
		var c cellar.Cell
		var row, body []byte
		var created int64
		if err := rows.Scan(&b, &row, &c.Column, &c.RefKey, &c.Shard, &c.AddedID, &created, &body); err != nil {
			fail(err)
			return
		}
		if b < 0 || b >= len(order) {
			fail(fmt.Errorf("batch get: branch %d out of range", b))
			return
		}
		j := order[b]
		found[j] = true
		if budget != nil && !budget.take(len(body)) {
			res[idx[j]].Err = cellar.BatchBytesError()
			continue
		}
		c.RowKey, c.CreatedAt, c.Body = string(row), time.UnixMilli(created).UTC(), body
		res[idx[j]].Cell = &c
	}
	if err := rows.Err(); err != nil {
		fail(err)
		return
	}
	for j, i := range idx {
		if !found[j] {
			res[i].Err = notFound(keys[i].RowKey, keys[i].Column, keys[i].RefKey)
		}
	}
}

// Scan implements cellar.Store.
func (s *Store) Scan(ctx context.Context, shard int, after int64, limit int, column string) (cellar.ScanResult, error) {
	res := cellar.ScanResult{Cells: []cellar.Cell{}, Next: after}
	if shard < 0 || shard >= s.shardCount {
		return res, cellar.Errorf(cellar.EINVALID, "shard %d is out of range 0..%d", shard, s.shardCount-1)
	}
	if after < 0 {
		return res, cellar.Errorf(cellar.EINVALID, "after must not be negative")
	}
	if limit <= 0 || limit > cellar.MaxScanLimit {
		return res, cellar.Errorf(cellar.EINVALID, "limit must be 1..%d", cellar.MaxScanLimit)
	}
	if column != "" {
		if err := cellar.ValidateColumn(column); err != nil {
			return res, err
		}
	}
	if err := s.ready(ctx); err != nil {
		return res, err
	}
	for attempt := 0; ; attempt++ {
		var err error
		res, err = s.scan(ctx, shard, after, limit, column)
		// A locking scan can lose a deadlock to a writer; it changed
		// nothing, so run it again.
		if err == nil || attempt == 5 || !s.d.Retryable(err) {
			return res, err
		}
	}
}

// scanInlineBytes is the longest body the scan statement of a page of at
// most limit cells sends: limit of them make a quarter page.
func scanInlineBytes(limit int) int {
	return cellar.MaxScanPageBytes / (4 * limit)
}

// scan reads one page of a shard scan.
//
// A page ends once its bodies reach MaxScanPageBytes, but closing a result
// set early does not stop the rows: pgx and go-sql-driver/mysql read every
// remaining one off the connection, so the server must not be asked for
// bodies the page will not keep (10,000 one-MiB bodies would be sent for a
// page of four). With Dialect.BodyBytes, the scan statement sends a body
// only if it is at most scanInlineBytes(limit) long, and otherwise its
// length instead; the page is cut by those lengths, exactly as by the
// bodies, and a second statement reads the longer bodies the page keeps
// (scanBodies). So a scan of small bodies is one statement, and the node
// sends the page's bodies and at most a quarter page more.
//
// The page's cells are always those of the scan statement, which is the
// read the ordering guarantee describes (a locking read with
// Dialect.ScanLock); the second statement only fetches the bodies of cells
// it returned, so it cannot make a page skip a cell.
//
// Cutting the page in SQL instead, with a window running sum of the body
// lengths in a subquery, would also be exact, in one statement, but cost
// every scan: on PostgreSQL 15 the WindowAgg made a statement of 1000
// small cells 40-55% slower (pgbench), and MariaDB 10.11 materializes
// such a subquery, bodies and all, computing the window over the whole
// shard before the LIMIT (8x slower; 2x with the bodies joined back).
//
// SQLite, in process, has no BodyBytes: closing its rows stops the
// statement.
func (s *Store) scan(ctx context.Context, shard int, after int64, limit int, column string) (cellar.ScanResult, error) {
	res := cellar.ScanResult{Cells: []cellar.Cell{}, Next: after}
	bodyCol, inline := "body", 0
	var args []any
	if s.d.BodyBytes != "" {
		inline = scanInlineBytes(limit)
		bodyCol = "CASE WHEN " + s.d.BodyBytes + " <= ? THEN body END, CASE WHEN " + s.d.BodyBytes + " > ? THEN " + s.d.BodyBytes + " END"
		args = append(args, inline, inline)
	}
	q := "SELECT row_key, col, ref_key, shard, added_id, created_at, " + bodyCol + " FROM cells WHERE shard = ? AND added_id > ?"
	args = append(args, shard, after)
	if column != "" {
		q += " AND col = ?"
		args = append(args, column)
	}
	q += " ORDER BY added_id LIMIT ?" + s.d.ScanLock
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, s.d.Rebind(q), args...)
	if err != nil {
		return res, s.wrap(err, "scan shard %d", shard)
	}
	defer rows.Close()
	size := 0
	var long []int // indexes into res.Cells of the cells sent without body
	// One set of destinations for every row: a page may be 10,000 rows.
	var c cellar.Cell
	var body []byte
	var created int64
	var length sql.NullInt64 // of a body not sent
	dest := []any{&c.RowKey, &c.Column, &c.RefKey, &c.Shard, &c.AddedID, &created, &body, &length}
	if inline == 0 {
		dest = dest[:7]
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return res, s.wrap(err, "scan shard %d", shard)
		}
		c.CreatedAt, c.Body = time.UnixMilli(created).UTC(), body
		n := len(body)
		if length.Valid {
			long = append(long, len(res.Cells))
			n = int(length.Int64)
		}
		res.Cells = append(res.Cells, c)
		res.Next = c.AddedID
		// A short page is fine (the reader continues from Next); a page of
		// 10,000 one-MiB bodies is not.
		if size += n; size >= cellar.MaxScanPageBytes {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return res, s.wrap(err, "scan shard %d", shard)
	}
	if err := rows.Close(); err != nil {
		return res, s.wrap(err, "scan shard %d", shard)
	}
	if len(long) > 0 {
		if err := s.scanBodies(ctx, shard, column, inline, res.Cells, long); err != nil {
			return res, s.wrap(err, "scan shard %d", shard)
		}
	}
	return res, nil
}

// scanBodies reads the bodies of cells[i] for i in long (ascending), all
// longer than inline, which the scan statement did not send.
func (s *Store) scanBodies(ctx context.Context, shard int, column string, inline int, cells []cellar.Cell, long []int) error {
	first, last := cells[long[0]].AddedID, cells[long[len(long)-1]].AddedID
	q := "SELECT added_id, body FROM cells WHERE shard = ? AND added_id >= ? AND added_id <= ?"
	args := []any{shard, first, last}
	if column != "" {
		q += " AND col = ?"
		args = append(args, column)
	}
	// The same test as the scan statement's, so exactly the cells of long.
	// The scan statement has seen them committed; on MySQL it takes a
	// locking read again to be sure to see them (Dialect.ScanLock).
	q += " AND " + s.d.BodyBytes + " > ? ORDER BY added_id LIMIT ?" + s.d.ScanLock
	args = append(args, inline, len(long))
	rows, err := s.db.QueryContext(ctx, s.d.Rebind(q), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	j := 0
	for rows.Next() {
		var id int64
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			return err
		}
		if j == len(long) || cells[long[j]].AddedID != id {
			return fmt.Errorf("read the body of added_id %d, not asked for", id)
		}
		cells[long[j]].Body = body
		j++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if j < len(long) {
		return fmt.Errorf("the body of added_id %d is missing", cells[long[j]].AddedID)
	}
	return nil
}

// Put implements cellar.Store.
func (s *Store) Put(ctx context.Context, c cellar.NewCell) (cellar.Cell, bool, error) {
	r := s.BatchPut(ctx, []cellar.NewCell{c})[0]
	return r.Cell, r.Created, r.Err
}

// BatchPut implements cellar.Store. The valid cells are written in one
// transaction (with group commit, together with other callers' cells).
func (s *Store) BatchPut(ctx context.Context, cells []cellar.NewCell) []cellar.PutResult {
	res := make([]cellar.PutResult, len(cells))
	items := make([]*writeItem, 0, len(cells))
	for i := range cells {
		c := &cells[i]
		if err := c.Key.Validate(); err != nil {
			res[i].Err = err
			continue
		}
		if len(c.Body) == 0 {
			res[i].Err = cellar.Errorf(cellar.EINVALID, "body is missing")
			continue
		}
		items = append(items, &writeItem{cell: c, shard: cellar.ShardOf(c.RowKey, s.shardCount), res: &res[i]})
	}
	if len(items) == 0 {
		return res
	}
	if err := s.ready(ctx); err != nil {
		for _, it := range items {
			*it.res = cellar.PutResult{Err: err}
		}
		return res
	}
	if s.group != nil {
		s.group.submit(ctx, items)
		return res
	}
	s.write(ctx, items)
	return res
}

// writeItem is one cell to write and where its result goes.
type writeItem struct {
	cell  *cellar.NewCell
	shard int
	res   *cellar.PutResult
}

// write stores items in one transaction, retrying it on deadlocks and
// serialization failures, and fills in their results.
func (s *Store) write(ctx context.Context, items []*writeItem) {
	sort.SliceStable(items, func(i, j int) bool { return items[i].shard < items[j].shard })
	var err error
	for attempt := 0; ; attempt++ {
		err = s.tryWrite(ctx, items)
		if err == nil || attempt == 5 || !s.d.Retryable(err) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
	if err != nil {
		err = s.wrap(err, "put cells")
		for _, it := range items {
			*it.res = cellar.PutResult{Err: err}
		}
	}
}

// ensureSeq creates the sequence row of shard if needed, outside any
// transaction, so that write transactions only ever lock existing rows.
func (s *Store) ensureSeq(ctx context.Context, shard int) error {
	if _, ok := s.seqKnown.Load(shard); ok {
		return nil
	}
	if _, err := s.wdb.ExecContext(ctx, s.d.Rebind(s.d.InsertSeq), shard); err != nil {
		return s.wrap(err, "create sequence of shard %d", shard)
	}
	s.seqKnown.Store(shard, struct{}{})
	return nil
}

// tryWrite runs one write transaction. items are sorted by shard. On error
// the transaction is rolled back and no result is set. Engines with a
// single writer take the batched path (batchwrite.go); the others lock each
// shard's sequence row in turn, as the ordering guarantee describes.
func (s *Store) tryWrite(ctx context.Context, items []*writeItem) error {
	if s.d.BatchWrites {
		return s.tryWriteBatch(ctx, items)
	}
	for i, it := range items {
		if i == 0 || it.shard != items[i-1].shard {
			if err := s.ensureSeq(ctx, it.shard); err != nil {
				return err
			}
		}
	}
	tx, err := s.wdb.BeginTx(ctx, s.d.WriteTx)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	results := make([]cellar.PutResult, len(items))
	now := s.now().UTC().Truncate(time.Millisecond)
	lockSeq, insert := s.d.Rebind(s.d.LockSeq), s.d.Rebind(s.d.InsertCell)
	for start := 0; start < len(items); {
		shard := items[start].shard
		end := start
		for end < len(items) && items[end].shard == shard {
			end++
		}
		var last int64
		var fenced int
		if err := tx.QueryRowContext(ctx, lockSeq, shard).Scan(&last, &fenced); err != nil {
			return fmt.Errorf("lock sequence of shard %d: %w", shard, err)
		}
		next := last
		for i := start; i < end; i++ {
			it := items[i]
			if fenced != 0 {
				results[i].Err = s.fencedError(shard)
				continue
			}
			r, err := tx.ExecContext(ctx, insert, shard, next+1, []byte(it.cell.RowKey), it.cell.Column, it.cell.RefKey, []byte(it.cell.Body), now.UnixMilli())
			if err != nil {
				return fmt.Errorf("insert cell: %w", err)
			}
			n, err := r.RowsAffected()
			if err != nil {
				return fmt.Errorf("insert cell: %w", err)
			}
			if n == 1 {
				next++
				results[i] = cellar.PutResult{Created: true, Cell: cellar.Cell{Key: it.cell.Key, Shard: shard, AddedID: next, CreatedAt: now}}
				continue
			}
			// The key exists: an equal body is a replay, anything else a
			// conflict. The read locks: under MySQL's REPEATABLE READ a
			// plain read would see the transaction's snapshot, taken at its
			// first read, which misses a cell another writer committed
			// since (the insert above saw it).
			var old cellar.Cell
			err = scanCell(tx.QueryRowContext(ctx, s.d.Rebind(GetCellSQL+s.d.ForUpdate),
				[]byte(it.cell.RowKey), it.cell.Column, it.cell.RefKey), &old)
			if err != nil {
				return fmt.Errorf("read existing cell: %w", err)
			}
			results[i] = replay(old, it.cell)
		}
		if next != last {
			if _, err := tx.ExecContext(ctx, s.d.Rebind(AdvanceSeqSQL), next, shard); err != nil {
				return fmt.Errorf("advance sequence of shard %d: %w", shard, err)
			}
		}
		start = end
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	for i, it := range items {
		*it.res = results[i]
	}
	return nil
}

// replay compares a new cell with the stored one of the same key.
func replay(old cellar.Cell, c *cellar.NewCell) cellar.PutResult {
	eq, err := cellar.EqualBodies(old.Body, c.Body)
	if err != nil {
		return cellar.PutResult{Err: err}
	}
	if !eq {
		return cellar.PutResult{Err: cellar.Errorf(cellar.ECONFLICT, "cell %q/%s/%d exists with a different body; cells are immutable, write a higher ref_key", c.RowKey, c.Column, c.RefKey)}
	}
	old.Body = nil
	return cellar.PutResult{Cell: old, Created: false}
}
