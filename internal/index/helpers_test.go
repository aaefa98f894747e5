package index_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/index"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

const testShards = 64

type backend struct {
	name string
	open func(tb testing.TB) *sqlstore.Store // a fresh metadata node
}

var backends = []backend{
	{"sqlite", func(tb testing.TB) *sqlstore.Store { return openNode(tb, "sqlite", "meta", testShards) }},
	{"postgres", func(tb testing.TB) *sqlstore.Store { return openNode(tb, "postgres", "meta", testShards) }},
	{"mysql", func(tb testing.TB) *sqlstore.Store { return openNode(tb, "mysql", "meta", testShards) }},
}

// openNode creates a fresh node named name on driver (sqlite, postgres or
// mysql) with shards logical shards.
func openNode(tb testing.TB, driver, name string, shards int) *sqlstore.Store {
	tb.Helper()
	ctx := context.Background()
	opts := sqlstore.Options{Name: name, ShardCount: shards, Create: true}
	var s *sqlstore.Store
	var err error
	switch driver {
	case "sqlite":
		s, err = sqlite.Open(ctx, filepath.Join(tb.TempDir(), name+".db"), sqlite.Options{Options: opts})
	case "postgres":
		s, err = postgres.Open(ctx, dbtest.Postgres(tb), postgres.Options{Options: opts})
	case "mysql":
		s, err = mysql.Open(ctx, dbtest.MySQL(tb), mysql.Options{Options: opts})
	default:
		tb.Fatalf("no backend %q: want sqlite, postgres or mysql", driver)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

// env is a datastore of two nodes — the metadata node (of the backend
// under test) holding shards 0-31, a SQLite node holding 32-63 — with a
// trigger engine and an index manager over them.
type env struct {
	tb      testing.TB
	written []cellar.Cell // every cell put, for sync
	meta    *sqlstore.Store
	cells   *shard.Store
	engine  *trigger.Engine
	manager *index.Manager
}

type envOpts struct {
	noStart     bool          // do not start the manager (no maintenance)
	retireAfter time.Duration // default 1h: nothing is dropped
	leaseTTL    time.Duration // the trigger engine's (default its own)
	// entries, if set, wraps the index store the manager writes to.
	entries func(cellar.IndexStore) cellar.IndexStore
}

func newEnv(tb testing.TB, b backend, o envOpts) *env {
	tb.Helper()
	meta := b.open(tb)
	other, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "n2.db"), sqlite.Options{Options: sqlstore.Options{Name: "n2", ShardCount: testShards, Create: true}})
	if err != nil {
		tb.Fatal(err)
	}
	nodes := []*shard.Node{{Name: "meta", Driver: b.name, Store: meta}, {Name: "n2", Driver: "sqlite", Store: other}}
	m := &cellar.ShardMap{Version: 1, ShardCount: testShards, Assignments: []cellar.Assignment{
		{Node: "meta", ShardRange: cellar.ShardRange{First: 0, Last: 31}},
		{Node: "n2", ShardRange: cellar.ShardRange{First: 32, Last: 63}},
	}}
	var notify notifier
	cells, err := shard.New(m, nodes, shard.Options{NodeTimeout: 10 * time.Second, Committed: notify.call})
	if err != nil {
		tb.Fatal(err)
	}
	engine, err := trigger.New(trigger.Options{Cells: cells, State: meta, KnownHeads: trigger.NodeHeads(cells.Map, nodes, 5*time.Second), ShardCount: testShards,
		PollInterval: 5 * time.Millisecond, Backoff: func(int) time.Duration { return 20 * time.Millisecond }, LeaseTTL: o.leaseTTL})
	if err != nil {
		tb.Fatal(err)
	}
	notify.engine.Store(engine)
	if o.retireAfter == 0 {
		o.retireAfter = time.Hour
	}
	var entries cellar.IndexStore = cells
	if o.entries != nil {
		entries = o.entries(cells)
	}
	mgr, err := index.New(index.Options{Cells: cells, Entries: entries, Records: meta, Triggers: engine, ShardCount: testShards,
		Workers: 2, Refresh: 20 * time.Millisecond, RetireAfter: o.retireAfter, ClockSkew: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		tb.Fatal(err)
	}
	if !o.noStart {
		mgr.Start()
	}
	tb.Cleanup(func() {
		mgr.Close()
		engine.Close()
		meta.Close()
		other.Close()
	})
	return &env{tb: tb, meta: meta, cells: cells, engine: engine, manager: mgr}
}

// testWriter sends log lines to the test's log.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(string(p))
	return len(p), nil
}

func bg() context.Context { return context.Background() }

func (e *env) put(row, col string, ref int64, body any) cellar.Cell {
	e.tb.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		e.tb.Fatal(err)
	}
	b, err = cellar.CheckBody(b, cellar.DefaultMaxBodyBytes)
	if err != nil {
		e.tb.Fatal(err)
	}
	c, _, err := e.cells.Put(bg(), cellar.NewCell{Key: cellar.Key{RowKey: row, Column: col, RefKey: ref}, Body: b})
	if err != nil {
		e.tb.Fatal(err)
	}
	e.written = append(e.written, c)
	return c
}

// synced runs q on index name once it has caught up with every cell put
// so far.
func (e *env) synced(name string, q index.Query) index.Result {
	e.tb.Helper()
	return e.query(name, q, e.written...)
}

func (e *env) define(name string, def index.Definition) index.Index {
	e.tb.Helper()
	ix, _, err := e.manager.Define(bg(), name, def)
	if err != nil {
		e.tb.Fatal(err)
	}
	return ix
}

// query runs q on index name, first waiting for cells to be indexed.
func (e *env) query(name string, q index.Query, after ...cellar.Cell) index.Result {
	e.tb.Helper()
	for _, c := range after {
		q.WaitFor = append(q.WaitFor, index.CellPos{Shard: c.Shard, AddedID: c.AddedID})
	}
	if len(q.WaitFor) > 0 && q.Wait == 0 {
		q.Wait = 30 * time.Second
	}
	res, err := e.manager.Query(bg(), name, q)
	if err != nil {
		e.tb.Fatalf("Query(%s, %+v): %v", name, q, err)
	}
	return res
}

// eq is a where condition of equality.
func eq(field string, v any) index.Cond {
	b, _ := json.Marshal(v)
	return index.Cond{Field: field, Eq: b}
}

func raw(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func rows(res index.Result) []string {
	out := []string{}
	for _, e := range res.Entries {
		out = append(out, e.RowKey)
	}
	return out
}

// waitUntil polls cond every 10 ms for up to 30 s.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var usersByCity = index.Definition{Column: "profile", Fields: []index.Field{
	{Name: "city", Type: index.TypeString}, {Name: "age", Type: index.TypeInt}, {Name: "score", Type: index.TypeFloat}}}

func user(city string, age int, score float64) map[string]any {
	return map[string]any{"city": city, "age": age, "score": score, "name": fmt.Sprintf("%s-%d", city, age)}
}

// notifier tells the engine, once it exists, of every committed cell, as
// cellar serve does.
type notifier struct {
	engine atomic.Pointer[trigger.Engine]
}

func (n *notifier) call(shard int, addedID int64, column string) {
	if e := n.engine.Load(); e != nil {
		e.Notify(shard, addedID, column)
	}
}
