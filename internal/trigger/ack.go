package trigger

import (
	"context"
	"errors"
	"slices"
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

// checkLease is checkToken for a change that needs the lease to be on: a
// lease that ended with a nack (or was given up) keeps its token until the
// next one is taken, but no longer holds the shard.
func checkLease(name string, ts *sqlstore.TriggerShard, token int64) error {
	if err := checkToken(name, ts, token); err != nil {
		return err
	}
	if ts.Owner == "" {
		return cellar.Errorf(cellar.ECONFLICT, "stale lease: the lease of shard %d of trigger %s with token %d has ended (nacked or given up); claim again", ts.Shard, name, token)
	}
	return nil
}

// Ack records that every delivered cell of shard up to addedID was
// handled: the shard's offset moves to addedID, and the lease is renewed.
// For a replay batch it removes the lease's replayed cells up to addedID
// from the parked ones (they may be above the offset, after a reset), and
// renews the lease. Acking again an addedID at or below the offset does
// nothing.
//
// Returns ENOTFOUND for an unknown trigger. Returns ECONFLICT if token is
// not the shard's current lease (it expired and another consumer took the
// shard, or the trigger was reset): the ack then changes nothing. Returns
// EINVALID if addedID was not delivered under the lease.
func (e *Engine) Ack(ctx context.Context, name string, token int64, shard int, addedID int64) error {
	if err := e.checkArgs(name, shard, addedID); err != nil {
		return err
	}
	tc := e.cached(name)
	if _, err := e.definition(ctx, name, tc); err != nil {
		return err
	}
	var out ackOutcome
	err := errReplays
	if have := tc.row(shard); have.Token == token && isPlainAck(&have, addedID) {
		// The common ack, of a batch of new cells: one statement, without
		// reading the shard's replays.
		_, err = e.update(ctx, name, tc, shard, &have, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
			return e.ackRow(name, ts, nil, false, token, addedID, &out)
		})
	}
	if errors.Is(err, errReplays) {
		_, err = e.updateHeld(ctx, name, tc, shard, func(ts *sqlstore.TriggerShard, held []int64) (sqlstore.ShardEffects, error) {
			return e.ackRow(name, ts, held, true, token, addedID, &out)
		})
	}
	if errors.Is(err, errSkip) {
		return nil // at or below the offset: nothing to do
	}
	if err == nil && out.replayDone && tc != nil {
		// The lease's replayed cells are all handled; more of the shard's
		// may be waiting (a claim takes at most its max_cells of them).
		tc.mu.Lock()
		tc.replay[shard], tc.replayOut[shard] = true, 0
		tc.recheck(shard, e.now())
		tc.mu.Unlock()
	}
	if err == nil && e.obs != nil && out.acked > 0 {
		e.obs.TriggerAcked(name, int(out.acked))
	}
	return err
}

// errReplays makes an ack whose cell is not in the lease's batch of new
// cells read the shard's replayed cells to decide.
var errReplays = errors.New("ack needs the shard's replays")

// ackOutcome is what an accepted ack did.
type ackOutcome struct {
	acked      int64 // how far the offset moved
	replayDone bool  // it removed the last of the lease's replayed cells
}

// isPlainAck reports whether an ack of addedID is of the lease's batch of
// new cells: after the offset, and delivered.
func isPlainAck(ts *sqlstore.TriggerShard, addedID int64) bool {
	return ts.Acked < addedID && addedID <= ts.Delivered
}

// ackRow applies an ack to a shard's row in f's transaction. held are the
// replayed cells the lease holds, if readHeld; without them, an ack that is
// not plain returns errReplays. An ack at or below the offset that removes
// no replayed cell returns errSkip: there is nothing to write.
func (e *Engine) ackRow(name string, ts *sqlstore.TriggerShard, held []int64, readHeld bool, token, addedID int64, out *ackOutcome) (sqlstore.ShardEffects, error) {
	*out = ackOutcome{}
	if err := checkToken(name, ts, token); err != nil {
		return sqlstore.ShardEffects{}, err
	}
	switch {
	case isPlainAck(ts, addedID):
		out.acked = addedID - ts.Acked
		ts.Acked = addedID
		if ts.RetryAddedID != 0 && ts.RetryAddedID <= addedID {
			ts.RetryAddedID, ts.Attempts, ts.LastError, ts.RetryAt = 0, 0, "", time.Time{}
		}
		e.renew(ts)
		return sqlstore.ShardEffects{}, nil
	case !readHeld:
		return sqlstore.ShardEffects{}, errReplays
	case slices.Contains(held, addedID):
		// The replay batch is the lease's held cells, wherever they are
		// relative to the offset; an ack names one of them (another
		// added_id at or below the offset, such as a repeated ack of an
		// earlier batch, is not of this batch).
		out.replayDone = addedID >= held[len(held)-1]
		e.renew(ts)
		return sqlstore.ShardEffects{AckReplayed: addedID}, nil
	case addedID <= ts.Acked:
		return sqlstore.ShardEffects{}, errSkip
	}
	return sqlstore.ShardEffects{}, notDelivered(ts, addedID)
}

