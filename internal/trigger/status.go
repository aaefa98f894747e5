package trigger

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/cellar-db/cellar/internal/sqlstore"
)

// ShardStatus is one shard's progress in a trigger.
type ShardStatus struct {
	Shard int `json:"shard"`
	// Offset is the added_id of the last acknowledged cell.
	Offset int64 `json:"offset"`
	// Head is the shard's last added_id.
	Head int64 `json:"head"`
	// LagCells counts the cells after the offset, of any column: an upper
	// bound on the trigger's cells still to handle.
	LagCells int64 `json:"lag_cells"`
	// LagSeconds is the age of the oldest cell after the offset.
	LagSeconds float64    `json:"lag_seconds"`
	Owner      string     `json:"owner,omitempty"`
	Token      int64      `json:"token"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	Parked     int        `json:"parked"`
	// Attempts and LastError describe the cell being retried, if any.
	RetryAddedID int64      `json:"retry_added_id,omitempty"`
	Attempts     int        `json:"attempts,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	RetryAt      *time.Time `json:"retry_at,omitempty"`
}

// Status is a trigger's progress: what GET /v1/triggers/{name} returns.
type Status struct {
	Trigger Trigger `json:"trigger"`
	// Paused is set when more cells are parked than the threshold.
	Paused bool   `json:"paused"`
	Reason string `json:"reason,omitempty"`
	// Shards lists the shards with a lease, a lag, a retry or parked
	// cells; others are caught up.
	Shards []ShardStatus `json:"shards"`
	Totals Totals        `json:"totals"`
}

// Totals sum a trigger's shards.
type Totals struct {
	LagCells int64 `json:"lag_cells"`
	// LagSeconds is the largest shard lag.
	LagSeconds float64 `json:"lag_seconds"`
	Parked     int     `json:"parked"`
	Leases     int     `json:"leases"`
	// ShardsBehind counts shards with cells after their offset.
	ShardsBehind int `json:"shards_behind"`
	// Unknown counts shards whose head could not be read.
	Unknown int `json:"unknown,omitempty"`
}

// Status returns the progress of trigger name. Returns ErrNotFound if there
// is no such trigger.
func (e *Engine) Status(ctx context.Context, name string) (Status, error) {
	return e.status(ctx, name, false)
}

// status is Status. With sweep (the lag monitor), it also moves the
// offsets of the shards that have only cells of other columns after them:
// claims leave those behind when no trigger of their column consumes them
// (Notify wakes only the triggers of the cell's column), and they would
// count as lag and be scanned by every status.
func (e *Engine) status(ctx context.Context, name string, sweep bool) (Status, error) {
	var st Status
	t, err := e.Trigger(ctx, name)
	if err != nil {
		return st, err
	}
	st.Trigger = t
	rows, err := e.state.TriggerShards(ctx, name)
	if err != nil {
		return st, err
	}
	parked, err := e.state.ParkedCounts(ctx, name)
	if err != nil {
		return st, err
	}
	// Heads before the scans below: every cell up to them was committed
	// when the scans ran.
	heads, known, headsErr := e.headsNow(ctx)
	byShard := make(map[int]sqlstore.TriggerShard, len(rows))
	for _, r := range rows {
		byShard[r.Shard] = r
	}
	now := e.now()
	st.Shards = []ShardStatus{}
	for shard := 0; shard < e.count; shard++ {
		r := byShard[shard]
		head := heads[shard]
		if !known(shard) && headsErr != nil {
			st.Totals.Unknown++
		}
		ss := ShardStatus{Shard: shard, Offset: r.Acked, Head: head, Owner: r.Owner, Token: r.Token, Parked: parked[shard],
			RetryAddedID: r.RetryAddedID, Attempts: r.Attempts, LastError: r.LastError}
		if r.Owner != "" && r.ExpiresAt.After(now) {
			ss.ExpiresAt = ptr(r.ExpiresAt)
		} else {
			ss.Owner = ""
		}
		if !r.RetryAt.IsZero() {
			ss.RetryAt = ptr(r.RetryAt)
		}
		if head > r.Acked {
			ss.LagCells = head - r.Acked
		}
		if ss.LagCells > 0 || ss.Parked > 0 || ss.ExpiresAt != nil || ss.RetryAddedID != 0 {
			st.Shards = append(st.Shards, ss)
		}
	}
	sort.Slice(st.Shards, func(i, j int) bool { return st.Shards[i].Shard < st.Shards[j].Shard })
	def := sqlstore.TriggerDef{Name: t.Name, Columns: t.Columns}
	e.measureLagSeconds(ctx, def, st.Shards, byShard, now, sweep)
	kept := st.Shards[:0]
	for _, ss := range st.Shards {
		if ss.LagCells > 0 || ss.Parked > 0 || ss.ExpiresAt != nil || ss.RetryAddedID != 0 {
			kept = append(kept, ss)
		}
		if ss.ExpiresAt != nil {
			st.Totals.Leases++
		}
		if ss.LagCells > 0 {
			st.Totals.ShardsBehind++
		}
		st.Totals.LagCells += ss.LagCells
		st.Totals.Parked += ss.Parked
		st.Totals.LagSeconds = max(st.Totals.LagSeconds, ss.LagSeconds)
	}
	st.Shards = kept
	if st.Totals.Parked > t.ParkThreshold {
		st.Paused = true
		st.Reason = "more cells are parked than park_threshold allows; replay or raise the threshold"
	}
	if e.obs != nil {
		e.obs.TriggerLag(name, st.Totals.LagCells, st.Totals.LagSeconds)
	}
	return st, nil
}

