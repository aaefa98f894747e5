package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// clock is a settable time source for the store.
type clock struct {
	mu  sync.Mutex // protects now
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// TestFlushRetention checks the bound on remembering applied flushes: a
// flush retried within sqlstore.FlushRetention is not applied again, while
// records older than that are deleted as later flushes go by, after which
// a retry would apply again.
func TestFlushRetention(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &clock{now: t0}
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "n.db"), sqlite.Options{
		Options: sqlstore.Options{Name: "n", ShardCount: 8, Create: true, Now: clk.Now},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	apply := func(id string) {
		t.Helper()
		if err := s.ApplyCounterDeltas(ctx, id, map[string]int64{"c": 1}); err != nil {
			t.Fatalf("apply %s: %v", id, err)
		}
	}
	records := func() int {
		t.Helper()
		var n int
		if err := s.DB().QueryRow("SELECT COUNT(*) FROM counter_flushes").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	value := func() int64 {
		t.Helper()
		v, err := s.Counters(ctx, []string{"c"})
		if err != nil {
			t.Fatal(err)
		}
		return v["c"]
	}
	apply("old")
	// Many flushes just inside the retention delete nothing.
	clk.Set(t0.Add(sqlstore.FlushRetention - time.Minute))
	for i := 0; i < 200; i++ {
		apply(fmt.Sprintf("a-%d", i))
	}
	if n := records(); n != 201 {
		t.Fatalf("%d flush records inside the retention; want 201", n)
	}
	apply("old")
	if v := value(); v != 201 {
		t.Fatalf("counter = %d after a retry inside the retention; want 201 (not applied again)", v)
	}
	// Past the retention, later flushes delete the old records: about one
	// flush in 16 prunes, so 200 flushes surely do.
	clk.Set(t0.Add(sqlstore.FlushRetention + 2*time.Minute))
	for i := 0; i < 200; i++ {
		apply(fmt.Sprintf("b-%d", i))
	}
	if n := records(); n != 200+200 {
		t.Fatalf("%d flush records; want 400 (old's pruned, a-* still kept)", n)
	}
	apply("old")
	if v := value(); v != 402 {
		t.Errorf("counter = %d after a retry past the retention; want 402 (applied again, the documented bound)", v)
	}
	// Once everything has expired, the table empties as flushes go on.
	clk.Set(t0.Add(10 * sqlstore.FlushRetention))
	for i := 0; i < 100; i++ {
		apply(fmt.Sprintf("c-%d", i))
	}
	if n := records(); n > 100 {
		t.Errorf("%d flush records after everything before expired; want at most the 100 new ones", n)
	}
}
