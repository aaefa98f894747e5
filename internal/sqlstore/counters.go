package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cellar-db/cellar"
)

// Counters
//
// A counter is a row of counters; a missing row is 0. Buffers in front of
// the node (internal/counter) apply many increments as one delta per key
// per flush. counter_flushes records the flushes a node has applied, in the
// transaction that applies them, so that a flush retried after a failure
// or a lost reply is applied at most once on each node.

// FlushRetention is how long a node remembers an applied counter flush.
// Records older than this are deleted, so the table holds about one day of
// flushes; a flush retried more than FlushRetention after it was applied
// would be applied again. Flushers retry within seconds or minutes.
const FlushRetention = 24 * time.Hour

const (
	// About one flush in pruneEvery (by a hash of its id) also deletes up
	// to pruneBatch expired flush records in its transaction: enough to
	// keep up with up to pruneBatch/pruneEvery = 16 flushes per flush,
	// while concurrent flushers rarely contend for the same old records.
	pruneEvery = 16
	pruneBatch = 256

	maxFlushIDBytes = 255
	// maxInList bounds the keys one SELECT ... IN (...) reads.
	maxInList = 500
)

var _ cellar.CounterNode = (*Store)(nil)

// ApplyCounterDeltas implements cellar.CounterNode. flushID must be 1 to
// 255 bytes. Keys are added in sorted order, so that concurrent flushes
// lock counters in one order and cannot deadlock on them; zero deltas are
// skipped, but a flush of only zero deltas is still recorded. A flushID
// applied less than FlushRetention ago is not applied again. Returns EINVALID, naming the key, if a counter would overflow
// int64; nothing is applied then.
func (s *Store) ApplyCounterDeltas(ctx context.Context, flushID string, deltas map[string]int64) error {
	if flushID == "" || len(flushID) > maxFlushIDBytes {
		return cellar.Errorf(cellar.EINVALID, "flush id must be 1 to %d bytes", maxFlushIDBytes)
	}
	keys := make([]string, 0, len(deltas))
	for k, d := range deltas {
		if err := cellar.ValidateKey("counter key", k); err != nil {
			return err
		}
		if d != 0 {
			keys = append(keys, k)
		}
	}
	if len(deltas) == 0 {
		return nil
	}
	slices.Sort(keys)
	if err := s.ready(ctx); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, s.d.Rebind(s.d.InsertFlush), []byte(flushID), s.now().UnixMilli())
		if err != nil {
			return fmt.Errorf("record flush: %w", err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return fmt.Errorf("record flush: %w", err)
		}
		if n == 0 {
			return nil // applied before
		}
		add := s.d.Rebind(s.d.AddCounter)
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, add, []byte(k), deltas[k]); err != nil {
				if s.d.OutOfRange(err) {
					return &cellar.Error{Code: cellar.EINVALID,
						Message: fmt.Sprintf("counter %q would overflow int64 adding %d; flush %s applied nothing on node %s", k, deltas[k], flushID, s.name),
						Err:     &cellar.CounterOverflowError{Key: k, Delta: deltas[k]}}
				}
				return fmt.Errorf("add to counter: %w", err)
			}
		}
		if cellar.ShardOf(flushID, pruneEvery) == 0 {
			return s.pruneFlushes(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return s.wrap(err, "apply counter deltas")
	}
	return nil
}

// pruneFlushes deletes up to pruneBatch flush records older than
// FlushRetention. It finds them with a plain read and deletes them by
// primary key, so that it locks only those rows: a range delete would also
// lock the gap where other flushes insert their records (InnoDB).
func (s *Store) pruneFlushes(ctx context.Context, tx *sql.Tx) error {
	cutoff := s.now().Add(-FlushRetention).UnixMilli()
	rows, err := tx.QueryContext(ctx, s.d.Rebind("SELECT flush_id FROM counter_flushes WHERE applied_at < ? ORDER BY applied_at LIMIT ?"), cutoff, pruneBatch)
	if err != nil {
		return fmt.Errorf("find expired flush records: %w", err)
	}
	var ids []any
	for rows.Next() {
		var id []byte
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("find expired flush records: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find expired flush records: %w", err)
	}
	if len(ids) == 0 {
		return nil
	}
	slices.SortFunc(ids, func(a, b any) int { return strings.Compare(string(a.([]byte)), string(b.([]byte))) })
	q := "DELETE FROM counter_flushes WHERE flush_id IN (?" + strings.Repeat(", ?", len(ids)-1) + ")"
	if _, err := tx.ExecContext(ctx, s.d.Rebind(q), ids...); err != nil {
		return fmt.Errorf("delete expired flush records: %w", err)
	}
	return nil
}

// Counters implements cellar.CounterNode.
func (s *Store) Counters(ctx context.Context, keys []string) (map[string]int64, error) {
	out := make(map[string]int64, len(keys))
	for _, k := range keys {
		if err := cellar.ValidateKey("counter key", k); err != nil {
			return nil, err
		}
		out[k] = 0
	}
	if len(out) == 0 {
		return out, nil
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	uniq := make([]string, 0, len(out))
	for k := range out {
		uniq = append(uniq, k)
	}
	for chunk := range slices.Chunk(uniq, maxInList) {
		if err := s.readCounters(ctx, chunk, out); err != nil {
			return nil, s.wrap(err, "read counters")
		}
	}
	return out, nil
}

func (s *Store) readCounters(ctx context.Context, keys []string, out map[string]int64) error {
	args := make([]any, len(keys))
	for i, k := range keys {
		args[i] = []byte(k)
	}
	q := "SELECT counter_key, value FROM counters WHERE counter_key IN (?" + strings.Repeat(", ?", len(keys)-1) + ")"
	rows, err := s.db.QueryContext(ctx, s.d.Rebind(q), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k []byte
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		out[string(k)] = v
	}
	return rows.Err()
}
