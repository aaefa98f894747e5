package counter

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/counter/countertest"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/redis"

	goredis "github.com/redis/go-redis/v9"
)

const testShards = 16

// openCluster returns a cluster over servers, which split the shards in
// equal ranges, in order.
func openCluster(tb testing.TB, servers ...*dbtest.RedisServer) *redis.Cluster {
	tb.Helper()
	return openClusterOf(tb, testShards, servers...)
}

// openClusterOf is openCluster of a cluster of shards logical shards.
func openClusterOf(tb testing.TB, shards int, servers ...*dbtest.RedisServer) *redis.Cluster {
	tb.Helper()
	cfg := redis.Config{Shards: shards, Timeout: 500 * time.Millisecond}
	per := shards / len(servers)
	for i, s := range servers {
		name := fmt.Sprintf("redis-%d", i+1)
		cfg.Nodes = append(cfg.Nodes, redis.Node{Name: name, Addr: s.Addr()})
		last := (i+1)*per - 1
		if i == len(servers)-1 {
			last = shards - 1
		}
		cfg.Map = append(cfg.Map, cellar.Assignment{Node: name, ShardRange: cellar.ShardRange{First: i * per, Last: last}})
	}
	c, err := redis.Open(cfg)
	if err != nil {
		tb.Fatalf("redis.Open: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func openRedisBuffer(tb testing.TB, c *redis.Cluster, node cellar.CounterNode, opts Options) *RedisBuffer {
	tb.Helper()
	b, err := OpenRedis(context.Background(), c, node, opts)
	if err != nil {
		tb.Fatalf("OpenRedis: %v", err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}

// crash stops b as a killed process would stop: no last flush.
func (b *RedisBuffer) crash() {
	b.closeMu.Lock()
	b.closed = true
	b.closeMu.Unlock()
	b.incrs.Wait()
	b.cancel()
	b.wg.Wait()
}

// keyOn returns a key (with prefix) whose shard the cluster puts on node.
func keyOn(tb testing.TB, c *redis.Cluster, node, prefix string) string {
	tb.Helper()
	for i := 0; i < 10000; i++ {
		k := fmt.Sprintf("%s%d", prefix, i)
		if name, _ := c.Node(c.Shard(k)); name == node {
			return k
		}
	}
	tb.Fatalf("no key on node %s", node)
	return ""
}

func TestRedisIncrAndRead(t *testing.T) {
	c := openCluster(t, dbtest.Redis(t), dbtest.Redis(t))
	node := countertest.New()
	clock := newFakeClock()
	b := openRedisBuffer(t, c, node, testOptions(clock))

	a, bk := keyOn(t, c, "redis-1", "a"), keyOn(t, c, "redis-2", "b")
	wantCounter(t, b, "never", 0)
	incr(t, b, a, 1, 1)
	incr(t, b, a, 41, 42)
	incr(t, b, a, -50, -8)
	incr(t, b, bk, 7, 7)
	wantCounter(t, b, a, -8)

	clock.Advance(t, time.Second)
	if got := node.Value(a); got != -8 {
		t.Errorf("node value of %s after a flush = %d; want -8", a, got)
	}
	incr(t, b, a, 10, 2)
	wantCounter(t, b, a, 2)
	res := b.BatchCounters(context.Background(), []string{a, bk, "never", "", bk})
	want := []cellar.CounterResult{{Key: a, Value: 2}, {Key: bk, Value: 7}, {Key: "never"}, {Key: ""}, {Key: bk, Value: 7}}
	for i, r := range res {
		if r.Key != want[i].Key || r.Value != want[i].Value || (r.Err != nil) != (i == 3) {
			t.Errorf("BatchCounters[%d] = %+v; want %+v", i, r, want[i])
		}
	}
	wantCode(t, "BatchCounters of an empty key", res[3].Err, cellar.EINVALID)

	// A key idle for a flush is read from the node again.
	clock.Advance(t, time.Second)
	clock.Advance(t, time.Second)
	node.Set(bk, 100)
	wantCounter(t, b, bk, 100)
	incr(t, b, bk, 1, 101)
}

func TestRedisOneStatementPerKey(t *testing.T) {
	c := openCluster(t, dbtest.Redis(t), dbtest.Redis(t))
	node := countertest.New()
	clock := newFakeClock()
	b := openRedisBuffer(t, c, node, testOptions(clock))
	const workers, each = 32, 50
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := b.Incr(context.Background(), fmt.Sprintf("k%d", i%5), 1); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	clock.Advance(t, time.Second)
	_, statements, _ := node.Applied()
	if statements != 5 {
		t.Errorf("node ran %d statements; want 5 (one per key)", statements)
	}
	if st := b.Stats(); st.Increments != workers*each || st.Statements != 5 {
		t.Errorf("Stats = %+v; want %d increments and 5 statements", st, workers*each)
	}
	var total int64
	for i := 0; i < 5; i++ {
		total += node.Value(fmt.Sprintf("k%d", i))
	}
	if total != workers*each {
		t.Errorf("node holds %d increments; want %d", total, workers*each)
	}
}

// TestRedisConcurrentFlushes runs two buffers (two processes) over one
// cluster, incrementing one hot key while both flush without pause. Reads
// must never fall below what was acknowledged before them, and the node
// must end with exactly the increments made: a flush that dropped an
// increment arriving mid-flush, or applied one twice, fails this.
func TestRedisConcurrentFlushes(t *testing.T) {
	c := openCluster(t, dbtest.Redis(t), dbtest.Redis(t))
	node := countertest.New()
	b1 := openRedisBuffer(t, c, node, testOptions(newFakeClock()))
	b2 := openRedisBuffer(t, c, node, testOptions(newFakeClock()))
	ctx := context.Background()
	var mu sync.Mutex // protects done
	done := 0
	stop := make(chan struct{})
	var flushers sync.WaitGroup
	for _, b := range []*RedisBuffer{b1, b2} {
		flushers.Add(1)
		go func() {
			defer flushers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := b.Flush(ctx); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	const workers, each = 16, 100
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := []*RedisBuffer{b1, b2}[w%2]
			for i := 0; i < each; i++ {
				mu.Lock()
				before := done
				mu.Unlock()
				key := "hot"
				if i%4 == 0 {
					key = fmt.Sprintf("cold%d", i%7)
				}
				if _, err := b.Incr(ctx, key, 1); err != nil {
					t.Error(err)
					return
				}
				if key != "hot" {
					continue
				}
				mu.Lock()
				done++
				mu.Unlock()
				v, err := b.Counter(ctx, "hot")
				if err != nil || v < int64(before)+1 {
					t.Errorf("Counter = %d, %v after %d acknowledged increments", v, err, before+1)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	flushers.Wait()
	if err := b1.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	hot := int64(workers * each * 3 / 4)
	wantCounter(t, b2, "hot", hot)
	if got := node.Value("hot"); got != hot {
		t.Errorf("node value of hot = %d; want %d", got, hot)
	}
	var cold int64
	for i := 0; i < 7; i++ {
		cold += node.Value(fmt.Sprintf("cold%d", i))
	}
	if cold != workers*each/4 {
		t.Errorf("node holds %d cold increments; want %d", cold, workers*each/4)
	}
	if _, _, dup := node.Applied(); dup != 0 {
		t.Errorf("node skipped %d flushes as duplicates; want 0", dup)
	}
	st1, st2 := b1.Stats(), b2.Stats()
	t.Logf("flushes: %d + %d, statements %d + %d", st1.Flushes, st2.Flushes, st1.Statements, st2.Statements)
}

func TestRedisOverflow(t *testing.T) {
	c := openCluster(t, dbtest.Redis(t))
	node := countertest.New()
	node.Set("max", math.MaxInt64-2)
	node.Set("min", math.MinInt64+2)
	clock := newFakeClock()
	b := openRedisBuffer(t, c, node, testOptions(clock))

	incr(t, b, "max", 1, math.MaxInt64-1)
	_, err := b.Incr(context.Background(), "max", 2)
	wantCode(t, "Incr past MaxInt64", err, cellar.EINVALID)
	incr(t, b, "max", 1, math.MaxInt64)
	incr(t, b, "min", -2, math.MinInt64)
	_, err = b.Incr(context.Background(), "min", -1)
	wantCode(t, "Incr past MinInt64", err, cellar.EINVALID)
	_, err = b.Incr(context.Background(), "fresh", math.MinInt64)
	if err != nil {
		t.Fatalf("Incr(fresh, MinInt64): %v", err)
	}
	_, err = b.Incr(context.Background(), "fresh", -1)
	wantCode(t, "Incr past MinInt64 in the buffer", err, cellar.EINVALID)
	_, err = b.Incr(context.Background(), "new", math.MaxInt64)
	if err != nil {
		t.Fatalf("Incr(new, MaxInt64): %v", err)
	}
	// Refused on a key never seen: no durable entry may stay behind.
	node.Set("other", math.MaxInt64)
	_, err = b.Incr(context.Background(), "other", 1)
	wantCode(t, "Incr of a full counter", err, cellar.EINVALID)
	clock.Advance(t, time.Second)
	if got := node.Value("max"); got != math.MaxInt64 {
		t.Errorf("node value of max = %d; want MaxInt64", got)
	}
	if got := node.Value("min"); got != math.MinInt64 {
		t.Errorf("node value of min = %d; want MinInt64", got)
	}
	if got := node.Value("new"); got != math.MaxInt64 {
		t.Errorf("node value of new = %d; want MaxInt64", got)
	}

	// Overflow at flush: another writer moved x; x's delta is set aside,
	// y's applied, and the next flush goes through.
	incr(t, b, "x", 10, 10)
	incr(t, b, "y", 5, 5)
	node.Set("x", math.MaxInt64-3)
	clock.Advance(t, time.Second)
	if x, y := node.Value("x"), node.Value("y"); x != math.MaxInt64-3 || y != 5 {
		t.Errorf("node values x=%d y=%d; want MaxInt64-3 and 5", x, y)
	}
	if st := b.Stats(); st.Rejected != 1 {
		t.Errorf("Stats = %+v; want 1 rejected delta", st)
	}
	_, cl := c.Node(0)
	rej, err := cl.LRange(context.Background(), newKeyspace(DefaultRedisPrefix).rejected(), 0, -1).Result()
	if err != nil || len(rej) != 1 {
		t.Errorf("rejected list = %q, %v; want one entry", rej, err)
	}
	incr(t, b, "x", 3, math.MaxInt64)
	incr(t, b, "y", 1, 6)
	clock.Advance(t, time.Second)
	if x, y := node.Value("x"), node.Value("y"); x != math.MaxInt64 || y != 6 {
		t.Errorf("node values x=%d y=%d; want MaxInt64 and 6", x, y)
	}
}

// TestRedisStorageNodeDown: while the storage node is down, increments of
// known keys are acknowledged and reads are exact; the stuck flush is
// applied once when the node is back, and a lost confirmation does not
// apply a flush twice.
func TestRedisStorageNodeDown(t *testing.T) {
	c := openCluster(t, dbtest.Redis(t))
	node := countertest.New()
	clock := newFakeClock()
	b := openRedisBuffer(t, c, node, testOptions(clock))
	var mu sync.Mutex
	down := false
	node.SetFault(downFault(&down, &mu))
	incr(t, b, "k", 3, 3)
	mu.Lock()
	down = true
	mu.Unlock()
	clock.Advance(t, time.Second)
	incr(t, b, "k", 4, 7)
	wantCounter(t, b, "k", 7)
	clock.Advance(t, time.Second)
	if st := b.Stats(); st.FlushErrors < 2 || st.Flushes != 0 {
		t.Errorf("Stats = %+v; want failed flushes and none applied", st)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	clock.Advance(t, time.Second)
	if got := node.Value("k"); got != 7 {
		t.Errorf("node value = %d; want 7", got)
	}
	wantCounter(t, b, "k", 7)

	lost := 1
	node.SetFault(lostAck(&lost, &mu))
	incr(t, b, "k", 5, 12)
	if err := b.Flush(context.Background()); err == nil {
		t.Fatal("Flush with a lost confirmation succeeded")
	}
	wantCounter(t, b, "k", 12)
	clock.Advance(t, time.Second)
	if got := node.Value("k"); got != 12 {
		t.Errorf("node value after a lost confirmation = %d; want 12", got)
	}
	if _, _, dup := node.Applied(); dup != 1 {
		t.Errorf("node saw %d duplicate flushes; want 1 (the retry)", dup)
	}
	wantCounter(t, b, "k", 12)
}

// TestRedisDeadOwner: a process dies with a flush the node applied but
// the process never finished; another process finishes it once the lease
// runs out, without applying it twice.
func TestRedisDeadOwner(t *testing.T) {
	c := openCluster(t, dbtest.Redis(t))
	node := countertest.New()
	var mu sync.Mutex
	lost := 1
	node.SetFault(lostAck(&lost, &mu))
	clock := newFakeClock()
	opts := testOptions(clock)
	b1 := openRedisBuffer(t, c, node, opts)
	incr(t, b1, "k", 5, 5)
	if err := b1.Flush(context.Background()); err == nil {
		t.Fatal("Flush with a lost confirmation succeeded")
	}
	incr(t, b1, "k", 1, 6)
	b1.crash()

	b2 := openRedisBuffer(t, c, node, opts)
	wantCounter(t, b2, "k", 6)
	clock.Advance(t, time.Second) // the lease holds: only the new delta is flushed
	if got := node.Value("k"); got != 6 {
		t.Fatalf("node value = %d; want 6 (applied, unfinished flush of 5, and 1)", got)
	}
	wantCounter(t, b2, "k", 6)
	clock.Advance(t, opts.Lease+time.Second)
	wantCounter(t, b2, "k", 6)
	if got := node.Value("k"); got != 6 {
		t.Errorf("node value = %d; want 6", got)
	}
	if _, _, dup := node.Applied(); dup != 1 {
		t.Errorf("node saw %d duplicate flushes; want 1 (the dead owner's, finished by the other)", dup)
	}
	_, cl := c.Node(0)
	if n, err := cl.ZCard(context.Background(), newKeyspace(DefaultRedisPrefix).pair("").flushes()).Result(); err != nil || n != 0 {
		t.Errorf("%d flushes still recorded (%v); want 0", n, err)
	}
}

// TestRedisNodeStopped: with one Redis node killed, the counters on its
// shards fail quickly with unavailable; the others keep working, flushes
// included.
func TestRedisNodeStopped(t *testing.T) {
	r1, r2 := dbtest.Redis(t), dbtest.Redis(t)
	c := openCluster(t, r1, r2)
	node := countertest.New()
	clock := newFakeClock()
	b := openRedisBuffer(t, c, node, testOptions(clock))
	up, gone := keyOn(t, c, "redis-1", "up"), keyOn(t, c, "redis-2", "gone")
	incr(t, b, up, 1, 1)
	incr(t, b, gone, 1, 1)
	r2.Kill()

	start := time.Now()
	_, err := b.Incr(context.Background(), gone, 1)
	wantCode(t, "Incr on a stopped redis node", err, cellar.EUNAVAILABLE)
	_, err = b.Counter(context.Background(), gone)
	wantCode(t, "Counter on a stopped redis node", err, cellar.EUNAVAILABLE)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("failing on a stopped node took %v; want well under 2s", d)
	}
	incr(t, b, up, 1, 2)
	res := b.BatchCounters(context.Background(), []string{up, gone})
	if res[0].Err != nil || res[0].Value != 2 || cellar.ErrorCode(res[1].Err) != cellar.EUNAVAILABLE {
		t.Errorf("BatchCounters = %+v; want %s=2 and %s unavailable", res, up, gone)
	}
	clock.Advance(t, time.Second)
	if got := node.Value(up); got != 2 {
		t.Errorf("node value of %s = %d; want 2: the live node's flush must go on", up, got)
	}
	if got := node.Value(gone); got != 0 {
		t.Errorf("node value of %s = %d; want 0 (its deltas died with redis-2)", gone, got)
	}

	// Back, empty: its buffered delta is lost (no persistence), and it
	// serves again.
	r2.Start()
	wantCounter(t, b, gone, 0)
	incr(t, b, gone, 5, 5)
	clock.Advance(t, time.Second)
	if got := node.Value(gone); got != 5 {
		t.Errorf("node value of %s = %d; want 5", gone, got)
	}
}

// TestRedisRemap moves shards to another node while they hold buffered
// deltas: the old node's deltas are still flushed, the new node takes the
// new increments, and nothing is lost or doubled.
func TestRedisRemap(t *testing.T) {
	c := openCluster(t, dbtest.Redis(t), dbtest.Redis(t))
	node := countertest.New()
	clock := newFakeClock()
	b := openRedisBuffer(t, c, node, testOptions(clock))
	k := keyOn(t, c, "redis-1", "moving")
	incr(t, b, k, 3, 3)
	if err := c.Remap([]cellar.Assignment{{Node: "redis-2", ShardRange: cellar.ShardRange{First: 0, Last: testShards - 1}}}); err != nil {
		t.Fatal(err)
	}
	if name, _ := c.Node(c.Shard(k)); name != "redis-2" {
		t.Fatalf("after Remap, %s is on %s; want redis-2", k, name)
	}
	clock.Advance(t, time.Second) // flushes redis-1's delta
	incr(t, b, k, 4, 7)
	clock.Advance(t, time.Second)
	if got := node.Value(k); got != 7 {
		t.Errorf("node value = %d; want 7", got)
	}
	wantCounter(t, b, k, 7)
	if err := c.Remap([]cellar.Assignment{{Node: "redis-3", ShardRange: cellar.ShardRange{First: 0, Last: testShards - 1}}}); err == nil {
		t.Error("Remap to an unknown node succeeded")
	}
}

// TestRedisExactSums checks sums around 2^53, where Lua's doubles stop
// being exact.
func TestRedisExactSums(t *testing.T) {
	c := openCluster(t, dbtest.Redis(t))
	node := countertest.New()
	const big = 999999999999999 // 15 digits: summed in Lua
	node.Set("k", big)
	clock := newFakeClock()
	b := openRedisBuffer(t, c, node, testOptions(clock))
	want := int64(big)
	for i := 0; i < 8; i++ {
		want += big
		incr(t, b, "k", big, want) // 8999999999999991 at the end: below 2^53
	}
	incr(t, b, "k", 1, want+1)
	const p53 = 1 << 53
	node.Set("x", p53)
	incr(t, b, "x", 1, p53+1) // 2^53+1 has no double
	incr(t, b, "x", 2, p53+3)
	clock.Advance(t, time.Second)
	incr(t, b, "x", -1, p53+2)
	wantCounter(t, b, "x", p53+2)
	wantCounter(t, b, "k", want+1)
	if got := node.Value("x"); got != p53+3 {
		t.Errorf("node value of x = %d; want 2^53+3", got)
	}
}

// TestRedisIncrBatchAsIfAlone runs the same increments through incrScript
// once as one batch and once one per run, from the same state, and wants
// the same answers and the same state after: each item of a batch is
// applied as if alone. The items repeat keys, overflow in the middle of a
// batch, install and drop durable values, sum past 2^53, and go in and
// out of the batch's run of small sums (below 2^52).
func TestRedisIncrBatchAsIfAlone(t *testing.T) {
	cl := goredis.NewClient(&goredis.Options{Addr: dbtest.Redis(t).Addr()})
	defer cl.Close()
	ctx := context.Background()
	const maxS = "9223372036854775807"
	// shardKey is a per-shard key of the layout in scripts.go.
	shardKey := func(shard int, name string) string {
		return fmt.Sprintf("%s{%d}:%s", newKeyspace(DefaultRedisPrefix), shard, name)
	}
	setup := func() {
		t.Helper()
		for _, c := range [][]any{
			{"FLUSHALL"},
			{"HSET", shardKey(1, "durable"), "a", "5", "big", "9223372036854775800", "p53", "9007199254740992"},
			{"SADD", shardKey(1, "flushing"), "f1", "f2"},
			{"HSET", shardKey(1, "flush:f1"), "a", "3", "p53", "1"},
			{"HSET", shardKey(1, "flush:f2"), "big", "-1"},
			{"HSET", shardKey(1, "deltas"), "a", "2", "other", "4"},
			{"SET", shardKey(2, "gen"), "7"},
			{"HSET", shardKey(3, "durable"), "z", "0"},
			// Keys for the batch's run of small sums: near 2^52 (the
			// run's bound), and one whose total is small while its delta
			// field is not.
			{"HSET", shardKey(5, "durable"), "s", "2", "edge", "4503599627370490", "wide", "4000000000000000"},
			{"HSET", shardKey(5, "durable"), "wide2", "-6000000000000000", "tall", "6000000000000000"},
			{"HSET", shardKey(5, "deltas"), "wide", "-3999999999999990", "wide2", "4000000000000000", "tall", "-2000000000000000"},
			{"HSET", shardKey(4, "durable"), "a", "-7"},
		} {
			if err := cl.Do(ctx, c...).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	items := [][5]string{
		{"a", "1", "1", "", ""},
		{"a", "-4", "1", "", ""},
		{"big", "5", "1", "", ""},
		{"big", "5", "1", "", ""}, // 2^63-8, -1 in a flush, +5, +5: overflow
		{"big", "-3", "1", "", ""},
		{"p53", "1", "1", "", ""}, // 2^53 + 1 + 1: exact only in 64 bits
		{"p53", "1", "1", "", ""},
		{"a", "1", "1", "", ""},
		{"n", "1", "2", "", ""},     // no durable value: load
		{"n", "1", "2", "100", "6"}, // stale gen: load again
		{"n", "1", "2", "100", "7"}, // installed
		{"n", "-2", "2", "", ""},
		{"m", "1", "2", maxS, "7"}, // installed and overflows: dropped
		{"m", "1", "2", "", ""},    // so it loads again
		{"z", "-1", "3", "", ""},
		{"z", "1", "3", "", ""},  // back to 0
		{"z", maxS, "3", "", ""}, // 2^63-1
		{"z", "1", "3", "", ""},  // overflow
		{"z", "-1", "3", "", ""},
		{"q", "1", "4", "", ""}, // a shard never used: gen seeded
		{"q", "1", "4", "50", "9"},
		{"s", "1", "5", "", ""}, // a run of small sums from here
		{"s", "-1", "5", "", ""},
		{"a", "2", "4", "", ""},  // the same key in another shard
		{"s", "-2", "5", "", ""}, // to 0
		{"s", "-1", "5", "", ""},
		{"a", "2", "4", "", ""},
		{"edge", "3", "5", "", ""},
		{"edge", "3", "5", "", ""},   // 2^52: out of the run
		{"edge", "-10", "5", "", ""}, // back under it
		{"edge", "1", "5", "", ""},
		{"wide", "1", "5", "", ""},
		{"wide", "-600000000000000", "5", "", ""}, // the field leaves the run's bound
		{"wide", "1", "5", "", ""},
		{"wide2", "1", "5", "", ""},
		{"wide2", "4000000000000000", "5", "", ""}, // total small, field not
		{"wide2", "2000000000000000", "5", "", ""}, // the field past 2^53, odd: no double holds it
		{"tall", "1", "5", "", ""},
		{"tall", "4000000000000000", "5", "", ""}, // field small, total not
		{"tall", "2000000000000000", "5", "", ""}, // the total past 2^53, odd
		{"s", maxS, "5", "", ""},                  // overflow: the full path
		{"s", "3", "5", "", ""},
		{"a", "1", "1", "", ""},
	}
	args := func(its [][5]string) []any {
		a := []any{"9", string(newKeyspace(DefaultRedisPrefix)), "r-next"} // the gen seed, P, the next epoch
		for _, it := range its {
			for _, v := range it {
				a = append(a, v)
			}
			storage := "" // the storage node: shard 4's is named, its pair's keys apart
			if it[2] == "4" {
				storage = "b"
			}
			a = append(a, storage)
		}
		return a
	}
	state := func() map[string]any {
		t.Helper()
		st := map[string]any{}
		keys, err := cl.Keys(ctx, string(newKeyspace(DefaultRedisPrefix))+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			typ, _ := cl.Type(ctx, k).Result()
			switch typ {
			case "hash":
				st[k] = cl.HGetAll(ctx, k).Val()
			case "set":
				st[k] = fmt.Sprint(cl.SMembers(ctx, k).Val())
			default:
				st[k] = cl.Get(ctx, k).Val()
			}
		}
		return st
	}
	run := func(its [][5]string) []any {
		t.Helper()
		res, err := incrScript.Run(ctx, cl, nil, args(its)...).Slice()
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	setup()
	batch := run(items)
	batchState := state()
	setup()
	var alone []any
	for _, it := range items {
		alone = append(alone, run([][5]string{it})...)
	}
	aloneState := state()
	if !reflect.DeepEqual(batch, alone) {
		t.Errorf("answers as one batch:\n%v\none by one:\n%v", batch, alone)
	}
	if !reflect.DeepEqual(batchState, aloneState) {
		t.Errorf("state after one batch:\n%v\nafter one by one:\n%v", batchState, aloneState)
	}
	// The answers themselves, so that a script wrong both ways fails too.
	want := "[[ok 11] [ok 7] [ok 9223372036854775804] [overflow] [ok 9223372036854775801] [ok 9007199254740994] [ok 9007199254740995] " +
		"[ok 8] [load 7] [load 7] [ok 101] [ok 99] [overflow] [load 7] [ok -1] [ok 0] [ok " + maxS + "] [overflow] [ok 9223372036854775806] [load 9] [ok 51] " +
		"[ok 3] [ok 2] [ok -5] [ok 0] [ok -1] [ok -3] [ok 4503599627370493] [ok 4503599627370496] [ok 4503599627370486] [ok 4503599627370487] " +
		"[ok 11] [ok -599999999999989] [ok -599999999999988] [ok -1999999999999999] [ok 2000000000000001] [ok 4000000000000001] " +
		"[ok 4000000000000001] [ok 8000000000000001] [ok 10000000000000001] " +
		"[ok 9223372036854775806] [overflow] [ok 9]]"
	if got := fmt.Sprint(alone); got != want {
		t.Errorf("answers:\n%s\nwant\n%s", got, want)
	}
}

// TestRedisRefusingWrites: a Redis node that refuses writes (out of
// memory under noeviction; a read-only replica, a failed save) fails
// increments as unavailable, which a client retries, not as an overflow,
// which it would not; and nothing of them is counted.
func TestRedisRefusingWrites(t *testing.T) {
	srv := dbtest.Redis(t)
	c := openCluster(t, srv)
	b := openRedisBuffer(t, c, countertest.New(), testOptions(newFakeClock()))
	ctx := context.Background()
	incr(t, b, "k", 1, 1) // k has a durable entry: its next write is the delta's HINCRBY
	_, cl := c.Node(0)
	if err := cl.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"k", "new"} {
		_, err := b.Incr(ctx, key, 1)
		wantCode(t, "Incr of "+key+" on a Redis out of memory", err, cellar.EUNAVAILABLE)
	}
	if err := cl.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	wantCounter(t, b, "k", 1)
	incr(t, b, "k", 1, 2)
	incr(t, b, "new", 1, 1)
}

// twoDatastores opens two Redis buffers on srv, each over its own node: X
// with the default prefix, Y with prefixY.
func twoDatastores(t *testing.T, srv *dbtest.RedisServer, prefixY string) (bx, by *RedisBuffer, nodeX, nodeY *countertest.Node) {
	t.Helper()
	nodeX, nodeY = countertest.New(), countertest.New()
	optsX, optsY := testOptions(newFakeClock()), testOptions(newFakeClock())
	optsY.RedisPrefix = prefixY
	bx = openRedisBuffer(t, openCluster(t, srv), nodeX, optsX)
	by = openRedisBuffer(t, openCluster(t, srv), nodeY, optsY)
	return bx, by, nodeX, nodeY
}

// Datastores sharing a Redis node keep their counters apart by prefix: a
// flush by one takes only its own deltas, and reads see only its own.
// Before the prefix existed, datastore Y's flush applied X's increments
// to Y's storage node.
func TestRedisPrefixSeparatesDatastores(t *testing.T) {
	srv := dbtest.Redis(t)
	bx, by, nodeX, nodeY := twoDatastores(t, srv, "datastore-y")
	ctx := context.Background()
	incr(t, bx, "views", 5, 5)
	incr(t, by, "views", 2, 2)
	if err := by.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := nodeY.Value("views"); got != 2 {
		t.Errorf("Y's node holds views=%d after Y's flush; want Y's own 2", got)
	}
	if err := bx.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := nodeX.Value("views"); got != 5 {
		t.Errorf("X's node holds views=%d; want the 5 acknowledged in X", got)
	}
	if v, err := by.Counter(ctx, "views"); err != nil || v != 2 {
		t.Errorf("Y reads views = %d, %v; want 2", v, err)
	}
	cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer cl.Close()
	for _, pattern := range []string{"cellar:ctr:*", "datastore-y:ctr:*"} {
		if keys, err := cl.Keys(ctx, pattern).Result(); err != nil || len(keys) == 0 {
			t.Errorf("keys %s: %v, %v; want some (the default prefix is cellar, as before)", pattern, keys, err)
		}
	}
}

// A Redis node that refuses the connection's setup (here a db beyond the
// server's databases; a wrong password is refused the same way, with
// WRONGPASS) is as unusable as one that is down: its counters fail
// unavailable (503), not internal.
func TestRedisNodeRefusingSetup(t *testing.T) {
	srv := dbtest.Redis(t)
	for _, node := range []redis.Node{
		{Name: "redis-1", Addr: srv.Addr(), DB: 99},
	} {
		c, err := redis.Open(redis.Config{Shards: testShards, Timeout: 500 * time.Millisecond, Nodes: []redis.Node{node},
			Map: []cellar.Assignment{{Node: "redis-1", ShardRange: cellar.ShardRange{First: 0, Last: testShards - 1}}}})
		if err != nil {
			t.Fatal(err)
		}
		b := openRedisBuffer(t, c, countertest.New(), testOptions(newFakeClock()))
		_, err = b.Incr(context.Background(), "k", 1)
		if code := cellar.ErrorCode(err); code != cellar.EUNAVAILABLE {
			t.Errorf("db %d, password %q: Incr = %v (%s); want unavailable", node.DB, node.Password, err, code)
		}
		_, err = b.Counter(context.Background(), "k")
		if code := cellar.ErrorCode(err); code != cellar.EUNAVAILABLE {
			t.Errorf("db %d, password %q: Counter = %v (%s); want unavailable", node.DB, node.Password, err, code)
		}
		b.Close()
		c.Close()
	}
}

// A Redis node that comes back with older data — restarted from a
// snapshot taken before a flush applied the deltas it holds, as after a
// restore from backup, an RDB restart or a failover to a lagging replica —
// does not make the storage node count those deltas twice, and every
// increment acknowledged after it came back is counted. A restart from a
// current snapshot loses nothing. (Before flushes were named after their
// epoch, the first case counted 5 + 5 + 2.)
func TestRedisBackWithOlderData(t *testing.T) {
	srv := dbtest.RedisWithSnapshots(t)
	node := countertest.New()
	b := openRedisBuffer(t, openCluster(t, srv), node, testOptions(newFakeClock()))
	cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer cl.Close()

	incr(t, b, "k", 5, 5)
	saveSnapshot(t, cl) // holds the 5, buffered
	flushTwice(t, b)
	if got := node.Value("k"); got != 5 {
		t.Fatalf("node value after the flush = %d; want 5", got)
	}
	srv.Kill()
	srv.Start() // the 5 are buffered again
	incr(t, b, "k", 2, 7)
	flushTwice(t, b)
	if got := node.Value("k"); got != 7 {
		t.Errorf("node value after a restart from an older snapshot = %d; want 7 (the 5 once, and the 2)", got)
	}
	wantCounter(t, b, "k", 7)

	incr(t, b, "k", 3, 10)
	saveSnapshot(t, cl) // current: holds the 3, not flushed
	srv.Kill()
	srv.Start()
	incr(t, b, "k", 1, 11)
	flushTwice(t, b)
	if got := node.Value("k"); got != 11 {
		t.Errorf("node value after a restart from a current snapshot = %d; want 11", got)
	}
	wantCounter(t, b, "k", 11)

	// The same, with a flush round first after the restart, and with an
	// epoch whose deltas came to nothing (+1 and -1: the flush has only a
	// zero delta, and is recorded all the same).
	incr(t, b, "z", 1, 1)
	saveSnapshot(t, cl) // holds z +1
	incr(t, b, "z", -1, 0)
	flushTwice(t, b)
	srv.Kill()
	srv.Start()
	flushTwice(t, b)
	incr(t, b, "k", 1, 12)
	flushTwice(t, b)
	if got, z := node.Value("k"), node.Value("z"); got != 12 || z != 0 {
		t.Errorf("node values after a flush first = k %d, z %d; want 12 and 0", got, z)
	}
	wantCounter(t, b, "k", 12)
	wantCounter(t, b, "z", 0)
}

// Two processes each holding a flush in flight of one key, -100 and +250
// over a stored 2^63-201: the exact value 2^63-51 is read and incremented,
// whatever order Redis lists the flights in; HINCRBY's partial sums must
// not pass the bound on the way (luaTotal). (Review of stop 18: a read
// failed as internal and an increment as an overflow.)
func TestRedisTwoFlightsNearTheBound(t *testing.T) {
	c := openCluster(t, dbtest.Redis(t))
	node := countertest.New()
	var mu sync.Mutex
	down := false
	node.SetFault(downFault(&down, &mu))
	a := openRedisBuffer(t, c, node, testOptions(newFakeClock()))
	b := openRedisBuffer(t, c, node, testOptions(newFakeClock()))
	ctx := context.Background()
	setDown := func(v bool) {
		mu.Lock()
		down = v
		mu.Unlock()
	}
	for attempt := 0; attempt < 24; attempt++ { // the flights are summed in SMEMBERS order: try a few
		key := fmt.Sprintf("edge%d", attempt)
		node.Set(key, math.MaxInt64-200)
		incr(t, a, key, -100, math.MaxInt64-300) // loads the durable value
		setDown(true)
		if err := a.Flush(ctx); err == nil {
			t.Fatal("A's flush succeeded with the storage node down")
		}
		incr(t, b, key, 250, math.MaxInt64-50)
		if err := b.Flush(ctx); err == nil {
			t.Fatal("B's flush succeeded with the storage node down")
		}
		// Two flights now hold the key: A's -100 and B's +250.
		v, rerr := a.Counter(ctx, key)
		got, ierr := b.Incr(ctx, key, 1)
		if rerr != nil || v != math.MaxInt64-50 || ierr != nil || got != math.MaxInt64-49 {
			t.Fatalf("attempt %d, two flushes in flight (-100, +250) over durable MaxInt64-200:\n"+
				"  Counter(%s) = %d, %v (code %s); want %d\n  Incr(%s, 1) = %d, %v (code %s); want %d",
				attempt, key, v, rerr, cellar.ErrorCode(rerr), int64(math.MaxInt64-50),
				key, got, ierr, cellar.ErrorCode(ierr), int64(math.MaxInt64-49))
		}
		setDown(false)
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := node.Value(key); got != math.MaxInt64-49 {
			t.Fatalf("node value of %s = %d; want %d", key, got, int64(math.MaxInt64-49))
		}
	}
}

// A Redis node that refuses writes until an operator or a replica mends
// it (min-replicas-to-write unmet: NOREPLICAS; a failed background save
// with stop-writes-on-bgsave-error: MISCONF) fails increments as
// unavailable, which clients retry, not as internal. (Review of stop 18:
// both were 500s.)
func TestRedisRefusingWritesForNow(t *testing.T) {
	t.Run("NOREPLICAS", func(t *testing.T) {
		srv := dbtest.Redis(t)
		b := openRedisBuffer(t, openCluster(t, srv), countertest.New(), testOptions(newFakeClock()))
		ctx := context.Background()
		incr(t, b, "k", 1, 1)
		cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
		defer cl.Close()
		// min-replicas-to-write with no replica connected.
		if err := cl.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
			t.Fatal(err)
		}
		_, err := b.Incr(ctx, "k", 1)
		if cellar.ErrorCode(err) != cellar.EUNAVAILABLE {
			t.Errorf("Incr on a node without its min replicas = %v (code %s); want unavailable", err, cellar.ErrorCode(err))
		}
		_, err = b.Incr(ctx, "new", 1)
		if cellar.ErrorCode(err) != cellar.EUNAVAILABLE {
			t.Errorf("Incr of a new key on a node without its min replicas = %v (code %s); want unavailable", err, cellar.ErrorCode(err))
		}
	})
	t.Run("MISCONF", func(t *testing.T) {
		srv := dbtest.RedisWithSnapshots(t)
		b := openRedisBuffer(t, openCluster(t, srv), countertest.New(), testOptions(newFakeClock()))
		ctx := context.Background()
		incr(t, b, "k", 1, 1)
		cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
		defer cl.Close()
		dir, err := cl.ConfigGet(ctx, "dir").Result()
		if err != nil {
			t.Fatal(err)
		}
		// A background save that fails (its directory is gone), with the
		// stock stop-writes-on-bgsave-error yes.
		for _, kv := range [][2]string{{"save", "3600 1"}, {"stop-writes-on-bgsave-error", "yes"}} {
			if err := cl.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
				t.Fatal(kv, err)
			}
		}
		mustRun(t, "rm", "-rf", dir["dir"])
		if err := cl.BgSave(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		waitBgsaveFailed(t, cl)
		_, err = b.Incr(ctx, "k", 1)
		if cellar.ErrorCode(err) != cellar.EUNAVAILABLE {
			t.Errorf("Incr on a node whose save failed = %v (code %s); want unavailable", err, cellar.ErrorCode(err))
		}
		if err := cl.ConfigSet(ctx, "save", "").Err(); err != nil {
			t.Fatal(err)
		}
	})
}

// mustRun runs a command, failing the test if it fails.
func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v %s", name, args, err, out)
	}
}

// waitBgsaveFailed waits until the node reports its last background save
// failed.
func waitBgsaveFailed(t *testing.T, cl *goredis.Client) {
	t.Helper()
	for i := 0; i < 200; i++ {
		info, err := cl.Info(context.Background(), "persistence").Result()
		if err == nil && strings.Contains(info, "rdb_last_bgsave_status:err") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the background save did not fail")
}

// A read writes nothing, so it works while the node refuses writes: a
// counter of 10^15 or more, whose sum is made in parts, reads as exactly
// as a small one (before stop 18 its sum went through a scratch hash, and
// the read failed, as internal under NOREPLICAS).
func TestRedisReadsWhileWritesRefused(t *testing.T) {
	srv := dbtest.Redis(t)
	node := countertest.New()
	node.Set("big", 5_000_000_000_000_000)
	b := openRedisBuffer(t, openCluster(t, srv), node, testOptions(newFakeClock()))
	ctx := context.Background()
	incr(t, b, "big", -7, 4_999_999_999_999_993)
	incr(t, b, "small", 3, 3)
	cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer cl.Close()
	for _, refuse := range [][2]string{{"min-replicas-to-write", "1"}, {"maxmemory", "1"}} {
		if err := cl.ConfigSet(ctx, refuse[0], refuse[1]).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Incr(ctx, "small", 1); cellar.ErrorCode(err) != cellar.EUNAVAILABLE {
			t.Errorf("%s %s: Incr = %v; want unavailable (the node refuses writes)", refuse[0], refuse[1], err)
		}
		res := b.BatchCounters(ctx, []string{"big", "small"})
		if res[0].Err != nil || res[0].Value != 4_999_999_999_999_993 || res[1].Err != nil || res[1].Value != 3 {
			t.Errorf("%s %s: reads = %+v; want big 4999999999999993, small 3", refuse[0], refuse[1], res)
		}
		reset := map[string]string{"min-replicas-to-write": "0", "maxmemory": "0"}[refuse[0]]
		if err := cl.ConfigSet(ctx, refuse[0], reset).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// A read writes nothing, so it is answered while the node holds writes
// back (CLIENT PAUSE WRITE, as a failover does before it promotes a
// replica): the read script is marked no-writes. (Before, the script was
// held back with the writes, and the read failed at the node's timeout.)
func TestRedisReadsDuringClientPauseWrite(t *testing.T) {
	srv := dbtest.Redis(t)
	b := openRedisBuffer(t, openCluster(t, srv), countertest.New(), testOptions(newFakeClock()))
	incr(t, b, "k", 3, 3)
	srv.PauseWrites(3 * time.Second)
	wantCounter(t, b, "k", 3)
}
