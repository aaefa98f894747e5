package index

import (
	"context"
	"errors"
	"sync"

	"github.com/cellar-db/cellar"
)

// run maintains one index generation until ctx is done: it makes sure the
// generation's trigger exists, then runs m.workers claim loops on it.
func (m *Manager) run(ctx context.Context, name string, gen int64, def Definition) {
	for {
		err := m.defineTrigger(ctx, name, gen, def.Column)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		m.log.Warn("cannot define index trigger", "index", name, "generation", gen, "err", err)
		if !sleep(ctx, m.refresh) {
			return
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < m.workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.loop(ctx, name, gen, def)
		}()
	}
	wg.Wait()
}

// loop claims batches of the generation's trigger and maintains their
// rows, acknowledging each batch once every row in it is done.
func (m *Manager) loop(ctx context.Context, name string, gen int64, def Definition) {
	tname := triggerName(name, gen)
	for ctx.Err() == nil {
		c, err := m.triggers.Claim(ctx, tname, m.consumer, batchCells, claimWait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, cellar.ErrNotFound) && m.stillServes(ctx, name, gen) {
				// The trigger is gone while its generation lives: another
				// server's Define of the same new index, racing this one,
				// cleared it as left behind. Define it again; maintenance
				// is idempotent, and starts over from the first cell.
				if err := m.defineTrigger(ctx, name, gen, def.Column); err == nil {
					m.log.Warn("index trigger was missing; defined it again", "index", name, "generation", gen)
					continue
				}
			}
			m.log.Warn("index claim failed", "index", name, "generation", gen, "err", err)
			if !sleep(ctx, m.refresh) {
				return
			}
			continue
		}
		if c.Lease == nil || len(c.Cells) == 0 {
			continue
		}
		failed, err := m.maintainBatch(ctx, name, gen, def, c.Cells)
		if ctx.Err() != nil {
			return // unacknowledged: delivered again
		}
		l := c.Lease
		if err != nil {
			m.log.Warn("index maintenance failed; the cell will be retried", "index", name, "generation", gen,
				"row_key", failed.RowKey, "err", err)
			if _, err := m.triggers.Nack(ctx, tname, l.Token, l.Shard, failed.AddedID, err.Error()); err != nil && ctx.Err() == nil {
				m.log.Warn("index nack failed", "index", name, "err", err)
			}
			continue
		}
		last := c.Cells[len(c.Cells)-1].AddedID
		if err := m.triggers.Ack(ctx, tname, l.Token, l.Shard, last); err != nil {
			if ctx.Err() == nil && !errors.Is(err, cellar.ErrConflict) {
				m.log.Warn("index ack failed", "index", name, "err", err)
			}
			continue
		}
		m.notifyProgress()
	}
}

// maintainBatch brings the entry of every row in cells up to date. Each
// row is done once however many of its cells the batch holds, since
// maintenance reads the row's latest cell anyway. On failure it returns
// the first cell not covered: the first one of the row that failed
// (everything before it in the batch belongs to rows that are done).
func (m *Manager) maintainBatch(ctx context.Context, name string, gen int64, def Definition, cells []cellar.Cell) (cellar.Cell, error) {
	done := make(map[string]bool, len(cells))
	for _, c := range cells {
		if done[c.RowKey] {
			continue
		}
		if err := m.maintain(ctx, name, gen, def, c.RowKey); err != nil {
			return c, err
		}
		done[c.RowKey] = true
	}
	return cellar.Cell{}, nil
}

// maintain makes the entry of rowKey in an index generation reflect the
// row's latest cell of the index's column. It is idempotent, and safe to
// interrupt at any point: the row's record lists every place an entry of
// the row may be, and is widened before an entry is written and narrowed
// only after the others are deleted, so a retry finds and removes what an
// interrupted run left behind.
func (m *Manager) maintain(ctx context.Context, name string, gen int64, def Definition, rowKey string) error {
	latest, err := m.cells.Latest(ctx, rowKey, def.Column)
	var want *cellar.IndexLoc
	switch {
	case errors.Is(err, cellar.ErrNotFound):
	case err != nil:
		return err
	default:
		if loc, ok := locOf(keysOf(extract(latest.Body, def.Fields), def.Fields), def.Fields, m.count); ok {
			want = &loc
		}
	}
	have, err := m.entries.IndexRow(ctx, name, gen, rowKey)
	if err != nil {
		return err
	}
	wide := have
	if want != nil && !containsLoc(have, *want) {
		wide = append(append([]cellar.IndexLoc{}, have...), *want)
		if err := m.entries.SetIndexRow(ctx, name, gen, rowKey, wide); err != nil {
			return err
		}
	}
	if want != nil {
		if err := m.entries.PutIndexEntry(ctx, cellar.IndexEntry{Index: name, Gen: gen, Loc: *want, RowKey: rowKey, RefKey: latest.RefKey}); err != nil {
			return err
		}
	}
	var final []cellar.IndexLoc
	if want != nil {
		final = []cellar.IndexLoc{*want}
	}
	for _, loc := range have {
		if want != nil && sameLoc(loc, *want) {
			continue
		}
		if err := m.entries.DeleteIndexEntry(ctx, name, gen, loc, rowKey); err != nil {
			return err
		}
	}
	if !equalLocs(wide, final) {
		return m.entries.SetIndexRow(ctx, name, gen, rowKey, final)
	}
	return nil
}

func containsLoc(locs []cellar.IndexLoc, l cellar.IndexLoc) bool {
	for _, x := range locs {
		if sameLoc(x, l) {
			return true
		}
	}
	return false
}

// stillServes reports whether the metadata node has generation gen of
// index name live: serving or being built.
func (m *Manager) stillServes(ctx context.Context, name string, gen int64) bool {
	rec, err := m.loadStored(ctx, name)
	return err == nil && (rec.Active == gen || rec.Building == gen)
}
