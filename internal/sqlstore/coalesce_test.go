package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// TestCoalescedReads runs many concurrent gets and latests, of cells that
// exist and of cells that do not, on a real SQLite node that coalesces
// beyond one statement in flight, and checks every answer against what was
// written and that reads were in fact combined.
func TestCoalescedReads(t *testing.T) {
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "n1", ShardCount: 8, Create: true, CoalesceReads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const rows = 50
	var cells []cellar.NewCell
	for r := range rows {
		for ref := int64(1); ref <= int64(r%3+1); ref++ {
			cells = append(cells, cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("row-%d", r), Column: "c", RefKey: ref},
				Body: []byte(fmt.Sprintf(`{"r":%d,"ref":%d}`, r, ref))})
		}
	}
	for _, res := range s.BatchPut(ctx, cells) {
		if res.Err != nil {
			t.Fatal(res.Err)
		}
	}

	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				r := (w*7 + i) % (rows + 5) // rows past the end do not exist
				row := fmt.Sprintf("row-%d", r)
				refs := int64(r%3 + 1)
				if i%2 == 0 {
					c, err := s.Latest(ctx, row, "c")
					switch {
					case r >= rows:
						if cellar.ErrorCode(err) != cellar.ENOTFOUND {
							t.Errorf("latest of missing %s: %v", row, err)
						}
					case err != nil:
						t.Errorf("latest %s: %v", row, err)
					case c.RowKey != row || c.RefKey != refs || string(c.Body) != fmt.Sprintf(`{"r":%d,"ref":%d}`, r, refs):
						t.Errorf("latest %s answered %s/%d %s", row, c.RowKey, c.RefKey, c.Body)
					}
					continue
				}
				ref := int64(i%4 + 1) // ref 4 never exists, others only up to refs
				c, err := s.Get(ctx, cellar.Key{RowKey: row, Column: "c", RefKey: ref})
				switch {
				case r >= rows || ref > refs:
					if cellar.ErrorCode(err) != cellar.ENOTFOUND {
						t.Errorf("get of missing %s/%d: %v", row, ref, err)
					}
				case err != nil:
					t.Errorf("get %s/%d: %v", row, ref, err)
				case c.RowKey != row || c.RefKey != ref || string(c.Body) != fmt.Sprintf(`{"r":%d,"ref":%d}`, r, ref):
					t.Errorf("get %s/%d answered %s/%d %s", row, ref, c.RowKey, c.RefKey, c.Body)
				}
			}
		}()
	}
	wg.Wait()
	if st, rd := s.CoalesceStats(); st == 0 || rd <= st {
		t.Errorf("coalesce stats: %d statements answered %d reads; want reads combined", st, rd)
	} else {
		t.Logf("%d statements answered %d of %d reads", st, rd, 64*100)
	}
}
