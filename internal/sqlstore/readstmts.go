package sqlstore

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
)

// readStmt is one point-read statement of a node: its SQL rebound once
// and, where the dialect asks (Dialect.PrepareReads), prepared once on the
// read pool. modernc.org/sqlite parses every query it is given anew, and a
// 10-key batchGet spent three quarters of its CPU in SQLite's parser; a
// prepared database/sql Stmt is parsed once per connection.
type readStmt struct {
	q      string // in the engine's placeholders
	cached bool   // kept in Store.reads, so it may be prepared
	mu     sync.Mutex
	stmt   atomic.Pointer[sql.Stmt]
}

// maxReadStmts bounds the statements a node keeps: point reads have two
// shapes, batchGets one per count of exact and latest keys (and bounded
// ones mixing both one per pattern), and a client sending ever new counts
// or patterns must not make a node prepare without end.
const maxReadStmts = 256

// batchShape keys the batchGet statement of e exact keys, then l latest.
type batchShape struct{ e, l int }

// batchPattern keys the statement of a bounded batch get mixing exact
// and latest keys, its branches in request order: 'e' for an exact key,
// 'l' for a latest one.
type batchPattern string

// readStmt returns the statement kept under key, building its SQL with
// build the first time.
func (s *Store) readStmt(key any, build func() string) *readStmt {
	if v, ok := s.reads.Load(key); ok {
		return v.(*readStmt)
	}
	rs := &readStmt{q: s.d.Rebind(build())}
	if s.nreads.Add(1) > maxReadStmts {
		s.nreads.Add(-1)
		return rs // used once, never prepared
	}
	rs.cached = true
	v, loaded := s.reads.LoadOrStore(key, rs)
	if loaded {
		s.nreads.Add(-1)
	}
	return v.(*readStmt)
}

// prepared returns rs prepared on the read pool, or nil to run its SQL as
// a plain query: without PrepareReads, for a statement not kept, or when
// preparing failed (tried again next time; the query then reports the
// error).
func (s *Store) prepared(ctx context.Context, rs *readStmt) *sql.Stmt {
	if !s.d.PrepareReads || !rs.cached {
		return nil
	}
	if st := rs.stmt.Load(); st != nil {
		return st
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if st := rs.stmt.Load(); st != nil {
		return st
	}
	st, err := s.db.PrepareContext(ctx, rs.q)
	if err != nil {
		return nil
	}
	rs.stmt.Store(st)
	return st
}

func (s *Store) queryRead(ctx context.Context, rs *readStmt, args ...any) (*sql.Rows, error) {
	if st := s.prepared(ctx, rs); st != nil {
		return st.QueryContext(ctx, args...)
	}
	return s.db.QueryContext(ctx, rs.q, args...)
}

func (s *Store) queryRowRead(ctx context.Context, rs *readStmt, args ...any) *sql.Row {
	if st := s.prepared(ctx, rs); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return s.db.QueryRowContext(ctx, rs.q, args...)
}

// closeReads closes the prepared read statements.
func (s *Store) closeReads() error {
	var first error
	s.reads.Range(func(_, v any) bool {
		if st := v.(*readStmt).stmt.Load(); st != nil {
			if err := st.Close(); err != nil && first == nil {
				first = err
			}
		}
		return true
	})
	return first
}

func getCellSQL() string    { return GetCellSQL }
func latestCellSQL() string { return LatestCellSQL }