// measureLagSeconds fills in the lag in seconds of the lagging shards,
// reading a few shards at a time. A shard with no cell of the trigger's
// columns after its offset is not behind; with sweep its offset moves
// over the cells of other columns.
func (e *Engine) measureLagSeconds(ctx context.Context, def sqlstore.TriggerDef, shards []ShardStatus, rows map[int]sqlstore.TriggerShard, now time.Time, sweep bool) {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	tc := e.cached(def.Name)
	for i := range shards {
		if shards[i].LagCells == 0 {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ss := &shards[i]
			// One cell is enough when the node filters by column; a scan
			// that filters here reads pages of several.
			limit := 1
			if len(def.Columns) > 1 {
				limit = DefaultMaxCells
			}
			cells, covered, err := e.read(ctx, def, ss.Shard, ss.Offset, ss.Head, limit)
			switch {
			case err != nil:
				// Unknown: it counts as behind, by its head.
			case len(cells) > 0:
				ss.LagSeconds = max(now.Sub(cells[0].CreatedAt).Seconds(), 0)
			default:
				if covered >= ss.Head {
					ss.LagCells = 0
				}
				if sweep && covered > ss.Offset {
					r, ok := rows[ss.Shard]
					if !ok {
						r.Shard = ss.Shard
					}
					_ = e.passOver(ctx, def, tc, r, covered) // a failure is left to the next round
				}
			}
		}()
	}
	wg.Wait()
}

// passOver moves the offset of shard r.Shard to covered, over cells that
// are not of def's columns, if the offset is still r.Acked and the stored
// definition has those columns still: a copy from before the trigger was
// widened must not pass over cells of a column it now has (the copy is
// then dropped, to be loaded again).
func (e *Engine) passOver(ctx context.Context, def sqlstore.TriggerDef, tc *triggerState, r sqlstore.TriggerShard, covered int64) error {
	_, err := e.update(ctx, def.Name, tc, r.Shard, &r, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
		if ts.Acked != r.Acked {
			return sqlstore.ShardEffects{}, errSkip
		}
		ts.Acked = covered
		ts.Delivered = max(ts.Delivered, covered)
		return sqlstore.ShardEffects{Columns: def.Columns}, nil
	})
	switch {
	case errors.Is(err, sqlstore.ErrColumnsChanged):
		tc.invalidate()
		return nil
	case errors.Is(err, errSkip):
		return nil
	}
	return err
}

func ptr[T any](v T) *T { return &v }
