package index

import (
	"context"
)

// Progress is how far one generation of an index is behind the cell log.
type Progress struct {
	Generation int64 `json:"generation"`
	// Trigger is the generation's internal trigger (GET /v1/triggers/NAME
	// has its per-shard detail).
	Trigger string `json:"trigger"`
	// LagCells counts the cells after the trigger's offsets, of any column:
	// an upper bound on the cells still to index.
	LagCells int64 `json:"lag_cells"`
	// LagSeconds is the age of the oldest cell of the column not yet
	// indexed.
	LagSeconds float64 `json:"lag_seconds"`
	// ShardsBehind counts the logical shards with cells not yet indexed,
	// of ShardsTotal that hold any cells; Unknown counts shards whose node
	// did not answer.
	ShardsBehind int `json:"shards_behind"`
	ShardsTotal  int `json:"shards_total"`
	Unknown      int `json:"unknown,omitempty"`
	// Done is the share of shards caught up: the backfill's progress.
	Done float64 `json:"done"`
}

// Status is an index and its progress: what GET /v1/indexes/{name}
// returns.
type Status struct {
	Index
	// Lag is the serving generation's.
	Lag Progress `json:"lag"`
	// Rebuild is the progress of the generation being built, if any.
	Rebuild *Progress `json:"rebuild,omitempty"`
}

// Status returns index name and its progress. Returns ErrNotFound for an
// unknown index.
func (m *Manager) Status(ctx context.Context, name string) (Status, error) {
	// The cache may be a refresh behind; status reads the record itself.
	rec, err := m.loadStored(ctx, name)
	if err != nil {
		return Status{}, err
	}
	st := Status{Index: rec.view(name)}
	if st.Lag, err = m.genProgress(ctx, name, rec.Active); err != nil {
		return Status{}, err
	}
	if rec.Building != 0 {
		p, err := m.genProgress(ctx, name, rec.Building)
		if err != nil {
			return Status{}, err
		}
		st.Rebuild = &p
	}
	return st, nil
}

func (m *Manager) genProgress(ctx context.Context, name string, gen int64) (Progress, error) {
	tname := triggerName(name, gen)
	p := Progress{Generation: gen, Trigger: tname}
	ts, err := m.triggers.Status(ctx, tname)
	if err != nil {
		return p, err
	}
	t := ts.Totals
	p.LagCells, p.LagSeconds, p.ShardsBehind, p.Unknown = t.LagCells, t.LagSeconds, t.ShardsBehind, t.Unknown
	heads, _ := m.triggers.Heads(ctx)
	p.ShardsTotal = len(heads)
	p.Done = 1
	if p.ShardsTotal > 0 {
		p.Done = float64(p.ShardsTotal-p.ShardsBehind) / float64(p.ShardsTotal)
	}
	return p, nil
}
