package cache

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/redis"
)

// errorCounts is an Observer that counts errors by "tier/op".
type errorCounts struct {
	mu sync.Mutex // protects n
	n  map[string]int
}

func (e *errorCounts) ObserveCache(string, int, int) {}

func (e *errorCounts) ObserveCacheError(tier, op string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n[tier+"/"+op]++
}

func (e *errorCounts) get(tier, op string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[tier+"/"+op]
}

type testLog struct{ tb testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// newTestShared returns a Redis tier over one fresh Redis node, named r0,
// holding the latest cell (ref 1) of row0..row(rows-1), column c.
func newTestShared(t *testing.T, timeout time.Duration, rows int) (*shared, *dbtest.RedisServer, *errorCounts, []key) {
	t.Helper()
	srv := dbtest.Redis(t)
	r, err := redis.Open(redis.Config{Shards: 16, Timeout: 10 * time.Second,
		Nodes: []redis.Node{{Name: "r0", Addr: srv.Addr()}},
		Map:   []cellar.Assignment{{Node: "r0", ShardRange: cellar.ShardRange{First: 0, Last: 15}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	obs := &errorCounts{n: map[string]int{}}
	s := newShared(Options{Redis: r, RedisPrefix: "t", RedisTimeout: timeout, RedisCellTTL: time.Hour,
		RedisRetry: time.Minute, MaxStaleness: time.Hour, Observer: obs, Logger: slog.New(slog.NewTextHandler(testLog{t}, nil)),
	}, func() int64 { return time.Now().UnixNano() }, nil)
	t.Cleanup(s.close) // before r.Close: waits for combined round trips
	var keys []key
	var fs []fill
	for i := range rows {
		row := fmt.Sprintf("row%d", i)
		keys = append(keys, latestKey(row, "c"))
		fs = append(fs, fill{k: keys[i], cell: cellar.Cell{Key: cellar.Key{RowKey: row, Column: "c", RefKey: 1}, Body: []byte(`{}`)}})
	}
	s.fill(context.Background(), fs, time.Now().Add(time.Hour).UnixNano())
	if n := obs.get(TierRedis, "fill"); n != 0 {
		t.Fatalf("%d fill errors", n)
	}
	return s, srv, obs, keys
}

// holdSlots takes every round-trip slot of c, as round trips in flight
// would, so that lookups queue; the returned function gives back all but
// the one finish hands on.
func holdSlots(c *coalescer) (release func()) {
	c.mu.Lock()
	c.inFlight += c.limit
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.inFlight -= c.limit - 1
		c.mu.Unlock()
	}
}

// waitQueued waits until n lookups are queued on c.
func waitQueued(t *testing.T, c *coalescer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		q := len(c.queue)
		c.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d lookups queued after 10s; want %d", q, n)
		}
		time.Sleep(time.Millisecond) // waits for goroutines to queue, not for time to pass
	}
}

// pause makes the Redis server hold every client's commands for d.
func pause(t *testing.T, srv *dbtest.RedisServer, d time.Duration) {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer c.Close()
	if err := c.Do(context.Background(), "CLIENT", "PAUSE", d.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatal(err)
	}
}

type lookupResult struct {
	answers []*entry
	took    time.Duration
}

// A queued caller with a short deadline returns by it while the combined
// round trip it joined is held by a paused Redis; the round trip is not cut
// short for the callers with time to spare, who get their answers once
// Redis answers, and the node is not failed.
func TestCombinedTripOutlivesLeavingCaller(t *testing.T) {
	const held, deadline = 1500 * time.Millisecond, 400 * time.Millisecond
	s, srv, obs, keys := newTestShared(t, 5*time.Second, 4)
	c := s.lookups["r0"]
	release := holdSlots(c)
	long := make(chan lookupResult, 3)
	for i := range 3 {
		go func() {
			start := time.Now()
			a := c.lookup(context.Background(), keys[i:i+1])
			long <- lookupResult{a, time.Since(start)}
		}()
	}
	waitQueued(t, c, 3)
	short := make(chan lookupResult, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		a := c.lookup(sctx, keys[3:4])
		short <- lookupResult{a, time.Since(start)}
	}()
	waitQueued(t, c, 4)

	pause(t, srv, held)
	c.finish() // one slot frees: the queue goes in one combined round trip, held
	release()
	waitQueued(t, c, 0)
	r := <-short
	if r.answers != nil || r.took >= deadline {
		t.Errorf("caller with a %v deadline: answers %v after %v; want none, before its deadline", deadline, r.answers, r.took)
	}
	for range 3 {
		r := <-long
		if len(r.answers) != 1 || r.answers[0] == nil || r.answers[0].cells[0].RefKey != 1 {
			t.Errorf("caller with time to spare: answers %v after %v; want ref 1 (the combined round trip was cut short)", r.answers, r.took)
		} else if r.took < held/2 {
			t.Errorf("caller with time to spare answered after %v; Redis was paused for %v", r.took, held)
		}
	}
	if n := obs.get(TierRedis, "get"); n != 0 || s.isDown("r0") {
		t.Errorf("get errors = %d, node down %v; want 0, false", n, s.isDown("r0"))
	}
}

// A combined round trip that Redis does not answer within RedisTimeout
// fails the node, although every caller left long before (their budgets
// were short): its cut-off is a full RedisTimeout, not theirs.
func TestCombinedTripCutOffFailsNode(t *testing.T) {
	const timeout, deadline = time.Second, 400 * time.Millisecond
	s, srv, obs, keys := newTestShared(t, timeout, 2)
	c := s.lookups["r0"]
	release := holdSlots(c)
	short := make(chan lookupResult, 2)
	for i := range 2 {
		go func() {
			sctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			a := c.lookup(sctx, keys[i:i+1])
			short <- lookupResult{a, time.Since(start)}
		}()
	}
	waitQueued(t, c, 2)

	pause(t, srv, 3*timeout)
	start := time.Now()
	c.finish()
	release()
	waitQueued(t, c, 0) // both in the combined round trip
	for range 2 {
		if r := <-short; r.answers != nil || r.took >= deadline {
			t.Errorf("caller with a %v deadline: answers %v after %v; want none, before its deadline", deadline, r.answers, r.took)
		}
	}
	for obs.get(TierRedis, "get") == 0 && time.Since(start) < 10*time.Second {
		time.Sleep(time.Millisecond) // waits for the cut-off
	}
	took := time.Since(start)
	if n := obs.get(TierRedis, "get"); n != 1 || !s.isDown("r0") {
		t.Errorf("get errors = %d, node down %v after a combined round trip went unanswered; want 1, true", n, s.isDown("r0"))
	}
	if took < timeout*9/10 || took > 2*timeout {
		t.Errorf("the combined round trip failed after %v; want about RedisTimeout (%v)", took, timeout)
	}
}
