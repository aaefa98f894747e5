package cache_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/cache"
	"github.com/cellar-db/cellar/internal/dbtest"
)

// lookupTrips is a go-redis hook that counts the round trips of lookups
// (pipelines holding an MGET or an EVALSHA_RO) and the keys they carry.
type lookupTrips struct {
	trips, keys atomic.Int64
}

func (h *lookupTrips) DialHook(next goredis.DialHook) goredis.DialHook          { return next }
func (h *lookupTrips) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

func (h *lookupTrips) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		lookup := false
		for _, c := range cmds {
			switch c.Name() {
			case "mget":
				lookup = true
				h.keys.Add(int64(len(c.Args()) - 1))
			case "evalsha_ro":
				lookup = true
				h.keys.Add(int64(len(c.Args()) - 3))
			}
		}
		if lookup {
			h.trips.Add(1)
		}
		return next(ctx, cmds)
	}
}

// pauseRedis makes the server at addr hold every client's commands for d
// (CLIENT PAUSE ... ALL): round trips sent meanwhile are answered when it
// ends.
func pauseRedis(tb testing.TB, addr string, d time.Duration) {
	tb.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	if err := c.Do(ctx(tb), "CLIENT", "PAUSE", d.Milliseconds(), "ALL").Err(); err != nil {
		tb.Fatal(err)
	}
}

// Concurrent lookups on one node are answered by far fewer round trips
// than lookups, each caller getting its own answers and counted for its
// own keys. Redis is paused while they arrive, so that the first few round
// trips are held and the rest of the lookups queue behind them.
func TestCoalescedLookups(t *testing.T) {
	srv := dbtest.Redis(t)
	r := clusterAt(t, 16, 10*time.Second, srv.Addr())
	hook := &lookupTrips{}
	for _, c := range r.Nodes() {
		c.AddHook(hook) // before the cache uses the client
	}
	back := newCounting(openSQLite(t, 16))
	obs := newCounts()
	// Redis only, so that every read asks Redis.
	s := newCache(t, back, cache.Options{Redis: r, MaxBytes: -1, Observer: obs, RedisTimeout: 5 * time.Second, MaxStaleness: time.Hour})
	const rows, missing = 100, 20
	body := func(i, ref int) string { return fmt.Sprintf(`{"i":%d,"ref":%d}`, i, ref) }
	var keys []cellar.LookupKey
	for i := range rows {
		row := fmt.Sprintf("row%d", i)
		put(t, back, row, "c", 1, body(i, 1))
		put(t, back, row, "c", 2, body(i, 2))
		keys = append(keys, cellar.LookupKey{RowKey: row, Column: "c"}, cellar.LookupKey{RowKey: row, Column: "c", RefKey: ref(1)})
	}
	s.BatchGet(ctx(t), keys) // fills Redis
	back.take("batch_get")
	obs.take(cache.TierRedis)
	hook.trips.Store(0)
	hook.keys.Store(0)

	pauseRedis(t, srv.Addr(), 500*time.Millisecond)
	// Every key twice (latest and by full key), so that callers of one
	// key meet in a combined round trip, and rows that are in neither
	// tier.
	lookups := 4*rows + missing
	var wg sync.WaitGroup
	for n := range lookups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The two callers of a key start one after the other, so
			// that they queue side by side and meet in one combined
			// round trip (one of up to 128 callers, taken in the order
			// they queued), not only if the scheduler mixes them up.
			i := n / 4
			row := fmt.Sprintf("row%d", i)
			switch {
			case n >= 4*rows:
				row = fmt.Sprintf("none%d", n)
				if _, err := s.Latest(ctx(t), row, "c"); cellar.ErrorCode(err) != cellar.ENOTFOUND {
					t.Errorf("Latest(%s) = %v; want not found", row, err)
				}
			case n%4 < 2:
				c, err := s.Latest(ctx(t), row, "c")
				if err != nil || c.RowKey != row || c.RefKey != 2 || string(c.Body) != body(i, 2) {
					t.Errorf("Latest(%s) = %s/%d %s, %v; want ref 2 %s", row, c.RowKey, c.RefKey, c.Body, err, body(i, 2))
				}
			default:
				c, err := s.Get(ctx(t), cellar.Key{RowKey: row, Column: "c", RefKey: 1})
				if err != nil || c.RowKey != row || c.RefKey != 1 || string(c.Body) != body(i, 1) {
					t.Errorf("Get(%s/1) = %s/%d %s, %v; want %s", row, c.RowKey, c.RefKey, c.Body, err, body(i, 1))
				}
			}
		}()
	}
	wg.Wait()

	if h, m := obs.take(cache.TierRedis); h != 4*rows || m != missing {
		t.Errorf("redis hits, misses = %d, %d; want %d, %d", h, m, 4*rows, missing)
	}
	if n := back.take("latest") + back.take("get"); n != missing {
		t.Errorf("%d reads reached the backing store; want %d (the missing rows)", n, missing)
	}
	if n := obs.errors(cache.TierRedis, "get"); n != 0 {
		t.Errorf("get errors = %d; want 0", n)
	}
	trips, sent := hook.trips.Load(), hook.keys.Load()
	t.Logf("%d lookups in %d round trips carrying %d keys", lookups, trips, sent)
	if trips == 0 || trips > int64(lookups/10) {
		t.Errorf("%d lookups took %d round trips; want at most %d", lookups, trips, lookups/10)
	}
	// A key asked by callers who meet in one combined round trip is sent
	// once.
	if sent >= int64(lookups) {
		t.Errorf("round trips carried %d keys for %d lookups; want fewer", sent, lookups)
	}
}

