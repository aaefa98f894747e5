package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	sqlitedriver "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// The tests here check the batched write path (sqlstore/batchwrite.go):
// one transaction decides a whole group of puts with set-based statements,
// and must behave exactly as if the puts had come one after another.

// modes runs f with group commit and with one transaction per put.
func modes(t *testing.T, f func(t *testing.T, open func(tb testing.TB, shards int) *sqlstore.Store)) {
	for _, m := range []struct {
		name    string
		noGroup bool
	}{{"group_commit", false}, {"tx_per_put", true}} {
		t.Run(m.name, func(t *testing.T) {
			f(t, func(tb testing.TB, shards int) *sqlstore.Store { return open(tb, shards, m.noGroup).(*sqlstore.Store) })
		})
	}
}

// rowsIn returns n distinct row keys of shard.
func rowsIn(prefix string, shard, shards, n int) []string {
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if cellar.ShardOf(k, shards) == shard {
			keys = append(keys, k)
		}
	}
	return keys
}

// sameCell reports whether a and b have the same metadata (put results
// carry no body).
func sameCell(a, b cellar.Cell) bool {
	return a.Key == b.Key && a.Shard == b.Shard && a.AddedID == b.AddedID && a.CreatedAt.Equal(b.CreatedAt)
}

func cell(row string, ref int64, body string) cellar.NewCell {
	return cellar.NewCell{Key: cellar.Key{RowKey: row, Column: "c", RefKey: ref}, Body: []byte(body)}
}