// Renew extends the lease with token on shard of trigger name for the
// lease TTL from now, and returns it, without acknowledging anything: a
// consumer whose handler spends long on one cell keeps its shard. A lease
// that expired but that nobody took is renewed too: it is still the
// shard's current lease, as for an ack, and nothing else can have
// happened to the shard since.
//
// Returns ENOTFOUND for an unknown trigger and EINVALID for a bad name or
// shard. Returns ECONFLICT if token is not the shard's current lease (it
// expired and another consumer took the shard, or the trigger was reset)
// or the lease has ended (a nack ends it): the renewal then changes
// nothing.
func (e *Engine) Renew(ctx context.Context, name string, token int64, shard int) (Lease, error) {
	if err := e.checkShard(name, shard); err != nil {
		return Lease{}, err
	}
	tc := e.cached(name)
	if _, err := e.definition(ctx, name, tc); err != nil {
		return Lease{}, err
	}
	// Only the row changes (the replayed cells the lease holds stay held):
	// one statement when the copy is current.
	ts, err := e.update(ctx, name, tc, shard, nil, func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error) {
		if err := checkLease(name, ts, token); err != nil {
			return sqlstore.ShardEffects{}, err
		}
		e.renew(ts)
		return sqlstore.ShardEffects{}, nil
	})
	if err != nil {
		return Lease{}, err
	}
	return Lease{Shard: shard, Token: ts.Token, ExpiresAt: ts.ExpiresAt, TTL: e.ttl}, nil
}

// renew extends the lease of a row that has one.
func (e *Engine) renew(ts *sqlstore.TriggerShard) {
	if ts.Owner != "" {
		ts.ExpiresAt = e.now().Add(e.ttl)
	}
}

func notDelivered(ts *sqlstore.TriggerShard, addedID int64) error {
	return cellar.Errorf(cellar.EINVALID, "cell %d of shard %d was not delivered under this lease (up to %d was)", addedID, ts.Shard, ts.Delivered)
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

// errRepeated refuses to write a nack that repeats the one that ended
// the lease; the nack answers as that one did.
var errRepeated = errors.New("repeated nack")

// nackKind is what a nack did.
type nackKind int

const (
	nackNone     nackKind = iota // nothing: the cell was at or below the offset
	nackRetry                    // the cell waits for its retry
	nackParked                   // the cell used up its attempts
	nackReparked                 // a replayed cell was parked again
)

// Nack records that the handler failed on cell addedID of shard with
// message errMsg (NUL bytes and invalid UTF-8 replaced, cut to
// maxErrorBytes). The cells delivered before it in the lease's batch count
// as handled (consumers handle a shard in order), so the offset moves to
// just before it. The cell is delivered again after a backoff, and the
// shard waits for it (order within a shard holds); after the trigger's
// max_attempts it is parked and the shard moves on. The lease ends either
// way.
//
// A nack of a replayed cell parks it again at once; the replayed cells
// before it in the batch are removed from the parked ones (handled), those
// after it are replayed to the next lease, and the lease ends.
//
// A nack of a cell at or below the offset that is not a replayed cell of
// the lease (acked already, or parked by an earlier nack whose answer was
// lost) does nothing and answers not parked; the nack that set the
// pending retry, repeated under its token, does nothing and answers that
// retry. Returns ENOTFOUND for an
// unknown trigger, ECONFLICT for a stale token and EINVALID if addedID was
// not delivered under the lease, as Ack does.
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
	errMsg = cleanError(errMsg)
	// The cell's key, for the parked record.
	page, err := e.cells.Scan(ctx, shard, addedID-1, 1, "")
	if err != nil {
		return res, err
	}
	if len(page.Cells) == 0 || page.Cells[0].AddedID != addedID {
		return res, cellar.Errorf(cellar.EINVALID, "shard %d has no cell %d", shard, addedID)
	}
	key := page.Cells[0].Key
	// A cell of another column in the batch's range was not delivered.
	ours := slices.Contains(def.Columns, key.Column)
	var kind nackKind
	// A nack is rare: it always reads the shard's replays.
	_, err = e.updateHeld(ctx, name, tc, shard, func(ts *sqlstore.TriggerShard, held []int64) (sqlstore.ShardEffects, error) {
		res, kind = NackResult{}, nackNone
		if err := checkToken(name, ts, token); err != nil {
			return sqlstore.ShardEffects{}, err
		}
		switch {
		case ours && isPlainAck(ts, addedID):
			var fx sqlstore.ShardEffects
			kind, fx = e.nackRow(ts, def, key, addedID, errMsg, &res)
			return fx, nil
		case slices.Contains(held, addedID):
			kind, res.Parked, res.Attempts = nackReparked, true, def.MaxAttempts
			ts.Owner, ts.ExpiresAt = "", time.Time{}
			return sqlstore.ShardEffects{
				AckReplayed:    addedID - 1,
				Repark:         &sqlstore.ParkedCell{AddedID: addedID, Attempts: def.MaxAttempts, LastError: errMsg},
				RequeueReplays: true,
			}, nil
		case addedID <= ts.Acked:
			return sqlstore.ShardEffects{}, errSkip
		case ts.RetryAddedID == addedID && ts.Owner == "":
			// The nack that ended this lease, again (its answer was lost):
			// the cell waits for its retry; say so, change nothing.
			res = NackResult{Attempts: ts.Attempts, RetryAt: ts.RetryAt}
			return sqlstore.ShardEffects{}, errRepeated
		}
		return sqlstore.ShardEffects{}, notDelivered(ts, addedID)
	})
	switch {
	case errors.Is(err, errSkip):
		return NackResult{}, nil
	case errors.Is(err, errRepeated):
		return res, nil
	}
	if err == nil && (kind == nackParked || kind == nackReparked) && tc != nil {
		// A cell delivered again after a reset may be parked already,
		// and its parking again replaced it: count from the stored rows
		// then, so that the trigger does not pause early.
		total := -1
		if kind == nackParked {
			if parked, perr := e.state.ParkedCounts(ctx, name); perr == nil {
				total = 0
				for _, n := range parked {
					total += n
				}
			}
		}
		tc.mu.Lock()
		if total >= 0 {
			tc.parked = total
		} else {
			tc.parked++
		}
		if kind == nackReparked {
			// The rest of the replayed batch: a claim looks again.
			tc.replay[shard], tc.replayOut[shard] = true, 0
			tc.recheck(shard, e.now())
		}
		tc.mu.Unlock()
	}
	return res, err
}

