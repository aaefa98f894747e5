package index_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/index"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// TestBackfill defines an index over cells written before it and checks
// that they are all indexed and the index becomes ready.
func TestBackfill(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOpts{})
		want := []string{}
		for i := 0; i < 50; i++ {
			row := fmt.Sprintf("r%02d", i)
			e.put(row, "profile", 1, user([]string{"a", "b"}[i%2], i, 0))
			if i%2 == 0 {
				want = append(want, row)
			}
		}
		ix := e.define("ix", usersByCity)
		if ix.State != "backfilling" || ix.Generation != 1 {
			t.Errorf("new index = %+v; want generation 1, backfilling", ix)
		}
		res := e.synced("ix", index.Query{Where: []index.Cond{eq("city", "a")}})
		if got := rows(res); !slices.Equal(got, want) {
			t.Errorf("backfilled a = %v; want %v", got, want)
		}
		waitUntil(t, "the index to be ready", func() bool {
			st, err := e.manager.Status(bg(), "ix")
			return err == nil && st.State == "ready"
		})
		st, err := e.manager.Status(bg(), "ix")
		if err != nil {
			t.Fatal(err)
		}
		if st.Lag.ShardsBehind != 0 || st.Lag.Done != 1 || st.Lag.ShardsTotal == 0 || st.Lag.Trigger != "_index.ix.1" {
			t.Errorf("status of a caught-up index: %+v", st.Lag)
		}
	})
}

// TestRebuild rebuilds an index while it serves queries, checks that the
// new generation takes over with the same answers, and that the old one is
// dropped afterwards.
func TestRebuild(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOpts{retireAfter: 50 * time.Millisecond})
		e.define("ix", usersByCity)
		for i := 0; i < 20; i++ {
			e.put(fmt.Sprintf("r%02d", i), "profile", 1, user("a", i, 0))
		}
		before := rows(e.synced("ix", index.Query{Where: []index.Cond{eq("city", "a")}}))
		if len(before) != 20 {
			t.Fatalf("before the rebuild: %d rows; want 20", len(before))
		}
		ix, err := e.manager.Rebuild(bg(), "ix")
		if err != nil {
			t.Fatal(err)
		}
		if ix.Rebuilding != 2 || ix.Generation != 1 {
			t.Errorf("after Rebuild: %+v; want generation 1 serving, 2 building", ix)
		}
		if _, err := e.manager.Rebuild(bg(), "ix"); !errors.Is(err, cellar.ErrConflict) {
			t.Errorf("a second rebuild: %v; want conflict", err)
		}
		// Queries keep working during the rebuild, and writes go on.
		for i := 20; i < 30; i++ {
			e.put(fmt.Sprintf("r%02d", i), "profile", 1, user("a", i, 0))
			if got := len(e.query("ix", index.Query{Where: []index.Cond{eq("city", "a")}}).Entries); got < 20 {
				t.Errorf("during the rebuild a query returned %d rows; want at least 20", got)
			}
		}
		waitUntil(t, "the rebuild to take over", func() bool {
			ix, err := e.manager.Index(bg(), "ix")
			return err == nil && ix.Generation == 2 && ix.Rebuilding == 0
		})
		after := rows(e.synced("ix", index.Query{Where: []index.Cond{eq("city", "a")}}))
		if len(after) != 30 {
			t.Errorf("after the rebuild: %d rows; want 30", len(after))
		}
		// Generation 1 is dropped once retired long enough.
		waitUntil(t, "generation 1 to be dropped", func() bool { return rawEntries(t, e, "ix", 1, "a") == 0 })
		if n := rawEntries(t, e, "ix", 2, "a"); n != 30 {
			t.Errorf("generation 2 holds %d entries; want 30", n)
		}
		waitUntil(t, "generation 1's trigger to be deleted", func() bool {
			_, err := e.engine.Trigger(bg(), "_index.ix.1")
			return errors.Is(err, cellar.ErrNotFound)
		})
	})
}

