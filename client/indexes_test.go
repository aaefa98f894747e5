package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/index"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

// newIndexServer starts the real HTTP API with indexes over a fresh SQLite
// node.
func newIndexServer(tb testing.TB) *client.Client {
	tb.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "t", ShardCount: shardCount, Create: true}})
	if err != nil {
		tb.Fatal(err)
	}
	e, err := trigger.New(trigger.Options{Cells: store, State: store, Heads: store.ShardHeads, ShardCount: shardCount, PollInterval: 5 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	m, err := index.New(index.Options{Cells: store, Entries: store, Records: store, Triggers: e, ShardCount: shardCount, Refresh: 20 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	m.Start()
	srv := httptest.NewServer(cellarhttp.NewHandler(store, cellarhttp.Options{Indexes: m, Triggers: e}))
	tb.Cleanup(func() {
		srv.Close()
		m.Close()
		store.Close()
	})
	return client.New(srv.URL)
}

func TestIndexes(t *testing.T) {
	c := newIndexServer(t)
	ctx := context.Background()
	def := client.IndexDefinition{Column: "profile", Fields: []client.IndexField{{Name: "city", Type: "string"}, {Name: "joined", Type: "time"}}}
	ix, created, err := c.DefineIndex(ctx, "by_city", def)
	if err != nil || !created || ix.Generation != 1 || ix.Fields[1].Type != "time" {
		t.Fatalf("DefineIndex = %+v, %v, %v", ix, created, err)
	}
	if _, created, err := c.DefineIndex(ctx, "by_city", def); err != nil || created {
		t.Errorf("DefineIndex again = %v, %v", created, err)
	}
	var cells []cellar.Cell
	for i := 0; i < 7; i++ {
		cells = append(cells, put(t, c, fmt.Sprintf("u%d", i), "profile", 1,
			fmt.Sprintf(`{"city": "paris", "joined": "2026-11-%02dT10:00:00Z"}`, 10+i)))
	}
	res, err := c.QueryIndex(ctx, "by_city", client.IndexQuery{
		Where:   map[string]any{"city": "paris", "joined": client.Cond{Gte: "2026-11-12T00:00:00Z"}},
		Desc:    true,
		Limit:   3,
		WaitFor: client.Written(cells...),
		Wait:    10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries) != 3 || res.Entries[0].RowKey != "u6" || res.Entries[2].RowKey != "u4" || res.Cursor == "" {
		t.Fatalf("first page = %+v", res)
	}
	if got := string(res.Entries[0].Fields["joined"]); got != `"2026-11-16T10:00:00Z"` {
		t.Errorf("joined = %s", got)
	}
	res, err = c.QueryIndex(ctx, "by_city", client.IndexQuery{
		Where: map[string]any{"city": "paris", "joined": client.Cond{Gte: "2026-11-12T00:00:00Z"}}, Desc: true, Limit: 3, Cursor: res.Cursor})
	if err != nil || len(res.Entries) != 2 || res.Entries[1].RowKey != "u2" || res.Cursor != "" {
		t.Errorf("second page = %+v, %v", res, err)
	}
	if _, err := c.QueryIndex(ctx, "by_city", client.IndexQuery{Where: map[string]any{"joined": "x"}}); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("query without the shard field: %v; want invalid", err)
	}
	st, err := c.IndexStatus(ctx, "by_city")
	if err != nil || st.Name != "by_city" || st.Lag.Trigger != "_index.by_city.1" {
		t.Errorf("IndexStatus = %+v, %v", st, err)
	}
	if list, err := c.Indexes(ctx); err != nil || len(list) != 1 {
		t.Errorf("Indexes = %+v, %v", list, err)
	}
	if ix, err := c.RebuildIndex(ctx, "by_city"); err != nil || ix.Rebuilding != 2 {
		t.Errorf("RebuildIndex = %+v, %v", ix, err)
	}
	if err := c.DeleteIndex(ctx, "by_city"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.IndexStatus(ctx, "by_city"); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("status of a deleted index: %v; want not found", err)
	}
	if _, _, err := c.DefineIndex(ctx, "a/b", def); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("DefineIndex(a/b): %v; want invalid", err)
	}
}

// A query's wait below a millisecond is asked as one, not left out, which
// the server takes for its default of a second (review of 2026-12-08).
func TestQueryIndexSubMillisecondWait(t *testing.T) {
	bodies := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"rows": []}`)
	}))
	defer srv.Close()
	c := client.New(srv.URL)
	_, _ = c.QueryIndex(context.Background(), "ix", client.IndexQuery{Where: map[string]any{"a": 1},
		WaitFor: []client.CellPos{{Shard: 1, AddedID: 2}}, Wait: 300 * time.Microsecond})
	if body := <-bodies; !strings.Contains(body, `"wait_ms":1`) {
		t.Errorf("request body %s; want wait_ms 1", body)
	}
}