// checkSeqs checks what the ordering guarantee needs of every shard on s:
// its added_ids are 1..n without a gap, and its sequence row says n.
func checkSeqs(tb testing.TB, s *sqlstore.Store) {
	tb.Helper()
	rows, err := s.DB().Query(`SELECT q.shard, q.last_added_id, COUNT(c.added_id), COALESCE(MAX(c.added_id), 0)
		FROM shard_seq q LEFT JOIN cells c ON c.shard = q.shard GROUP BY q.shard, q.last_added_id`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var shard int
		var last, n, maxID int64
		if err := rows.Scan(&shard, &last, &n, &maxID); err != nil {
			tb.Fatal(err)
		}
		if n != last || maxID != last {
			tb.Errorf("shard %d: %d cells, highest added_id %d, last_added_id %d; want all equal", shard, n, maxID, last)
		}
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	var orphans int
	if err := s.DB().QueryRow("SELECT COUNT(*) FROM cells WHERE shard NOT IN (SELECT shard FROM shard_seq)").Scan(&orphans); err != nil {
		tb.Fatal(err)
	}
	if orphans != 0 {
		tb.Errorf("%d cells in shards without a sequence row", orphans)
	}
}

// TestBatchDuplicateKeys puts the same key several times in one batch (one
// group): the first creates, an equal later one is a replay with the
// first's metadata, a different one a conflict, and neither takes an id.
func TestBatchDuplicateKeys(t *testing.T) {
	modes(t, func(t *testing.T, open func(tb testing.TB, shards int) *sqlstore.Store) {
		s := open(t, 8)
		ctx := context.Background()
		k := rowsIn("dup", 2, 8, 3)
		res := s.BatchPut(ctx, []cellar.NewCell{
			cell(k[0], 1, `{"a":1,"b":2}`),
			cell(k[1], 1, `{"x":1}`),
			cell(k[0], 1, `{"b": 2, "a": 1}`), // equal body: replay of the first
			cell(k[0], 1, `{"a":2}`),          // different body: conflict
			cell(k[2], 1, `{"y":1}`),
			cell(k[2], 1, `{"y":1}`),
		})
		if r := res[0]; r.Err != nil || !r.Created || r.Cell.AddedID != 1 || r.Cell.Shard != 2 {
			t.Errorf("first put of %s = %+v; want created with added_id 1 in shard 2", k[0], r)
		}
		if r := res[1]; r.Err != nil || !r.Created || r.Cell.AddedID != 2 {
			t.Errorf("put of %s = %+v; want created with added_id 2", k[1], r)
		}
		if r := res[2]; r.Err != nil || r.Created || !sameCell(r.Cell, res[0].Cell) {
			t.Errorf("equal second put of %s = %+v; want a replay of %+v", k[0], r, res[0].Cell)
		}
		if r := res[3]; !errors.Is(r.Err, cellar.ErrConflict) {
			t.Errorf("different second put of %s = %+v; want conflict", k[0], r)
		}
		if r := res[4]; r.Err != nil || !r.Created || r.Cell.AddedID != 3 {
			t.Errorf("put of %s = %+v; want created with added_id 3", k[2], r)
		}
		if r := res[5]; r.Err != nil || r.Created || !sameCell(r.Cell, res[4].Cell) {
			t.Errorf("second put of %s = %+v; want a replay of %+v", k[2], r, res[4].Cell)
		}
		got, err := s.Get(ctx, res[0].Cell.Key)
		if err != nil || string(got.Body) != `{"a":1,"b":2}` {
			t.Errorf("stored %s = %s, %v; want the first body", k[0], got.Body, err)
		}
		c, _, err := s.Put(ctx, cell(rowsIn("next", 2, 8, 1)[0], 1, `{}`))
		if err != nil || c.AddedID != 4 {
			t.Errorf("next put in shard 2: added_id %d, %v; want 4", c.AddedID, err)
		}
		checkSeqs(t, s)
	})
}

// TestBatchReplayAndConflictOfStored mixes, in one batch, puts of a stored
// key (equal: replay; different: conflict) with new cells of the same
// shard: only the new ones take ids, in order.
func TestBatchReplayAndConflictOfStored(t *testing.T) {
	modes(t, func(t *testing.T, open func(tb testing.TB, shards int) *sqlstore.Store) {
		s := open(t, 8)
		ctx := context.Background()
		k := rowsIn("stored", 6, 8, 3)
		first, _, err := s.Put(ctx, cell(k[0], 5, `{"v":1}`))
		if err != nil {
			t.Fatal(err)
		}
		res := s.BatchPut(ctx, []cellar.NewCell{
			cell(k[0], 5, `{"v":2}`),
			cell(k[1], 1, `{}`),
			cell(k[0], 5, `{"v": 1}`),
			cell(k[2], 1, `{}`),
		})
		if !errors.Is(res[0].Err, cellar.ErrConflict) {
			t.Errorf("different put of the stored key = %+v; want conflict", res[0])
		}
		if r := res[2]; r.Err != nil || r.Created || r.Cell.AddedID != first.AddedID || !r.Cell.CreatedAt.Equal(first.CreatedAt) {
			t.Errorf("equal put of the stored key = %+v; want a replay of %+v", r, first)
		}
		for i, want := range map[int]int64{1: 2, 3: 3} {
			if r := res[i]; r.Err != nil || !r.Created || r.Cell.AddedID != want {
				t.Errorf("new cell %d = %+v; want created with added_id %d", i, r, want)
			}
		}
		checkSeqs(t, s)
	})
}

// TestBatchFencedShard writes one batch over a fenced shard and two others:
// the fenced shard's puts (new or replays) are refused as unavailable and
// take no id, the others are written, and after unfencing the fenced shard
// goes on without a gap.
func TestBatchFencedShard(t *testing.T) {
	modes(t, func(t *testing.T, open func(tb testing.TB, shards int) *sqlstore.Store) {
		s := open(t, 8)
		ctx := context.Background()
		a, b, c := rowsIn("a", 3, 8, 3), rowsIn("b", 4, 8, 2), rowsIn("c", 5, 8, 1)
		if _, _, err := s.Put(ctx, cell(a[0], 1, `{}`)); err != nil {
			t.Fatal(err)
		}
		if err := s.SetFence(ctx, 3, true); err != nil {
			t.Fatal(err)
		}
		res := s.BatchPut(ctx, []cellar.NewCell{
			cell(b[0], 1, `{}`),
			cell(a[1], 1, `{}`),
			cell(c[0], 1, `{}`),
			cell(a[0], 1, `{}`), // a replay, but of a fenced shard
			cell(b[1], 1, `{}`),
			cell(a[2], 1, `{}`),
		})
		for _, i := range []int{1, 3, 5} {
			if !errors.Is(res[i].Err, cellar.ErrUnavailable) {
				t.Errorf("put %d into the fenced shard = %+v; want unavailable", i, res[i])
			}
		}
		for i, want := range map[int][2]int64{0: {4, 1}, 2: {5, 1}, 4: {4, 2}} {
			if r := res[i]; r.Err != nil || !r.Created || int64(r.Cell.Shard) != want[0] || r.Cell.AddedID != want[1] {
				t.Errorf("put %d = %+v; want created in shard %d with added_id %d", i, r, want[0], want[1])
			}
		}
		if err := s.SetFence(ctx, 3, false); err != nil {
			t.Fatal(err)
		}
		got, _, err := s.Put(ctx, cell(a[1], 1, `{}`))
		if err != nil || got.AddedID != 2 {
			t.Errorf("put after unfencing: added_id %d, %v; want 2", got.AddedID, err)
		}
		checkSeqs(t, s)
	})
}

// TestBatchBeyondParamLimit writes one batch of more cells than one
// statement could bind (7 parameters a cell, 32766 a statement), with
// replays and conflicts of stored cells and of the batch's own among them.
func TestBatchBeyondParamLimit(t *testing.T) {
	modes(t, func(t *testing.T, open func(tb testing.TB, shards int) *sqlstore.Store) {
		bigBatch(t, open(t, 8), 5000)
	})
}

// TestMaxParams checks the dialect's parameter limit against the one the
// driver's SQLite enforces.
func TestMaxParams(t *testing.T) {
	s := open(t, 8, false).(*sqlstore.Store)
	conn, err := s.DB().Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := sqlitedriver.Limit(conn, sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, -1)
	if err != nil || got != sqlite.Dialect.MaxParams {
		t.Errorf("SQLite's limit on parameters = %d, %v; the dialect says %d", got, err, sqlite.Dialect.MaxParams)
	}
}

// TestBatchSmallParamLimit runs a batch on a node whose SQLite allows only
// 7 parameters a statement (and a dialect that says so), so every
// statement of the batched path is split at its smallest size and at odd
// boundaries, and one statement too many parameters would fail.
func TestBatchSmallParamLimit(t *testing.T) {
	const limit = 7
	d := *sqlite.Dialect
	d.MaxParams = limit
	path := filepath.Join(t.TempDir(), "node.db")
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()
	wdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	conn, err := wdb.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sqlitedriver.Limit(conn, sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, limit); err != nil {
		t.Fatal(err)
	}
	conn.Close() // back to the pool, which keeps it for the node's writes
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sqlstore.Open(context.Background(), db, wdb, &d, sqlstore.Options{Name: "small", ShardCount: 8, Create: true, GroupCommit: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	bigBatch(t, s, 300)
}

// TestBatchLargeBodies writes one batch whose bodies are more than one
// multi-row INSERT binds (4 MiB), so the chunks are split by size, and
// reads every body back.
func TestBatchLargeBodies(t *testing.T) {
	s := open(t, 8, false).(*sqlstore.Store)
	ctx := context.Background()
	var cells []cellar.NewCell
	for i := 0; i < 40; i++ {
		body := fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", 150<<10+i))
		cells = append(cells, cell(fmt.Sprintf("large-%d", i), 1, body))
	}
	for i, r := range s.BatchPut(ctx, cells) {
		if r.Err != nil || !r.Created {
			t.Fatalf("put %d = %+v; want created", i, r)
		}
	}
	for i, c := range cells {
		got, err := s.Get(ctx, c.Key)
		if err != nil || string(got.Body) != string(c.Body) {
			t.Errorf("cell %d: %d bytes, %v; want its %d-byte body", i, len(got.Body), err, len(c.Body))
		}
	}
	checkSeqs(t, s)
}

// bigBatch puts n new cells over 8 shards in one batch, together with a
// replay and a conflict of a stored cell and of a batch cell for every 10
// new ones, and checks every result and the shards' sequences.
func bigBatch(t *testing.T, s *sqlstore.Store, n int) {
	ctx := context.Background()
	var stored []cellar.NewCell
	for i := 0; i < n/10; i++ {
		stored = append(stored, cell(fmt.Sprintf("stored-%d", i), 1, fmt.Sprintf(`{"s":%d}`, i)))
	}
	for i, r := range s.BatchPut(ctx, stored) {
		if r.Err != nil || !r.Created {
			t.Fatalf("stored cell %d: %+v", i, r)
		}
	}
	type want int // what each put of the batch must come out as
	const (
		created want = iota
		replay
		conflict
	)
	var cells []cellar.NewCell
	var wants []want
	add := func(c cellar.NewCell, w want) { cells, wants = append(cells, c), append(wants, w) }
	for i := 0; i < n; i++ {
		add(cell(fmt.Sprintf("new-%d", i), 1, fmt.Sprintf(`{"n":%d}`, i)), created)
		if i%10 == 9 {
			j := i / 10
			add(stored[j], replay)
			add(cell(stored[j].RowKey, 1, `{"other":1}`), conflict)
			add(cell(fmt.Sprintf("new-%d", i-5), 1, fmt.Sprintf(`{"n":%d}`, i-5)), replay)
			add(cell(fmt.Sprintf("new-%d", i-3), 1, `{"other":1}`), conflict)
		}
	}
	res := s.BatchPut(ctx, cells)
	byKey := map[cellar.Key]cellar.Cell{}
	for i, r := range res {
		if wants[i] == created {
			if r.Err != nil || !r.Created {
				t.Fatalf("put %d (%s) = %+v; want created", i, cells[i].RowKey, r)
			}
			byKey[r.Cell.Key] = r.Cell
		}
	}
	for i, r := range res {
		switch wants[i] {
		case replay:
			if r.Err != nil || r.Created {
				t.Fatalf("put %d (%s) = %+v; want a replay", i, cells[i].RowKey, r)
			}
			if c, ok := byKey[r.Cell.Key]; ok && !sameCell(c, r.Cell) {
				t.Errorf("put %d (%s) replays %+v; want %+v", i, cells[i].RowKey, r.Cell, c)
			}
		case conflict:
			if !errors.Is(r.Err, cellar.ErrConflict) {
				t.Fatalf("put %d (%s) = %+v; want conflict", i, cells[i].RowKey, r)
			}
		}
	}
	var count int
	if err := s.DB().QueryRow("SELECT COUNT(*) FROM cells").Scan(&count); err != nil {
		t.Fatal(err)
	}
	if count != n+n/10 {
		t.Errorf("%d cells stored; want %d", count, n+n/10)
	}
	checkSeqs(t, s)
}

// TestGroupSameKeysConcurrently has many callers put the same keys at
// once, so that group commit gathers duplicates from different callers
// into one group: each key is created exactly once, every other put of it
// is a replay of that cell (equal body) or a conflict, and no id is lost.
func TestGroupSameKeysConcurrently(t *testing.T) {
	modes(t, func(t *testing.T, open func(tb testing.TB, shards int) *sqlstore.Store) {
		s := open(t, 4)
		ctx := context.Background()
		const callers, keys = 32, 20
		results := make([][]cellar.PutResult, callers)
		var wg sync.WaitGroup
		for w := 0; w < callers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var cells []cellar.NewCell
				for k := 0; k < keys; k++ {
					body := `{"v":1}`
					if k%4 == 0 {
						body = fmt.Sprintf(`{"writer":%d}`, w) // every caller's differs
					}
					cells = append(cells, cell(fmt.Sprintf("same-%d", k), 1, body))
				}
				results[w] = s.BatchPut(ctx, cells)
			}()
		}
		wg.Wait()
		for k := 0; k < keys; k++ {
			stored, err := s.Get(ctx, cellar.Key{RowKey: fmt.Sprintf("same-%d", k), Column: "c", RefKey: 1})
			if err != nil {
				t.Fatal(err)
			}
			stored.Body = nil
			creators := 0
			for w := 0; w < callers; w++ {
				r := results[w][k]
				switch {
				case r.Err == nil && r.Created:
					creators++
					if !sameCell(r.Cell, stored) {
						t.Errorf("key %d: caller %d created %+v; stored is %+v", k, w, r.Cell, stored)
					}
				case r.Err == nil:
					if !sameCell(r.Cell, stored) {
						t.Errorf("key %d: caller %d replayed %+v; stored is %+v", k, w, r.Cell, stored)
					}
				case k%4 == 0 && errors.Is(r.Err, cellar.ErrConflict):
				default:
					t.Errorf("key %d: caller %d got %+v", k, w, r)
				}
			}
			if creators != 1 {
				t.Errorf("key %d created by %d callers; want 1", k, creators)
			}
		}
		checkSeqs(t, s)
	})
}
