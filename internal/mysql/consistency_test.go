package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// openWith opens a node on a fresh database whose DSN is changed by mod,
// and a plain pool on the same database.
func openWith(tb testing.TB, shards int, mod func(dsn string) string) (*sqlstore.Store, *sql.DB) {
	tb.Helper()
	dsn := dbtest.MySQL(tb)
	if mod != nil {
		dsn = mod(dsn)
	}
	s, err := mysql.Open(context.Background(), dsn, mysql.Options{Options: sqlstore.Options{Name: "my", ShardCount: shards, Create: true}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	raw, err := sql.Open("mysql", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { raw.Close() })
	return s, raw
}

func newCell(row string, ref int64, body string) cellar.NewCell {
	return cellar.NewCell{Key: cellar.Key{RowKey: row, Column: "c", RefKey: ref}, Body: []byte(body)}
}

// keyIn returns a row key of shard.
func keyIn(prefix string, shard, shards int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("%s-%d", prefix, i); cellar.ShardOf(k, shards) == shard {
			return k
		}
	}
}

// TestClientFoundRows: with go-sql-driver's clientFoundRows, a no-op
// ON DUPLICATE KEY UPDATE reports a row; the node must not take that for
// an insert (a conflict acknowledged as created, a flush applied twice).
func TestClientFoundRows(t *testing.T) {
	s, raw := openWith(t, 16, func(dsn string) string {
		if strings.Contains(dsn, "?") {
			return dsn + "&clientFoundRows=true"
		}
		return dsn + "?clientFoundRows=true"
	})
	ctx := context.Background()
	first, _, err := s.Put(ctx, newCell("r", 1, `{"v":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Put(ctx, newCell("r", 1, `{"v":2}`)); cellar.ErrorCode(err) != cellar.ECONFLICT {
		t.Errorf("a put with a different body: %v; want a conflict", err)
	}
	if c, created, err := s.Put(ctx, newCell("r", 1, `{"v":1}`)); err != nil || created || c.AddedID != first.AddedID {
		t.Errorf("an equal replay = added_id %d, created %v, %v; want added_id %d, not created", c.AddedID, created, err, first.AddedID)
	}
	var last int64
	if err := raw.QueryRowContext(ctx, "SELECT last_added_id FROM shard_seq WHERE shard = ?", first.Shard).Scan(&last); err != nil || last != first.AddedID {
		t.Errorf("shard sequence at %d, %v; want %d (no ids taken by the conflict and the replay)", last, err, first.AddedID)
	}
	for range 2 {
		if err := s.ApplyCounterDeltas(ctx, "flush-1", map[string]int64{"k": 5}); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.Counters(ctx, []string{"k"}); err != nil || got["k"] != 5 {
		t.Errorf("counter after one flush applied twice = %v, %v; want 5", got, err)
	}
}

// TestLargeShardMap: a map of 4096 single-shard ranges, as many moves
// leave it, is stored and read back whole.
func TestLargeShardMap(t *testing.T) {
	s, _ := openWith(t, 16, nil)
	m := &cellar.ShardMap{Version: 2, ShardCount: cellar.DefaultShardCount}
	for i := range cellar.DefaultShardCount {
		m.Assignments = append(m.Assignments, cellar.Assignment{Node: fmt.Sprintf("node-%d", i%2), ShardRange: cellar.ShardRange{First: i, Last: i}})
	}
	ctx := context.Background()
	if err := s.PutShardMap(ctx, m); err != nil {
		t.Fatalf("PutShardMap of 4096 ranges: %v", err)
	}
	got, err := s.ShardMap(ctx)
	if err != nil || got.Version != 2 || len(got.Assignments) != cellar.DefaultShardCount {
		t.Fatalf("ShardMap() = %d ranges, %v; want version 2 with 4096", len(got.Assignments), err)
	}
}

// TestBatchReplayRace: a batchPut over two shards, the second of whose
// keys another writer creates (under the same row-lock protocol) while the
// batch waits for that shard's lock. The batch's read of the first key
// must not fix a snapshot that hides the other writer's cell: the second
// item is a replay of it.
func TestBatchReplayRace(t *testing.T) {
	const shards = 16
	s, raw := openWith(t, shards, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	x1, x2 := keyIn("x1", 2, shards), keyIn("x2", 9, shards)
	for _, c := range []cellar.NewCell{newCell(x1, 1, `{"v":1}`), newCell(keyIn("y", 9, shards), 1, `{}`)} {
		if _, _, err := s.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var last int64
	if err := tx.QueryRowContext(ctx, "SELECT last_added_id FROM shard_seq WHERE shard = 9 FOR UPDATE").Scan(&last); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO cells (shard, added_id, row_key, col, ref_key, body, created_at) VALUES (9, ?, ?, 'c', 1, ?, ?)",
		last+1, []byte(x2), []byte(`{"v":2}`), time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE shard_seq SET last_added_id = ? WHERE shard = 9", last+1); err != nil {
		t.Fatal(err)
	}
	done := make(chan []cellar.PutResult, 1)
	go func() {
		done <- s.BatchPut(ctx, []cellar.NewCell{newCell(x1, 1, `{"v":1}`), newCell(x2, 1, `{"v":2}`)})
	}()
	// Wait until the batch waits for shard 9's lock.
	for i := 0; ; i++ {
		var n int
		if err := raw.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.processlist WHERE INFO LIKE 'SELECT last_added_id, fenced FROM shard_seq WHERE shard = 9%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if i == 500 {
			t.Fatal("the batch never waited for shard 9's lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if r := res[0]; r.Err != nil || r.Created {
		t.Errorf("the first key (stored before): %+v; want a replay", r)
	}
	if r := res[1]; r.Err != nil || r.Created || r.Cell.AddedID != last+1 {
		t.Errorf("the second key (stored by the other writer meanwhile): %+v; want a replay of added_id %d", r, last+1)
	}
}

// TestStrictMode: the node's connections run in strict mode even where
// the server's or the DSN's sql_mode is lax, so that a value that does
// not fit its column fails instead of being truncated; the rest of a
// given sql_mode is kept.
func TestStrictMode(t *testing.T) {
	// A bare word and another spelling of the key are what a DSN may hold
	// too (MySQL takes both after SET).
	for _, param := range []string{"", "sql_mode=%27%27", "sql_mode=%27NO_ENGINE_SUBSTITUTION%27", "sql_mode=TRADITIONAL", "SQL_MODE=NO_ENGINE_SUBSTITUTION"} {
		s, _ := openWith(t, 16, func(dsn string) string {
			switch {
			case param == "":
				return dsn
			case strings.Contains(dsn, "?"):
				return dsn + "&" + param
			default:
				return dsn + "?" + param
			}
		})
		var mode string
		if err := s.DB().QueryRowContext(context.Background(), "SELECT @@SESSION.sql_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		modes := strings.Split(mode, ",")
		if !slices.Contains(modes, "STRICT_ALL_TABLES") {
			t.Errorf("DSN param %q: sql_mode %q; want STRICT_ALL_TABLES in it", param, mode)
		}
		if strings.Contains(param, "NO_ENGINE") && !slices.Contains(modes, "NO_ENGINE_SUBSTITUTION") {
			t.Errorf("DSN param %q: sql_mode %q; want the DSN's NO_ENGINE_SUBSTITUTION kept", param, mode)
		}
	}
}
