package shard_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/storetest"
)

// openNodes opens one node of each backend. pgDSN overrides the PostgreSQL
// DSN (to go through a proxy) when not empty.
func openNodes(tb testing.TB, shards int, pgDSN string) []*shard.Node {
	tb.Helper()
	ctx := context.Background()
	opts := func(name string) sqlstore.Options {
		return sqlstore.Options{Name: name, ShardCount: shards, Create: true}
	}
	lite, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "n.db"), sqlite.Options{Options: opts("lite")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { lite.Close() })
	if pgDSN == "" {
		pgDSN = dbtest.Postgres(tb)
	}
	pg, err := postgres.Open(ctx, pgDSN, postgres.Options{Options: opts("pg")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pg.Close() })
	my, err := mysql.Open(ctx, dbtest.MySQL(tb), mysql.Options{Options: opts("my")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { my.Close() })
	return []*shard.Node{{Name: "lite", Driver: "sqlite", Store: lite}, {Name: "pg", Driver: "postgres", Store: pg}, {Name: "my", Driver: "mysql", Store: my}}
}

// thirds splits shards over the three nodes.
func thirds(shards int) *cellar.ShardMap {
	a, b := shards/3, 2*shards/3
	return &cellar.ShardMap{Version: 1, ShardCount: shards, Assignments: []cellar.Assignment{
		{Node: "lite", ShardRange: cellar.ShardRange{First: 0, Last: a - 1}},
		{Node: "pg", ShardRange: cellar.ShardRange{First: a, Last: b - 1}},
		{Node: "my", ShardRange: cellar.ShardRange{First: b, Last: shards - 1}},
	}}
}

func TestConformanceMixedNodes(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, shards int) cellar.Store {
		s, err := shard.New(thirds(shards), openNodes(tb, shards, ""), shard.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		return s
	})
}

func TestTopology(t *testing.T) {
	nodes := []*shard.Node{{Name: "b", Driver: "mysql"}, {Name: "a", Driver: "sqlite"}, {Name: "idle", Driver: "postgres"}}
	m := &cellar.ShardMap{Version: 3, ShardCount: 10, Assignments: []cellar.Assignment{
		{Node: "a", ShardRange: cellar.ShardRange{First: 5, Last: 9}},
		{Node: "b", ShardRange: cellar.ShardRange{First: 0, Last: 4}},
	}}
	s, err := shard.New(m, nodes, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%+v", s.Topology())
	want := "{ShardCount:10 Version:3 Nodes:[{Name:a Driver:sqlite Ranges:[5-9]} {Name:b Driver:mysql Ranges:[0-4]} {Name:idle Driver:postgres Ranges:[]}]}"
	if got != want {
		t.Errorf("Topology() = %s\nwant %s", got, want)
	}
	if err := s.SetMap(&cellar.ShardMap{Version: 2, ShardCount: 10, Assignments: m.Assignments}); err == nil {
		t.Errorf("SetMap accepted an older version")
	}
	if err := s.SetMap(&cellar.ShardMap{Version: 4, ShardCount: 12, Assignments: []cellar.Assignment{{Node: "a", ShardRange: cellar.ShardRange{First: 0, Last: 11}}}}); err == nil {
		t.Errorf("SetMap accepted a new shard count")
	}
	if err := s.SetMap(&cellar.ShardMap{Version: 4, ShardCount: 10, Assignments: []cellar.Assignment{{Node: "nope", ShardRange: cellar.ShardRange{First: 0, Last: 9}}}}); err == nil {
		t.Errorf("SetMap accepted an unknown node")
	}
}

// TestNodeDown takes the PostgreSQL node away mid-test, first by making it
// hang and then by stopping it: requests for its shards must fail with
// unavailable within the node deadline, while every other shard keeps
// serving.
func TestNodeDown(t *testing.T) {
	for _, mode := range []string{"hang", "stop"} {
		t.Run(mode, func(t *testing.T) { testNodeDown(t, mode) })
	}
}

func testNodeDown(t *testing.T, mode string) {
	const shards = 30
	real := dbtest.Postgres(t)
	u, err := url.Parse(real)
	if err != nil {
		t.Fatal(err)
	}
	proxy := dbtest.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	const deadline = 300 * time.Millisecond
	m := thirds(shards)
	s, err := shard.New(m, openNodes(t, shards, u.String()), shard.Options{NodeTimeout: deadline})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rowsOn := map[string][]string{}
	for i := 0; len(rowsOn["pg"]) < 10 || len(rowsOn["lite"]) < 10 || len(rowsOn["my"]) < 10; i++ {
		row := fmt.Sprintf("row-%d", i)
		node := m.NodeOf(cellar.ShardOf(row, shards))
		rowsOn[node] = append(rowsOn[node], row)
		if _, _, err := s.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: row, Column: "c", RefKey: 1}, Body: []byte(`{}`)}); err != nil {
			t.Fatalf("put %s before the failure: %v", row, err)
		}
	}
	if mode == "hang" {
		proxy.Hang()
	} else {
		proxy.Stop()
	}
	// A bound far above the deadline: this checks that the deadline holds,
	// not how fast anything is.
	const bound = deadline + 3*time.Second
	for _, row := range rowsOn["pg"][:5] {
		start := time.Now()
		_, err := s.Latest(ctx, row, "c")
		if !errors.Is(err, cellar.ErrUnavailable) {
			t.Errorf("Latest(%s) on the down node: err = %v; want unavailable", row, err)
		}
		if el := time.Since(start); el > bound {
			t.Errorf("Latest(%s) on the down node took %v; the node deadline is %v", row, el, deadline)
		}
		start = time.Now()
		_, _, err = s.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: row, Column: "c", RefKey: 2}, Body: []byte(`{}`)})
		if !errors.Is(err, cellar.ErrUnavailable) {
			t.Errorf("Put(%s) on the down node: err = %v; want unavailable", row, err)
		}
		if el := time.Since(start); el > bound {
			t.Errorf("Put(%s) on the down node took %v; the node deadline is %v", row, el, deadline)
		}
	}
	for _, node := range []string{"lite", "my"} {
		for _, row := range rowsOn[node] {
			if _, err := s.Latest(ctx, row, "c"); err != nil {
				t.Errorf("Latest(%s) on healthy node %s: %v", row, node, err)
			}
			if _, created, err := s.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: row, Column: "c", RefKey: 2}, Body: []byte(`{}`)}); err != nil || !created {
				t.Errorf("Put(%s) on healthy node %s: created=%v, %v", row, node, created, err)
			}
		}
	}
	// A batch spanning all nodes: only the down node's keys fail.
	var keys []cellar.LookupKey
	for _, node := range []string{"lite", "pg", "my"} {
		for _, row := range rowsOn[node][:3] {
			keys = append(keys, cellar.LookupKey{RowKey: row, Column: "c"})
		}
	}
	start := time.Now()
	res := s.BatchGet(ctx, keys)
	if el := time.Since(start); el > bound {
		t.Errorf("BatchGet with a down node took %v", el)
	}
	for i, r := range res {
		onPG := i >= 3 && i < 6
		if onPG && !errors.Is(r.Err, cellar.ErrUnavailable) {
			t.Errorf("BatchGet result %d (down node): err = %v; want unavailable", i, r.Err)
		}
		if !onPG && (r.Err != nil || r.Cell == nil) {
			t.Errorf("BatchGet result %d (healthy node): %v", i, r.Err)
		}
	}
}