// After Redis forgets its scripts (SCRIPT FLUSH; a restart or failover
// does the same), a lookup still hits: its EVALSHA_RO's NOSCRIPT falls
// back to EVAL_RO, which loads the script again for the next EVALSHA_RO.
func TestLookupAfterScriptFlush(t *testing.T) {
	r := newCluster(t, 16, dbtest.Redis(t))
	back := newCounting(openSQLite(t, 16))
	obs := newCounts()
	s := newCache(t, back, cache.Options{Redis: r, MaxBytes: -1, Observer: obs, MaxStaleness: time.Hour})
	put(t, back, "r", "c", 1, `{"v":1}`)
	put(t, back, "r", "c", 2, `{"v":2}`)
	if got := latestRef(t, s, "r", "c"); got != 2 { // fills Redis
		t.Fatalf("Latest = %d; want 2", got)
	}
	_, node := r.Node(r.Shard("r"))
	if err := node.ScriptFlush(ctx(t)).Err(); err != nil {
		t.Fatal(err)
	}
	back.take("latest")
	obs.take(cache.TierRedis)
	for i, wantEval := range []int{1, 0} {
		before := commandCalls(t, node)
		if got := latestRef(t, s, "r", "c"); got != 2 {
			t.Errorf("lookup %d after SCRIPT FLUSH: Latest = %d; want 2", i, got)
		}
		after := commandCalls(t, node)
		if h, m := obs.take(cache.TierRedis); h != 1 || m != 0 {
			t.Errorf("lookup %d after SCRIPT FLUSH: redis hits, misses = %d, %d; want 1, 0", i, h, m)
		}
		if n := back.take("latest"); n != 0 {
			t.Errorf("lookup %d after SCRIPT FLUSH reached the backing store %d times; want 0", i, n)
		}
		if d := after["evalsha_ro"] - before["evalsha_ro"]; d != 1 {
			t.Errorf("lookup %d after SCRIPT FLUSH ran EVALSHA_RO %d times; want 1", i, d)
		}
		if d := after["eval_ro"] - before["eval_ro"]; d != wantEval {
			t.Errorf("lookup %d after SCRIPT FLUSH ran EVAL_RO %d times; want %d", i, d, wantEval)
		}
	}
	if n := obs.errors(cache.TierRedis, "get"); n != 0 {
		t.Errorf("get errors = %d; want 0", n)
	}
}
