package trigger

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// This file is the engine's copy of trigger state, which makes a claim
// cost no more at 4096 shards than at 8: a claim decides in memory which
// shard to try, and pays only for reading that shard's cells and for the
// transaction that leases it.
//
// The copy is a cache and never the authority. Every decision that a
// guarantee rests on is taken again on the metadata node, in the
// transaction that changes a shard's row (sqlstore.UpdateTriggerShardFrom:
// it writes only if the stored row equals the copy, and otherwise runs the
// engine's check on the stored row under its lock). So a stale copy can
// make a claim try a shard it cannot have, or wait for a shard it could
// have had, and nothing else:
//
//   - rows (offset, lease, retry per shard): a claim reads cells after the
//     copy's offset and leases only if the stored offset is the same, so a
//     stale offset costs one scan. A stale lease or retry makes the check
//     refuse (one statement and one transaction wasted) or makes the claim
//     pass over a shard that another consumer gave up, until the next load.
//     The stored row every such call saw replaces the copy's.
//   - known heads: a shard is tried only when its known head is beyond its
//     offset, so a head that is too low delays its cells, and a head is
//     never too high: it is either read from shard_seq or it is the
//     added_id of a committed cell (Notify), and by the ordering guarantee
//     every cell up to a committed added_id is committed too. The offset
//     moves over cells of other columns only up to such a head, read
//     before the scan that found none of the trigger's cells.
//   - definition, parked count, replays, live consumers: a change made by
//     another server takes effect here within Options.StateRefresh (a
//     pause, a definition, a replay, the fair share); this engine's own
//     changes (Define, Reset, Replay) reload the copy before the next claim.
//
// Everything is read again from the metadata node every StateRefresh while
// claims run, so changes made by other servers are seen within it; a
// restarted engine starts from the stored state.

// shardQueue is a set of shards in the order they joined it, with
// constant-time add, remove, membership and move to the back.
type shardQueue struct {
	next, prev []int32 // neighbours in the queue; -1: none
	in         []bool
	head, tail int32
	n          int
}

func newShardQueue(count int) shardQueue {
	q := shardQueue{next: make([]int32, count), prev: make([]int32, count), in: make([]bool, count), head: -1, tail: -1}
	return q
}

// set adds x at the back or removes it, and reports whether it added it.
func (q *shardQueue) set(x int, in bool) bool {
	switch {
	case in && !q.in[x]:
		q.push(x)
		return true
	case !in && q.in[x]:
		q.unlink(x)
	}
	return false
}

// toBack moves x, if it is in the queue, to the back.
func (q *shardQueue) toBack(x int) {
	if q.in[x] && q.tail != int32(x) {
		q.unlink(x)
		q.push(x)
	}
}

func (q *shardQueue) push(x int) {
	q.in[x], q.prev[x], q.next[x] = true, q.tail, -1
	if q.tail >= 0 {
		q.next[q.tail] = int32(x)
	} else {
		q.head = int32(x)
	}
	q.tail = int32(x)
	q.n++
}

func (q *shardQueue) unlink(x int) {
	p, n := q.prev[x], q.next[x]
	if p >= 0 {
		q.next[p] = n
	} else {
		q.head = n
	}
	if n >= 0 {
		q.prev[n] = p
	} else {
		q.tail = p
	}
	q.in[x] = false
	q.n--
}

// each calls f on the shards from the front (oldest) while f returns true.
func (q *shardQueue) each(f func(x int) bool) {
	for x := q.head; x >= 0; x = q.next[x] {
		if !f(int(x)) {
			return
		}
	}
}

// triggerState is this engine's copy of one trigger's state.
type triggerState struct {
	name    string
	loading sync.Mutex // held by the load in progress
	// updating[s] is held by this engine's update of shard s's row, from
	// the statement to keeping the row it returned (Engine.update).
	updating []sync.Mutex

	mu       sync.Mutex // protects the fields below
	loaded   bool       // the fields hold a load's result
	stale    bool       // a change made here that the copy does not mirror: load before use
	loadedAt time.Time  // when the last load began (real time)
	triedAt  time.Time  // when the last background load began
	def      sqlstore.TriggerDef
	rows     []sqlstore.TriggerShard // by shard; the zero state for shards without a row
	rowGen   []uint64                // gen when this engine last set each row
	gen      uint64
	// known is, per shard, the highest added_id that this engine knows to
	// be committed and that may hold a cell of the trigger's columns.
	known []int64
	// work holds the shards whose known head is beyond the offset, and
	// those with cells to replay, oldest first: claims take the shard that
	// has waited longest, so that a backlog drains in order.
	work   shardQueue
	replay []bool
	// replayOut is, per shard, the token of the lease under which replayed
	// cells are out in a batch (0: none): the shard is busy, as one with
	// a batch of new cells out is.
	replayOut []int64
	trying    []bool // a claim of this engine is leasing the shard
	parked    int    // parked cells not being replayed
	live      int    // live consumers when last counted
	// wake is closed when work may have come (and replaced by the next
	// waiter); nil while no claim waits.
	wake chan struct{}
}

