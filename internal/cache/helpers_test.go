package cache_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/cache"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/redis"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

func ctx(tb testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return c
}

// openSQLite opens a fresh SQLite node, closed when tb ends.
func openSQLite(tb testing.TB, shards int) *sqlstore.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "n.db"), sqlite.Options{
		Options: sqlstore.Options{Name: "lite", ShardCount: shards, Create: true, GroupCommit: true},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// newCache opens a cache.Store over next, closed when tb ends.
func newCache(tb testing.TB, next cellar.Store, opts cache.Options) *cache.Store {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logWriter{tb}, nil))
	}
	s, err := cache.New(next, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// logWriter sends a store's log to the test's.
type logWriter struct{ tb testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// newCluster returns a cluster of the given Redis servers, named r0, r1,
// ..., each holding an equal range of shards.
func newCluster(tb testing.TB, shards int, servers ...*dbtest.RedisServer) *redis.Cluster {
	tb.Helper()
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.Addr())
	}
	return clusterAt(tb, shards, time.Second, addrs...)
}

// clusterAt is newCluster with addresses and the cluster's timeout.
func clusterAt(tb testing.TB, shards int, timeout time.Duration, addrs ...string) *redis.Cluster {
	tb.Helper()
	cfg := redis.Config{Shards: shards, Timeout: timeout}
	for i, addr := range addrs {
		name := fmt.Sprintf("r%d", i)
		cfg.Nodes = append(cfg.Nodes, redis.Node{Name: name, Addr: addr})
		cfg.Map = append(cfg.Map, cellar.Assignment{Node: name, ShardRange: cellar.ShardRange{
			First: i * shards / len(addrs), Last: (i+1)*shards/len(addrs) - 1,
		}})
	}
	c, err := redis.Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// clock is a manual clock shared by stores under test.
type clock struct {
	mu sync.Mutex // protects t
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

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

// counts is a cache.Observer that remembers what it was told.
type counts struct {
	mu     sync.Mutex // protects the maps
	hits   map[string]int
	misses map[string]int
	errs   map[string]int // by "tier/op"
}

func newCounts() *counts {
	return &counts{hits: map[string]int{}, misses: map[string]int{}, errs: map[string]int{}}
}

func (c *counts) ObserveCache(tier string, hits, misses int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hits[tier] += hits
	c.misses[tier] += misses
}

func (c *counts) ObserveCacheError(tier, op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errs[tier+"/"+op]++
}

// take returns the hits and misses of tier since the last take.
func (c *counts) take(tier string) (hits, misses int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hits, misses = c.hits[tier], c.misses[tier]
	c.hits[tier], c.misses[tier] = 0, 0
	return hits, misses
}

func (c *counts) errors(tier, op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.errs[tier+"/"+op]
}

// counting is a cellar.Store that counts the reads that reach it.
type counting struct {
	cellar.Store
	mu    sync.Mutex // protects calls and batches
	calls map[string]int
	// batches holds the keys of every BatchGet call.
	batches [][]cellar.LookupKey
}

func newCounting(s cellar.Store) *counting { return &counting{Store: s, calls: map[string]int{}} }

func (c *counting) count(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[op]++
}

// take returns the number of op calls since the last take of op.
func (c *counting) take(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.calls[op]
	c.calls[op] = 0
	return n
}

func (c *counting) Get(ctx context.Context, k cellar.Key) (cellar.Cell, error) {
	c.count("get")
	return c.Store.Get(ctx, k)
}

func (c *counting) Latest(ctx context.Context, row, col string) (cellar.Cell, error) {
	c.count("latest")
	return c.Store.Latest(ctx, row, col)
}

func (c *counting) Row(ctx context.Context, row string, cols []string) ([]cellar.Cell, error) {
	c.count("row")
	return c.Store.Row(ctx, row, cols)
}

func (c *counting) BatchGet(ctx context.Context, keys []cellar.LookupKey) []cellar.GetResult {
	c.count("batch_get")
	c.mu.Lock()
	c.batches = append(c.batches, append([]cellar.LookupKey(nil), keys...))
	c.mu.Unlock()
	return c.Store.BatchGet(ctx, keys)
}

func put(tb testing.TB, s cellar.Store, row, col string, ref int64, body string) cellar.Cell {
	tb.Helper()
	b, err := cellar.CheckBody([]byte(body), cellar.DefaultMaxBodyBytes)
	if err != nil {
		tb.Fatal(err)
	}
	c, _, err := s.Put(ctx(tb), cellar.NewCell{Key: cellar.Key{RowKey: row, Column: col, RefKey: ref}, Body: b})
	if err != nil {
		tb.Fatalf("Put(%q, %s, %d): %v", row, col, ref, err)
	}
	return c
}

// latestRef returns the ref_key of the latest cell of (row, col), or -1 if
// there is none.
func latestRef(tb testing.TB, s cellar.Store, row, col string) int64 {
	tb.Helper()
	c, err := s.Latest(ctx(tb), row, col)
	if err != nil {
		if cellar.ErrorCode(err) == cellar.ENOTFOUND {
			return -1
		}
		tb.Fatalf("Latest(%q, %s): %v", row, col, err)
	}
	return c.RefKey
}

func ref(n int64) *int64 { return &n }
