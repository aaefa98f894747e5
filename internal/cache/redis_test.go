package cache_test

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/cache"
	"github.com/cellar-db/cellar/internal/dbtest"
)

// commandCalls returns how many times each command ran on a Redis node.
func commandCalls(tb testing.TB, c *goredis.Client) map[string]int {
	tb.Helper()
	info, err := c.Info(ctx(tb), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	calls := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		// cmdstat_mget:calls=3,usec=...
		name, rest, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "cmdstat_"), ":calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		calls[name], _ = strconv.Atoi(n)
	}
	return calls
}

// A cell read by one process is served to another from Redis, and a
// BatchGet asks each Redis node once.
func TestRedisSharedTier(t *testing.T) {
	const shards = 64
	r := newCluster(t, shards, dbtest.Redis(t), dbtest.Redis(t))
	back := newCounting(openSQLite(t, shards))
	clk := newClock()
	obsA, obsB := newCounts(), newCounts()
	a := newCache(t, back, cache.Options{Redis: r, Now: clk.Now, Observer: obsA, MaxStaleness: time.Hour})
	b := newCache(t, back, cache.Options{Redis: r, Now: clk.Now, Observer: obsB, MaxStaleness: time.Hour})

	var keys []cellar.LookupKey
	for i := 0; i < 20; i++ {
		row := fmt.Sprintf("row%d", i)
		put(t, a, row, "c", 1, fmt.Sprintf(`{"i":%d,"v":1}`, i))
		put(t, a, row, "c", 2, fmt.Sprintf(`{"i":%d,"v":2}`, i))
		keys = append(keys, cellar.LookupKey{RowKey: row, Column: "c"}, cellar.LookupKey{RowKey: row, Column: "c", RefKey: ref(1)})
	}
	a.BatchGet(ctx(t), keys) // fills both tiers
	if n := back.take("batch_get"); n != 1 {
		t.Fatalf("A's BatchGet reached the backing store %d times; want 1", n)
	}

	before := map[string]map[string]int{}
	for name, c := range r.Nodes() {
		before[name] = commandCalls(t, c)
	}
	res := b.BatchGet(ctx(t), keys)
	for i, res := range res {
		want := fmt.Sprintf(`{"i":%d,"v":%d}`, i/2, 2-i%2)
		if res.Err != nil || string(res.Cell.Body) != want {
			t.Errorf("B's result %d = %+v, %v; want %s", i, res.Cell, res.Err, want)
		}
	}
	if n := back.take("batch_get"); n != 0 {
		t.Errorf("B's BatchGet reached the backing store %d times; want 0", n)
	}
	if h, m := obsB.take(cache.TierRedis); h != len(keys) || m != 0 {
		t.Errorf("B's redis hits, misses = %d, %d; want %d, 0", h, m, len(keys))
	}
	for name, c := range r.Nodes() {
		after := commandCalls(t, c)
		// INFO itself is counted once between the two readings.
		if d := after["mget"] - before[name]["mget"]; d != 1 {
			t.Errorf("node %s ran MGET %d times for one BatchGet; want 1", name, d)
		}
		// The latest lookup goes as EVALSHA_RO; a server without the
		// script yet answers NOSCRIPT and gets it once as EVAL_RO.
		if d := after["evalsha_ro"] - before[name]["evalsha_ro"]; d != 1 {
			t.Errorf("node %s ran EVALSHA_RO %d times for one BatchGet; want 1", name, d)
		}
		if d := after["eval_ro"] - before[name]["eval_ro"]; d > 1 {
			t.Errorf("node %s ran EVAL_RO %d times for one BatchGet; want at most 1 (loading the script)", name, d)
		}
	}

	// B now has them in process: no Redis round trip at all.
	b.BatchGet(ctx(t), keys)
	if h, m := obsB.take(cache.TierRedis); h+m != 0 {
		t.Errorf("B's second BatchGet looked up %d keys in Redis; want 0", h+m)
	}
}