// TestDefineAndDelete covers creating, redefining, deleting and
// re-creating an index.
func TestDefineAndDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, envOpts{retireAfter: 50 * time.Millisecond})
		if _, created, err := e.manager.Define(bg(), "ix", usersByCity); err != nil || !created {
			t.Fatalf("Define = %v, %v; want created", created, err)
		}
		if _, created, err := e.manager.Define(bg(), "ix", usersByCity); err != nil || created {
			t.Errorf("Define again, same definition = %v, %v; want not created, no error", created, err)
		}
		other := index.Definition{Column: "profile", Fields: []index.Field{{Name: "city", Type: index.TypeString}}}
		if _, _, err := e.manager.Define(bg(), "ix", other); !errors.Is(err, cellar.ErrConflict) {
			t.Errorf("Define with another definition: %v; want conflict", err)
		}
		e.put("u1", "profile", 1, user("a", 1, 1))
		if got := rows(e.synced("ix", index.Query{Where: []index.Cond{eq("city", "a")}})); len(got) != 1 {
			t.Fatalf("before delete: %v", got)
		}
		list, err := e.manager.Indexes(bg())
		if err != nil || len(list) != 1 || list[0].Name != "ix" {
			t.Errorf("Indexes = %+v, %v", list, err)
		}
		if err := e.manager.Delete(bg(), "ix"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.manager.Query(bg(), "ix", index.Query{Where: []index.Cond{eq("city", "a")}}); !errors.Is(err, cellar.ErrNotFound) {
			t.Errorf("query of a deleted index: %v; want not found", err)
		}
		if err := e.manager.Delete(bg(), "ix"); !errors.Is(err, cellar.ErrNotFound) {
			t.Errorf("deleting twice: %v; want not found", err)
		}
		if list, _ := e.manager.Indexes(bg()); len(list) != 0 {
			t.Errorf("Indexes after delete = %+v", list)
		}
		waitUntil(t, "the deleted index's entries to be dropped", func() bool { return rawEntries(t, e, "ix", 1, "a") == 0 })
		waitUntil(t, "the deleted index's record to go", func() bool {
			_, err := e.meta.IndexRecord(bg(), "ix")
			return errors.Is(err, cellar.ErrNotFound)
		})
		// The name can be used again, with another definition.
		ix, created, err := e.manager.Define(bg(), "ix", other)
		if err != nil || !created {
			t.Fatalf("re-create = %v, %v", created, err)
		}
		res := e.synced("ix", index.Query{Where: []index.Cond{eq("city", "a")}})
		if got := rows(res); !slices.Equal(got, []string{"u1"}) || len(res.Entries[0].Fields) != 1 {
			t.Errorf("re-created index (generation %d): %+v", ix.Generation, res.Entries)
		}
	})
}

