package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// TestReadStatementsBounded sends batchGets of more shapes (counts of
// exact and latest keys, in mixed order) than a node keeps statements
// for, twice over, on SQLite, which prepares them: every answer is right,
// in request order, and the node keeps no more than its bound.
func TestReadStatementsBounded(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "n.db"), sqlite.Options{Options: sqlstore.Options{Name: "n", ShardCount: 16, Create: true, CoalesceReads: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const rows = 24
	var cells []cellar.NewCell
	for i := range rows {
		for ref := int64(1); ref <= 2; ref++ {
			cells = append(cells, cellar.NewCell{Key: cellar.Key{RowKey: fmt.Sprintf("r%d", i), Column: "c", RefKey: ref}, Body: []byte(fmt.Sprintf(`{"i":%d,"ref":%d}`, i, ref))})
		}
	}
	for _, r := range s.BatchPut(ctx, cells) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	shapes := 0
	for round := 0; round < 2; round++ {
		for e := 0; e <= rows; e++ {
			for l := 0; l <= rows-e && e+l > 0; l++ {
				shapes++
				// Alternate the kinds, so that reordering matters; key k
				// is row k, exact ref 1 or latest (ref 2).
				var keys []cellar.LookupKey
				ne, nl := e, l
				for k := 0; ne+nl > 0; k++ {
					one := int64(1)
					if ne > 0 && (k%2 == 0 || nl == 0) {
						keys = append(keys, cellar.LookupKey{RowKey: fmt.Sprintf("r%d", k), Column: "c", RefKey: &one})
						ne--
					} else {
						keys = append(keys, cellar.LookupKey{RowKey: fmt.Sprintf("r%d", k), Column: "c"})
						nl--
					}
				}
				for i, r := range s.BatchGet(ctx, keys) {
					want := int64(2)
					if keys[i].RefKey != nil {
						want = 1
					}
					if r.Err != nil || r.Cell == nil || r.Cell.RowKey != keys[i].RowKey || r.Cell.RefKey != want {
						t.Fatalf("shape %d+%d, key %d (%+v): got %+v, %v", e, l, i, keys[i], r.Cell, r.Err)
					}
				}
			}
		}
	}
	if shapes/2 <= sqlstore.MaxReadStmts {
		t.Fatalf("only %d shapes: the test does not pass the bound of %d", shapes/2, sqlstore.MaxReadStmts)
	}
	if n := sqlstore.ReadStmtsKept(s); n > sqlstore.MaxReadStmts || n < sqlstore.MaxReadStmts {
		t.Fatalf("the node keeps %d statements; want its bound, %d", n, sqlstore.MaxReadStmts)
	}
}
