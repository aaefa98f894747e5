package trigger_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/metrics"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

// serve passes its metrics as the engine's Observer.
var _ trigger.Observer = (*metrics.Metrics)(nil)

const (
	testShards = 4096
	testTTL    = 10 * time.Second
)

// clock is a manual clock for leases and backoff.
type clock struct {
	mu sync.Mutex // protects t
	t  time.Time
}

// newClock starts at the real time, as the cells' created_at does, so that
// lag in seconds measures how far the clock was advanced.
func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a datastore of two nodes (the metadata node, SQLite, PostgreSQL
// or MySQL, holding shards 0-2047 and the trigger state; a SQLite node
// holding 2048-4095) and an engine over them.
//
// Puts through cells notify the engine (Engine.Notify), as they do in
// cellar serve, unless the test turns notify off to see cells found by
// polling, as those written by another process are.
type env struct {
	tb     testing.TB
	meta   *sqlstore.Store
	cells  *shard.Store
	nodes  []*shard.Node
	clock  *clock
	engine *trigger.Engine
	opts   trigger.Options
	notify atomic.Bool
}

type backend struct {
	name string
	// open opens the metadata node; reopening with the same dsn finds it
	// as it was.
	dsn  func(tb testing.TB) string
	open func(tb testing.TB, dsn string) *sqlstore.Store
}

var backends = []backend{
	{"sqlite", func(tb testing.TB) string { return filepath.Join(tb.TempDir(), "meta.db") }, func(tb testing.TB, dsn string) *sqlstore.Store {
		s, err := sqlite.Open(context.Background(), dsn, sqlite.Options{Options: sqlstore.Options{Name: "meta", ShardCount: testShards, Create: true}})
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}},
	{"postgres", dbtest.Postgres, func(tb testing.TB, dsn string) *sqlstore.Store {
		s, err := postgres.Open(context.Background(), dsn, postgres.Options{Options: sqlstore.Options{Name: "meta", ShardCount: testShards, Create: true}})
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}},
	{"mysql", dbtest.MySQL, func(tb testing.TB, dsn string) *sqlstore.Store {
		s, err := mysql.Open(context.Background(), dsn, mysql.Options{Options: sqlstore.Options{Name: "meta", ShardCount: testShards, Create: true}})
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}},
}

// forEachBackend runs f on a fresh env per metadata backend.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

// newEnv opens the nodes at metaDSN and otherPath and an engine over them.
func newEnv(tb testing.TB, b backend, metaDSN, otherPath string, mod func(*trigger.Options)) *env {
	tb.Helper()
	meta := b.open(tb, metaDSN)
	other, err := sqlite.Open(context.Background(), otherPath, sqlite.Options{Options: sqlstore.Options{Name: "n2", ShardCount: testShards, Create: true}})
	if err != nil {
		tb.Fatal(err)
	}
	nodes := []*shard.Node{{Name: "meta", Driver: b.name, Store: meta}, {Name: "n2", Driver: "sqlite", Store: other}}
	m := &cellar.ShardMap{Version: 1, ShardCount: testShards, Assignments: []cellar.Assignment{
		{Node: "meta", ShardRange: cellar.ShardRange{First: 0, Last: testShards/2 - 1}},
		{Node: "n2", ShardRange: cellar.ShardRange{First: testShards / 2, Last: testShards - 1}},
	}}
	e := &env{tb: tb, meta: meta, nodes: nodes, clock: newClock()}
	e.notify.Store(true)
	var engine atomic.Pointer[trigger.Engine]
	committed := func(shard int, addedID int64, column string) {
		if eng := engine.Load(); eng != nil && e.notify.Load() {
			eng.Notify(shard, addedID, column)
		}
	}
	cells, err := shard.New(m, nodes, shard.Options{NodeTimeout: 10 * time.Second, Committed: committed})
	if err != nil {
		tb.Fatal(err)
	}
	e.cells = cells
	e.opts = trigger.Options{Cells: cells, State: meta, KnownHeads: trigger.NodeHeads(cells.Map, nodes, 5*time.Second), ShardCount: testShards,
		LeaseTTL: testTTL, PollInterval: 5 * time.Millisecond, Now: e.clock.Now}
	if mod != nil {
		mod(&e.opts)
	}
	e.engine, err = trigger.New(e.opts)
	if err != nil {
		tb.Fatal(err)
	}
	engine.Store(e.engine)
	tb.Cleanup(func() {
		e.engine.Close()
		meta.Close()
		other.Close()
	})
	return e
}

func newTestEnv(tb testing.TB, b backend) *env {
	tb.Helper()
	return newEnv(tb, b, b.dsn(tb), filepath.Join(tb.TempDir(), "n2.db"), nil)
}

func bg() context.Context { return context.Background() }

// put writes cell (row, col, 1) and returns it.
func (e *env) put(row, col string) cellar.Cell {
	e.tb.Helper()
	body, _ := json.Marshal(map[string]string{"row": row})
	c, _, err := e.cells.Put(bg(), cellar.NewCell{Key: cellar.Key{RowKey: row, Column: col, RefKey: 1}, Body: body})
	if err != nil {
		e.tb.Fatal(err)
	}
	return c
}

// sh spreads the tests' eight shards 0-7 over the 4096: sh(0)-sh(3) are
// on the metadata node, sh(4)-sh(7) on the other one.
func sh(i int) int { return i * (testShards / 8) }

// rowIn returns the i-th row key (from 0) that falls in shard.
func rowIn(shard, i int) string {
	for n := 0; ; n++ {
		k := fmt.Sprintf("row-%d", n)
		if cellar.ShardOf(k, testShards) == shard {
			if i == 0 {
				return k
			}
			i--
		}
	}
}

func (e *env) define(name string, d trigger.Definition) {
	e.tb.Helper()
	if _, _, err := e.engine.Define(bg(), name, d); err != nil {
		e.tb.Fatal(err)
	}
}

func (e *env) claim(name, consumer string, max int) trigger.Claim {
	e.tb.Helper()
	c, err := e.engine.Claim(bg(), name, consumer, max, 0)
	if err != nil {
		e.tb.Fatal(err)
	}
	return c
}

func (e *env) offset(name string, shard int) int64 {
	e.tb.Helper()
	rows, err := e.meta.TriggerShards(bg(), name)
	if err != nil {
		e.tb.Fatal(err)
	}
	for _, r := range rows {
		if r.Shard == shard {
			return r.Acked
		}
	}
	return 0
}

func wantCode(tb testing.TB, what string, err error, want *cellar.Error) {
	tb.Helper()
	if !errors.Is(err, want) {
		tb.Fatalf("%s: err = %v; want code %s", what, err, want.Code)
	}
}

func ids(cells []cellar.Cell) []int64 {
	out := make([]int64, len(cells))
	for i, c := range cells {
		out[i] = c.AddedID
	}
	return out
}

// staleEngine opens a second engine over e's nodes, as a second server
// would, whose copy of the triggers' state is not refreshed during a test;
// it is closed when tb ends.
func staleEngine(tb testing.TB, e *env) *trigger.Engine {
	tb.Helper()
	opts := e.opts
	opts.StateRefresh = time.Hour
	e2, err := trigger.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e2.Close() })
	return e2
}
