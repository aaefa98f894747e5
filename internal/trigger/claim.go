package trigger

import (
	"context"
	"errors"
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
// for cells to arrive. A consumer holds at most its fair share of the
// shards with work: ceil(shards with work / live consumers); claiming
// renews its leases and gives up its idle ones beyond that share.
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
	for {
		def, err := e.state.Trigger(ctx, name)
		if err != nil {
			return Claim{}, err
		}
		c, err := e.tryClaim(ctx, def, consumer, maxCells)
		if err != nil || c.Lease != nil || c.Paused {
			return c, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return c, nil
		}
		t := time.NewTimer(min(left, e.poll))
		select {
		case <-ctx.Done():
			t.Stop()
			return c, nil
		case <-t.C:
		}
	}
}

// tryClaim makes one pass over the shards.
func (e *Engine) tryClaim(ctx context.Context, def sqlstore.TriggerDef, consumer string, maxCells int) (Claim, error) {
	empty := Claim{Cells: []cellar.Cell{}}
	now := e.now()
	live, err := e.seeConsumer(ctx, def.Name, consumer, now)
	if err != nil {
		return empty, err
	}
	parked, err := e.state.ParkedCounts(ctx, def.Name)
	if err != nil {
		return empty, err
	}
	if total := sum(parked); total > def.ParkThreshold {
		empty.Paused = true
		return empty, nil
	}
	rows, err := e.state.TriggerShards(ctx, def.Name)
	if err != nil {
		return empty, err
	}
	byShard := make(map[int]sqlstore.TriggerShard, len(rows))
	for _, r := range rows {
		byShard[r.Shard] = r
	}
	row := func(shard int) sqlstore.TriggerShard {
		r, ok := byShard[shard]
		if !ok {
			r.Shard = shard
		}
		return r
	}
	replays, err := e.state.ReplayShards(ctx, def.Name)
	if err != nil {
		return empty, err
	}
	// A node that did not answer only holds back its own shards.
	heads, _ := e.shardHeads(ctx)

	held := func(r sqlstore.TriggerShard) bool { return r.Owner == consumer && r.ExpiresAt.After(now) }
	takenByOther := func(r sqlstore.TriggerShard) bool {
		return r.Owner != "" && r.Owner != consumer && r.ExpiresAt.After(now)
	}
	hasWork := func(shard int) bool {
		r := byShard[shard]
		return heads[shard] > r.Acked && !r.RetryAt.After(now)
	}
	var work, mine, free []int
	for shard := range heads {
		if shard < 0 || shard >= e.count || !hasWork(shard) {
			continue
		}
		work = append(work, shard)
	}
	for _, shard := range replays {
		if !slices.Contains(work, shard) {
			work = append(work, shard)
		}
	}
	// A consumer's share counts the leases it holds on shards that have
	// work or a batch out; an idle lease on a caught-up shard costs
	// nothing and expires.
	nHeld := 0
	var idle []int
	for _, r := range rows {
		busy := r.Delivered > r.Acked
		if held(r) && (busy || hasWork(r.Shard)) {
			nHeld++
			if !busy {
				idle = append(idle, r.Shard)
			}
		}
	}
	quota := (len(work) + max(live, 1) - 1) / max(live, 1)
	quota = max(quota, 1)
	// Give up idle leases beyond the fair share, so that joining
	// consumers find shards to take.
	for _, shard := range idle {
		if nHeld <= quota {
			break
		}
		if e.release(ctx, def.Name, shard, consumer, byShard[shard].Token) {
			nHeld--
			r := byShard[shard]
			r.Owner = ""
			byShard[shard] = r
		}
	}
	for _, shard := range work {
		r := byShard[shard]
		switch {
		case held(r):
			if r.Delivered <= r.Acked {
				mine = append(mine, shard)
			}
		case !takenByOther(r):
			free = append(free, shard)
		}
	}
	// Random order spreads concurrent claimers over the free shards.
	rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	candidates := mine
	if nHeld < quota {
		candidates = append(candidates, free...)
	}
	for _, shard := range candidates {
		var c Claim
		var err error
		if slices.Contains(replays, shard) {
			c, err = e.claimReplay(ctx, def, shard, consumer, maxCells)
		} else {
			c, err = e.claimShard(ctx, def, row(shard), heads[shard], consumer, maxCells)
		}
		if err != nil {
			return empty, err
		}
		if c.Lease != nil {
			if e.obs != nil {
				e.obs.TriggerDelivered(def.Name, len(c.Cells))
			}
			return c, nil
		}
	}
	return empty, nil
}

