package trigger

import (
	"context"
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
	heads, headsErr := e.shardHeads(ctx)
	byShard := make(map[int]sqlstore.TriggerShard, len(rows))
	for _, r := range rows {
		byShard[r.Shard] = r
	}
	now := e.now()
	st.Shards = []ShardStatus{}
	for shard := 0; shard < e.count; shard++ {
		r := byShard[shard]
		head, known := heads[shard]
		if !known && headsErr != nil {
			st.Totals.Unknown++
		}
		ss := ShardStatus{Shard: shard, Offset: r.Acked, Head: head, Owner: r.Owner, Token: r.Token, Parked: parked[shard],
			RetryAddedID: r.RetryAddedID, Attempts: r.Attempts, LastError: r.LastError}
		if r.Owner != "" && r.ExpiresAt.After(now) {
			ss.ExpiresAt = ptr(r.ExpiresAt)
			st.Totals.Leases++
		} else {
			ss.Owner = ""
		}
		if !r.RetryAt.IsZero() {
			ss.RetryAt = ptr(r.RetryAt)
		}
		if head > r.Acked {
			ss.LagCells = head - r.Acked
			st.Totals.ShardsBehind++
		}
		st.Totals.LagCells += ss.LagCells
		st.Totals.Parked += ss.Parked
		if ss.LagCells > 0 || ss.Parked > 0 || ss.ExpiresAt != nil || ss.RetryAddedID != 0 {
			st.Shards = append(st.Shards, ss)
		}
	}
	sort.Slice(st.Shards, func(i, j int) bool { return st.Shards[i].Shard < st.Shards[j].Shard })
	e.measureLagSeconds(ctx, t, st.Shards, now)
	for _, ss := range st.Shards {
		st.Totals.LagSeconds = max(st.Totals.LagSeconds, ss.LagSeconds)
	}
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
// reading a few shards at a time.
func (e *Engine) measureLagSeconds(ctx context.Context, t Trigger, shards []ShardStatus, now time.Time) {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range shards {
		if shards[i].LagCells == 0 {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			shards[i].LagSeconds = e.lagSeconds(ctx, t, shards[i].Shard, shards[i].Offset, now)
		}()
	}
	wg.Wait()
}

// lagSeconds is the age of the first cell after offset in shard; 0 if it
// cannot be read.
func (e *Engine) lagSeconds(ctx context.Context, t Trigger, shard int, offset int64, now time.Time) float64 {
	col := ""
	if len(t.Columns) == 1 {
		col = t.Columns[0]
	}
	res, err := e.cells.Scan(ctx, shard, offset, 1, col)
	if err != nil || len(res.Cells) == 0 {
		return 0
	}
	return max(now.Sub(res.Cells[0].CreatedAt).Seconds(), 0)
}

func ptr[T any](v T) *T { return &v }
