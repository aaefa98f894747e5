package counter

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/mysql"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// The tests here run the buffers over the real thing: the sharding layer
// over a SQLite, a PostgreSQL and a MariaDB node.

const nodeShards = 30

func nodeOptions(name string) sqlstore.Options {
	return sqlstore.Options{Name: name, ShardCount: nodeShards, Create: true}
}

func openSQLite(tb testing.TB) *sqlstore.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "n.db"), sqlite.Options{Options: nodeOptions("lite")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func openPostgres(tb testing.TB, dsn string) *sqlstore.Store {
	tb.Helper()
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{Options: nodeOptions("pg")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func openMySQL(tb testing.TB) *sqlstore.Store {
	tb.Helper()
	s, err := mysql.Open(context.Background(), dbtest.MySQL(tb), mysql.Options{Options: nodeOptions("my")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// thirds spreads the shards over lite, pg and my.
func thirds() *cellar.ShardMap {
	a, b := nodeShards/3, 2*nodeShards/3
	return &cellar.ShardMap{Version: 1, ShardCount: nodeShards, Assignments: []cellar.Assignment{
		{Node: "lite", ShardRange: cellar.ShardRange{First: 0, Last: a - 1}},
		{Node: "pg", ShardRange: cellar.ShardRange{First: a, Last: b - 1}},
		{Node: "my", ShardRange: cellar.ShardRange{First: b, Last: nodeShards - 1}},
	}}
}

func newShardStore(tb testing.TB, lite, pg, my *sqlstore.Store, timeout time.Duration) *shard.Store {
	tb.Helper()
	s, err := shard.New(thirds(), []*shard.Node{
		{Name: "lite", Driver: "sqlite", Store: lite},
		{Name: "pg", Driver: "postgres", Store: pg},
		{Name: "my", Driver: "mysql", Store: my},
	}, shard.Options{NodeTimeout: timeout})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// nodeKey returns a key with prefix whose shard is on the named node.
func nodeKey(node, prefix string) string {
	m := thirds()
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if m.NodeOf(cellar.ShardOf(k, nodeShards)) == node {
			return k
		}
	}
}

// countingNode counts the flushes and keys that reach the node.
type countingNode struct {
	cellar.CounterNode
	mu      sync.Mutex // protects perCall
	perCall []int      // keys of each successful ApplyCounterDeltas
}

func (n *countingNode) ApplyCounterDeltas(ctx context.Context, id string, deltas map[string]int64) error {
	err := n.CounterNode.ApplyCounterDeltas(ctx, id, deltas)
	if err == nil {
		n.mu.Lock()
		n.perCall = append(n.perCall, len(deltas))
		n.mu.Unlock()
	}
	return err
}

// bufferModes opens each kind of buffer over node, for tests that run
// over both.
func bufferModes(t *testing.T) []struct {
	name string
	open func(tb testing.TB, node cellar.CounterNode, opts Options) interface {
		cellar.CounterStore
		Flush(context.Context) error
		Stats() Stats
	}
} {
	return []struct {
		name string
		open func(tb testing.TB, node cellar.CounterNode, opts Options) interface {
			cellar.CounterStore
			Flush(context.Context) error
			Stats() Stats
		}
	}{
		{"journal", func(tb testing.TB, node cellar.CounterNode, opts Options) interface {
			cellar.CounterStore
			Flush(context.Context) error
			Stats() Stats
		} {
			return openJournal(tb, tb.TempDir(), node, opts)
		}},
		{"redis", func(tb testing.TB, node cellar.CounterNode, opts Options) interface {
			cellar.CounterStore
			Flush(context.Context) error
			Stats() Stats
		} {
			// As many logical shards as the storage nodes' (as cellar
			// serve has it), so that the buffer keeps a pair per node.
			return openRedisBuffer(tb, openClusterOf(tb, nodeShards, dbtest.Redis(tb), dbtest.Redis(tb)), node, opts)
		}},
	}
}

// TestRealNodes increments counters on every node concurrently through
// each buffer, flushing as it goes: the nodes end with exactly the
// increments made, one statement per distinct key per flush.
func TestRealNodes(t *testing.T) {
	for _, mode := range bufferModes(t) {
		t.Run(mode.name, func(t *testing.T) {
			store := newShardStore(t, openSQLite(t), openPostgres(t, dbtest.Postgres(t)), openMySQL(t), 5*time.Second)
			node := &countingNode{CounterNode: store}
			clock := newFakeClock()
			b := mode.open(t, node, testOptions(clock))
			keys := []string{nodeKey("lite", "hot"), nodeKey("pg", "hot"), nodeKey("my", "hot"), nodeKey("pg", "cold"), nodeKey("my", "cold")}
			want := make([]atomic.Int64, len(keys))
			ctx := context.Background()
			var wg sync.WaitGroup
			for w := 0; w < 16; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 60; i++ {
						k := i % 3
						if i%20 == 0 {
							k = 3 + i%2
						}
						by := int64(1 + w%3)
						if _, err := b.Incr(ctx, keys[k], by); err != nil {
							t.Error(err)
							return
						}
						want[k].Add(by)
					}
				}()
			}
			for i := 0; i < 3; i++ {
				clock.Advance(t, time.Second)
			}
			wg.Wait()
			clock.Advance(t, time.Second)
			vals, err := store.Counters(ctx, keys)
			if err != nil {
				t.Fatal(err)
			}
			for i, k := range keys {
				if vals[k] != want[i].Load() {
					t.Errorf("node value of %s = %d; want %d", k, vals[k], want[i].Load())
				}
				wantCounter(t, b, k, want[i].Load())
			}
			node.mu.Lock()
			defer node.mu.Unlock()
			st := b.Stats()
			var total int
			for _, n := range node.perCall {
				total += n
				if n > len(keys) {
					t.Errorf("a flush sent %d keys; there are only %d", n, len(keys))
				}
			}
			if int64(total) != st.Statements || int64(len(node.perCall)) != st.Flushes {
				t.Errorf("Stats = %+v; the node saw %d flushes of %d keys", st, len(node.perCall), total)
			}
			t.Logf("%d flushes, keys per flush %v", len(node.perCall), node.perCall)
		})
	}
}

// swapNode is a CounterNode whose target a test replaces, as when a node
// comes back at a new address.
type swapNode struct {
	mu     sync.Mutex // protects target
	target cellar.CounterNode
}

func (n *swapNode) get() cellar.CounterNode {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.target
}

func (n *swapNode) set(t cellar.CounterNode) {
	n.mu.Lock()
	n.target = t
	n.mu.Unlock()
}

func (n *swapNode) ApplyCounterDeltas(ctx context.Context, id string, deltas map[string]int64) error {
	return n.get().ApplyCounterDeltas(ctx, id, deltas)
}

func (n *swapNode) Counters(ctx context.Context, keys []string) (map[string]int64, error) {
	return n.get().Counters(ctx, keys)
}

// CounterNodeName implements cellar.CounterPlacer when the target does.
func (n *swapNode) CounterNodeName(key string) string {
	if p, ok := n.get().(cellar.CounterPlacer); ok {
		return p.CounterNodeName(key)
	}
	return ""
}

// CounterShardCount implements cellar.CounterShardPlacer when the target
// does (0 otherwise).
func (n *swapNode) CounterShardCount() int {
	if p, ok := n.get().(cellar.CounterShardPlacer); ok {
		return p.CounterShardCount()
	}
	return 0
}

// pgBehindProxy opens the three nodes, PostgreSQL's through a proxy that
// can stop or hang it, under a sharding layer with a 300 ms node timeout
// that a test can replace (node.set: a PostgreSQL back at a new address),
// and buffer options with a fake clock and a 1 s flush timeout.
func pgBehindProxy(t *testing.T) (lite, my *sqlstore.Store, pgDSN string, proxy *dbtest.Proxy, node *swapNode, opts Options) {
	t.Helper()
	lite, my = openSQLite(t), openMySQL(t)
	pgDSN = dbtest.Postgres(t)
	proxy, pg := pgVia(t, pgDSN)
	node = &swapNode{target: newShardStore(t, lite, pg, my, 300*time.Millisecond)}
	opts = testOptions(newFakeClock())
	opts.FlushTimeout = time.Second
	return lite, my, pgDSN, proxy, node, opts
}

// TestSQLNodeStoppedDuringFlush takes the PostgreSQL node away while
// flushes are in flight, again and again, by stopping its proxy or by
// hanging it (the machine stops answering, its transaction left open) and
// then stopping it, and brings it back through a new proxy. Increments
// never stop. In the end every node must hold exactly the increments
// acknowledged: a flush lost or applied twice around a failure fails this.
func TestSQLNodeStoppedDuringFlush(t *testing.T) {
	for _, mode := range bufferModes(t) {
		t.Run(mode.name, func(t *testing.T) {
			lite, my, pgDSN, proxy, node, opts := pgBehindProxy(t)
			b := mode.open(t, node, opts)

			keys := []string{nodeKey("pg", "hot"), nodeKey("lite", "hot"), nodeKey("my", "hot"), nodeKey("pg", "warm")}
			ctx := context.Background()
			for _, k := range keys { // load them while the node is up
				if _, err := b.Incr(ctx, k, 1); err != nil {
					t.Fatal(err)
				}
			}
			acked := make([]atomic.Int64, len(keys))
			for i := range acked {
				acked[i].Store(1)
			}
			stop := make(chan struct{})
			var reloadFailures atomic.Int64
			var wg sync.WaitGroup
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						k := (w + i) % len(keys)
						if _, err := b.Incr(ctx, keys[k], 1); err != nil {
							// Documented (docs/COUNTERS.md, "Reads"): a
							// counter left idle for one flush round has
							// its durable value dropped, and its next
							// increment, which must read it from the
							// storage node, fails while that node is
							// down, without being applied. Two flushes
							// back to back with the workers slowed
							// (-race, a loaded machine) leave a key idle.
							if cellar.ErrorCode(err) == cellar.EUNAVAILABLE && strings.Contains(err.Error(), "read durable counter") {
								reloadFailures.Add(1)
								time.Sleep(time.Millisecond)
								continue
							}
							t.Errorf("Incr(%s) while the node comes and goes: %v", keys[k], err)
							return
						}
						acked[k].Add(1)
					}
				}()
			}
			failed := 0
			for round := 0; round < 8; round++ {
				flushed := make(chan error, 1)
				go func() { flushed <- b.Flush(ctx) }()
				time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond) // land mid-flush, somewhere
				if round%2 == 0 {
					proxy.Hang()
					if err := <-flushed; err != nil {
						failed++
					}
				}
				proxy.Stop()
				if round%2 == 1 {
					if err := <-flushed; err != nil {
						failed++
					}
				}
				if err := b.Flush(ctx); err == nil {
					t.Logf("round %d: a flush succeeded with the pg node gone (no pg key in it?)", round)
				}
				var newPG *sqlstore.Store
				proxy, newPG = pgVia(t, pgDSN)
				node.set(newShardStore(t, lite, newPG, my, 300*time.Millisecond))
				// The node's deadline is short (300 ms, so that hung rounds
				// end soon): on a loaded machine the new proxy's first
				// connections can miss it. A failed flush is retried, as
				// the flusher would; the totals at the end are the test.
				var err error
				for try := 0; try < 5; try++ {
					if err = b.Flush(ctx); err == nil || cellar.ErrorCode(err) != cellar.EUNAVAILABLE {
						break
					}
					t.Logf("round %d: flush with the node back, try %d: %v", round, try, err)
				}
				if err != nil {
					t.Fatalf("round %d: flush with the node back: %v", round, err)
				}
			}
			close(stop)
			wg.Wait()
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			vals, err := node.Counters(ctx, keys)
			if err != nil {
				t.Fatal(err)
			}
			for i, k := range keys {
				if vals[k] != acked[i].Load() {
					t.Errorf("node value of %s = %d; want the %d increments acknowledged", k, vals[k], acked[i].Load())
				}
				wantCounter(t, b, k, acked[i].Load())
			}
			t.Logf("%d of 8 flushes failed as the node went away; %d increments of idle counters failed reading the node; stats %+v",
				failed, reloadFailures.Load(), b.Stats())
		})
	}
}