func TestTimelinesMixedNodes(t *testing.T) {
	storetest.RunTimelines(t, func(tb testing.TB, shards int) cellar.TimelineStore {
		s, err := shard.New(thirds(shards), openNodes(tb, shards, ""), shard.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		return s
	})
}

func TestCountersMixedNodes(t *testing.T) {
	storetest.RunCounters(t, func(tb testing.TB, shards int) cellar.CounterNode {
		s, err := shard.New(thirds(shards), openNodes(tb, shards, ""), shard.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		return s
	})
}

func TestIndexesMixedNodes(t *testing.T) {
	storetest.RunIndexes(t, func(tb testing.TB, shards int) cellar.IndexStore {
		s, err := shard.New(thirds(shards), openNodes(tb, shards, ""), shard.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		return s
	})
}

// TestBatchGetBoundOverNodesInRequestOrder guards that over several nodes
// a batchGet's 16 MiB bound is the whole answer's, counted in request
// order (docs/API.md): each node bounds its own part first, counting cells
// the whole answer's bound leaves out, so a node may leave out a later,
// small cell that fits; that one is asked for again. (Review of stop 19.) Here: a0 (6 MiB, node a),
// b1 (8 MiB, node b), a2 (9.5 MiB, node a: left out, 23.5 MiB), a3 (1 MiB,
// node a: 6+8+1 = 15 MiB, fits). Node a alone counts 6+9.5+1 = 16.5 MiB and
// drops a3, so a3 comes back too_large although it is within the bound.
func TestBatchGetBoundOverNodesInRequestOrder(t *testing.T) {
	ctx := context.Background()
	const shards = 2
	na, nb := openLite(t, "a", shards), openLite(t, "b", shards)
	m := &cellar.ShardMap{Version: 1, ShardCount: shards, Assignments: []cellar.Assignment{
		{Node: "a", ShardRange: cellar.ShardRange{First: 0, Last: 0}},
		{Node: "b", ShardRange: cellar.ShardRange{First: 1, Last: 1}},
	}}
	s, err := shard.New(m, []*shard.Node{{Name: "a", Driver: "sqlite", Store: na}, {Name: "b", Driver: "sqlite", Store: nb}}, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rowIn := func(sh, skip int) string {
		for i := 0; ; i++ {
			k := fmt.Sprintf("r%d", i)
			if cellar.ShardOf(k, shards) == sh {
				if skip == 0 {
					return k
				}
				skip--
			}
		}
	}
	const mib = 1 << 20
	items := []struct {
		row  string
		size int
	}{
		{rowIn(0, 0), 6 * mib},
		{rowIn(1, 0), 8 * mib},
		{rowIn(0, 1), 9*mib + mib/2},
		{rowIn(0, 2), 1 * mib},
	}
	var keys []cellar.LookupKey
	for _, it := range items {
		raw := `{"x":"` + strings.Repeat("a", it.size-8) + `"}`
		body, err := cellar.CheckBody([]byte(raw), 64*mib)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: it.row, Column: "c", RefKey: 1}, Body: body}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, cellar.LookupKey{RowKey: it.row, Column: "c"})
	}
	res := s.BatchGet(ctx, keys)
	want := []bool{true, true, false, true} // kept, in request order
	for i, r := range res {
		kept := r.Err == nil && r.Cell != nil
		if kept != want[i] {
			t.Errorf("result %d (%d bytes, node of shard %d): kept=%v err=%v; want kept=%v (request-order bound: %v)",
				i, items[i].size, cellar.ShardOf(items[i].row, shards), kept, r.Err, want[i], want)
		}
		if !kept && !errors.Is(r.Err, cellar.ErrTooLarge) {
			t.Errorf("result %d: %v; want too_large", i, r.Err)
		}
	}
}
