package index_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/index"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

// holdingRecords wraps the metadata node: it can hold the next IndexRecord
// (singular) call after its read, signal the first TriggerOffset call,
// and counts IndexRecords calls.
type holdingRecords struct {
	*sqlstore.Store
	mu         sync.Mutex
	recordGate *recordsGate
	offsetSeen chan struct{}
	lists      atomic.Int64
}

func (z *holdingRecords) holdRecord() *recordsGate {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.recordGate = &recordsGate{read: make(chan struct{}), release: make(chan struct{})}
	return z.recordGate
}

func (z *holdingRecords) IndexRecord(ctx context.Context, name string) (sqlstore.IndexRecord, error) {
	rec, err := z.Store.IndexRecord(ctx, name)
	takeGate(&z.mu, &z.recordGate).pass()
	return rec, err
}

func (z *holdingRecords) IndexRecords(ctx context.Context) ([]sqlstore.IndexRecord, error) {
	defer z.lists.Add(1)
	return z.Store.IndexRecords(ctx)
}

func (z *holdingRecords) TriggerOffset(ctx context.Context, name string, shard int) (int64, error) {
	z.mu.Lock()
	if z.offsetSeen != nil {
		close(z.offsetSeen)
		z.offsetSeen = nil
	}
	z.mu.Unlock()
	return z.Store.TriggerOffset(ctx, name, shard)
}

