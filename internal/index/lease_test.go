package index_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/index"
)

// slowEntries delays every index entry written, as a slow node would,
// and closes started at the first.
type slowEntries struct {
	cellar.IndexStore
	delay   time.Duration
	once    *sync.Once
	started chan struct{}
}

func (s slowEntries) PutIndexEntry(ctx context.Context, e cellar.IndexEntry) error {
	s.once.Do(func() { close(s.started) })
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.IndexStore.PutIndexEntry(ctx, e)
}

// A batch that takes longer than the lease keeps its shard: the
// maintainer renews the lease while it works, so no other consumer is
// given the batch's cells meanwhile (two maintainers of one row at once
// could leave its entry behind its latest cell).
func TestSlowBatchKeepsItsLease(t *testing.T) {
	const lease = 300 * time.Millisecond
	started := make(chan struct{})
	e := newEnv(t, backends[0], envOpts{noStart: true, leaseTTL: lease, entries: func(s cellar.IndexStore) cellar.IndexStore {
		return slowEntries{IndexStore: s, delay: 150 * time.Millisecond, once: new(sync.Once), started: started}
	}})
	ix := e.define("ix", usersByCity)
	// Rows of one shard, written before maintenance starts, so that they
	// are one batch under one lease: it takes about 8 × 150 ms, four
	// leases.
	var keys []string
	for i := 0; len(keys) < 8; i++ {
		k := fmt.Sprintf("u%d", i)
		if cellar.ShardOf(k, testShards) == cellar.ShardOf("u0", testShards) {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		e.put(k, "profile", 1, user("paris", 30, 1))
	}
	e.manager.Start()
	<-started
	var intruded atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := e.engine.Claim(context.Background(), "_index.ix."+fmt.Sprint(ix.Generation), "intruder", 100, 50*time.Millisecond)
			if err == nil && c.Lease != nil && len(c.Cells) > 0 {
				intruded.Add(int64(len(c.Cells)))
				return // its lease runs out, and the cells go back
			}
		}
	}()
	res := e.synced("ix", index.Query{Where: []index.Cond{eq("city", "paris")}})
	close(stop)
	<-done
	if n := intruded.Load(); n > 0 {
		t.Errorf("another consumer was given %d cells of the batch while it was maintained", n)
	}
	if len(res.Entries) != len(keys) {
		t.Errorf("paris = %v; want the %d rows", rows(res), len(keys))
	}
}