// Bodies and keys survive Redis byte for byte, metadata included.
func TestRedisRoundTrip(t *testing.T) {
	r := newCluster(t, 16, dbtest.Redis(t))
	obs := newCounts()
	s := newCache(t, openSQLite(t, 16), cache.Options{MaxBytes: -1, Redis: r, Observer: obs})
	bodies := []string{
		`{"s":"line\u2028sep\u2029 <a href='x'>&amp;</a> ✓ 😀","esc":"a\"b\\c\n\u0000"}`,
		`{"big":12345678901234567890,"huge":1e400,"neg":-0.0,"ref_key":99999}`,
		`{"raw":"` + "\u2028\u2029" + `"}`,
	}
	rows := []string{`row "ref_key":99999`, "ünïcødé ✓", "a:b:c"}
	for i, body := range bodies {
		want := put(t, s, rows[i], "c", int64(i)+7, body)
		for j := 0; j < 2; j++ {
			got, err := s.Get(ctx(t), want.Key)
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Body) != body || got.AddedID != want.AddedID || got.Shard != want.Shard || !got.CreatedAt.Equal(want.CreatedAt) || got.CreatedAt.Location() != time.UTC {
				t.Errorf("Get %d (read %d) = %+v %s; want %+v %s", i, j, got, got.Body, want, body)
			}
			got, err = s.Latest(ctx(t), rows[i], "c")
			if err != nil || string(got.Body) != body || got.RefKey != int64(i)+7 {
				t.Errorf("Latest %d (read %d) = %+v %s, %v; want ref %d %s", i, j, got, got.Body, err, i+7, body)
			}
		}
	}
	if h, m := obs.take(cache.TierRedis); h != 2*len(bodies) || m != 2*len(bodies) {
		t.Errorf("redis hits, misses = %d, %d; want %d, %d", h, m, 2*len(bodies), 2*len(bodies))
	}
	if n := obs.errors(cache.TierRedis, "decode"); n != 0 {
		t.Errorf("%d values failed to decode", n)
	}
}

// Redis's latest entries only move forward, whoever writes them.
func TestRedisLatestMovesForward(t *testing.T) {
	r := newCluster(t, 16, dbtest.Redis(t))
	back := newCounting(openSQLite(t, 16))
	s := newCache(t, back, cache.Options{MaxBytes: -1, Redis: r, MaxStaleness: time.Hour})
	put(t, s, "r", "c", 9, `{"v":9}`)
	if got := latestRef(t, s, "r", "c"); got != 9 { // fills Redis
		t.Fatalf("Latest = %d", got)
	}
	back.take("latest")
	put(t, s, "r", "c", 10, `{"v":10}`) // pushed: 10 > 9 although "10" < "9"
	put(t, s, "r", "c", 5, `{"v":5}`)   // older: not pushed
	if got := latestRef(t, s, "r", "c"); got != 10 {
		t.Errorf("Latest after pushes = %d; want 10", got)
	}
	put(t, s, "r", "c", cellar.MaxRefKey, `{}`)
	put(t, s, "r", "c", cellar.MaxRefKey-1, `{}`)
	if got := latestRef(t, s, "r", "c"); got != cellar.MaxRefKey {
		t.Errorf("Latest after pushes = %d; want MaxRefKey", got)
	}
	if n := back.take("latest"); n != 0 {
		t.Errorf("Latest reached the backing store %d times; want 0 (Redis was pushed to)", n)
	}
}

// With Redis, a write through one process reaches the others' in-process
// entries over pub/sub: they see it long before MaxStaleness.
func TestPubSubInvalidation(t *testing.T) {
	r := newCluster(t, 16, dbtest.Redis(t), dbtest.Redis(t))
	back := openSQLite(t, 16)
	clk := newClock() // frozen: only news of the write can refresh B
	a := newCache(t, back, cache.Options{Redis: r, Now: clk.Now, MaxStaleness: time.Hour})
	b := newCache(t, back, cache.Options{Redis: r, Now: clk.Now, MaxStaleness: time.Hour})
	put(t, a, "r", "c", 1, `{"v":1}`)
	put(t, a, "q", "c", 1, `{"v":1}`)
	latestRef(t, b, "r", "c")
	latestRef(t, b, "r", "n")
	b.Get(ctx(t), cellar.Key{RowKey: "r", Column: "n", RefKey: 1})
	b.Row(ctx(t), "r", nil)
	latestRef(t, b, "q", "c")
	b.BatchGet(ctx(t), []cellar.LookupKey{{RowKey: "q", Column: "c"}})

	put(t, a, "r", "c", 2, `{"v":2}`)
	put(t, a, "r", "n", 1, `{"n":1}`)
	a.BatchPut(ctx(t), []cellar.NewCell{{Key: cellar.Key{RowKey: "q", Column: "c", RefKey: 2}, Body: []byte(`{"v":2}`)}})
	deadline := time.Now().Add(10 * time.Second)
	for latestRef(t, b, "r", "c") != 2 || latestRef(t, b, "q", "c") != 2 || latestRef(t, b, "r", "n") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("B still serves r/c %d, q/c %d, r/n %d 10s after A's writes", latestRef(t, b, "r", "c"), latestRef(t, b, "q", "c"), latestRef(t, b, "r", "n"))
		}
		time.Sleep(5 * time.Millisecond) // waits for a message, not for time to pass
	}
	if _, err := b.Get(ctx(t), cellar.Key{RowKey: "r", Column: "n", RefKey: 1}); err != nil {
		t.Errorf("B's Get of a cell it had found missing: %v", err)
	}
	row, err := b.Row(ctx(t), "r", nil)
	if err != nil || len(row) != 2 || row[0].RefKey != 2 || row[1].Column != "n" {
		t.Errorf("B's Row = %+v, %v; want c/2 n/1", row, err)
	}
	if res := b.BatchGet(ctx(t), []cellar.LookupKey{{RowKey: "q", Column: "c"}}); res[0].Err != nil || res[0].Cell.RefKey != 2 {
		t.Errorf("B's BatchGet = %+v, %v; want ref 2", res[0].Cell, res[0].Err)
	}
}

