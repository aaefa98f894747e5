package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cellar-db/cellar"
)

// Triggers
//
// The state of triggers lives on the metadata node: the definitions, one
// row per (trigger, logical shard) with its offset and lease, the parked
// cells, and when each consumer was last seen. The rules (who may take a
// lease, what an ack may move) are the trigger engine's (internal/trigger);
// this file stores its state and runs each change of a shard's row in one
// transaction that holds the row's lock, so changes to one shard are
// serialized and a fencing token checked inside one is checked against
// the current row.

// TriggerDef is a trigger's definition.
type TriggerDef struct {
	Name          string    `json:"name"`
	Columns       []string  `json:"columns"`
	Start         string    `json:"start"` // "earliest" or "latest"
	MaxAttempts   int       `json:"max_attempts"`
	ParkThreshold int       `json:"park_threshold"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// TriggerShard is the state of one trigger on one logical shard. A shard
// without a row has the zero state: offset 0, no lease, token 0.
type TriggerShard struct {
	Shard int
	// Acked is the offset: the added_id of the last acknowledged cell.
	Acked int64
	// Delivered is the highest added_id delivered under the current lease.
	Delivered int64
	Owner     string
	// Token is the fencing token of the current (or last) lease. It only
	// grows: every new lease on the shard takes the next one.
	Token     int64
	ExpiresAt time.Time
	// RetryAddedID is the cell that failed Attempts times, last with
	// LastError; the shard is not delivered before RetryAt.
	RetryAddedID int64
	Attempts     int
	LastError    string
	RetryAt      time.Time
}

// ParkedCell is a cell whose handler failed max_attempts times.
type ParkedCell struct {
	Shard     int        `json:"shard"`
	AddedID   int64      `json:"added_id"`
	Key       cellar.Key `json:"key"`
	Attempts  int        `json:"attempts"`
	LastError string     `json:"last_error"`
	ParkedAt  time.Time  `json:"parked_at"`
	// Replay is 0 while parked, 1 once replay was asked, 2 while a
	// consumer holds it.
	Replay int `json:"replay"`
}

// ShardEffects are changes made in the same transaction as a shard's row,
// in the order of the fields.
type ShardEffects struct {
	// Park stores this cell as parked.
	Park *ParkedCell
	// AckReplayed deletes the shard's replayed cells held by a consumer
	// with added_id up to it.
	AckReplayed int64
	// Repark parks a replayed cell held by a consumer again, with its new
	// attempts and error.
	Repark *ParkedCell
	// RequeueReplays makes the shard's replayed cells held by a consumer
	// (whose lease ended) ready to replay again.
	RequeueReplays bool
	// Columns, if set, are the trigger's columns the change was decided
	// with (moving the offset over cells of other columns): the change is
	// refused with ErrColumnsChanged, and nothing written, if the stored
	// definition's columns differ (a copy from before a widening).
	Columns []string
}

// none reports whether fx asks for nothing beyond the row's write.
func (fx ShardEffects) none() bool {
	return fx.Park == nil && fx.AckReplayed == 0 && fx.Repark == nil && !fx.RequeueReplays && fx.Columns == nil
}

// ErrColumnsChanged refuses a change decided with columns that are no
// longer the trigger's (ShardEffects.Columns).
var ErrColumnsChanged = errors.New("the trigger's columns changed")

func unixMilli(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func milli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// PutTrigger creates or updates a trigger's definition. On creation, each
// shard in start gets its state row with its offset from there (a trigger
// that starts at the latest cells has the heads; one that starts at the
// earliest may pass zeros, so that its rows need not be created one by one
// later); an update leaves offsets alone. Returns whether the
// trigger was created.
func (s *Store) PutTrigger(ctx context.Context, def TriggerDef, start map[int]int64) (created bool, err error) {
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	now := s.now()
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		created = false
		var have []byte
		err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT def FROM triggers WHERE trigger_name = ?"+s.d.ForUpdate), def.Name).Scan(&have)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			def.CreatedAt, def.UpdatedAt = now.UTC().Truncate(time.Millisecond), now.UTC().Truncate(time.Millisecond)
			raw, err := json.Marshal(def)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, s.d.Rebind("INSERT INTO triggers (trigger_name, def, created_at, updated_at) VALUES (?, ?, ?, ?)"),
				def.Name, raw, now.UnixMilli(), now.UnixMilli()); err != nil {
				if s.d.UniqueViolation(err) {
					return cellar.Errorf(cellar.ECONFLICT, "trigger %s was created concurrently; retry", def.Name)
				}
				return fmt.Errorf("create trigger: %w", err)
			}
			// Rows left by an earlier trigger of the same name must not
			// leak into this one, nor may its tokens be taken again
			// (tokenFloor).
			var left sql.NullInt64
			if err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT MAX(token) FROM trigger_shards WHERE trigger_name = ?"), def.Name).Scan(&left); err != nil {
				return fmt.Errorf("read tokens of an earlier trigger %s: %w", def.Name, err)
			}
			floor := max(tokenFloor(now), left.Int64)
			for _, table := range []string{"trigger_shards", "trigger_parked", "trigger_consumers"} {
				if _, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM "+table+" WHERE trigger_name = ?"), def.Name); err != nil {
					return fmt.Errorf("clear trigger state: %w", err)
				}
			}
			if err := s.insertTriggerShards(ctx, tx, def.Name, start, floor); err != nil {
				return err
			}
			created = true
			return nil
		case err != nil:
			return fmt.Errorf("read trigger: %w", err)
		}
		var old TriggerDef
		if err := json.Unmarshal(have, &old); err != nil {
			return fmt.Errorf("decode trigger: %w", err)
		}
		def.CreatedAt, def.UpdatedAt = old.CreatedAt, now.UTC().Truncate(time.Millisecond)
		// start chose the offsets at creation; an update keeps them, so it
		// keeps the start that says where they came from.
		def.Start = old.Start
		raw, err := json.Marshal(def)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.d.Rebind("UPDATE triggers SET def = ?, updated_at = ? WHERE trigger_name = ?"),
			raw, now.UnixMilli(), def.Name); err != nil {
			return fmt.Errorf("update trigger: %w", err)
		}
		return nil
	})
	if err != nil {
		return false, s.wrap(err, "put trigger %s", def.Name)
	}
	return created, nil
}

// tokenFloor is the token of a shard's state row created at now, which
// its first lease raises by one: the time in microseconds. A trigger
// deleted and defined again keeps no rows to count on from its earlier
// self, whose consumers may still hold leases; starting its tokens at the
// time of their creation keeps them above every token the earlier one
// gave out (one per lease, far fewer than a microsecond each), so that
// such a consumer's ack is refused as stale, provided the servers' clocks
// agree to within the time between the delete and the new definition.
func tokenFloor(now time.Time) int64 { return now.UnixMicro() }

// insertTriggerShards creates the state rows of the shards in start, with
// their offsets and token floor, a few hundred rows per statement.
func (s *Store) insertTriggerShards(ctx context.Context, tx *sql.Tx, name string, start map[int]int64, floor int64) error {
	shards := slices.Sorted(maps.Keys(start))
	const perStatement = 256
	for len(shards) > 0 {
		n := min(len(shards), perStatement)
		var q strings.Builder
		q.WriteString(`INSERT INTO trigger_shards (trigger_name, shard, acked, delivered, owner, token, expires_at,
		retry_added_id, attempts, last_error, retry_at) VALUES `)
		args := make([]any, 0, 5*n)
		for i, shard := range shards[:n] {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, '', ?, 0, 0, 0, '', 0)")
			args = append(args, name, shard, start[shard], start[shard], floor)
		}
		if _, err := tx.ExecContext(ctx, s.d.Rebind(q.String()), args...); err != nil {
			return fmt.Errorf("create state of shards %d-%d: %w", shards[0], shards[n-1], err)
		}
		shards = shards[n:]
	}
	return nil
}

func (s *Store) insertTriggerShard(ctx context.Context, tx *sql.Tx, name string, shard int, acked int64) error {
	_, err := tx.ExecContext(ctx, s.d.Rebind(`INSERT INTO trigger_shards (trigger_name, shard, acked, delivered, owner, token, expires_at,
		retry_added_id, attempts, last_error, retry_at) VALUES (?, ?, ?, ?, '', ?, 0, 0, 0, '', 0)`), name, shard, acked, acked, tokenFloor(s.now()))
	if err != nil {
		return fmt.Errorf("create state of shard %d: %w", shard, err)
	}
	return nil
}

// Trigger returns a trigger's definition. Returns ErrNotFound if there is
// no such trigger.
func (s *Store) Trigger(ctx context.Context, name string) (TriggerDef, error) {
	var def TriggerDef
	if err := s.ready(ctx); err != nil {
		return def, err
	}
	var raw []byte
	err := s.db.QueryRowContext(ctx, s.d.Rebind("SELECT def FROM triggers WHERE trigger_name = ?"), name).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return def, cellar.Errorf(cellar.ENOTFOUND, "no trigger named %s", name)
	}
	if err != nil {
		return def, s.wrap(err, "read trigger %s", name)
	}
	if err := json.Unmarshal(raw, &def); err != nil {
		return def, cellar.Internal(err, "decode trigger %s", name)
	}
	return def, nil
}

// Triggers returns every trigger's definition, by name.
func (s *Store) Triggers(ctx context.Context) ([]TriggerDef, error) {
	defs := []TriggerDef{}
	if err := s.ready(ctx); err != nil {
		return defs, err
	}
	rows, err := s.db.QueryContext(ctx, "SELECT def FROM triggers ORDER BY trigger_name")
	if err != nil {
		return defs, s.wrap(err, "list triggers")
	}
	defer rows.Close()
	for rows.Next() {
		var raw []byte
		var def TriggerDef
		if err := rows.Scan(&raw); err != nil {
			return defs, s.wrap(err, "list triggers")
		}
		if err := json.Unmarshal(raw, &def); err != nil {
			return defs, cellar.Internal(err, "decode trigger")
		}
		defs = append(defs, def)
	}
	if err := rows.Err(); err != nil {
		return defs, s.wrap(err, "list triggers")
	}
	return defs, nil
}

const triggerShardColumns = "shard, acked, delivered, owner, token, expires_at, retry_added_id, attempts, last_error, retry_at"

func scanTriggerShard(sc interface{ Scan(...any) error }, ts *TriggerShard) error {
	var owner, lastError []byte
	var expires, retryAt int64
	if err := sc.Scan(&ts.Shard, &ts.Acked, &ts.Delivered, &owner, &ts.Token, &expires, &ts.RetryAddedID, &ts.Attempts, &lastError, &retryAt); err != nil {
		return err
	}
	ts.Owner, ts.LastError = string(owner), string(lastError)
	ts.ExpiresAt, ts.RetryAt = unixMilli(expires), unixMilli(retryAt)
	return nil
}

// TriggerShards returns the state rows of a trigger, by shard. Shards
// without a row are in the zero state.
func (s *Store) TriggerShards(ctx context.Context, name string) ([]TriggerShard, error) {
	out := []TriggerShard{}
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	rows, err := s.db.QueryContext(ctx, s.d.Rebind("SELECT "+triggerShardColumns+" FROM trigger_shards WHERE trigger_name = ? ORDER BY shard"), name)
	if err != nil {
		return out, s.wrap(err, "read shards of trigger %s", name)
	}
	defer rows.Close()
	for rows.Next() {
		var ts TriggerShard
		if err := scanTriggerShard(rows, &ts); err != nil {
			return out, s.wrap(err, "read shards of trigger %s", name)
		}
		out = append(out, ts)
	}
	if err := rows.Err(); err != nil {
		return out, s.wrap(err, "read shards of trigger %s", name)
	}
	return out, nil
}

// UpdateTriggerShard runs f on the state of a trigger's shard in a
// transaction that holds the row's lock (creating the row in the zero
// state if it is missing), and writes back what f leaves in it together
// with f's effects. If f returns an error nothing changes and
// UpdateTriggerShard returns it. f may run more than once (the
// transaction is retried on deadlocks), so it must not have side effects.
// Times in the returned row have the millisecond precision they are
// stored with.
func (s *Store) UpdateTriggerShard(ctx context.Context, name string, shard int, f func(ts *TriggerShard) (ShardEffects, error)) (TriggerShard, error) {
	out, _, err := s.updateTriggerShard(ctx, name, shard, false, withoutHeld(f))
	return out, err
}

// UpdateTriggerShardHeld is UpdateTriggerShard for a change that depends
// on the shard's replayed cells held by a consumer (replay = 2): f also
// gets their added_ids in order, read in the transaction after the row's
// lock. They are held under the shard's current lease: a new lease takes
// them back (ShardEffects.RequeueReplays). It always runs the transaction;
// seen is as for UpdateTriggerShardFrom.
func (s *Store) UpdateTriggerShardHeld(ctx context.Context, name string, shard int, f func(ts *TriggerShard, held []int64) (ShardEffects, error)) (out, seen TriggerShard, err error) {
	return s.updateTriggerShard(ctx, name, shard, true, f)
}

func withoutHeld(f func(ts *TriggerShard) (ShardEffects, error)) func(ts *TriggerShard, held []int64) (ShardEffects, error) {
	return func(ts *TriggerShard, _ []int64) (ShardEffects, error) { return f(ts) }
}

// UpdateTriggerShardFrom is UpdateTriggerShard for a caller that keeps a
// copy of the row, have (the trigger engine's cache; the zero state for a
// row it has not seen). f runs first on a copy of have; if it accepts it
// and asks for no effects, its result is written by one UPDATE that
// matches only while every column of the stored row still equals have.
// Then f ran on the current row, exactly as it would have under the lock,
// and the write is the same; it costs one statement instead of a
// transaction of three. In every other case — f refused have, the stored
// row differs or is missing, f wants effects — UpdateTriggerShard decides
// on the stored row, so a stale have costs one wasted statement and never
// changes the outcome.
//
// seen is the row as stored when the call ended: the written row on
// success, the row f refused under the lock on f's error, and the zero
// value (Shard -1) when the node failed.
func (s *Store) UpdateTriggerShardFrom(ctx context.Context, name string, shard int, have TriggerShard, f func(ts *TriggerShard) (ShardEffects, error)) (out, seen TriggerShard, err error) {
	if err := s.ready(ctx); err != nil {
		return out, TriggerShard{Shard: -1}, err
	}
	next := have
	next.Shard = shard
	if fx, ferr := f(&next); ferr == nil && fx.none() {
		normalizeTriggerShard(&next)
		ok, err := s.casTriggerShard(ctx, name, shard, have, next)
		if err == nil && ok {
			return next, next, nil
		}
		// A failed statement falls through to the transaction, which
		// retries what can be retried and reports the rest.
	}
	return s.updateTriggerShard(ctx, name, shard, false, withoutHeld(f))
}

// casTriggerShard writes next over a trigger's shard row if the row still
// equals have, and reports whether it did. On MySQL, a write that changes
// nothing affects no row and reports false; the caller then takes the
// transaction, which is right anyway.
func (s *Store) casTriggerShard(ctx context.Context, name string, shard int, have, next TriggerShard) (bool, error) {
	r, err := s.wdb.ExecContext(ctx, s.d.Rebind(`UPDATE trigger_shards SET acked = ?, delivered = ?, owner = ?, token = ?, expires_at = ?,
		retry_added_id = ?, attempts = ?, last_error = ?, retry_at = ?
		WHERE trigger_name = ? AND shard = ? AND acked = ? AND delivered = ? AND owner = ? AND token = ? AND expires_at = ?
		AND retry_added_id = ? AND attempts = ? AND last_error = ? AND retry_at = ?`),
		next.Acked, next.Delivered, next.Owner, next.Token, milli(next.ExpiresAt), next.RetryAddedID, next.Attempts, next.LastError, milli(next.RetryAt),
		name, shard, have.Acked, have.Delivered, have.Owner, have.Token, milli(have.ExpiresAt), have.RetryAddedID, have.Attempts, have.LastError, milli(have.RetryAt))
	if err != nil {
		return false, err
	}
	n, err := r.RowsAffected()
	return n == 1, err
}

// normalizeTriggerShard gives ts's times the precision they are stored
// with, so that a copy of a written row equals the row read back.
func normalizeTriggerShard(ts *TriggerShard) {
	ts.ExpiresAt, ts.RetryAt = unixMilli(milli(ts.ExpiresAt)), unixMilli(milli(ts.RetryAt))
}

// updateTriggerShard is UpdateTriggerShard, and UpdateTriggerShardHeld if
// withHeld is set; seen is also set when f refuses, as
// UpdateTriggerShardFrom documents.
func (s *Store) updateTriggerShard(ctx context.Context, name string, shard int, withHeld bool, f func(ts *TriggerShard, held []int64) (ShardEffects, error)) (out, seen TriggerShard, ferr error) {
	seen.Shard = -1
	if err := s.ready(ctx); err != nil {
		return out, seen, err
	}
	err := s.inTxRetryCreate(ctx, func(tx *sql.Tx) error {
		seen, ferr = TriggerShard{Shard: -1}, nil
		q := s.d.Rebind("SELECT " + triggerShardColumns + " FROM trigger_shards WHERE trigger_name = ? AND shard = ?" + s.d.ForUpdate)
		var ts TriggerShard
		err := scanTriggerShard(tx.QueryRowContext(ctx, q, name, shard), &ts)
		if errors.Is(err, sql.ErrNoRows) {
			if err := s.insertTriggerShard(ctx, tx, name, shard, 0); err != nil {
				return err
			}
			err = scanTriggerShard(tx.QueryRowContext(ctx, q, name, shard), &ts)
		}
		if err != nil {
			return fmt.Errorf("lock shard %d: %w", shard, err)
		}
		var held []int64
		if withHeld {
			if held, err = s.heldReplays(ctx, tx, name, shard); err != nil {
				return err
			}
		}
		locked := ts
		fx, err := f(&ts, held)
		if err == nil && fx.Columns != nil {
			err = s.checkColumns(ctx, tx, name, fx.Columns)
		}
		if err != nil {
			seen, ferr = locked, err
			return err
		}
		normalizeTriggerShard(&ts)
		_, err = tx.ExecContext(ctx, s.d.Rebind(`UPDATE trigger_shards SET acked = ?, delivered = ?, owner = ?, token = ?, expires_at = ?,
			retry_added_id = ?, attempts = ?, last_error = ?, retry_at = ? WHERE trigger_name = ? AND shard = ?`),
			ts.Acked, ts.Delivered, ts.Owner, ts.Token, milli(ts.ExpiresAt), ts.RetryAddedID, ts.Attempts, ts.LastError, milli(ts.RetryAt), name, shard)
		if err != nil {
			return fmt.Errorf("update shard %d: %w", shard, err)
		}
		if p := fx.Park; p != nil {
			// A cell parked before a reset may be parked again.
			if _, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM trigger_parked WHERE trigger_name = ? AND shard = ? AND added_id = ?"),
				name, shard, p.AddedID); err != nil {
				return fmt.Errorf("park cell %d: %w", p.AddedID, err)
			}
			_, err := tx.ExecContext(ctx, s.d.Rebind(`INSERT INTO trigger_parked (trigger_name, shard, added_id, row_key, col, ref_key,
				attempts, last_error, parked_at, replay) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)`),
				name, shard, p.AddedID, []byte(p.Key.RowKey), p.Key.Column, p.Key.RefKey, p.Attempts, p.LastError, s.now().UnixMilli())
			if err != nil {
				return fmt.Errorf("park cell %d: %w", p.AddedID, err)
			}
		}
		if fx.AckReplayed > 0 {
			if _, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM trigger_parked WHERE trigger_name = ? AND shard = ? AND replay = 2 AND added_id <= ?"),
				name, shard, fx.AckReplayed); err != nil {
				return fmt.Errorf("ack replayed cells: %w", err)
			}
		}
		if p := fx.Repark; p != nil {
			if _, err := tx.ExecContext(ctx, s.d.Rebind("UPDATE trigger_parked SET replay = 0, attempts = ?, last_error = ?, parked_at = ? WHERE trigger_name = ? AND shard = ? AND added_id = ? AND replay = 2"),
				p.Attempts, p.LastError, s.now().UnixMilli(), name, shard, p.AddedID); err != nil {
				return fmt.Errorf("park replayed cell: %w", err)
			}
		}
		if fx.RequeueReplays {
			if _, err := tx.ExecContext(ctx, s.d.Rebind("UPDATE trigger_parked SET replay = 1 WHERE trigger_name = ? AND shard = ? AND replay = 2"),
				name, shard); err != nil {
				return fmt.Errorf("requeue replayed cells: %w", err)
			}
		}
		out, seen = ts, ts
		return nil
	})
	if err != nil {
		if ferr != nil && errors.Is(err, ferr) {
			return out, seen, err // f's own error, as f returned it
		}
		return out, TriggerShard{Shard: -1}, s.wrap(err, "update shard %d of trigger %s", shard, name)
	}
	return out, seen, nil
}

// checkColumns returns ErrColumnsChanged unless trigger name's stored
// columns are cols (in any order).
func (s *Store) checkColumns(ctx context.Context, tx *sql.Tx, name string, cols []string) error {
	var raw []byte
	if err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT def FROM triggers WHERE trigger_name = ?"), name).Scan(&raw); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrColumnsChanged
		}
		return fmt.Errorf("read trigger %s: %w", name, err)
	}
	var def TriggerDef
	if err := json.Unmarshal(raw, &def); err != nil {
		return fmt.Errorf("trigger %s: %w", name, err)
	}
	have, want := slices.Clone(def.Columns), slices.Clone(cols)
	slices.Sort(have)
	slices.Sort(want)
	if !slices.Equal(have, want) {
		return ErrColumnsChanged
	}
	return nil
}

// heldReplays returns the added_ids of a shard's replayed cells held by a
// consumer, in order.
func (s *Store) heldReplays(ctx context.Context, tx *sql.Tx, name string, shard int) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, s.d.Rebind("SELECT added_id FROM trigger_parked WHERE trigger_name = ? AND shard = ? AND replay = 2 ORDER BY added_id"), name, shard)
	if err != nil {
		return nil, fmt.Errorf("read held replays of shard %d: %w", shard, err)
	}
	defer rows.Close()
	var held []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read held replays of shard %d: %w", shard, err)
		}
		held = append(held, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read held replays of shard %d: %w", shard, err)
	}
	return held, nil
}

// inTxRetryCreate runs f as inTx does, and again if it failed on a unique
// violation: a row f creates when it finds none was created concurrently
// (PostgreSQL aborts the transaction then, so it cannot carry on).
func (s *Store) inTxRetryCreate(ctx context.Context, f func(tx *sql.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.inTx(ctx, f)
		if err == nil || attempt == 3 || !s.d.UniqueViolation(err) {
			return err
		}
	}
}

// ResetTrigger sets every offset of a trigger back to 0 and ends every
// lease (the next lease of each shard takes a new token, so acks under the
// old ones are refused). Parked cells stay.
func (s *Store) ResetTrigger(ctx context.Context, name string) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	_, err := s.wdb.ExecContext(ctx, s.d.Rebind(`UPDATE trigger_shards SET acked = 0, delivered = 0, owner = '', token = token + 1, expires_at = 0,
		retry_added_id = 0, attempts = 0, last_error = '', retry_at = 0 WHERE trigger_name = ?`), name)
	if err != nil {
		return s.wrap(err, "reset trigger %s", name)
	}
	return nil
}

// SeeConsumer records that consumer of trigger name was seen at now, and
// returns how many of its consumers were seen since liveSince.
func (s *Store) SeeConsumer(ctx context.Context, name, consumer string, now, liveSince time.Time) (live int, err error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	err = s.inTxRetryCreate(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, s.d.Rebind("UPDATE trigger_consumers SET seen_at = ? WHERE trigger_name = ? AND consumer = ?"), now.UnixMilli(), name, consumer)
		if err != nil {
			return err
		}
		n, err := r.RowsAffected()
		if err != nil {
			return err
		}
		// MySQL counts a row updated to the value it had as unaffected;
		// the insert then hits the key, which MySQL survives.
		if n == 0 {
			_, err := tx.ExecContext(ctx, s.d.Rebind("INSERT INTO trigger_consumers (trigger_name, consumer, seen_at) VALUES (?, ?, ?)"), name, consumer, now.UnixMilli())
			if err != nil && !(s.d.Name == "mysql" && s.d.UniqueViolation(err)) {
				return err
			}
		}
		// Forget consumers long gone. A plain read finds them first: a
		// DELETE over a range of seen_at would lock every consumer row of
		// the trigger in InnoDB and deadlock with the others' updates.
		gone := liveSince.Add(-time.Hour).UnixMilli()
		var old []string
		rows, err := tx.QueryContext(ctx, s.d.Rebind("SELECT consumer FROM trigger_consumers WHERE trigger_name = ? AND seen_at < ?"), name, gone)
		if err != nil {
			return err
		}
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				rows.Close()
				return err
			}
			old = append(old, c)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, c := range old {
			if _, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM trigger_consumers WHERE trigger_name = ? AND consumer = ? AND seen_at < ?"),
				name, c, gone); err != nil {
				return err
			}
		}
		return tx.QueryRowContext(ctx, s.d.Rebind("SELECT COUNT(*) FROM trigger_consumers WHERE trigger_name = ? AND seen_at >= ?"),
			name, liveSince.UnixMilli()).Scan(&live)
	})
	if err != nil {
		return 0, s.wrap(err, "record consumer of trigger %s", name)
	}
	return live, nil
}

// LiveConsumers returns how many consumers of trigger name were seen since
// liveSince.
func (s *Store) LiveConsumers(ctx context.Context, name string, liveSince time.Time) (int, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	var live int
	err := s.db.QueryRowContext(ctx, s.d.Rebind("SELECT COUNT(*) FROM trigger_consumers WHERE trigger_name = ? AND seen_at >= ?"),
		name, liveSince.UnixMilli()).Scan(&live)
	if err != nil {
		return 0, s.wrap(err, "count consumers of trigger %s", name)
	}
	return live, nil
}

const parkedColumns = "shard, added_id, row_key, col, ref_key, attempts, last_error, parked_at, replay"

func scanParked(sc interface{ Scan(...any) error }, p *ParkedCell) error {
	var row, lastError []byte
	var parked int64
	if err := sc.Scan(&p.Shard, &p.AddedID, &row, &p.Key.Column, &p.Key.RefKey, &p.Attempts, &lastError, &parked, &p.Replay); err != nil {
		return err
	}
	p.Key.RowKey, p.LastError, p.ParkedAt = string(row), string(lastError), unixMilli(parked)
	return nil
}

// ParkedCells returns up to limit parked cells of a trigger (replayed ones
// too) in (shard, added_id) order, starting after (shard, addedID).
func (s *Store) ParkedCells(ctx context.Context, name string, afterShard int, afterAddedID int64, limit int) ([]ParkedCell, error) {
	out := []ParkedCell{}
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	rows, err := s.db.QueryContext(ctx, s.d.Rebind("SELECT "+parkedColumns+` FROM trigger_parked WHERE trigger_name = ?
		AND (shard > ? OR (shard = ? AND added_id > ?)) ORDER BY shard, added_id LIMIT ?`), name, afterShard, afterShard, afterAddedID, limit)
	if err != nil {
		return out, s.wrap(err, "list parked cells of trigger %s", name)
	}
	defer rows.Close()
	for rows.Next() {
		var p ParkedCell
		if err := scanParked(rows, &p); err != nil {
			return out, s.wrap(err, "list parked cells of trigger %s", name)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return out, s.wrap(err, "list parked cells of trigger %s", name)
	}
	return out, nil
}

// ParkedCounts returns, per shard, how many cells of a trigger are parked
// and not being replayed.
func (s *Store) ParkedCounts(ctx context.Context, name string) (map[int]int, error) {
	out := make(map[int]int)
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	rows, err := s.db.QueryContext(ctx, s.d.Rebind("SELECT shard, COUNT(*) FROM trigger_parked WHERE trigger_name = ? AND replay = 0 GROUP BY shard"), name)
	if err != nil {
		return out, s.wrap(err, "count parked cells of trigger %s", name)
	}
	defer rows.Close()
	for rows.Next() {
		var shard, n int
		if err := rows.Scan(&shard, &n); err != nil {
			return out, s.wrap(err, "count parked cells of trigger %s", name)
		}
		out[shard] = n
	}
	if err := rows.Err(); err != nil {
		return out, s.wrap(err, "count parked cells of trigger %s", name)
	}
	return out, nil
}

// ReplayParked marks every parked cell of a trigger for replay and returns
// how many it marked.
func (s *Store) ReplayParked(ctx context.Context, name string) (int64, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	r, err := s.wdb.ExecContext(ctx, s.d.Rebind("UPDATE trigger_parked SET replay = 1 WHERE trigger_name = ? AND replay = 0"), name)
	if err != nil {
		return 0, s.wrap(err, "replay parked cells of trigger %s", name)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, s.wrap(err, "replay parked cells of trigger %s", name)
	}
	return n, nil
}

// ReplayShards returns the shards of a trigger that have cells to replay
// or being replayed.
func (s *Store) ReplayShards(ctx context.Context, name string) ([]int, error) {
	out := []int{}
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	rows, err := s.db.QueryContext(ctx, s.d.Rebind("SELECT DISTINCT shard FROM trigger_parked WHERE trigger_name = ? AND replay > 0 ORDER BY shard"), name)
	if err != nil {
		return out, s.wrap(err, "read replays of trigger %s", name)
	}
	defer rows.Close()
	for rows.Next() {
		var shard int
		if err := rows.Scan(&shard); err != nil {
			return out, s.wrap(err, "read replays of trigger %s", name)
		}
		out = append(out, shard)
	}
	if err := rows.Err(); err != nil {
		return out, s.wrap(err, "read replays of trigger %s", name)
	}
	return out, nil
}

// ErrLeaseMoved refuses TakeReplay under a lease that is no longer the
// shard's.
var ErrLeaseMoved = errors.New("the shard's lease moved")

// TakeReplay returns up to limit cells of a trigger's shard that are
// ready to replay, in added_id order, and marks them as held by a
// consumer, if the shard's lease is still the one of token and none of its
// replayed cells are held: the caller's lease then has one batch of
// replays out, whichever servers its claims go through. held is how many
// of the shard's replayed cells were held already (out in a batch under
// the lease); with any, nothing is taken. A lease that moved or ended
// fails with ErrLeaseMoved.
func (s *Store) TakeReplay(ctx context.Context, name string, shard int, token int64, limit int) (out []ParkedCell, held int, err error) {
	out = []ParkedCell{}
	if err := s.ready(ctx); err != nil {
		return out, 0, err
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		out, held = out[:0], 0
		// The shard's row, locked, orders the takes of one shard.
		var have int64
		var owner string
		err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT token, owner FROM trigger_shards WHERE trigger_name = ? AND shard = ?"+s.d.ForUpdate), name, shard).Scan(&have, &owner)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && (have != token || owner == "")) {
			return ErrLeaseMoved
		}
		if err != nil {
			return err
		}
		err = tx.QueryRowContext(ctx, s.d.Rebind("SELECT COUNT(*) FROM trigger_parked WHERE trigger_name = ? AND shard = ? AND replay = 2"), name, shard).Scan(&held)
		if err != nil {
			return err
		}
		if held > 0 {
			return nil
		}
		rows, err := tx.QueryContext(ctx, s.d.Rebind("SELECT "+parkedColumns+" FROM trigger_parked WHERE trigger_name = ? AND shard = ? AND replay = 1 ORDER BY added_id LIMIT ?"+s.d.ForUpdate),
			name, shard, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p ParkedCell
			if err := scanParked(rows, &p); err != nil {
				return err
			}
			out = append(out, p)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		if len(out) == 0 {
			return nil
		}
		if afterTakeReplayRead != nil {
			afterTakeReplayRead()
		}
		// Exactly the cells taken: a range up to the last would also
		// take a cell that ReplayParked marked for replay since the read
		// (at READ COMMITTED the read locks only the rows it returns), and
		// that cell, held but never sent, would go with the batch's ack.
		args := []any{name, shard}
		for _, p := range out {
			args = append(args, p.AddedID)
		}
		_, err = tx.ExecContext(ctx, s.d.Rebind("UPDATE trigger_parked SET replay = 2 WHERE trigger_name = ? AND shard = ? AND replay = 1 AND added_id IN (?"+strings.Repeat(", ?", len(out)-1)+")"), args...)
		return err
	})
	if errors.Is(err, ErrLeaseMoved) {
		return out, 0, err
	}
	if err != nil {
		return out, 0, s.wrap(err, "take replays of trigger %s shard %d", name, shard)
	}
	return out, held, nil
}

// afterTakeReplayRead, if set (by tests), runs in TakeReplay between its
// read of the cells to replay and the update that holds them.
var afterTakeReplayRead func()

// ShardHeads returns the last added_id of every shard that has a sequence
// row on this node. A node holds rows for shards that moved away too;
// callers keep only those the shard map assigns to it.
func (s *Store) ShardHeads(ctx context.Context) (map[int]int64, error) {
	heads := make(map[int]int64)
	if err := s.ready(ctx); err != nil {
		return heads, err
	}
	rows, err := s.db.QueryContext(ctx, "SELECT shard, last_added_id FROM shard_seq")
	if err != nil {
		return heads, s.wrap(err, "read shard heads")
	}
	defer rows.Close()
	for rows.Next() {
		var shard int
		var last int64
		if err := rows.Scan(&shard, &last); err != nil {
			return heads, s.wrap(err, "read shard heads")
		}
		heads[shard] = last
	}
	if err := rows.Err(); err != nil {
		return heads, s.wrap(err, "read shard heads")
	}
	return heads, nil
}

// ShardHeadsSum returns the sum of the last added_ids of the shards in
// ranges that have a sequence row on this node, as a decimal. Heads only
// grow, so a reader that knows a lower bound of every head can tell from
// the sum alone whether it knows them all, without reading them.
func (s *Store) ShardHeadsSum(ctx context.Context, ranges []cellar.ShardRange) (int64, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	if len(ranges) == 0 {
		return 0, nil
	}
	var q strings.Builder
	q.WriteString("SELECT COALESCE(SUM(last_added_id), 0) FROM shard_seq WHERE ")
	args := make([]any, 0, 2*len(ranges))
	for i, r := range ranges {
		if i > 0 {
			q.WriteString(" OR ")
		}
		q.WriteString("shard BETWEEN ? AND ?")
		args = append(args, r.First, r.Last)
	}
	// As text: SUM is a DECIMAL on MySQL and a NUMERIC on PostgreSQL.
	var sum string
	if err := s.db.QueryRowContext(ctx, s.d.Rebind(q.String()), args...).Scan(&sum); err != nil {
		return 0, s.wrap(err, "sum shard heads")
	}
	n, err := strconv.ParseInt(sum, 10, 64)
	if err != nil {
		return 0, cellar.Internal(err, "node %s: sum of shard heads %q", s.name, sum)
	}
	return n, nil
}

// TriggerOffset returns the offset of one shard of trigger name: the
// added_id of its last acknowledged cell, 0 if the shard has none.
func (s *Store) TriggerOffset(ctx context.Context, name string, shard int) (int64, error) {
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	var acked int64
	err := s.db.QueryRowContext(ctx, s.d.Rebind("SELECT acked FROM trigger_shards WHERE trigger_name = ? AND shard = ?"), name, shard).Scan(&acked)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.wrap(err, "read offset of trigger %s", name)
	}
	return acked, nil
}

// DeleteTrigger removes trigger name and all of its state, if it exists:
// the internal trigger of a dropped index generation.
func (s *Store) DeleteTrigger(ctx context.Context, name string) error {
	if err := s.ready(ctx); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, table := range []string{"trigger_shards", "trigger_parked", "trigger_consumers", "triggers"} {
			if _, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM "+table+" WHERE trigger_name = ?"), name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.wrap(err, "delete trigger %s", name)
	}
	return nil
}
