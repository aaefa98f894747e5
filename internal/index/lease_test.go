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
	"github.com/cellar-db/cellar/internal/trigger"
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
	keys := oneShardKeys(8)
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

// oneShardKeys returns n row keys of one shard.
func oneShardKeys(n int) []string {
	var keys []string
	for i := 0; len(keys) < n; i++ {
		k := fmt.Sprintf("u%d", i)
		if cellar.ShardOf(k, testShards) == cellar.ShardOf("u0", testShards) {
			keys = append(keys, k)
		}
	}
	return keys
}

// stuckEntries holds the first index entry written until its context is
// done (or the test gives up), as a node that stopped answering would, and
// then sends the context's cause to ended.
type stuckEntries struct {
	cellar.IndexStore
	once    *sync.Once
	started chan struct{} // closed at the first entry
	ended   chan error    // buffered
	giveUp  chan struct{} // closed by the test's cleanup
}

func (s stuckEntries) PutIndexEntry(ctx context.Context, e cellar.IndexEntry) error {
	first := false
	s.once.Do(func() { first = true; close(s.started) })
	if first {
		select {
		case <-ctx.Done():
			s.ended <- context.Cause(ctx)
			return ctx.Err()
		case <-s.giveUp:
		}
	}
	return s.IndexStore.PutIndexEntry(ctx, e)
}

// downRenewals fails the manager's lease renewals with unavailable, or
// hangs them until their context is done, while down is set: a metadata
// node that cannot be reached, or no longer answers.
type downRenewals struct {
	engine *trigger.Engine
	hang   bool
	down   atomic.Bool
	tried  atomic.Int64 // renewals made while down
}

func (d *downRenewals) renew(ctx context.Context, name string, token int64, shard int) (trigger.Lease, error) {
	if !d.down.Load() {
		return d.engine.Renew(ctx, name, token, shard)
	}
	d.tried.Add(1)
	if d.hang {
		<-ctx.Done()
		return trigger.Lease{}, ctx.Err()
	}
	return trigger.Lease{}, cellar.Errorf(cellar.EUNAVAILABLE, "metadata node unreachable")
}

// A batch whose lease cannot be renewed, because renewals fail or hang,
// stops unacknowledged once the lease has run out on the maintainer's
// clock, as when a renewal is refused as stale: another server may have
// taken the shard by then, and two maintainers of one row at once could
// leave its entry behind its latest cell. Once renewals work again the
// cells are delivered again and the index catches up.
func TestLeaseRunsOutWithoutRenewals(t *testing.T) {
	for _, hang := range []bool{false, true} {
		name := "failing"
		if hang {
			name = "hanging"
		}
		t.Run(name, func(t *testing.T) {
			const lease = 2 * time.Second
			stuck := stuckEntries{once: new(sync.Once), started: make(chan struct{}), ended: make(chan error, 1), giveUp: make(chan struct{})}
			e := newEnv(t, backends[0], envOpts{noStart: true, leaseTTL: lease, entries: func(s cellar.IndexStore) cellar.IndexStore {
				stuck.IndexStore = s
				return stuck
			}})
			renewals := &downRenewals{engine: e.engine, hang: hang}
			renewals.down.Store(true)
			index.SetRenew(e.manager, renewals.renew)
			t.Cleanup(func() { close(stuck.giveUp) }) // before the manager is closed
			ix := e.define("ix", usersByCity)
			keys := oneShardKeys(4)
			for _, k := range keys {
				e.put(k, "profile", 1, user("paris", 30, 1))
			}
			e.manager.Start()
			<-stuck.started
			// The batch ends only when its context does: at the lease's
			// end, give or take scheduling, so the limit is generous.
			select {
			case cause := <-stuck.ended:
				t.Logf("batch stopped after %d renewal attempts: %v", renewals.tried.Load(), cause)
			case <-time.After(15 * lease):
				t.Fatalf("the batch went on %v past the start of its %v lease, with every renewal failing", 15*lease, lease)
			}
			tname := "_index.ix." + fmt.Sprint(ix.Generation)
			off, err := e.meta.TriggerOffset(bg(), tname, cellar.ShardOf(keys[0], testShards))
			if err != nil {
				t.Fatal(err)
			}
			if off != 0 {
				t.Errorf("offset of the stopped batch's shard = %d; want 0 (unacknowledged)", off)
			}
			renewals.down.Store(false)
			res := e.synced("ix", index.Query{Where: []index.Cond{eq("city", "paris")}})
			if len(res.Entries) != len(keys) {
				t.Errorf("paris = %v; want the %d rows", rows(res), len(keys))
			}
		})
	}
}