// nackRow applies a nack of a cell of the lease's batch of new cells to a
// shard's row: a retry, or the cell parked at its last attempt. The lease
// ends.
func (e *Engine) nackRow(ts *sqlstore.TriggerShard, def sqlstore.TriggerDef, key cellar.Key, addedID int64, errMsg string, res *NackResult) (nackKind, sqlstore.ShardEffects) {
	var fx sqlstore.ShardEffects
	kind := nackRetry
	ts.Acked = addedID - 1
	if ts.RetryAddedID == addedID {
		ts.Attempts++
	} else {
		ts.RetryAddedID, ts.Attempts = addedID, 1
	}
	ts.LastError = errMsg
	res.Attempts = ts.Attempts
	if ts.Attempts >= def.MaxAttempts {
		fx.Park = &sqlstore.ParkedCell{Shard: ts.Shard, AddedID: addedID, Key: key, Attempts: ts.Attempts, LastError: errMsg}
		ts.Acked = addedID
		ts.RetryAddedID, ts.Attempts, ts.LastError, ts.RetryAt = 0, 0, "", time.Time{}
		res.Parked, kind = true, nackParked
	} else {
		ts.RetryAt = e.now().Add(e.back(ts.Attempts))
		res.RetryAt = ts.RetryAt
	}
	ts.Delivered = ts.Acked
	ts.Owner, ts.ExpiresAt = "", time.Time{}
	return kind, fx
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
	if err := e.checkShard(name, shard); err != nil {
		return err
	}
	if addedID < 1 {
		return cellar.Errorf(cellar.EINVALID, "added_id must be at least 1")
	}
	return nil
}

func (e *Engine) checkShard(name string, shard int) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if shard < 0 || shard >= e.count {
		return cellar.Errorf(cellar.EINVALID, "shard %d is out of range 0..%d", shard, e.count-1)
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

// Delete removes trigger name with all of its state: its offsets, leases,
// retries, parked cells and consumers. Claims, acks and the rest answer
// not found from then on, here at once and through other servers within
// their state refresh; the name may be defined again, afresh. Returns
// ErrNotFound for an unknown trigger.
func (e *Engine) Delete(ctx context.Context, name string) error {
	if _, err := e.Trigger(ctx, name); err != nil {
		return err
	}
	err := e.state.DeleteTrigger(ctx, name)
	e.cached(name).invalidate()
	if err == nil && e.obs != nil {
		e.obs.TriggerGone(name)
	}
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