func sum(m map[int]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
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
	}
	if ts.RetryAt.After(now) {
		return errSkip
	}
	ts.ExpiresAt = now.Add(e.ttl)
	return nil
}

// claimShard reads the cells after the offset seen in r and, if any are of
// the trigger's columns, leases the shard with them in one transaction
// that checks the offset has not moved. With none, the offset moves over
// the cells of other columns that were read.
func (e *Engine) claimShard(ctx context.Context, def sqlstore.TriggerDef, r sqlstore.TriggerShard, head int64, consumer string, maxCells int) (Claim, error) {
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
			_, err := e.state.UpdateTriggerShard(ctx, def.Name, r.Shard, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
				if ts.Acked != r.Acked {
					return sqlstore.ShardEffects{}, errSkip
				}
				ts.Acked = scanned
				ts.Delivered = max(ts.Delivered, scanned)
				return sqlstore.ShardEffects{}, nil
			})
			if err != nil && !errors.Is(err, errSkip) {
				return none, err
			}
		}
		return none, nil
	}
	ts, err := e.state.UpdateTriggerShard(ctx, def.Name, r.Shard, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
		if ts.Acked != r.Acked {
			return sqlstore.ShardEffects{}, errSkip
		}
		if err := e.lease(ts, consumer); err != nil {
			return sqlstore.ShardEffects{}, err
		}
		ts.Delivered = cells[len(cells)-1].AddedID
		return sqlstore.ShardEffects{}, nil
	})
	if errors.Is(err, errSkip) {
		return none, nil
	}
	if err != nil {
		return none, err
	}
	return Claim{Lease: &Lease{Shard: r.Shard, Token: ts.Token, ExpiresAt: ts.ExpiresAt}, Cells: cells}, nil
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
func (e *Engine) release(ctx context.Context, name string, shard int, consumer string, token int64) bool {
	_, err := e.state.UpdateTriggerShard(ctx, name, shard, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
		if ts.Owner != consumer || ts.Token != token || ts.Delivered > ts.Acked {
			return sqlstore.ShardEffects{}, errSkip
		}
		ts.Owner, ts.ExpiresAt = "", time.Time{}
		return sqlstore.ShardEffects{}, nil
	})
	return err == nil
}

// claimReplay leases a shard to deliver its cells to replay.
func (e *Engine) claimReplay(ctx context.Context, def sqlstore.TriggerDef, shard int, consumer string, maxCells int) (Claim, error) {
	var none Claim
	var fresh bool
	ts, err := e.state.UpdateTriggerShard(ctx, def.Name, shard, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
		token := ts.Token
		if err := e.lease(ts, consumer); err != nil {
			return sqlstore.ShardEffects{}, err
		}
		// A new lease takes over the replays its predecessor held.
		fresh = ts.Token != token
		return sqlstore.ShardEffects{RequeueReplays: fresh}, nil
	})
	if errors.Is(err, errSkip) {
		return none, nil
	}
	if err != nil {
		return none, err
	}
	parked, err := e.state.TakeReplay(ctx, def.Name, shard, maxCells)
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
		// The replays are out in a batch of this consumer's (under a
		// renewed lease), or were taken and acked meanwhile.
		if fresh {
			e.release(ctx, def.Name, shard, consumer, ts.Token)
		}
		return none, nil
	}
	return Claim{Lease: &Lease{Shard: shard, Token: ts.Token, ExpiresAt: ts.ExpiresAt}, Cells: cells, Replay: true}, nil
}
