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

// headSummer is a headNode that can also sum its heads over shard ranges
// (*sqlstore.Store).
type headSummer interface {
	ShardHeadsSum(ctx context.Context, ranges []cellar.ShardRange) (int64, error)
}

// KnownHeads reads the shards' last added_ids as Heads does, given the
// heads the engine already knows (known(shard), 0 if none; each at most
// the real head): a node whose heads all equal the known ones need not be
// read, and its shards get the known heads.
type KnownHeads func(ctx context.Context, known func(shard int) int64) (map[int]int64, error)

// NodeHeads returns a KnownHeads that asks every node, in parallel and
// each under timeout (0: no timeout of its own), for the heads of the
// shards that shardMap assigns to it. A node that fails or hangs only
// leaves its shards out (and the error is returned with the rest).
//
// A node is first asked for the sum of those heads (ShardHeadsSum). Heads
// only grow and no known head is above the real one, so if the sum equals
// the sum of the known heads, every head is known and the node's rows are
// not read: a server that is told of every write (Notify) reads one sum
// per node each poll instead of its 4096 rows.
func NodeHeads(shardMap func() *cellar.ShardMap, nodes []*shard.Node, timeout time.Duration) KnownHeads {
	return func(ctx context.Context, known func(shard int) int64) (map[int]int64, error) {
		m := shardMap()
		ranges := make(map[string][]cellar.ShardRange)
		for _, a := range m.Assignments {
			ranges[a.Node] = append(ranges[a.Node], a.ShardRange)
		}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex // protects out and errs
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
				heads, err := readNodeHeads(ctx, hn, ranges[n.Name], known)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
					return
				}
				// A node holds rows for shards that moved away too: keep
				// those the map assigns to it.
				for _, r := range ranges[n.Name] {
					for s := r.First; s <= r.Last; s++ {
						if h, ok := heads[s]; ok {
							out[s] = h
						}
					}
				}
			}()
		}
		wg.Wait()
		return out, errors.Join(errs...)
	}
}

// readNodeHeads returns the heads of a node: the known ones if the node's
// sum over ranges says they are all known, else the node's rows.
func readNodeHeads(ctx context.Context, hn headNode, ranges []cellar.ShardRange, known func(int) int64) (map[int]int64, error) {
	hs, ok := hn.(headSummer)
	if !ok || known == nil || len(ranges) == 0 {
		return hn.ShardHeads(ctx)
	}
	var local int64
	for _, r := range ranges {
		for s := r.First; s <= r.Last; s++ {
			local += known(s)
		}
	}
	sum, err := hs.ShardHeadsSum(ctx, ranges)
	if err != nil && ctx.Err() != nil {
		return nil, err
	}
	if err != nil || sum != local {
		// A sum that failed (it would overflow, say) falls back to the rows.
		return hn.ShardHeads(ctx)
	}
	heads := make(map[int]int64)
	for _, r := range ranges {
		for s := r.First; s <= r.Last; s++ {
			if h := known(s); h > 0 {
				heads[s] = h
			}
		}
	}
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

// knownHead is the head of shard that this engine knows (0: none).
func (e *Engine) knownHead(shard int) int64 { return e.heads[shard].Load() }

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
		m, err := e.readHeads(ctx, e.knownHead)
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

// Heads returns the last added_id of every shard with cells, as the
// engine knows them (read within half a poll interval, raised by Notify),
// and the error of the last read: a node that did not answer leaves its
// shards out. Index maintenance uses it to judge a backfill.
func (e *Engine) Heads(ctx context.Context) (map[int]int64, error) {
	heads, _, err := e.headsNow(ctx)
	out := make(map[int]int64)
	for s, h := range heads {
		if h > 0 {
			out[s] = h
		}
	}
	return out, err
}
