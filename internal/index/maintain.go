package index

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/trigger"
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
		sent := m.now()
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
		l := c.Lease
		bctx, release := m.keepLease(ctx, tname, *l, sent)
		failed, err := m.maintainBatch(bctx, name, gen, def, c.Cells)
		lost := release()
		if ctx.Err() != nil {
			return // unacknowledged: delivered again
		}
		if lost {
			m.log.Warn("index lease lost while its batch was maintained; its cells are delivered again", "index", name, "generation", gen, "shard", l.Shard,
				"err", context.Cause(bctx))
			continue
		}
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

// keepLease renews lease every third of its TTL while its batch is
// maintained, so that a batch slower than the lease (a slow node) keeps
// its shard: another maintainer of the same rows at the same time could
// write a row's entry for a cell older than the one the other wrote last.
// On this clock the lease surely lasts only TTL from when the claim (sent
// at granted) or the last accepted renewal was sent: it was granted no
// sooner, and the answer may have come any time later. Once that has
// passed with no renewal accepted (the metadata node is slow, unreachable
// or failing), another server may have taken the shard, so the lease
// counts as lost, as when a renewal is refused as stale. An attempt waits
// no longer than a third of the TTL, nor past the lease's end, so that a
// hung one neither holds up the next nor outlasts the lease.
// It returns the batch's context, cancelled once the lease is lost, and
// release, which stops the renewals and reports whether the lease was
// lost.
func (m *Manager) keepLease(ctx context.Context, tname string, lease trigger.Lease, granted time.Time) (context.Context, func() (lost bool)) {
	bctx, cancel := context.WithCancelCause(ctx)
	every := lease.TTL / 3
	if every <= 0 {
		return bctx, func() bool { cancel(nil); return false }
	}
	expires := granted.Add(lease.TTL)
	ranOut := func() {
		cancel(fmt.Errorf("lease of shard %d of %s ran out on this clock with no renewal accepted", lease.Shard, tname))
	}
	if !m.now().Before(expires) {
		// The claim waited out the lease: the batch must not start.
		ranOut()
		return bctx, func() bool { return true }
	}
	// rctx ends the renewals, and a renewal in flight, at release.
	rctx, stop := context.WithCancel(bctx)
	done := make(chan struct{})
	var lost atomic.Bool
	go func() {
		defer close(done)
		// Timed from the claim: a claim that waited long for cells is
		// renewed the sooner.
		wake := time.NewTimer(granted.Add(every).Sub(m.now()))
		defer wake.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-wake.C:
			}
			sent := m.now()
			left := expires.Sub(sent)
			if left <= 0 {
				lost.Store(true)
				ranOut()
				return
			}
			actx, cancelAttempt := context.WithTimeout(rctx, min(every, left))
			_, err := m.renew(actx, tname, lease.Token, lease.Shard)
			cancelAttempt()
			switch {
			case err == nil:
				expires = sent.Add(lease.TTL)
			case errors.Is(err, cellar.ErrConflict):
				lost.Store(true)
				cancel(err)
				return
			case rctx.Err() != nil:
				return // released
			default:
				m.log.Warn("index lease renewal failed; trying again while the lease lasts", "trigger", tname, "shard", lease.Shard,
					"left", expires.Sub(m.now()), "err", err)
			}
			// The next attempt, or the lease's end if that comes first.
			next := sent.Add(every)
			if expires.Before(next) {
				next = expires
			}
			wake.Reset(next.Sub(m.now()))
		}
	}()
	return bctx, func() bool {
		stop()
		<-done
		cancel(nil)
		return lost.Load()
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