// TestDeleteSeenByOtherServer guards what another server (a Manager over
// the same nodes, with the default refresh) promises about a delete and a
// re-create made through the first: it stops answering the deleted index
// within its refresh, and once it has, answers the re-created one at once
// (it used to refuse it, from its cache, until the next refresh).
func TestDeleteSeenByOtherServer(t *testing.T) {
	e := newEnv(t, backends[0], envOpts{})
	e.define("ix", usersByCity)
	e.put("u1", "profile", 1, user("paris", 30, 1))
	e.synced("ix", index.Query{Where: []index.Cond{eq("city", "paris")}})

	other, err := index.New(index.Options{Cells: e.cells, Entries: e.cells, Records: e.meta, Triggers: e.engine, ShardCount: testShards, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	other.Start()
	t.Cleanup(func() { other.Close() })
	paris := index.Query{Where: []index.Cond{eq("city", "paris")}}
	if _, err := other.Query(bg(), "ix", paris); err != nil {
		t.Fatalf("query on the other server: %v", err)
	}

	if err := e.manager.Delete(bg(), "ix"); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	waitUntil(t, "the other server to stop answering the deleted index", func() bool {
		_, err := other.Query(bg(), "ix", paris)
		return errors.Is(err, cellar.ErrNotFound)
	})
	if d := time.Since(deleted); d > 3*index.DefaultRefresh {
		t.Errorf("the other server answered the deleted index for %s; want within its refresh (%s)", d, index.DefaultRefresh)
	}
	// Re-created at once with another shard field: the other server
	// answers it before its next refresh.
	e.define("ix", index.Definition{Column: "profile", Fields: []index.Field{{Name: "name", Type: index.TypeString}}})
	if _, err := other.Query(bg(), "ix", index.Query{Where: []index.Cond{eq("name", "paris-30")}}); err != nil {
		t.Errorf("query of the re-created index (shard field name) on the other server: %v", err)
	}
}

// TestRefreshKeepsNewerRecord guards the cache against a refresh that
// read the records before a Delete made in the same process and stored
// them after it: the refresh used to bring the deleted index back to life
// until the next one.
func TestRefreshKeepsNewerRecord(t *testing.T) {
	e := newEnv(t, backends[0], envOpts{noStart: true})
	recs := &gatedRecords{Store: e.meta}
	m, err := index.New(index.Options{Cells: e.cells, Entries: e.cells, Records: recs, Triggers: e.engine, ShardCount: testShards,
		Workers: 1, Refresh: 5 * time.Millisecond, RetireAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if _, _, err := m.Define(bg(), "ix", usersByCity); err != nil {
		t.Fatal(err)
	}
	paris := index.Query{Where: []index.Cond{eq("city", "paris")}}
	m.Start()
	// Once ready, a refresh has nothing to write back for ix.
	waitUntil(t, "ix to be ready", func() bool {
		ix, err := m.Index(bg(), "ix")
		return err == nil && ix.State == "ready"
	})
	gate := recs.hold()
	<-gate.read // a refresh has read the records: ix is live
	if err := m.Delete(bg(), "ix"); err != nil {
		t.Fatal(err)
	}
	next := recs.hold()
	close(gate.release)
	<-next.read // the refresh that read them is over
	_, err = m.Query(bg(), "ix", paris)
	close(next.release)
	if !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("query after Delete and a refresh that began before it: %v; want not found", err)
	}
}

// gatedRecords holds the next IndexRecords call, once armed by hold,
// after its read: read is closed when it has read, and it returns when
// release is closed.
type gatedRecords struct {
	*sqlstore.Store
	mu   sync.Mutex
	gate *recordsGate
}

type recordsGate struct{ read, release chan struct{} }

// takeGate takes the gate armed in *slot (under mu), leaving none.
func takeGate(mu *sync.Mutex, slot **recordsGate) *recordsGate {
	mu.Lock()
	defer mu.Unlock()
	g := *slot
	*slot = nil
	return g
}

// pass signals that the held call has read, and waits for its release;
// a nil gate holds nothing.
func (g *recordsGate) pass() {
	if g != nil {
		close(g.read)
		<-g.release
	}
}

func (g *gatedRecords) hold() *recordsGate {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = &recordsGate{read: make(chan struct{}), release: make(chan struct{})}
	return g.gate
}

func (g *gatedRecords) IndexRecords(ctx context.Context) ([]sqlstore.IndexRecord, error) {
	recs, err := g.Store.IndexRecords(ctx)
	takeGate(&g.mu, &g.gate).pass()
	return recs, err
}

// TestInvalid checks that bad definitions and queries are refused with
// EINVALID and change nothing.
func TestInvalid(t *testing.T) {
	e := newEnv(t, backends[0], envOpts{})
	for _, c := range []struct {
		name string
		def  index.Definition
	}{
		{"1bad", usersByCity},
		{"", usersByCity},
		{"has-dash", usersByCity},
		{"ok", index.Definition{Column: "bad column", Fields: usersByCity.Fields}},
		{"ok", index.Definition{Column: "c"}},
		{"ok", index.Definition{Column: "c", Fields: []index.Field{{"a", "int"}, {"b", "int"}, {"c", "int"}, {"d", "int"}, {"e", "int"}}}},
		{"ok", index.Definition{Column: "c", Fields: []index.Field{{"a", "int"}, {"a", "string"}}}},
		{"ok", index.Definition{Column: "c", Fields: []index.Field{{"a", "decimal"}}}},
		{"ok", index.Definition{Column: "c", Fields: []index.Field{{"a..b", "int"}}}},
		{"ok", index.Definition{Column: "c", Fields: []index.Field{{"", "int"}}}},
	} {
		if _, _, err := e.manager.Define(bg(), c.name, c.def); !errors.Is(err, cellar.ErrInvalid) {
			t.Errorf("Define(%q, %+v): %v; want invalid", c.name, c.def, err)
		}
	}
	if list, _ := e.manager.Indexes(bg()); len(list) != 0 {
		t.Errorf("refused definitions left %+v", list)
	}
	e.define("ix", usersByCity)
	for _, q := range []index.Query{
		{},
		{Where: []index.Cond{eq("age", 3)}},
		{Where: []index.Cond{{Field: "city", Gt: raw("a")}}},
		{Where: []index.Cond{{Field: "city", Eq: json.RawMessage("null")}}},
		{Where: []index.Cond{eq("city", 3)}},
		{Where: []index.Cond{eq("city", "a"), eq("age", "old")}},
		{Where: []index.Cond{eq("city", "a"), eq("age", 1.5)}},
		{Where: []index.Cond{eq("city", "a"), eq("nope", 1)}},
		{Where: []index.Cond{eq("city", "a"), eq("city", "b")}},
		{Where: []index.Cond{eq("city", "a"), {Field: "age", Eq: raw(1), Gt: raw(0)}}},
		{Where: []index.Cond{eq("city", "a"), {Field: "age", Gt: raw(1), Gte: raw(0)}}},
		{Where: []index.Cond{eq("city", "a"), {Field: "age", Lt: json.RawMessage("null")}}},
		{Where: []index.Cond{eq("city", "a"), {Field: "age"}}},
		{Where: []index.Cond{eq("city", "a")}, Order: "nope"},
		{Where: []index.Cond{eq("city", "a")}, Fields: []string{"nope"}},
		{Where: []index.Cond{eq("city", "a")}, Limit: -1},
		{Where: []index.Cond{eq("city", "a")}, Limit: cellar.MaxIndexLimit + 1},
		{Where: []index.Cond{eq("city", "a")}, Cursor: "not a cursor"},
		{Where: []index.Cond{eq("city", "a")}, Cursor: "e30"},
		{Where: []index.Cond{eq("city", "a")}, WaitFor: []index.CellPos{{Shard: testShards, AddedID: 1}}, Wait: time.Second},
		{Where: []index.Cond{eq("city", "a")}, WaitFor: []index.CellPos{{Shard: 0, AddedID: 0}}, Wait: time.Second},
		{Where: []index.Cond{eq("city", "a")}, WaitFor: []index.CellPos{{Shard: 0, AddedID: 1}}, Wait: 2 * index.MaxWait},
	} {
		if _, err := e.manager.Query(bg(), "ix", q); !errors.Is(err, cellar.ErrInvalid) {
			t.Errorf("Query(%+v): %v; want invalid", q, err)
		}
	}
	if _, err := e.manager.Query(bg(), "nope", index.Query{Where: []index.Cond{eq("city", "a")}}); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("query of an unknown index: %v; want not found", err)
	}
}

// TestWaitTimesOut checks that a read-your-writes wait that the index
// cannot meet (nothing maintains it) fails as unavailable after its wait.
func TestWaitTimesOut(t *testing.T) {
	e := newEnv(t, backends[0], envOpts{noStart: true})
	e.define("ix", usersByCity)
	c := e.put("u1", "profile", 1, user("a", 1, 1))
	start := time.Now()
	_, err := e.manager.Query(bg(), "ix", index.Query{Where: []index.Cond{eq("city", "a")},
		WaitFor: []index.CellPos{{Shard: c.Shard, AddedID: c.AddedID}}, Wait: 100 * time.Millisecond})
	if !errors.Is(err, cellar.ErrUnavailable) {
		t.Errorf("wait for an index nobody maintains: %v; want unavailable", err)
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Errorf("the wait gave up before its time")
	}
}