// With one node down, a batch read fails only that node's keys, in both
// buffer modes: the keys on the other nodes are answered, whether read
// from their node (durable, or never incremented) or buffered; and in the
// journal, keys replayed after a restart load their durable value from the
// nodes that answer.
func TestBatchCountersOneNodeDown(t *testing.T) {
	for _, mode := range bufferModes(t) {
		t.Run(mode.name, func(t *testing.T) {
			p, pg := pgVia(t, dbtest.Postgres(t))
			lite, my := openSQLite(t), openMySQL(t)
			s := newShardStore(t, lite, pg, my, 300*time.Millisecond)
			kl, kp, km, kNew := nodeKey("lite", "down-l"), nodeKey("pg", "down-p"), nodeKey("my", "down-m"), nodeKey("my", "down-new")
			ctx := context.Background()
			if err := s.ApplyCounterDeltas(ctx, newFlushID("t-"), map[string]int64{kl: 1, kp: 2, km: 3}); err != nil {
				t.Fatal(err)
			}
			b := mode.open(t, s, testOptions(newFakeClock()))
			incr(t, b, km, 10, 13) // buffered
			p.Stop()
			res := b.BatchCounters(ctx, []string{kl, kp, km, kNew})
			for i, want := range []int64{1, -1, 13, 0} {
				if want < 0 {
					wantCode(t, "the key on the down node", res[i].Err, cellar.EUNAVAILABLE)
				} else if res[i].Err != nil || res[i].Value != want {
					t.Errorf("%s with pg down: %d, %v; want %d", res[i].Key, res[i].Value, res[i].Err, want)
				}
			}
		})
	}
	t.Run("journal replayed", func(t *testing.T) {
		p, pg := pgVia(t, dbtest.Postgres(t))
		lite, my := openSQLite(t), openMySQL(t)
		s := newShardStore(t, lite, pg, my, 300*time.Millisecond)
		kl, kp := nodeKey("lite", "replay-l"), nodeKey("pg", "replay-p")
		ctx := context.Background()
		if err := s.ApplyCounterDeltas(ctx, newFlushID("t-"), map[string]int64{kl: 1, kp: 2}); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		j := openJournal(t, dir, s, testOptions(newFakeClock()))
		incr(t, j, kl, 5, 6)
		incr(t, j, kp, 5, 7)
		j.crash()
		p.Stop()
		j = openJournal(t, dir, s, testOptions(newFakeClock())) // durable values unknown: loaded on read
		res := j.BatchCounters(ctx, []string{kl, kp})
		if res[0].Err != nil || res[0].Value != 6 {
			t.Errorf("replayed %s with pg down: %d, %v; want 6", kl, res[0].Value, res[0].Err)
		}
		wantCode(t, "the replayed key on the down node", res[1].Err, cellar.EUNAVAILABLE)
	})
}

