package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cellar-db/cellar"
)

// Secondary index storage (schema version 4). Every node stores the index
// entries of the logical shards it holds (index_entries) and, for the rows
// it holds, where each row's entries are (index_rows); the metadata node
// also holds the index definitions (indexes). internal/index gives them
// their meaning.

var _ cellar.IndexStore = (*Store)(nil)

// keyColumns names the encoded field columns by position.
var keyColumns = [cellar.MaxIndexFields]string{"k1", "k2", "k3", "k4"}

// nonNil returns b, or an empty slice for nil: drivers send a nil []byte
// as NULL, and the key columns are NOT NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (s *Store) checkIndexArgs(index string, gen int64, shard int) error {
	if index == "" || len(index) > 64 {
		return cellar.Errorf(cellar.EINVALID, "index name must be 1 to 64 bytes")
	}
	if gen < 1 {
		return cellar.Errorf(cellar.EINVALID, "index generation %d is out of range", gen)
	}
	if shard < 0 || shard >= s.shardCount {
		return cellar.Errorf(cellar.EINVALID, "shard %d is out of range 0..%d", shard, s.shardCount-1)
	}
	return nil
}

func checkLoc(loc cellar.IndexLoc) error {
	for i, k := range loc.Keys {
		if len(k) > cellar.MaxIndexKeyBytes {
			return cellar.Errorf(cellar.EINVALID, "index key %d is %d bytes; the limit is %d", i+1, len(k), cellar.MaxIndexKeyBytes)
		}
	}
	return nil
}

// PutIndexEntry implements cellar.IndexStore.
func (s *Store) PutIndexEntry(ctx context.Context, e cellar.IndexEntry) error {
	if err := s.checkIndexArgs(e.Index, e.Gen, e.Loc.Shard); err != nil {
		return err
	}
	if err := checkLoc(e.Loc); err != nil {
		return err
	}
	if err := cellar.ValidateRowKey(e.RowKey); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	k := e.Loc.Keys
	_, err := s.wdb.ExecContext(ctx, s.d.Rebind(s.d.UpsertIndexEntry), e.Index, e.Gen, e.Loc.Shard,
		nonNil(k[0]), nonNil(k[1]), nonNil(k[2]), nonNil(k[3]), []byte(e.RowKey), e.RefKey)
	if err != nil {
		return s.wrap(err, "write entry of index %s", e.Index)
	}
	return nil
}

// DeleteIndexEntry implements cellar.IndexStore.
func (s *Store) DeleteIndexEntry(ctx context.Context, index string, gen int64, loc cellar.IndexLoc, rowKey string) error {
	if err := s.checkIndexArgs(index, gen, loc.Shard); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	k := loc.Keys
	_, err := s.wdb.ExecContext(ctx, s.d.Rebind(`DELETE FROM index_entries WHERE index_name = ? AND gen = ? AND shard = ?
		AND k1 = ? AND k2 = ? AND k3 = ? AND k4 = ? AND row_key = ?`), index, gen, loc.Shard,
		nonNil(k[0]), nonNil(k[1]), nonNil(k[2]), nonNil(k[3]), []byte(rowKey))
	if err != nil {
		return s.wrap(err, "delete entry of index %s", index)
	}
	return nil
}