// A Redis that is down costs nothing but its hits: reads and writes go on,
// failures are counted, and the node is used again once it is back.
func TestRedisDown(t *testing.T) {
	srv := dbtest.Redis(t)
	r := newCluster(t, 16, srv)
	back := newCounting(openSQLite(t, 16))
	clk := newClock()
	obs := newCounts()
	s := newCache(t, back, cache.Options{Redis: r, Now: clk.Now, Observer: obs, RedisRetry: time.Second, MaxStaleness: time.Hour})
	put(t, s, "r", "c", 1, `{"v":1}`)
	latestRef(t, s, "r", "c")

	srv.Kill()
	if got := latestRef(t, s, "r", "c"); got != 1 {
		t.Errorf("Latest from process memory with Redis down = %d; want 1", got)
	}
	put(t, s, "r", "c", 2, `{"v":2}`)
	if got := latestRef(t, s, "r", "c"); got != 2 {
		t.Errorf("Latest after a write with Redis down = %d; want 2", got)
	}
	for i := 0; i < 5; i++ {
		c, err := s.Get(ctx(t), cellar.Key{RowKey: "r", Column: "c", RefKey: 1})
		if err != nil || string(c.Body) != `{"v":1}` {
			t.Fatalf("Get with Redis down = %s, %v", c.Body, err)
		}
		if got := latestRef(t, s, fmt.Sprintf("new%d", i), "c"); got != -1 {
			t.Fatalf("Latest of nothing with Redis down = %d", got)
		}
	}
	if n := obs.errors(cache.TierRedis, "push"); n != 1 {
		t.Errorf("push errors = %d; want 1", n)
	}
	if n := obs.errors(cache.TierRedis, "get"); n != 0 {
		t.Errorf("get errors = %d; want 0: the node was left alone after the push failed", n)
	}

	// Once the retry period is over, the node is tried again: one failure.
	clk.Advance(time.Second)
	latestRef(t, s, "other", "c")
	latestRef(t, s, "other2", "c")
	if n := obs.errors(cache.TierRedis, "get"); n != 1 {
		t.Errorf("get errors after the retry period = %d; want 1", n)
	}

	// Back up (empty): the next fill after the retry period reaches it.
	srv.Start()
	clk.Advance(time.Second)
	put(t, s, "x", "c", 1, `{}`)
	obs.take(cache.TierRedis)
	latestRef(t, s, "x", "c") // miss everywhere, fills Redis
	if h, m := obs.take(cache.TierRedis); h != 0 || m != 1 {
		t.Errorf("redis hits, misses after restart = %d, %d; want 0, 1", h, m)
	}
	other := newCache(t, back, cache.Options{Redis: r, Now: clk.Now, Observer: obs})
	back.take("latest")
	if got := latestRef(t, other, "x", "c"); got != 1 {
		t.Errorf("another store's Latest = %d; want 1", got)
	}
	if n := back.take("latest"); n != 0 {
		t.Errorf("another store's Latest reached the backing store %d times; want 0 (Redis is back)", n)
	}
}