// A flush that some nodes refuse for overflow while another applies its
// part sets aside only the refused keys, in both buffer modes: the applied
// node's large delta is neither set aside (its value read afterwards
// already holds it, and judged again it would seem to overflow) nor
// applied twice.
func TestOverflowOnSomeNodesSetsAsideOnlyTheirKeys(t *testing.T) {
	for _, mode := range bufferModes(t) {
		t.Run(mode.name, func(t *testing.T) {
			lite, pg, my := openSQLite(t), openPostgres(t, dbtest.Postgres(t)), openMySQL(t)
			s := newShardStore(t, lite, pg, my, 2*time.Second)
			kl, kp, km := nodeKey("lite", "of-l"), nodeKey("pg", "of-p"), nodeKey("my", "of-m")
			ctx := context.Background()
			b := mode.open(t, s, testOptions(newFakeClock()))
			big := int64(math.MaxInt64/2 + 1)
			incr(t, b, kl, big, big)
			incr(t, b, kp, 1, 1)
			incr(t, b, km, 1, 1)
			// Other writers take kp and km to the top behind the buffer's back.
			if err := s.ApplyCounterDeltas(ctx, newFlushID("other-"), map[string]int64{kp: math.MaxInt64, km: math.MaxInt64}); err != nil {
				t.Fatal(err)
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatalf("second Flush: %v", err)
			}
			if got := b.Stats().Rejected; got != 2 {
				t.Errorf("Stats.Rejected = %d; want 2 (%s and %s)", got, kp, km)
			}
			vals, err := s.Counters(ctx, []string{kl, kp, km})
			if err != nil || vals[kl] != big || vals[kp] != math.MaxInt64 || vals[km] != math.MaxInt64 {
				t.Errorf("durable values %v, %v; want %s = %d once, %s and %s at MaxInt64", vals, err, kl, big, kp, km)
			}
		})
	}
}