// ScanIndex implements cellar.IndexStore. The conditions and the order are
// plain comparisons on the key columns, so the primary key (index, gen,
// shard, k1..k4, row_key) serves equality on leading fields followed by a
// range and an order on the next one; other orders are sorted by the
// engine.
func (s *Store) ScanIndex(ctx context.Context, q cellar.IndexScan) ([]cellar.IndexEntry, error) {
	out := []cellar.IndexEntry{}
	if err := s.checkIndexArgs(q.Index, q.Gen, q.Shard); err != nil {
		return out, err
	}
	if q.Limit < 1 || q.Limit > cellar.MaxIndexLimit {
		return out, cellar.Errorf(cellar.EINVALID, "limit must be 1..%d", cellar.MaxIndexLimit)
	}
	var where strings.Builder
	args := []any{q.Index, q.Gen, q.Shard}
	where.WriteString("index_name = ? AND gen = ? AND shard = ?")
	for i, c := range q.Conds {
		col := keyColumns[i]
		if c.Eq != nil {
			fmt.Fprintf(&where, " AND %s = ?", col)
			args = append(args, c.Eq)
			continue
		}
		if b := c.Lower; b != nil {
			op := ">"
			if b.Inclusive {
				op = ">="
			}
			fmt.Fprintf(&where, " AND %s %s ?", col, op)
			args = append(args, nonNil(b.Key))
		}
		if b := c.Upper; b != nil {
			op := "<"
			if b.Inclusive {
				op = "<="
			}
			fmt.Fprintf(&where, " AND %s %s ?", col, op)
			args = append(args, nonNil(b.Key))
		}
	}
	order := make([]string, 0, len(q.Order)+1)
	for _, p := range q.Order {
		if p < 0 || p >= cellar.MaxIndexFields {
			return out, cellar.Errorf(cellar.EINVALID, "order field %d is out of range", p)
		}
		order = append(order, keyColumns[p])
	}
	order = append(order, "row_key")
	if a := q.After; a != nil {
		if len(a.Keys) != len(q.Order) {
			return out, cellar.Errorf(cellar.EINVALID, "cursor does not match the query's order")
		}
		vals := make([]any, 0, len(order))
		for _, k := range a.Keys {
			vals = append(vals, nonNil(k))
		}
		vals = append(vals, []byte(a.RowKey))
		// (o1, o2, ..., row_key) > (v1, v2, ..., r), written out: row value
		// comparisons do not use indexes on every engine.
		op := ">"
		if q.Desc {
			op = "<"
		}
		where.WriteString(" AND (")
		for i := range order {
			if i > 0 {
				where.WriteString(" OR ")
			}
			where.WriteString("(")
			for j := 0; j < i; j++ {
				fmt.Fprintf(&where, "%s = ? AND ", order[j])
				args = append(args, vals[j])
			}
			fmt.Fprintf(&where, "%s %s ?)", order[i], op)
			args = append(args, vals[i])
		}
		where.WriteString(")")
	}
	dir := ""
	if q.Desc {
		dir = " DESC"
	}
	query := "SELECT shard, k1, k2, k3, k4, row_key, ref_key FROM index_entries WHERE " + where.String() +
		" ORDER BY " + strings.Join(order, dir+", ") + dir + " LIMIT ?"
	args = append(args, q.Limit)
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	rows, err := s.db.QueryContext(ctx, s.d.Rebind(query), args...)
	if err != nil {
		return out, s.wrap(err, "scan index %s", q.Index)
	}
	defer rows.Close()
	for rows.Next() {
		e := cellar.IndexEntry{Index: q.Index, Gen: q.Gen}
		var row []byte
		k := &e.Loc.Keys
		if err := rows.Scan(&e.Loc.Shard, &k[0], &k[1], &k[2], &k[3], &row, &e.RefKey); err != nil {
			return out, s.wrap(err, "scan index %s", q.Index)
		}
		e.RowKey = string(row)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return out, s.wrap(err, "scan index %s", q.Index)
	}
	return out, nil
}

// IndexRow implements cellar.IndexStore.
func (s *Store) IndexRow(ctx context.Context, index string, gen int64, rowKey string) ([]cellar.IndexLoc, error) {
	if err := s.checkIndexArgs(index, gen, 0); err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	var raw []byte
	err := s.db.QueryRowContext(ctx, s.d.Rebind("SELECT locs FROM index_rows WHERE index_name = ? AND gen = ? AND row_key = ?"),
		index, gen, []byte(rowKey)).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, s.wrap(err, "read row record of index %s", index)
	}
	var locs []cellar.IndexLoc
	if err := json.Unmarshal(raw, &locs); err != nil {
		return nil, cellar.Internal(err, "decode row record of index %s", index)
	}
	return locs, nil
}

// SetIndexRow implements cellar.IndexStore.
func (s *Store) SetIndexRow(ctx context.Context, index string, gen int64, rowKey string, locs []cellar.IndexLoc) error {
	if err := s.checkIndexArgs(index, gen, 0); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	if len(locs) == 0 {
		_, err := s.wdb.ExecContext(ctx, s.d.Rebind("DELETE FROM index_rows WHERE index_name = ? AND gen = ? AND row_key = ?"),
			index, gen, []byte(rowKey))
		if err != nil {
			return s.wrap(err, "delete row record of index %s", index)
		}
		return nil
	}
	raw, err := json.Marshal(locs)
	if err != nil {
		return cellar.Internal(err, "encode row record of index %s", index)
	}
	if _, err := s.wdb.ExecContext(ctx, s.d.Rebind(s.d.UpsertIndexRow), index, gen, []byte(rowKey), raw); err != nil {
		return s.wrap(err, "write row record of index %s", index)
	}
	return nil
}

// DropIndex implements cellar.IndexStore.
func (s *Store) DropIndex(ctx context.Context, index string, gen int64) error {
	if err := s.checkIndexArgs(index, gen, 0); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	for _, table := range []string{"index_entries", "index_rows"} {
		if _, err := s.wdb.ExecContext(ctx, s.d.Rebind("DELETE FROM "+table+" WHERE index_name = ? AND gen = ?"), index, gen); err != nil {
			return s.wrap(err, "drop generation %d of index %s", gen, index)
		}
	}
	return nil
}