// A hung Redis costs a read no more than RedisTimeout, once per retry
// period.
func TestRedisHung(t *testing.T) {
	srv := dbtest.Redis(t)
	proxy := dbtest.NewProxy(t, srv.Addr())
	r := clusterAt(t, 16, 10*time.Second, proxy.Addr())
	clk := newClock()
	obs := newCounts()
	s := newCache(t, openSQLite(t, 16), cache.Options{Redis: r, Now: clk.Now, Observer: obs, RedisTimeout: 200 * time.Millisecond})
	put(t, s, "r", "c", 1, `{}`)
	proxy.Hang()

	start := time.Now()
	if got := latestRef(t, s, "r", "c"); got != 1 {
		t.Fatalf("Latest with Redis hung = %d; want 1", got)
	}
	// The cluster's own timeout is 10s: only RedisTimeout explains less.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Latest with Redis hung took %v; want about RedisTimeout (200ms)", d)
	}
	if n := obs.errors(cache.TierRedis, "get"); n != 1 {
		t.Errorf("get errors = %d; want 1", n)
	}
	swallowed := proxy.Swallowed()
	start = time.Now()
	for i := 0; i < 5; i++ {
		latestRef(t, s, fmt.Sprintf("n%d", i), "c")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("5 reads within the retry period took %v; the hung node should be left alone", d)
	}
	if n := proxy.Swallowed(); n != swallowed {
		t.Errorf("%d more bytes went to the hung node within the retry period", n-swallowed)
	}
}

// A stale answer that reached Redis (a read that began before a write and
// stored its answer after) is not served to a process that knows of the
// write.
func TestStaleRedisAnswerNotServed(t *testing.T) {
	r := newCluster(t, 16, dbtest.Redis(t))
	back := openSQLite(t, 16)
	g := newGated(back)
	clk := newClock()
	a := newCache(t, back, cache.Options{Redis: r, Now: clk.Now, MaxStaleness: time.Hour})
	b := newCache(t, g, cache.Options{Redis: r, Now: clk.Now, MaxStaleness: time.Hour})
	put(t, back, "r", "c", 1, `{}`)
	g.arm()
	done := make(chan int64)
	go func() { done <- latestRef(t, b, "r", "c") }()
	<-g.read
	put(t, a, "r", "c", 2, `{}`) // Redis has no entry yet: nothing to push to
	close(g.release)
	<-done // B stores its answer, ref 1, in Redis
	if got := latestRef(t, a, "r", "c"); got != 2 {
		t.Errorf("A's Latest after its write = %d; want 2, not Redis's stale 1", got)
	}
}

// A Store starts while Redis is down, works without it, and hears of other
// processes' writes once Redis is back.
func TestRedisDownAtStart(t *testing.T) {
	srv := dbtest.Redis(t)
	r := newCluster(t, 16, srv)
	srv.Kill()
	back := openSQLite(t, 16)
	clk := newClock()
	start := time.Now()
	b := newCache(t, back, cache.Options{Redis: r, Now: clk.Now, MaxStaleness: time.Hour})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("New with Redis down took %v", d)
	}
	put(t, b, "r", "c", 1, `{}`)
	if got := latestRef(t, b, "r", "c"); got != 1 {
		t.Fatalf("Latest with Redis down = %d; want 1", got)
	}

	srv.Start()
	clk.Advance(time.Hour / 2) // past the retry period; B's entry is still fresh
	a := newCache(t, back, cache.Options{Redis: r, Now: clk.Now})
	deadline := time.Now().Add(10 * time.Second)
	for ref := int64(2); ; ref++ {
		put(t, a, "r", "c", ref, `{}`)
		if latestRef(t, b, "r", "c") == ref {
			break // heard of A's write
		}
		if time.Now().After(deadline) {
			t.Fatalf("B never heard of A's writes after Redis came back")
		}
		time.Sleep(20 * time.Millisecond) // waits for B to resubscribe
	}
}

// Processes with different MaxStaleness share the Redis tier: each serves
// an entry only while it is younger than its own bound, whoever filled it
// (an entry carries its filler's bound, so its age is that less its TTL).
// Real time: Redis's TTLs run on its clock.
func TestMixedStalenessBounds(t *testing.T) {
	const short = 300 * time.Millisecond
	r := newCluster(t, 16, dbtest.Redis(t))
	back := openSQLite(t, 16)
	long := newCache(t, back, cache.Options{Redis: r, MaxStaleness: time.Hour})
	brief := newCache(t, back, cache.Options{Redis: r, MaxStaleness: short})
	put(t, back, "r", "c", 1, `{}`)
	put(t, back, "r", "d", 1, `{}`)
	if got := latestRef(t, long, "r", "c"); got != 1 { // fills Redis for an hour
		t.Fatalf("Latest = %d; want 1", got)
	}
	latestRef(t, long, "r", "d")
	start := time.Now()
	latestRef(t, brief, "r", "c") // copies the entry into its own tier
	put(t, back, "r", "c", 2, `{}`)
	put(t, back, "r", "d", 2, `{}`)
	time.Sleep(short - time.Since(start) + 50*time.Millisecond)
	if got := latestRef(t, brief, "r", "c"); got != 2 {
		t.Errorf("Latest %v after the entry was copied from Redis, with a bound of %v = %d; want 2", time.Since(start), short, got)
	}
	if got := latestRef(t, brief, "r", "d"); got != 2 {
		t.Errorf("Latest %v after another process filled Redis, with a bound of %v = %d; want 2", time.Since(start), short, got)
	}
	if got := latestRef(t, long, "r", "d"); got != 1 {
		t.Errorf("the long-bound process's Latest = %d; want 1, still cached", got)
	}
}