func newTriggerState(name string, count int) *triggerState {
	tc := &triggerState{name: name, updating: make([]sync.Mutex, count), rows: make([]sqlstore.TriggerShard, count), rowGen: make([]uint64, count),
		known: make([]int64, count), work: newShardQueue(count), replay: make([]bool, count), replayOut: make([]int64, count),
		trying: make([]bool, count)}
	for s := range tc.rows {
		tc.rows[s].Shard = s
	}
	return tc
}

// subscribe returns a channel that is closed when work may have come.
// Callers hold tc.mu.
func (tc *triggerState) subscribe() <-chan struct{} {
	if tc.wake == nil {
		tc.wake = make(chan struct{})
	}
	return tc.wake
}

// signal wakes the waiting claims. Callers hold tc.mu.
func (tc *triggerState) signal() {
	if tc.wake != nil {
		close(tc.wake)
		tc.wake = nil
	}
}

// recheck puts shard s in the work set or takes it out, and wakes the
// waiting claims if it may be claimable now. Callers hold tc.mu.
func (tc *triggerState) recheck(s int, now time.Time) {
	r := &tc.rows[s]
	in := tc.known[s] > r.Acked || tc.replay[s]
	tc.work.set(s, in)
	if in && !tc.busy(s) && !r.RetryAt.After(now) {
		tc.signal()
	}
}

// busy reports whether shard s has a batch out under its current lease.
// Callers hold tc.mu.
func (tc *triggerState) busy(s int) bool {
	r := &tc.rows[s]
	return r.Delivered > r.Acked || (tc.replayOut[s] != 0 && tc.replayOut[s] == r.Token)
}

// raise records that cells up to addedID may be in shard s. Callers hold
// tc.mu.
func (tc *triggerState) raise(s int, addedID int64, now time.Time) {
	if addedID > tc.known[s] {
		tc.known[s] = addedID
		tc.recheck(s, now)
	}
}

// setRow replaces the copy of a shard's row with one the metadata node
// returned. Callers hold tc.mu.
func (tc *triggerState) setRow(r sqlstore.TriggerShard, now time.Time) {
	if r.Shard < 0 || r.Shard >= len(tc.rows) {
		return
	}
	tc.gen++
	tc.rows[r.Shard], tc.rowGen[r.Shard] = r, tc.gen
	// Delivered cells were read from the shard: they are committed.
	tc.known[r.Shard] = max(tc.known[r.Shard], r.Delivered)
	tc.recheck(r.Shard, now)
}

// inWork reports whether shard s has cells to deliver now. Callers hold
// tc.mu.
func (tc *triggerState) inWork(s int, now time.Time) bool {
	r := &tc.rows[s]
	return (tc.known[s] > r.Acked && !r.RetryAt.After(now)) || tc.replay[s]
}

