package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// TestPutDeadlineWhileLocked: while another connection holds the file's
// write lock (another process, a backup), a put fails unavailable when
// its deadline passes, with and without group commit, rather than waiting
// for the lock; and once the lock is gone, the node writes again.
func TestPutDeadlineWhileLocked(t *testing.T) {
	for _, noGroup := range []bool{false, true} {
		name := map[bool]string{false: "group_commit", true: "one_tx_per_put"}[noGroup]
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.db")
			s, err := sqlite.Open(context.Background(), path, sqlite.Options{
				Options: sqlstore.Options{Name: "test", ShardCount: 16, Create: true}, NoGroupCommit: noGroup,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			conn, err := other.Conn(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, _, err = s.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: "r", Column: "c", RefKey: 1}, Body: []byte(`{"v":1}`)})
			if took := time.Since(start); took > 2*time.Second || cellar.ErrorCode(err) != cellar.EUNAVAILABLE {
				t.Errorf("Put with the file locked by another connection: %v after %v; want unavailable at the 300ms deadline", err, took.Round(time.Millisecond))
			}
			if _, err := conn.ExecContext(context.Background(), "COMMIT"); err != nil {
				t.Fatal(err)
			}
			// The put may or may not have been stored (its outcome was
			// unknown): a retry learns which, and the node serves again.
			ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel2()
			c, _, err := s.Put(ctx2, cellar.NewCell{Key: cellar.Key{RowKey: "r", Column: "c", RefKey: 1}, Body: []byte(`{"v":1}`)})
			if err != nil || c.AddedID != 1 {
				t.Errorf("retry after the lock was released = added_id %d, %v; want the cell, added_id 1", c.AddedID, err)
			}
		})
	}
}
