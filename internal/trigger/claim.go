package trigger

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// Lease is a consumer's exclusive right to one shard of a trigger until
// ExpiresAt. Token fences it: acks and nacks must carry it, and every new
// lease on the shard takes a higher one.
type Lease struct {
	Shard     int       `json:"shard"`
	Token     int64     `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// TTL is how long the lease lasts from its grant, as each ack renews
	// it: consumers time renewals by it on their own clock, which need not
	// agree with the server's ExpiresAt.
	TTL time.Duration `json:"-"`
}

// Claim is what Engine.Claim returns.
type Claim struct {
	// Lease is nil when no shard had cells to deliver.
	Lease *Lease
	// Cells are the delivered cells, in added_id order. Empty when none
	// came within the wait.
	Cells []cellar.Cell
	// Replay is set when Cells are parked cells being replayed: cells the
	// offset already passed.
	Replay bool
	// Paused is set when the trigger is paused: more cells are parked than
	// its threshold allows. Nothing is delivered until some are replayed.
	Paused bool
}

// errSkip makes a lease attempt give up on a shard without an error.
var errSkip = errors.New("skip shard")

// Claim leases one shard of trigger name with cells to deliver to consumer
// and returns up to maxCells of them (0: DefaultMaxCells), in added_id
// order after the shard's offset. If no shard has any, it waits up to wait
// for cells to arrive: it is woken at once by Notify, and looks for cells
// written by other processes every poll interval. A consumer holds at
// most its fair share of the shards with work: ceil(shards with work /
// live consumers); claiming renews its leases and gives up its idle ones
// beyond that share.
//
// Returns ErrNotFound for an unknown trigger and EINVALID for bad
// arguments.
func (e *Engine) Claim(ctx context.Context, name, consumer string, maxCells int, wait time.Duration) (Claim, error) {
	if err := ValidateName(name); err != nil {
		return Claim{}, err
	}
	if err := validateConsumer(consumer); err != nil {
		return Claim{}, err
	}
	if maxCells == 0 {
		maxCells = DefaultMaxCells
	}
	if maxCells < 1 || maxCells > MaxCells {
		return Claim{}, cellar.Errorf(cellar.EINVALID, "max_cells must be 1..%d", MaxCells)
	}
	if wait < 0 || wait > MaxWait {
		return Claim{}, cellar.Errorf(cellar.EINVALID, "wait must be 0..%s", MaxWait)
	}
	deadline := time.Now().Add(wait)
	tc, err := e.trigger(ctx, name)
	if err != nil {
		return Claim{}, err
	}
	for {
		// Subscribe before looking, so that work arriving after the look
		// wakes this claim.
		tc.mu.Lock()
		wake := tc.subscribe()
		tc.mu.Unlock()
		reading := e.pollHeads()
		c, err := e.tryClaim(ctx, tc, consumer, maxCells)
		if err != nil || c.Lease != nil || c.Paused {
			return c, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			if reading == nil {
				return c, nil
			}
			// The heads were due: a claim sees the cells committed before
			// it began, even one that does not wait. (A waiting claim is
			// woken by what the read finds, as by Notify.)
			select {
			case <-reading:
			case <-ctx.Done():
				return c, nil
			}
			select {
			case <-wake:
				deadline = time.Time{} // one more look, and no waiting
				continue
			default:
				return c, nil
			}
		}
		t := time.NewTimer(min(left, e.poll))
		select {
		case <-ctx.Done():
			t.Stop()
			return c, nil
		case <-wake:
			t.Stop()
		case <-t.C:
		}
		if err := e.ensureLoaded(ctx, tc); err != nil {
			return c, err
		}
	}
}

// heldLease is a lease a consumer holds on a shard.
type heldLease struct {
	shard int
	token int64
}

// tryClaim makes one pass over the shards with work.
func (e *Engine) tryClaim(ctx context.Context, tc *triggerState, consumer string, maxCells int) (Claim, error) {
	empty := Claim{Cells: []cellar.Cell{}}
	if err := e.ensureLoaded(ctx, tc); err != nil {
		return empty, err
	}
	now := e.now()
	live, err := e.seeConsumer(ctx, tc, consumer, now)
	if err != nil {
		return empty, err
	}
	live = max(live, 1)
	tc.mu.Lock()
	if tc.parked > tc.def.ParkThreshold {
		tc.mu.Unlock()
		empty.Paused = true
		return empty, nil
	}
	def := tc.def
	// A consumer's share counts the leases it holds on shards that have
	// work or a batch out (a batch out is work: its cells are after the
	// offset); an idle lease on a caught-up shard costs nothing and
	// expires.
	nWork, nHeld := 0, 0
	var idle []heldLease
	// Alone, a consumer's share is all the work: it need not count.
	count := tc.work.each
	if live == 1 {
		count = func(func(int) bool) {}
	}
	count(func(s int) bool {
		if !tc.inWork(s, now) {
			return true
		}
		nWork++
		if r := &tc.rows[s]; r.Owner == consumer && r.ExpiresAt.After(now) {
			nHeld++
			if !tc.busy(s) {
				idle = append(idle, heldLease{s, r.Token})
			}
		}
		return true
	})
	tc.mu.Unlock()
	quota := max((nWork+live-1)/live, 1)
	if live == 1 {
		quota = math.MaxInt
	}
	// Give up idle leases beyond the fair share, so that joining
	// consumers find shards to take.
	for _, h := range idle {
		if nHeld <= quota {
			break
		}
		if e.release(ctx, tc, h.shard, consumer, h.token) {
			nHeld--
		}
	}
	// The first few candidates almost always do; all of them are tried
	// only if those fail (the copy was stale).
	var tried []int
	for _, limit := range []int{firstCandidates, 0} {
		for _, s := range tc.candidates(consumer, now, nHeld < quota, limit) {
			if slices.Contains(tried, s) {
				continue
			}
			tried = append(tried, s)
			if c, err := e.attempt(ctx, tc, def, s, consumer, maxCells); err != nil || c.Lease != nil {
				return orEmpty(c), err
			}
		}
		if len(tried) < firstCandidates {
			break // there were no more
		}
	}
	return empty, nil
}

// firstCandidates is how many shards a claim looks for before it tries
// them: a claim walks only the front of the work queue, however long the
// queue is.
const firstCandidates = 8

func orEmpty(c Claim) Claim {
	if c.Cells == nil {
		c.Cells = []cellar.Cell{}
	}
	return c
}

// candidates returns up to limit (0: all) shards with work that consumer
// may lease now, oldest work first: those it holds with no batch out, and,
// if free is set, those that nobody holds. Shards a claim of this engine
// is trying are left out. The first is picked at random among the first
// few, so that the claims of several servers rarely collide on the oldest.
func (tc *triggerState) candidates(consumer string, now time.Time, free bool, limit int) []int {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	var out []int
	tc.work.each(func(s int) bool {
		r := &tc.rows[s]
		if tc.trying[s] || !tc.inWork(s, now) {
			return true
		}
		held := r.Owner != "" && r.ExpiresAt.After(now)
		if (held && r.Owner == consumer && !tc.busy(s)) || (!held && free) {
			out = append(out, s)
		}
		return limit == 0 || len(out) < limit
	})
	if len(out) > 1 {
		i := rand.IntN(min(len(out), 4))
		out[0], out[i] = out[i], out[0]
	}
	return out
}

// attempt tries to lease shard s for consumer if the copy still shows it
// free or held by consumer with no batch out, and no other claim of this
// engine is trying it.
func (e *Engine) attempt(ctx context.Context, tc *triggerState, def sqlstore.TriggerDef, s int, consumer string, maxCells int) (Claim, error) {
	tc.mu.Lock()
	now := e.now()
	r := tc.rows[s]
	held := r.Owner != "" && r.ExpiresAt.After(now)
	ok := !tc.trying[s] && tc.inWork(s, now) && (!held || (r.Owner == consumer && !tc.busy(s)))
	replay := tc.replay[s]
	if ok {
		tc.trying[s] = true
	}
	tc.mu.Unlock()
	if !ok {
		return Claim{}, nil
	}
	defer func() {
		tc.mu.Lock()
		tc.trying[s] = false
		tc.recheck(s, e.now()) // wake the claims that passed it over, if it is still to take
		tc.mu.Unlock()
	}()
	var c Claim
	var err error
	if replay {
		c, err = e.claimReplay(ctx, tc, def, r, consumer, maxCells)
		if err == nil && c.Lease == nil {
			// The replays may have turned out done: then the shard's new
			// cells are for this claim, not for the next.
			tc.mu.Lock()
			r = tc.rows[s]
			next := !tc.replay[s] && tc.inWork(s, e.now())
			tc.mu.Unlock()
			if next {
				c, err = e.claimShard(ctx, tc, def, r, e.heads[s].Load(), consumer, maxCells)
			}
		}
	} else {
		c, err = e.claimShard(ctx, tc, def, r, e.heads[s].Load(), consumer, maxCells)
	}
	if err == nil && c.Lease != nil {
		// What waited is taken: later cells of the shard queue behind the
		// other shards' work.
		tc.mu.Lock()
		tc.work.toBack(s)
		tc.mu.Unlock()
		if e.obs != nil {
			e.obs.TriggerDelivered(def.Name, len(c.Cells))
		}
	}
	return c, err
}

// update runs f on a shard's row of trigger name on the metadata node,
// starting from this engine's copy of the row (have, or the copy now if
// have is nil; sqlstore.UpdateTriggerShardFrom), and keeps the stored row
// it saw as the new copy. This engine's updates of one shard run one at a
// time, so that the copies are kept in the order the rows were stored: a
// row seen by one update is never kept over the row a later one wrote. tc
// may be nil: this engine has no copy of the trigger.
func (e *Engine) update(ctx context.Context, name string, tc *triggerState, shard int, have *sqlstore.TriggerShard, f func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error)) (sqlstore.TriggerShard, error) {
	if tc == nil {
		return e.state.UpdateTriggerShard(ctx, name, shard, f)
	}
	tc.updating[shard].Lock()
	defer tc.updating[shard].Unlock()
	if have == nil {
		r := tc.row(shard)
		have = &r
	}
	out, seen, err := e.state.UpdateTriggerShardFrom(ctx, name, shard, *have, f)
	if seen.Shard >= 0 {
		tc.mu.Lock()
		tc.setRow(seen, e.now())
		tc.mu.Unlock()
	}
	return out, err
}

// updateHeld is update for a change that depends on the shard's replayed
// cells held under its lease (sqlstore.UpdateTriggerShardHeld).
func (e *Engine) updateHeld(ctx context.Context, name string, tc *triggerState, shard int, f func(ts *sqlstore.TriggerShard, held []int64) (sqlstore.ShardEffects, error)) (sqlstore.TriggerShard, error) {
	if tc == nil {
		out, _, err := e.state.UpdateTriggerShardHeld(ctx, name, shard, f)
		return out, err
	}
	tc.updating[shard].Lock()
	defer tc.updating[shard].Unlock()
	out, seen, err := e.state.UpdateTriggerShardHeld(ctx, name, shard, f)
	if seen.Shard >= 0 {
		tc.mu.Lock()
		tc.setRow(seen, e.now())
		tc.mu.Unlock()
	}
	return out, err
}

// lease takes or renews the lease on a shard for consumer in f's
// transaction; check runs first and may refuse with errSkip.
func (e *Engine) lease(ts *sqlstore.TriggerShard, consumer string) error {
	now := e.now()
	switch {
	case ts.Owner == consumer && ts.ExpiresAt.After(now):
		if ts.Delivered > ts.Acked {
			return errSkip // a batch of it is being processed
		}
	case ts.Owner != "" && ts.ExpiresAt.After(now):
		return errSkip
	default:
		ts.Token++
		ts.Owner = consumer
		// A new lease has delivered nothing yet: what the dead one
		// delivered beyond the offset is not acked under it.
		ts.Delivered = ts.Acked
	}
	if ts.RetryAt.After(now) {
		return errSkip
	}
	ts.ExpiresAt = now.Add(e.ttl)
	return nil
}

// claimShard reads the cells after the offset seen in r and, if any are of
// the trigger's columns, leases the shard with them in one transaction
// that checks the offset has not moved and, if the cells passed over any
// of other columns, that the stored definition has the columns they were
// read with: a copy from before a widening would otherwise deliver cells
// past one of a new column, whose ack then moves the offset over it (the
// copy is dropped, to be loaded again). With none, the offset moves over
// the cells of other columns that were read.
func (e *Engine) claimShard(ctx context.Context, tc *triggerState, def sqlstore.TriggerDef, r sqlstore.TriggerShard, head int64, consumer string, maxCells int) (Claim, error) {
	var none Claim
	cells, scanned, err := e.read(ctx, def, r.Shard, r.Acked, head, maxCells)
	if err != nil {
		// An unreachable node holds back only its shards.
		if cellar.ErrorCode(err) == cellar.EUNAVAILABLE {
			return none, nil
		}
		return none, err
	}
	if len(cells) == 0 {
		if scanned > r.Acked {
			if err := e.passOver(ctx, def, tc, r, scanned); err != nil {
				return none, err
			}
		}
		return none, nil
	}
	// added_ids within a shard have no gaps: a batch that runs on from
	// the offset without one passed over no cell of another column, and
	// needs no check of the columns (nor the transaction it costs).
	passed := false
	for i, c := range cells {
		if c.AddedID != r.Acked+int64(i)+1 {
			passed = true
			break
		}
	}
	ts, err := e.update(ctx, def.Name, tc, r.Shard, &r, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
		if ts.Acked != r.Acked {
			return sqlstore.ShardEffects{}, errSkip
		}
		token := ts.Token
		if err := e.lease(ts, consumer); err != nil {
			return sqlstore.ShardEffects{}, err
		}
		ts.Delivered = cells[len(cells)-1].AddedID
		// A new lease takes back the replays its predecessor held, as in
		// claimReplay: this server's copy may not know of them, and left
		// held under the new token they would count as its batch.
		fx := sqlstore.ShardEffects{RequeueReplays: ts.Token != token}
		if passed {
			fx.Columns = def.Columns
		}
		return fx, nil
	})
	switch {
	case errors.Is(err, sqlstore.ErrColumnsChanged):
		tc.invalidate()
		return none, nil
	case errors.Is(err, errSkip):
		return none, nil
	case err != nil:
		return none, err
	}
	return Claim{Lease: &Lease{Shard: r.Shard, Token: ts.Token, ExpiresAt: ts.ExpiresAt, TTL: e.ttl}, Cells: cells}, nil
}

// scanBudget bounds the pages one read goes through looking for cells of
// the trigger's columns among those of others.
const scanBudget = 8

// read returns up to max cells of the trigger's columns in shard after
// after, and how far the read is known to have covered the shard: the
// offset may move there if no cells came back. head was read before the
// scan, so every cell up to it was there to be seen.
func (e *Engine) read(ctx context.Context, def sqlstore.TriggerDef, shard int, after, head int64, max int) ([]cellar.Cell, int64, error) {
	if len(def.Columns) == 1 {
		res, err := e.cells.Scan(ctx, shard, after, max, def.Columns[0])
		if err != nil {
			return nil, after, err
		}
		if len(res.Cells) == 0 && head > after {
			return res.Cells, head, nil
		}
		return res.Cells, after, nil
	}
	var out []cellar.Cell
	covered := after
	for page := 0; page < scanBudget && len(out) == 0; page++ {
		res, err := e.cells.Scan(ctx, shard, covered, max, "")
		if err != nil {
			return nil, after, err
		}
		if len(res.Cells) == 0 {
			break
		}
		for _, c := range res.Cells {
			if slices.Contains(def.Columns, c.Column) {
				out = append(out, c)
			}
		}
		covered = res.Next
	}
	return out, covered, nil
}

// release gives up consumer's lease on shard if it still holds it with
// token.
func (e *Engine) release(ctx context.Context, tc *triggerState, shard int, consumer string, token int64) bool {
	_, err := e.update(ctx, tc.name, tc, shard, nil, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
		if ts.Owner != consumer || ts.Token != token || ts.Delivered > ts.Acked {
			return sqlstore.ShardEffects{}, errSkip
		}
		ts.Owner, ts.ExpiresAt = "", time.Time{}
		return sqlstore.ShardEffects{}, nil
	})
	return err == nil
}

// claimReplay leases a shard to deliver its cells to replay.
func (e *Engine) claimReplay(ctx context.Context, tc *triggerState, def sqlstore.TriggerDef, r sqlstore.TriggerShard, consumer string, maxCells int) (Claim, error) {
	var none Claim
	var fresh bool
	shard := r.Shard
	ts, err := e.updateHeld(ctx, def.Name, tc, r.Shard, func(ts *sqlstore.TriggerShard, held []int64) (sqlstore.ShardEffects, error) {
		token := ts.Token
		if err := e.lease(ts, consumer); err != nil {
			return sqlstore.ShardEffects{}, err
		}
		// A new lease takes over the replays its predecessor held.
		fresh = ts.Token != token
		if !fresh && len(held) > 0 {
			// The consumer's lease has a replay batch out (through this
			// server or another): never two batches of a shard at once.
			return sqlstore.ShardEffects{}, errSkip
		}
		return sqlstore.ShardEffects{RequeueReplays: fresh}, nil
	})
	if errors.Is(err, errSkip) {
		return none, nil
	}
	if err != nil {
		return none, err
	}
	parked, held, err := e.state.TakeReplay(ctx, def.Name, shard, ts.Token, maxCells)
	if errors.Is(err, sqlstore.ErrLeaseMoved) {
		return none, nil // taken by another since, or ended: its holder goes on
	}
	if err != nil {
		return none, err
	}
	cells := make([]cellar.Cell, 0, len(parked))
	for _, p := range parked {
		c, err := e.cells.Get(ctx, p.Key)
		if err != nil {
			return none, err
		}
		cells = append(cells, c)
	}
	if len(cells) == 0 {
		tc.mu.Lock()
		if held > 0 {
			// The replays are out in a batch of this consumer's, under
			// this lease: the shard is busy until they are acked or the
			// lease ends.
			tc.replayOut[shard] = ts.Token
		} else {
			// None are ready or out (a new lease took back those held
			// before it): there are none left, until a load or an ack
			// finds more.
			tc.replay[shard] = false
		}
		tc.recheck(shard, e.now())
		tc.mu.Unlock()
		if fresh && held == 0 {
			e.release(ctx, tc, shard, consumer, ts.Token)
		}
		return none, nil
	}
	tc.mu.Lock()
	tc.replayOut[shard] = ts.Token
	tc.mu.Unlock()
	return Claim{Lease: &Lease{Shard: shard, Token: ts.Token, ExpiresAt: ts.ExpiresAt, TTL: e.ttl}, Cells: cells, Replay: true}, nil
}