// row returns the copy of shard s's row, or the zero state if this engine
// has no copy of the trigger.
func (tc *triggerState) row(s int) sqlstore.TriggerShard {
	if tc == nil {
		return sqlstore.TriggerShard{Shard: s}
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.rows[s]
}

// invalidate makes the next claim load the trigger's state before it
// decides anything: for changes made by this engine that the copy does
// not mirror (a definition, a reset, a replay).
func (tc *triggerState) invalidate() {
	if tc == nil {
		return
	}
	tc.mu.Lock()
	tc.stale = true
	tc.mu.Unlock()
}

// cached returns this engine's copy of trigger name, or nil if it has none.
func (e *Engine) cached(name string) *triggerState {
	e.triggersMu.Lock()
	defer e.triggersMu.Unlock()
	return e.triggers[name]
}

// trigger returns the copy of trigger name's state, loaded and not
// invalidated; it starts a load in the background if the copy is older
// than the refresh interval. Returns ErrNotFound for an unknown trigger.
func (e *Engine) trigger(ctx context.Context, name string) (*triggerState, error) {
	e.triggersMu.Lock()
	tc := e.triggers[name]
	if tc == nil {
		tc = newTriggerState(name, e.count)
		e.triggers[name] = tc
	}
	e.triggersMu.Unlock()
	if err := e.ensureLoaded(ctx, tc); err != nil {
		if !tc.isLoaded() {
			e.triggersMu.Lock()
			if e.triggers[name] == tc {
				delete(e.triggers, name) // an unknown trigger is not kept
			}
			e.triggersMu.Unlock()
		}
		return nil, err
	}
	return tc, nil
}

func (tc *triggerState) isLoaded() bool {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.loaded
}

// ensureLoaded loads tc now if it was never loaded or was invalidated, and
// in the background if it is older than the refresh interval.
func (e *Engine) ensureLoaded(ctx context.Context, tc *triggerState) error {
	tc.mu.Lock()
	must := !tc.loaded || tc.stale
	due := !must && time.Since(tc.loadedAt) >= e.refresh && time.Since(tc.triedAt) >= e.refresh
	if due {
		tc.triedAt = time.Now()
	}
	tc.mu.Unlock()
	if must {
		tc.loading.Lock()
		defer tc.loading.Unlock()
		tc.mu.Lock()
		must = !tc.loaded || tc.stale // another load may have done it meanwhile
		tc.mu.Unlock()
		if must {
			return e.load(ctx, tc)
		}
		return nil
	}
	if due {
		e.background(func(ctx context.Context) {
			if tc.loading.TryLock() {
				defer tc.loading.Unlock()
				// On a failure the copy in use stays and the next refresh
				// tries again; but a deleted trigger must not be served on
				// from it: the next claim loads, and finds it gone.
				if err := e.load(ctx, tc); errors.Is(err, cellar.ErrNotFound) {
					tc.invalidate()
				}
			}
		})
	}
	return nil
}

// load reads the trigger's state from the metadata node into tc. Rows
// this engine changed while the load ran are kept: they are newer than
// what the load read. Callers hold tc.loading.
func (e *Engine) load(ctx context.Context, tc *triggerState) error {
	started := time.Now()
	tc.mu.Lock()
	startGen := tc.gen
	tc.mu.Unlock()
	def, err := e.state.Trigger(ctx, tc.name)
	if err != nil {
		return err
	}
	rows, err := e.state.TriggerShards(ctx, tc.name)
	if err != nil {
		return err
	}
	parked, err := e.state.ParkedCounts(ctx, tc.name)
	if err != nil {
		return err
	}
	replays, err := e.state.ReplayShards(ctx, tc.name)
	if err != nil {
		return err
	}
	live, err := e.state.LiveConsumers(ctx, tc.name, e.now().Add(-e.ttl))
	if err != nil {
		return err
	}
	e.awaitHeads(ctx)

	tc.mu.Lock()
	defer tc.mu.Unlock()
	// Register for notifications before reading the heads into known: a
	// cell committed after this reads its head either raised the head
	// before (and known takes it below) or notifies tc after.
	columnsChanged := !tc.loaded || !slices.Equal(tc.def.Columns, def.Columns)
	tc.def = def
	if columnsChanged {
		e.register(tc, def.Columns)
		// Cells of other columns were passed over: they may be the
		// trigger's now.
		for s := range tc.known {
			tc.known[s] = max(tc.known[s], e.heads[s].Load())
		}
	}
	got := make([]bool, len(tc.rows))
	for _, r := range rows {
		if r.Shard < 0 || r.Shard >= len(tc.rows) {
			continue
		}
		got[r.Shard] = true
		if tc.rowGen[r.Shard] <= startGen {
			tc.rows[r.Shard] = r
		}
	}
	for s := range tc.rows {
		if !got[s] && tc.rowGen[s] <= startGen {
			tc.rows[s] = sqlstore.TriggerShard{Shard: s}
		}
	}
	clear(tc.replay)
	for _, s := range replays {
		if s >= 0 && s < len(tc.replay) {
			tc.replay[s] = true
		}
	}
	tc.parked = 0
	for _, n := range parked {
		tc.parked += n
	}
	tc.live = live
	now := e.now()
	for s := range tc.rows {
		tc.known[s] = max(tc.known[s], tc.rows[s].Delivered)
		tc.recheck(s, now)
	}
	tc.loaded, tc.stale, tc.loadedAt = true, false, started
	tc.signal()
	return nil
}

// register makes tc receive the notifications of its columns, and of
// every new head.
func (e *Engine) register(tc *triggerState, columns []string) {
	e.triggersMu.Lock()
	defer e.triggersMu.Unlock()
	old := *e.byColumn.Load()
	next := make(map[string][]*triggerState, len(old)+len(columns))
	for col, tcs := range old {
		tcs = slices.DeleteFunc(slices.Clone(tcs), func(x *triggerState) bool { return x == tc })
		if len(tcs) > 0 {
			next[col] = tcs
		}
	}
	for _, col := range columns {
		next[col] = append(next[col], tc)
	}
	e.byColumn.Store(&next)
	all := *e.all.Load()
	if !slices.Contains(all, tc) {
		all = append(slices.Clone(all), tc)
		e.all.Store(&all)
	}
}

// background runs f in a goroutine that Close waits for, under a context
// that Close cancels, and reports whether it started it: after Close, f
// does not run.
func (e *Engine) background(f func(ctx context.Context)) bool {
	e.bgMu.Lock()
	defer e.bgMu.Unlock()
	if e.closed {
		return false
	}
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		ctx, cancel := context.WithTimeout(e.bgCtx, backgroundTimeout)
		defer cancel()
		f(ctx)
	}()
	return true
}

// backgroundTimeout bounds a background read of heads or trigger state.
const backgroundTimeout = 30 * time.Second
