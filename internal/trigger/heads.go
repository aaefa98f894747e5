package trigger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/shard"
)

// headNode is a storage node that reports its shards' last added_ids
// (*sqlstore.Store).
type headNode interface {
	ShardHeads(ctx context.Context) (map[int]int64, error)
}

// headSummer is a headNode that can also tell cheaply whether any of its
// heads changed (*sqlstore.Store).
type headSummer interface {
	ShardHeadsSum(ctx context.Context) (string, error)
}

// NodeHeads returns a Heads that asks every node, in parallel and each
// under timeout (0: no timeout of its own), for the heads of the shards
// that shardMap assigns to it. A node that fails or hangs only leaves its
// shards out (and the error is returned with the rest). A node whose
// heads fingerprint (ShardHeadsSum) did not change since the last call is
// not read again: heads only grow, so an equal sum means equal heads.
func NodeHeads(shardMap func() *cellar.ShardMap, nodes []*shard.Node, timeout time.Duration) Heads {
	var mu sync.Mutex // protects last
	type nodeHeads struct {
		sum   string
		heads map[int]int64
	}
	last := make(map[string]nodeHeads)
	return func(ctx context.Context) (map[int]int64, error) {
		m := shardMap()
		owner := make([]string, m.ShardCount)
		for _, a := range m.Assignments {
			for i := a.First; i <= a.Last; i++ {
				owner[i] = a.Node
			}
		}
		var (
			wg   sync.WaitGroup
			omu  sync.Mutex // protects out and errs
			out  = make(map[int]int64, m.ShardCount)
			errs []error
		)
		for _, n := range nodes {
			hn, ok := n.Store.(headNode)
			if !ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := ctx
				if timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, timeout)
					defer cancel()
				}
				heads, err := readNodeHeads(ctx, hn, func() (string, map[int]int64) {
					mu.Lock()
					defer mu.Unlock()
					l := last[n.Name]
					return l.sum, l.heads
				}, func(sum string, heads map[int]int64) {
					mu.Lock()
					defer mu.Unlock()
					last[n.Name] = nodeHeads{sum, heads}
				})
				omu.Lock()
				defer omu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
					return
				}
				for s, h := range heads {
					if s >= 0 && s < len(owner) && owner[s] == n.Name {
						out[s] = h
					}
				}
			}()
		}
		wg.Wait()
		return out, errors.Join(errs...)
	}
}

// readNodeHeads reads a node's heads, or returns the last ones if its
// fingerprint is unchanged. The returned map must not be modified.
func readNodeHeads(ctx context.Context, hn headNode, last func() (string, map[int]int64), keep func(string, map[int]int64)) (map[int]int64, error) {
	hs, ok := hn.(headSummer)
	if !ok {
		return hn.ShardHeads(ctx)
	}
	sum, err := hs.ShardHeadsSum(ctx)
	if err != nil {
		return nil, err
	}
	if lastSum, lastHeads := last(); lastHeads != nil && sum == lastSum {
		return lastHeads, nil
	}
	// Read after the sum: if heads move in between, the next sum differs
	// from the one kept and the heads are read again.
	heads, err := hn.ShardHeads(ctx)
	if err != nil {
		return nil, err
	}
	keep(sum, heads)
	return heads, nil
}

// Notify tells the engine that a cell of column was committed at addedID
// in shard: its consumers' waiting claims are woken at once instead of at
// their next poll. Call it after the commit (cmd/cellar wires it to the
// sharding store's Committed hook); cells written by other processes are
// found by polling as before. It is cheap and does not block on I/O.
//
// A committed added_id is a safe head for the shard: added_ids are given
// out in commit order under the shard's sequence lock, without gaps, and
// the lock is released only after the commit is visible (the ordering
// guarantee, docs/ARCHITECTURE.md), so every cell up to addedID in shard
// is committed and a scan started now sees it. That is what lets a claim
// pass over cells of other columns up to the head it was told.
func (e *Engine) Notify(shard int, addedID int64, column string) {
	if shard < 0 || shard >= e.count || addedID < 1 {
		return
	}
	old := raiseHead(&e.heads[shard], addedID)
	if addedID <= old {
		// A poll or a notification that woke every trigger covered it.
		return
	}
	// The triggers on other columns need not look at this cell — unless
	// cells came between the last head known and this one that nobody was
	// told about (written by another process, or notified late): then
	// every trigger looks, as a poll would have made it.
	tcs := *e.all.Load()
	if addedID == old+1 {
		tcs = (*e.byColumn.Load())[column]
	}
	if len(tcs) == 0 {
		return
	}
	now := e.now()
	for _, tc := range tcs {
		tc.mu.Lock()
		tc.raise(shard, addedID, now)
		tc.mu.Unlock()
	}
}

// raiseHead sets h to v if v is higher, and returns h's previous value.
func raiseHead(h *atomic.Int64, v int64) int64 {
	for {
		old := h.Load()
		if v <= old || h.CompareAndSwap(old, v) {
			return old
		}
	}
}

// applyHeads raises the engine's heads to those read from the nodes, and
// tells every trigger about the shards that moved.
func (e *Engine) applyHeads(m map[int]int64) {
	type moved struct {
		shard int
		head  int64
	}
	var changed []moved
	for s, h := range m {
		if s >= 0 && s < e.count && raiseHead(&e.heads[s], h) < h {
			changed = append(changed, moved{s, h})
		}
	}
	if len(changed) == 0 {
		return
	}
	now := e.now()
	for _, tc := range *e.all.Load() {
		tc.mu.Lock()
		for _, c := range changed {
			tc.raise(c.shard, c.head, now)
		}
		tc.mu.Unlock()
	}
}

// pollHeads starts reading the heads in the background if the last read
// is older than half a poll interval, and returns a channel that is
// closed when the read in flight ends (nil when none is).
func (e *Engine) pollHeads() <-chan struct{} {
	e.headsMu.Lock()
	defer e.headsMu.Unlock()
	if e.headsDone != nil {
		return e.headsDone
	}
	if e.headsRead && time.Since(e.headsAt) < e.poll/2 {
		return nil
	}
	done := make(chan struct{})
	started := e.background(func(ctx context.Context) {
		m, err := e.readHeads(ctx)
		e.applyHeads(m)
		e.headsMu.Lock()
		e.headsLast, e.headsErr, e.headsRead, e.headsDone = m, err, true, nil
		e.headsMu.Unlock()
		close(done)
	})
	if !started {
		return nil
	}
	e.headsDone, e.headsAt = done, time.Now()
	return done
}

// awaitHeads makes sure the heads were read within half a poll interval,
// waiting for a read if needed.
func (e *Engine) awaitHeads(ctx context.Context) {
	if done := e.pollHeads(); done != nil {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
}

// headsNow returns the heads of every shard (0: no cell known), read
// within half a poll interval, whether each was in the last read, and the
// error of the last read.
func (e *Engine) headsNow(ctx context.Context) ([]int64, func(shard int) bool, error) {
	e.awaitHeads(ctx)
	e.headsMu.Lock()
	last, err := e.headsLast, e.headsErr
	e.headsMu.Unlock()
	heads := make([]int64, e.count)
	for s := range heads {
		heads[s] = e.heads[s].Load()
	}
	return heads, func(s int) bool { _, ok := last[s]; return ok }, err
}