// A latest entry filled with a MaxStaleness of 10^12 ms or more (13
// digits; 300000h here) is served like any other: before, its bound was
// refused as too long, and every read of it was a decode error and a miss.
func TestHugeBoundLatestEntry(t *testing.T) {
	r := newCluster(t, 16, dbtest.Redis(t))
	for i, bound := range []time.Duration{time.Hour, 300000 * time.Hour} {
		back := openSQLite(t, 16)
		// Each bound its own prefix: the two runs do not share entries.
		prefix := fmt.Sprintf("huge%d-%d", i, time.Now().UnixNano())
		obs := newCounts()
		filler := newCache(t, back, cache.Options{Redis: r, MaxStaleness: bound, RedisPrefix: prefix, MaxBytes: -1})
		reader := newCache(t, back, cache.Options{Redis: r, MaxStaleness: bound, RedisPrefix: prefix, MaxBytes: -1, Observer: obs})
		put(t, back, "r", "c", 1, `{}`)
		if got := latestRef(t, filler, "r", "c"); got != 1 { // fills Redis
			t.Fatalf("Latest = %d; want 1", got)
		}
		// Written behind the caches' back: only a Redis hit still says 1.
		put(t, back, "r", "c", 2, `{}`)
		got := latestRef(t, reader, "r", "c")
		hits, _ := obs.take(cache.TierRedis)
		if got != 1 || hits != 1 || obs.errors(cache.TierRedis, "decode") != 0 {
			t.Errorf("max_staleness %v: another process's Latest = %d, %d Redis hits, %d decode errors; want 1 from the entry its filler stored, 1 hit, 0 errors",
				bound, got, hits, obs.errors(cache.TierRedis, "decode"))
		}
	}
}