// IndexRecord is an index's stored definition on the metadata node; Def is
// internal/index's JSON.
type IndexRecord struct {
	Name      string
	Def       []byte
	CreatedAt time.Time
	UpdatedAt time.Time
}

// IndexRecord returns the record of index name. Returns ErrNotFound if
// there is none.
func (s *Store) IndexRecord(ctx context.Context, name string) (IndexRecord, error) {
	rec := IndexRecord{Name: name}
	if err := s.ready(ctx); err != nil {
		return rec, err
	}
	var created, updated int64
	err := s.db.QueryRowContext(ctx, s.d.Rebind("SELECT def, created_at, updated_at FROM indexes WHERE index_name = ?"), name).
		Scan(&rec.Def, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return rec, cellar.Errorf(cellar.ENOTFOUND, "no index named %s", name)
	}
	if err != nil {
		return rec, s.wrap(err, "read index %s", name)
	}
	rec.CreatedAt, rec.UpdatedAt = unixMilli(created), unixMilli(updated)
	return rec, nil
}

// IndexRecords returns every index record, by name.
func (s *Store) IndexRecords(ctx context.Context) ([]IndexRecord, error) {
	recs := []IndexRecord{}
	if err := s.ready(ctx); err != nil {
		return recs, err
	}
	rows, err := s.db.QueryContext(ctx, "SELECT index_name, def, created_at, updated_at FROM indexes ORDER BY index_name")
	if err != nil {
		return recs, s.wrap(err, "list indexes")
	}
	defer rows.Close()
	for rows.Next() {
		var rec IndexRecord
		var created, updated int64
		if err := rows.Scan(&rec.Name, &rec.Def, &created, &updated); err != nil {
			return recs, s.wrap(err, "list indexes")
		}
		rec.CreatedAt, rec.UpdatedAt = unixMilli(created), unixMilli(updated)
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return recs, s.wrap(err, "list indexes")
	}
	return recs, nil
}

// ErrDeleteRecord, returned by UpdateIndexRecord's f, deletes the record.
var ErrDeleteRecord = errors.New("delete the index record")

// UpdateIndexRecord runs f on the record of index name (Def nil if there
// is none) in a transaction that holds the record's lock, and writes what
// f leaves in rec.Def (nothing if f left it as it was): it creates the
// record if it was missing, and deletes it if f returns ErrDeleteRecord. Any other error from f changes
// nothing and is returned. f may run more than once (the transaction is
// retried on deadlocks and on a concurrent create), so it must not have
// side effects.
func (s *Store) UpdateIndexRecord(ctx context.Context, name string, f func(rec *IndexRecord) error) (IndexRecord, error) {
	var out IndexRecord
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	now := s.now()
	err := s.inTxRetryCreate(ctx, func(tx *sql.Tx) error {
		rec := IndexRecord{Name: name}
		var created, updated int64
		err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT def, created_at, updated_at FROM indexes WHERE index_name = ?"+s.d.ForUpdate), name).
			Scan(&rec.Def, &created, &updated)
		exists := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read index %s: %w", name, err)
		}
		if exists {
			rec.CreatedAt, rec.UpdatedAt = unixMilli(created), unixMilli(updated)
		}
		orig := rec.Def
		switch err := f(&rec); {
		case errors.Is(err, ErrDeleteRecord):
			if exists {
				if _, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM indexes WHERE index_name = ?"), name); err != nil {
					return fmt.Errorf("delete index %s: %w", name, err)
				}
			}
			out = IndexRecord{Name: name}
			return nil
		case err != nil:
			return err
		case exists && bytes.Equal(orig, rec.Def):
			out = rec // unchanged: nothing to write
			return nil
		}
		rec.UpdatedAt = now.UTC().Truncate(time.Millisecond)
		if !exists {
			rec.CreatedAt = rec.UpdatedAt
			_, err = tx.ExecContext(ctx, s.d.Rebind("INSERT INTO indexes (index_name, def, created_at, updated_at) VALUES (?, ?, ?, ?)"),
				name, rec.Def, now.UnixMilli(), now.UnixMilli())
		} else {
			_, err = tx.ExecContext(ctx, s.d.Rebind("UPDATE indexes SET def = ?, updated_at = ? WHERE index_name = ?"),
				rec.Def, now.UnixMilli(), name)
		}
		if err != nil {
			return fmt.Errorf("write index %s: %w", name, err)
		}
		out = rec
		return nil
	})
	if err != nil {
		return out, s.wrap(err, "update index %s", name)
	}
	return out, nil
}
