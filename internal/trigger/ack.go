package trigger

import (
	"context"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// checkToken refuses an ack or nack under a lease that is not the shard's
// current one. A lease that expired but was not taken by anyone is still
// current: nothing else can have happened to the shard since.
func checkToken(name string, ts *sqlstore.TriggerShard, token int64) error {
	if token != ts.Token {
		return cellar.Errorf(cellar.ECONFLICT, "stale lease: shard %d of trigger %s was leased again since token %d (expired or reset); claim again", ts.Shard, name, token)
	}
	return nil
}

// Ack records that every delivered cell of shard up to addedID was
// handled: the shard's offset moves to addedID, and the lease is renewed.
// For a replay (addedID at or below the offset) it removes the replayed
// cells up to addedID from the parked ones.
//
// Returns ECONFLICT if token is not the shard's current lease (it expired
// and another consumer took the shard, or the trigger was reset): the ack
// then changes nothing. Returns EINVALID if addedID was not delivered under
// the lease.
func (e *Engine) Ack(ctx context.Context, name string, token int64, shard int, addedID int64) error {
	if err := e.checkArgs(name, shard, addedID); err != nil {
		return err
	}
	var acked int64
	var replayed bool
	tc := e.cached(name)
	_, err := e.update(ctx, name, tc, shard, nil, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
		acked, replayed = 0, false
		if err := checkToken(name, ts, token); err != nil {
			return sqlstore.ShardEffects{}, err
		}
		if addedID <= ts.Acked {
			replayed = true
			return sqlstore.ShardEffects{AckReplayed: addedID}, nil
		}
		if addedID > ts.Delivered {
			return sqlstore.ShardEffects{}, cellar.Errorf(cellar.EINVALID, "cell %d of shard %d was not delivered under this lease (up to %d was)", addedID, shard, ts.Delivered)
		}
		acked = addedID - ts.Acked
		ts.Acked = addedID
		if ts.RetryAddedID != 0 && ts.RetryAddedID <= addedID {
			ts.RetryAddedID, ts.Attempts, ts.LastError, ts.RetryAt = 0, 0, "", time.Time{}
		}
		if ts.Owner != "" {
			ts.ExpiresAt = e.now().Add(e.ttl)
		}
		return sqlstore.ShardEffects{}, nil
	})
	if err == nil && replayed && tc != nil {
		// More replayed cells of the shard may be waiting: a claim takes
		// at most its max_cells of them.
		tc.mu.Lock()
		tc.replay[shard], tc.replayOut[shard] = true, 0
		tc.recheck(shard, e.now())
		tc.mu.Unlock()
	}
	if err == nil && e.obs != nil && acked > 0 {
		e.obs.TriggerAcked(name, int(acked))
	}
	return err
}

// NackResult says what became of a failed cell.
type NackResult struct {
	// Parked is set when the cell used up its attempts and was parked; the
	// shard moved on past it.
	Parked   bool
	Attempts int
	// RetryAt is when the cell will be delivered again, if not parked.
	RetryAt time.Time
}