func managerOver(t *testing.T, e *env, recs index.Records, refresh time.Duration) *index.Manager {
	t.Helper()
	m, err := index.New(index.Options{Cells: e.cells, Entries: e.cells, Records: recs, Triggers: e.engine, ShardCount: testShards,
		Workers: 2, Refresh: refresh, RetireAfter: time.Hour, ClockSkew: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Races of queries, definitions and deletes, found in a review on
// 2026-12-03; each test failed before its fix.

// A query with wait_for is planned with the definition it loaded first;
// the index is deleted and defined again (another definition, the same
// fields named) during the wait. The query is planned again for the
// generation it then reads: before, the old plan's field positions ran
// against the new generation's entries, and found nothing.
func TestWaitForAcrossRecreate(t *testing.T) {
	e := newEnv(t, backends[0], envOpts{noStart: true})
	recs := &holdingRecords{Store: e.meta, offsetSeen: make(chan struct{})}
	seen := recs.offsetSeen
	m := managerOver(t, e, recs, 20*time.Millisecond)
	d1 := index.Definition{Column: "profile", Fields: []index.Field{{Name: "city", Type: index.TypeString}, {Name: "age", Type: index.TypeInt}}}
	d2 := index.Definition{Column: "profile", Fields: []index.Field{{Name: "city", Type: index.TypeString}, {Name: "score", Type: index.TypeInt}, {Name: "age", Type: index.TypeInt}}}
	if _, _, err := m.Define(bg(), "ix", d1); err != nil {
		t.Fatal(err)
	}
	c := e.put("u1", "profile", 1, map[string]any{"city": "paris", "age": 40, "score": 0})
	q := index.Query{Where: []index.Cond{eq("city", "paris"), {Field: "age", Gte: raw(30)}},
		WaitFor: []index.CellPos{{Shard: c.Shard, AddedID: c.AddedID}}, Wait: 20 * time.Second}
	type out struct {
		res index.Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := m.Query(bg(), "ix", q)
		done <- out{res, err}
	}()
	<-seen // the query is planned (with d1) and waiting
	if err := m.Delete(bg(), "ix"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Define(bg(), "ix", d2); err != nil {
		t.Fatal(err)
	}
	m.Start() // maintains the new generation: the wait ends
	o := <-done
	if o.err != nil {
		t.Logf("query failed: %v (acceptable)", o.err)
		return
	}
	if got := rows(o.res); !slices.Equal(got, []string{"u1"}) {
		t.Errorf("wait_for on u1 across a delete and re-create = %v, no error; want [u1] (its cell matches city=paris, age>=30 under both definitions) or an error", got)
	}
}

// Two servers define the same new index at once. B reads "no record"
// and, before it writes, A creates the index and its workers start; B
// then clears generation 1's trigger "left behind", which is the live
// one, and finds the record unchanged. The workers define the trigger
// again when they find it gone: before, maintenance stopped for good.
func TestConcurrentDefineKeepsTrigger(t *testing.T) {
	e := newEnv(t, backends[0], envOpts{noStart: true})
	a := managerOver(t, e, e.meta, 20*time.Millisecond)
	recsB := &holdingRecords{Store: e.meta}
	b := managerOver(t, e, recsB, 20*time.Millisecond)
	a.Start()
	b.Start()
	gate := recsB.holdRecord()
	bDone := make(chan error, 1)
	go func() {
		_, _, err := b.Define(bg(), "ix", usersByCity)
		bDone <- err
	}()
	<-gate.read // B has seen no record
	if _, _, err := a.Define(bg(), "ix", usersByCity); err != nil {
		t.Fatal(err)
	}
	c1 := e.put("u1", "profile", 1, user("paris", 30, 1))
	paris := []index.Cond{eq("city", "paris")}
	res, err := a.Query(bg(), "ix", index.Query{Where: paris, WaitFor: []index.CellPos{{Shard: c1.Shard, AddedID: c1.AddedID}}, Wait: 20 * time.Second})
	if err != nil || !slices.Equal(rows(res), []string{"u1"}) {
		t.Fatalf("before B's define: %v, %v", rows(res), err)
	}
	time.Sleep(300 * time.Millisecond) // B's refresh starts its workers too
	close(gate.release)
	if err := <-bDone; err != nil {
		t.Fatalf("B's define: %v", err)
	}
	// The engines decide claims on their copy of the trigger for up to a
	// second (trigger.DefaultStateRefresh); past it, the deletion shows.
	time.Sleep(2 * trigger.DefaultStateRefresh)
	c2 := e.put("u2", "profile", 1, user("paris", 31, 1))
	for i, m := range []*index.Manager{a, b} {
		res, err = m.Query(bg(), "ix", index.Query{Where: paris, WaitFor: []index.CellPos{{Shard: c2.Shard, AddedID: c2.AddedID}}, Wait: 5 * time.Second})
		if err != nil || !slices.Equal(rows(res), []string{"u1", "u2"}) {
			t.Errorf("server %d: a put after both defines: %v, %v; want [u1 u2] (the index is maintained)", i, rows(res), err)
		}
		if _, err := m.Status(bg(), "ix"); err != nil {
			t.Errorf("server %d: Status after both defines: %v; want the index's status", i, err)
		}
	}
}

// A server with no cached record of an index starts a query (it reads the
// stored, live record); the same server deletes the index before the
// query caches what it read. Queries made after Delete returned get not
// found: before, the earlier read overwrote the delete in the cache, and
// they were answered from the stale live record.
func TestDeleteBeatsEarlierRead(t *testing.T) {
	e := newEnv(t, backends[0], envOpts{})
	recs := &holdingRecords{Store: e.meta}
	b := managerOver(t, e, recs, time.Hour)
	b.Start()
	waitUntil(t, "B's first refresh", func() bool { return recs.lists.Load() >= 1 })
	e.define("ix", usersByCity)
	e.put("u1", "profile", 1, user("paris", 30, 1))
	paris := index.Query{Where: []index.Cond{eq("city", "paris")}}
	e.synced("ix", paris)

	gate := recs.holdRecord()
	done := make(chan error, 1)
	go func() {
		_, err := b.Query(bg(), "ix", paris)
		done <- err
	}()
	<-gate.read // the query read the live record
	if err := b.Delete(bg(), "ix"); err != nil {
		t.Fatal(err)
	}
	close(gate.release)
	<-done // began before the delete: either answer is fine
	if _, err := b.Query(bg(), "ix", paris); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("query on the deleting server after Delete returned: %v; want not found (\"The server that deletes it stops answering at once\")", err)
	}
	if _, err := b.Index(bg(), "ix"); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("Index on the deleting server after Delete returned: %v; want not found", err)
	}
}
