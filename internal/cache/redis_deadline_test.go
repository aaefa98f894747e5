package cache_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/cellar-db/cellar/internal/cache"
	"github.com/cellar-db/cellar/internal/dbtest"
)

// slowLink forwards TCP to target, delaying every chunk by d each way: a
// healthy Redis a few milliseconds away.
func slowLink(t *testing.T, target string, d time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	pipe := func(dst, src net.Conn) {
		defer dst.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				time.Sleep(d)
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); u.Close() })
			go pipe(u, c)
			go pipe(c, u)
		}
	}()
	return ln.Addr().String()
}

// One caller whose deadline is nearly spent must not take a healthy Redis
// node (a 4ms round trip, well within RedisTimeout) away from every other
// caller for RedisRetry: the half-deadline cut-off fires because of the
// caller's budget, not the node.
func TestShortDeadlineKeepsHealthyRedis(t *testing.T) {
	srv := dbtest.Redis(t)
	r := clusterAt(t, 16, 10*time.Second, slowLink(t, srv.Addr(), 2*time.Millisecond))
	back := openSQLite(t, 16)
	obs := newCounts()
	// Redis only (no in-process tier), so that every read asks Redis.
	s := newCache(t, back, cache.Options{Redis: r, MaxBytes: -1, Observer: obs,
		RedisTimeout: 500 * time.Millisecond, RedisRetry: time.Minute, MaxStaleness: time.Minute})
	put(t, back, "r", "c", 1, `{}`)
	put(t, back, "r2", "c", 1, `{}`)
	latestRef(t, s, "r", "c") // fills Redis
	obs.take(cache.TierRedis)
	if got := latestRef(t, s, "r", "c"); got != 1 {
		t.Fatalf("Latest = %d", got)
	}
	if h, _ := obs.take(cache.TierRedis); h != 1 {
		t.Fatalf("warm read: %d Redis hits; want 1", h)
	}

	// A caller with 6ms left: its Redis round trip gets 3ms.
	sctx, cancel := context.WithTimeout(context.Background(), 6*time.Millisecond)
	s.Latest(sctx, "r2", "c")
	cancel()
	if n := obs.errors(cache.TierRedis, "get"); n != 0 {
		t.Errorf("get errors after one caller with 6ms left = %d; want 0 (the node answers in ~4ms, RedisTimeout is 500ms)", n)
	}
	obs.take(cache.TierRedis)
	if got := latestRef(t, s, "r", "c"); got != 1 {
		t.Fatalf("Latest = %d", got)
	}
	if h, _ := obs.take(cache.TierRedis); h != 1 {
		t.Errorf("a caller with a 30s deadline: %d Redis hits; want 1 (the healthy node was left alone for RedisRetry)", h)
	}
}

// New waits up to RedisTimeout for its subscriptions, as CACHE.md says,
// also when the nodes accept connections and never answer: each node's
// subscription is made by its listener, not by New, one node after the
// other, under the cluster's own timeout. (Review of 2026-12-08: two hung
// nodes, a 3 s cluster timeout and a 100 ms RedisTimeout held New up 6 s.)
func TestNewWithHungRedisWaitsOnlyRedisTimeout(t *testing.T) {
	srv := dbtest.Redis(t)
	p1, p2 := dbtest.NewProxy(t, srv.Addr()), dbtest.NewProxy(t, srv.Addr())
	p1.Hang()
	p2.Hang()
	r := clusterAt(t, 16, 3*time.Second, p1.Addr(), p2.Addr())
	start := time.Now()
	newCache(t, openSQLite(t, 16), cache.Options{Redis: r, RedisTimeout: 100 * time.Millisecond})
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("New with two hung Redis nodes took %v; want about RedisTimeout (100ms), not twice the cluster's timeout (3s)", d)
	}
}