// During a rollout, a process of the version before bounds with a longer
// max_staleness (1h here) fills latest entries without a bound ("{...}"
// with a PX of up to 1h). A process with a 300ms bound does not serve such
// an entry whose TTL outlives its bound (its age is unknown): before, it
// served it for the whole TTL, and a write acknowledged 400ms earlier was
// not seen.
func TestUnboundEntryPastReadersBound(t *testing.T) {
	const short = 300 * time.Millisecond
	srv := dbtest.Redis(t)
	r := newCluster(t, 16, srv)
	back := openSQLite(t, 16)
	prefix := fmt.Sprintf("old-%d", time.Now().UnixNano())
	key := fmt.Sprintf("%s:latest:%d:c:r", prefix, r.Shard("r"))
	// The value as the previous version stored it: this version's, less
	// the "MS|" bound.
	filler := newCache(t, back, cache.Options{Redis: r, MaxStaleness: time.Hour, RedisPrefix: prefix, MaxBytes: -1})
	put(t, back, "r", "c", 1, `{}`)
	if got := latestRef(t, filler, "r", "c"); got != 1 {
		t.Fatalf("Latest = %d; want 1", got)
	}
	_, cl := r.Node(r.Shard("r"))
	v, err := cl.Get(ctx(t), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	_, old, ok := strings.Cut(v, "|")
	if !ok {
		t.Fatalf("stored %q: no bound", v)
	}
	if err := cl.Set(ctx(t), key, old, time.Hour).Err(); err != nil { // an old filler, 1h bound
		t.Fatal(err)
	}
	start := time.Now()
	put(t, back, "r", "c", 2, `{}`) // acknowledged now
	brief := newCache(t, back, cache.Options{Redis: r, MaxStaleness: short, RedisPrefix: prefix, MaxBytes: -1})
	time.Sleep(short + 100*time.Millisecond)
	if got := latestRef(t, brief, "r", "c"); got != 2 {
		t.Errorf("Latest %v after a write, in a process with a bound of %v, from an entry filled by the previous version = %d; want 2", time.Since(start), short, got)
	}
}

// A process whose read began before its own write knows, once the read
// returns, that the answer is stale: its in-process merge refuses it (the
// write's marker). It still stores that answer in Redis, where a third
// process that never held the key serves it, long after the pub/sub news
// of the write was delivered (clock frozen; MaxStaleness 1h). (Review of
// 2026-12-08: it did.)
func TestWriterDoesNotFillRedisWithAnswerItKnowsStale(t *testing.T) {
	r := newCluster(t, 16, dbtest.Redis(t))
	back := openSQLite(t, 16)
	g := newGated(back)
	clk := newClock()
	a := newCache(t, g, cache.Options{Redis: r, Now: clk.Now, MaxStaleness: time.Hour})
	c := newCache(t, back, cache.Options{Redis: r, Now: clk.Now, MaxStaleness: time.Hour})
	put(t, back, "r", "col", 1, `{"v":1}`)

	g.arm()
	done := make(chan int64)
	go func() { done <- latestRef(t, a, "r", "col") }()
	<-g.read                            // A has read col/1 from storage
	put(t, a, "r", "col", 2, `{"v":2}`) // A's own write; Redis has no entry to push into
	close(g.release)
	<-done                             // A fills Redis with col/1 although its own marker says col/2 exists
	time.Sleep(200 * time.Millisecond) // news of the write long delivered
	if got := latestRef(t, c, "r", "col"); got != 2 {
		t.Errorf("C's first Latest, after A's write and its news = %d; want 2 (A stored in Redis an answer it knew was stale, served for up to MaxStaleness)", got)
	}
}

// A latest cell in Redis is served from there while the node holds writes
// back (CLIENT PAUSE WRITE, as a failover does): the lookup script is sent
// read-only. (Before, every EVALSHA was held back, and lookups of latest
// cells missed at RedisTimeout and went to storage.)
func TestRedisLookupDuringClientPauseWrite(t *testing.T) {
	srv := dbtest.Redis(t)
	r := newCluster(t, 16, srv)
	back := openSQLite(t, 16)
	a := newCache(t, back, cache.Options{Redis: r})
	obs := newCounts()
	c := newCache(t, back, cache.Options{Redis: r, Observer: obs, RedisTimeout: 500 * time.Millisecond})
	put(t, a, "r", "col", 1, `{"v":1}`)
	if got := latestRef(t, a, "r", "col"); got != 1 { // fills Redis
		t.Fatalf("latest = %d; want 1", got)
	}
	srv.PauseWrites(3 * time.Second)
	obs.take(cache.TierRedis)
	if got := latestRef(t, c, "r", "col"); got != 1 {
		t.Fatalf("latest from the other process = %d; want 1", got)
	}
	if hits, misses := obs.take(cache.TierRedis); hits != 1 || misses != 0 {
		t.Errorf("Redis tier during CLIENT PAUSE WRITE: %d hits, %d misses; want 1 hit", hits, misses)
	}
}

// docs/CACHE.md: "Redis 6.0 or later". A server without the read-only
// script commands (before 7.0) still serves latest cells: lookups fall
// back to EVALSHA. (Review of 2026-12-08: every latest lookup failed, ERR
// unknown command 'evalsha_ro', and the node was taken for failed.)
func TestLatestLookupOnRedisWithoutEvalRO(t *testing.T) {
	r := clusterAt(t, 16, time.Second, dbtest.RedisWithout(t, "EVAL_RO", "EVALSHA_RO").Addr())
	back := openSQLite(t, 16)
	a := newCache(t, back, cache.Options{Redis: r})
	obs := newCounts()
	c := newCache(t, back, cache.Options{Redis: r, Observer: obs})
	put(t, a, "r", "col", 1, `{"v":1}`)
	if got := latestRef(t, a, "r", "col"); got != 1 { // fills Redis
		t.Fatalf("latest = %d; want 1", got)
	}
	obs.take(cache.TierRedis)
	if got := latestRef(t, c, "r", "col"); got != 1 {
		t.Fatalf("latest from the other process = %d; want 1", got)
	}
	if hits, misses := obs.take(cache.TierRedis); hits != 1 || misses != 0 {
		t.Errorf("Redis tier on a server without EVALSHA_RO/EVAL_RO (as Redis 6): %d hits, %d misses, %d lookup errors; want 1 hit", hits, misses, obs.errors(cache.TierRedis, "lookup"))
	}
}