// Nack records that the handler failed on cell addedID of shard with
// message errMsg. The cells delivered before it in the lease's batch count
// as handled (consumers handle a shard in order), so the offset moves to
// just before it. The cell is delivered again after a backoff, and the
// shard waits for it (order within a shard holds); after the trigger's
// max_attempts it is parked and the shard moves on. The lease ends either
// way.
//
// A nack of a replayed cell parks it again at once.
//
// Returns ECONFLICT for a stale token and EINVALID if addedID was not
// delivered under the lease, as Ack does.
func (e *Engine) Nack(ctx context.Context, name string, token int64, shard int, addedID int64, errMsg string) (NackResult, error) {
	var res NackResult
	if err := e.checkArgs(name, shard, addedID); err != nil {
		return res, err
	}
	tc := e.cached(name)
	def, err := e.definition(ctx, name, tc)
	if err != nil {
		return res, err
	}
	if len(errMsg) > maxErrorBytes {
		errMsg = errMsg[:maxErrorBytes]
	}
	// The cell's key, for the parked record.
	page, err := e.cells.Scan(ctx, shard, addedID-1, 1, "")
	if err != nil {
		return res, err
	}
	if len(page.Cells) == 0 || page.Cells[0].AddedID != addedID {
		return res, cellar.Errorf(cellar.EINVALID, "shard %d has no cell %d", shard, addedID)
	}
	key := page.Cells[0].Key
	var replayed bool
	_, err = e.update(ctx, name, tc, shard, nil, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
		res, replayed = NackResult{}, false
		if err := checkToken(name, ts, token); err != nil {
			return sqlstore.ShardEffects{}, err
		}
		if addedID <= ts.Acked {
			res.Parked, replayed = true, true
			return sqlstore.ShardEffects{Repark: &sqlstore.ParkedCell{AddedID: addedID, Attempts: def.MaxAttempts, LastError: errMsg}}, nil
		}
		if addedID > ts.Delivered {
			return sqlstore.ShardEffects{}, cellar.Errorf(cellar.EINVALID, "cell %d of shard %d was not delivered under this lease (up to %d was)", addedID, shard, ts.Delivered)
		}
		var fx sqlstore.ShardEffects
		ts.Acked = addedID - 1
		if ts.RetryAddedID == addedID {
			ts.Attempts++
		} else {
			ts.RetryAddedID, ts.Attempts = addedID, 1
		}
		ts.LastError = errMsg
		res.Attempts = ts.Attempts
		if ts.Attempts >= def.MaxAttempts {
			fx.Park = &sqlstore.ParkedCell{Shard: shard, AddedID: addedID, Key: key, Attempts: ts.Attempts, LastError: errMsg}
			ts.Acked = addedID
			ts.RetryAddedID, ts.Attempts, ts.LastError, ts.RetryAt = 0, 0, "", time.Time{}
			res.Parked = true
		} else {
			ts.RetryAt = e.now().Add(e.back(ts.Attempts))
			res.RetryAt = ts.RetryAt
		}
		ts.Delivered = ts.Acked
		ts.Owner, ts.ExpiresAt = "", time.Time{}
		return fx, nil
	})
	if err == nil && res.Parked && tc != nil {
		tc.mu.Lock()
		tc.parked++ // a cell parked, or a replayed one parked again
		if replayed {
			// The rest of the replayed batch: a claim looks again.
			tc.replay[shard], tc.replayOut[shard] = true, 0
			tc.recheck(shard, e.now())
		}
		tc.mu.Unlock()
	}
	return res, err
}

// definition returns trigger name's definition from this engine's copy if
// it has one (a change made through another server is seen within the
// state refresh), else from the metadata node.
func (e *Engine) definition(ctx context.Context, name string, tc *triggerState) (sqlstore.TriggerDef, error) {
	if tc != nil {
		tc.mu.Lock()
		def, ok := tc.def, tc.loaded && !tc.stale
		tc.mu.Unlock()
		if ok {
			return def, nil
		}
	}
	return e.state.Trigger(ctx, name)
}

func (e *Engine) checkArgs(name string, shard int, addedID int64) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if shard < 0 || shard >= e.count {
		return cellar.Errorf(cellar.EINVALID, "shard %d is out of range 0..%d", shard, e.count-1)
	}
	if addedID < 1 {
		return cellar.Errorf(cellar.EINVALID, "added_id must be at least 1")
	}
	return nil
}

// Reset sets every offset of trigger name back to the start, so that it
// delivers every cell again, and ends every lease: acks under them are
// refused from then on. Retries are forgotten; parked cells stay.
func (e *Engine) Reset(ctx context.Context, name string) error {
	if _, err := e.Trigger(ctx, name); err != nil {
		return err
	}
	err := e.state.ResetTrigger(ctx, name)
	e.cached(name).invalidate()
	return err
}

// Replay marks every parked cell of trigger name for delivery again, and
// returns how many. Replayed cells are delivered in claims of their own
// (Claim.Replay); an ack removes them, a nack parks them again.
func (e *Engine) Replay(ctx context.Context, name string) (int64, error) {
	if _, err := e.Trigger(ctx, name); err != nil {
		return 0, err
	}
	n, err := e.state.ReplayParked(ctx, name)
	e.cached(name).invalidate()
	return n, err
}

// Parked returns up to limit parked cells of trigger name after (shard,
// addedID), in (shard, added_id) order.
func (e *Engine) Parked(ctx context.Context, name string, afterShard int, afterAddedID int64, limit int) ([]sqlstore.ParkedCell, error) {
	if _, err := e.Trigger(ctx, name); err != nil {
		return nil, err
	}
	if limit < 1 || limit > MaxCells {
		return nil, cellar.Errorf(cellar.EINVALID, "limit must be 1..%d", MaxCells)
	}
	return e.state.ParkedCells(ctx, name, afterShard, afterAddedID, limit)
}
