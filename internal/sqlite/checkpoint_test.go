package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// TestCheckpointer writes a transaction far smaller than SQLite's own
// checkpoint threshold (1000 WAL pages), so that only the checkpointer can
// copy it into the database file: with it the file grows, without it the
// WAL keeps the pages. Either way every cell reads back after a reopen.
func TestCheckpointer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		every  time.Duration
		copies bool
	}{{"on", 5 * time.Millisecond, true}, {"off", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "node.db")
			opts := sqlite.Options{Options: sqlstore.Options{Name: "test", ShardCount: 64, Create: true}, CheckpointEvery: tc.every}
			s, err := sqlite.Open(ctx, path, opts)
			if err != nil {
				t.Fatal(err)
			}
			size := func() int64 {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				return fi.Size()
			}
			// Let the creation's own writes settle into the file first.
			time.Sleep(50 * time.Millisecond)
			before := size()
			cells := make([]cellar.NewCell, 200)
			for i := range cells {
				cells[i] = cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("row-%d", i), Column: "c", RefKey: 1}, Body: []byte(`{"n":1}`)}
			}
			for _, r := range s.BatchPut(ctx, cells) {
				if r.Err != nil {
					t.Fatal(r.Err)
				}
			}
			grew := false
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && !grew; time.Sleep(10 * time.Millisecond) {
				grew = size() > before
			}
			if grew != tc.copies {
				t.Errorf("database file grew from %d to %d bytes: %v; want %v", before, size(), grew, tc.copies)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			opts.Create = false
			s, err = sqlite.Open(ctx, path, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, c := range cells {
				if _, err := s.Get(ctx, c.Key); err != nil {
					t.Fatalf("get %v after reopen: %v", c.Key, err)
				}
			}
		})
	}
}
