package client_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cellar-db/cellar"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
)

func TestZZReviewCoreProbe(t *testing.T) {
	c, _, _ := newServer(t, cellarhttp.Options{})
	ctx := context.Background()
	for i, row := range []string{".", "..", "/", "//", "a/../b", "%", "%2F", "?x=1", "#f", " ", "+", "a+b", "日本", "./", "/.", "%2E", ";", "a\\b", "~", "%00", "\u2028", "\ufeff"} {
		_, _, err := c.Put(ctx, newCell(row, "c", int64(i), `{"a":1}`))
		if err != nil {
			t.Errorf("put %q: %v", row, err)
			continue
		}
		got, err := c.Get(ctx, cellar.Key{RowKey: row, Column: "c", RefKey: int64(i)})
		if err != nil || got.RowKey != row {
			t.Errorf("get %q: %v %q", row, err, got.RowKey)
		}
		l, err := c.Latest(ctx, row, "c")
		if err != nil || l.RowKey != row {
			t.Errorf("latest %q: %v", row, err)
		}
		r, err := c.Row(ctx, row, []string{"c"})
		if err != nil || len(r) != 1 {
			t.Errorf("row %q: %v %d", row, err, len(r))
		}
		bg := c.BatchGet(ctx, []cellar.LookupKey{{RowKey: row, Column: "c"}})
		if bg[0].Err != nil {
			t.Errorf("batchget %q: %v", row, bg[0].Err)
		}
	}
	_, err := c.Get(ctx, cellar.Key{RowKey: "nope", Column: "c", RefKey: 1})
	t.Logf("notfound: %v is=%v", err, errors.Is(err, cellar.ErrNotFound))
	_, err = c.Latest(ctx, "nope", "c")
	t.Logf("latest notfound: %v is=%v", err, errors.Is(err, cellar.ErrNotFound))
	_, _, err = c.Put(ctx, newCell("a", "c", 0, `{"a":2}`))
	t.Logf("conflict: %v", err)
	_, _, err = c.Put(ctx, newCell("a", "c", -1, `{"a":2}`))
	t.Logf("neg: %v", err)
	_, _, err = c.Put(ctx, newCell("a", "bad col", 1, `{"a":2}`))
	t.Logf("badcol: %v", err)
	_, _, err = c.Put(ctx, newCell("a", "c", 1, ``))
	t.Logf("nobody: %v", err)
	res := c.BatchPut(ctx, []cellar.NewCell{newCell("bp", "c", 1, `{"a":1}`), newCell("bp", "c", 1, `{"a":2}`), newCell("bp", "c", 1, ` {"a":1} `), newCell("bp", "c", 2, `[1]`), newCell("bp", "c", 3, ``), newCell("bp", "c", 4, `{"a":1}{}`)})
	for i, r := range res {
		t.Logf("bp %d: %+v created=%v err=%v", i, r.Cell, r.Created, r.Err)
	}
	sr, err := c.Scan(ctx, 0, 0, 0, "")
	t.Logf("scan limit 0: %+v %v", sr, err)
	sr, err = c.Scan(ctx, cellar.ShardOf("bp", shardCount), 0, 10, "")
	t.Logf("scan: %d %d %v", len(sr.Cells), sr.Next, err)
	rw, err := c.Row(ctx, "nobody", nil)
	t.Logf("row nobody: %v %v", rw, err)
	rw, err = c.Row(ctx, "a", []string{})
	t.Logf("row a: %v %v", len(rw), err)
	bg := c.BatchGet(ctx, nil)
	t.Logf("bg nil: %v", bg)
	sh, err := c.Shards(ctx)
	t.Logf("shards: %+v %v", sh, err)
}
