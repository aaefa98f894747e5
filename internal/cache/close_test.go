package cache

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// closeGate is a go-redis hook that holds the lookup pipelines naming key
// hold until release is closed, those naming key cut until their context
// ends, and counts the lookup pipelines that start after closed is set.
type closeGate struct {
	hold, cut  string
	release    chan struct{}
	closed     atomic.Bool
	afterClose atomic.Int64
}

func (g *closeGate) DialHook(next goredis.DialHook) goredis.DialHook          { return next }
func (g *closeGate) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook { return next }

func (g *closeGate) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		lookup, hold, cut := false, false, false
		for _, c := range cmds {
			if c.Name() != "mget" && c.Name() != "evalsha_ro" && c.Name() != "eval_ro" {
				continue
			}
			lookup = true
			for _, a := range c.Args() {
				hold = hold || a == g.hold
				cut = cut || a == g.cut
			}
		}
		if lookup && g.closed.Load() {
			g.afterClose.Add(1)
		}
		switch {
		case hold:
			<-g.release
		case cut:
			<-ctx.Done()
			return ctx.Err()
		}
		return next(ctx, cmds)
	}
}

// No lookup round trip starts once the Redis tier is closed: a caller's
// own round trip that ends after close (which waits only for the combined
// round trips it owns) answers the lookups queued behind it as misses,
// instead of handing them its slot (before, that started a combined round
// trip on the closed tier, a WaitGroup Add after its Wait).
func TestNoCombinedTripAfterClose(t *testing.T) {
	s, _, _, keys := newTestShared(t, 5*time.Second, 3)
	c := s.lookups["r0"]
	g := &closeGate{cut: s.redisKey(keys[0]), hold: s.redisKey(keys[1]), release: make(chan struct{})}
	for _, cl := range s.r.Nodes() {
		cl.AddHook(g)
	}
	inFlight := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.inFlight
	}
	// A combined round trip (of A), which close cuts short and waits for.
	release := holdSlots(c)
	aDone := make(chan struct{})
	go func() { defer close(aDone); c.lookup(context.Background(), keys[0:1]) }()
	waitQueued(t, c, 1)
	c.finish()
	release()
	// B's own round trip, held past close.
	bDone := make(chan struct{})
	go func() { defer close(bDone); c.lookup(context.Background(), keys[1:2]) }()
	for deadline := time.Now().Add(10 * time.Second); inFlight() != 2; {
		if time.Now().After(deadline) {
			t.Fatalf("in flight = %d; want 2 (A's combined trip and B's own)", inFlight())
		}
		time.Sleep(time.Millisecond)
	}
	s.close()
	<-aDone
	// C queues behind B after close returned.
	c.mu.Lock()
	c.inFlight += c.limit - c.inFlight
	c.mu.Unlock()
	cDone := make(chan struct{})
	go func() {
		defer close(cDone)
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c.lookup(cctx, keys[2:3])
	}()
	waitQueued(t, c, 1)
	g.closed.Store(true)
	close(g.release)
	<-bDone
	<-cDone
	time.Sleep(100 * time.Millisecond)
	if n := g.afterClose.Load(); n != 0 {
		t.Errorf("%d lookup round trips started after the Redis tier was closed (close waits only for combined round trips running when it is called)", n)
	}
}
