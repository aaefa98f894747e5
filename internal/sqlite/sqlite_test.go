package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/storetest"
)

func open(tb testing.TB, shards int, noGroup bool) cellar.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "node.db"), sqlite.Options{
		Options:       sqlstore.Options{Name: "test", ShardCount: shards, Create: true},
		NoGroupCommit: noGroup,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, shards int) cellar.Store { return open(tb, shards, false) })
}

func TestConformanceWithoutGroupCommit(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, shards int) cellar.Store { return open(tb, shards, true) })
}

func TestTimelines(t *testing.T) {
	storetest.RunTimelines(t, func(tb testing.TB, shards int) cellar.TimelineStore { return open(tb, shards, false).(*sqlstore.Store) })
}

func TestCounters(t *testing.T) {
	storetest.RunCounters(t, func(tb testing.TB, shards int) cellar.CounterNode { return open(tb, shards, false).(*sqlstore.Store) })
}

func TestIndexes(t *testing.T) {
	storetest.RunIndexes(t, func(tb testing.TB, shards int) cellar.IndexStore { return open(tb, shards, false).(*sqlstore.Store) })
}
