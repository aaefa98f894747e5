package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cellar-db/cellar"
)

// Timelines
//
// A timeline is a row in timelines (its cap, and how many member rows it
// stores) and its rows in timeline_members. Members are ordered by (score,
// member bytes) ascending; a descending range is the exact reverse, so ties
// come out by member descending there (as in Redis's ZREVRANGE). The
// timeline is the top cap members of that order: the highest (score,
// member) pairs.
//
// Trimming is amortized. An add of a new member leaves the rows beyond the
// cap stored until they number more than trimSlack(cap); then that add
// deletes the lowest rows down to exactly cap, in its transaction. The rows
// beyond the cap are dead meanwhile, and nothing can show or revive them:
// counts are min(stored, cap), a descending range stops at the cap, an
// ascending one starts after the stored-cap lowest rows, and every other
// change that could lift one of them back within the cap (updating a score,
// removing a member, raising the cap) trims first. So a timeline behaves
// exactly as if each add trimmed at once; the slack only saves deletes,
// at the price of up to trimSlack(cap) more index entries for an ascending
// range to skip.
//
// Every write locks the timeline's row first (SQLite: the write
// transaction), so writers to one timeline run one at a time and the
// stored count stays exact. Reads run in one read-only snapshot.

// trimSlack is how far past its cap a timeline may grow before an add
// trims it: a tenth of the cap, at least 8, so that one trim deletes many
// rows and an add only rarely pays for one; and at most maxTrimSlack, so
// that the add that trims stays well within a node deadline (at a cap of
// 1,000,000 a tenth took MariaDB 1.8-1.9 s to delete, against the default
// node_timeout of 2 s; 2026-12-03 review).
func trimSlack(cap int64) int64 { return min(max(cap/10, 8), maxTrimSlack) }

const maxTrimSlack = 1024

var _ cellar.TimelineStore = (*Store)(nil)

func validateScore(score float64) error {
	if math.IsNaN(score) || math.IsInf(score, 0) {
		return cellar.Errorf(cellar.EINVALID, "score must be a finite number, not %v", score)
	}
	return nil
}

// TimelineAdd implements cellar.TimelineStore. The timeline is created
// with cellar.DefaultTimelineCap if it does not exist. The add that takes
// the stored rows past cap + trimSlack(cap) trims them to cap.
func (s *Store) TimelineAdd(ctx context.Context, key, member string, score float64) error {
	if err := cellar.ValidateKey("timeline key", key); err != nil {
		return err
	}
	if err := cellar.ValidateKey("member", member); err != nil {
		return err
	}
	if err := validateScore(score); err != nil {
		return err
	}
	if score == 0 {
		score = 0 // not -0: engines compare the two equal, but some keep the sign
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		t, err := s.lockTimeline(ctx, tx, key, true)
		if err != nil {
			return err
		}
		stored := t.stored
		inserted, err := s.insertMember(ctx, tx, key, member, score)
		if err != nil {
			return err
		}
		if !inserted {
			// An update could lower a member below dead rows, which would
			// then show; so they go first. If the member was one of them,
			// it is new again.
			if err := s.trim(ctx, tx, key, &t, t.cap); err != nil {
				return err
			}
			if t.stored != stored {
				if inserted, err = s.insertMember(ctx, tx, key, member, score); err != nil {
					return err
				}
			}
			if !inserted {
				_, err := tx.ExecContext(ctx, s.d.Rebind("UPDATE timeline_members SET score = ? WHERE timeline_key = ? AND member = ?"),
					score, []byte(key), []byte(member))
				if err != nil {
					return fmt.Errorf("update score: %w", err)
				}
			}
		}
		if inserted {
			t.stored++
			if t.stored > t.cap+trimSlack(t.cap) {
				if err := s.trim(ctx, tx, key, &t, t.cap); err != nil {
					return err
				}
			}
		}
		if t.stored == stored {
			return nil
		}
		return s.setStored(ctx, tx, key, t)
	})
	if err != nil {
		return s.wrap(err, "add to timeline")
	}
	return nil
}

// TimelineRemove implements cellar.TimelineStore. A member stored but
// beyond the cap (awaiting a trim) is not there: removing it reports false.
func (s *Store) TimelineRemove(ctx context.Context, key, member string) (bool, error) {
	if err := cellar.ValidateKey("timeline key", key); err != nil {
		return false, err
	}
	if err := cellar.ValidateKey("member", member); err != nil {
		return false, err
	}
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	var removed bool
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		removed = false
		t, err := s.lockTimeline(ctx, tx, key, false)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		// Removing a member lifts the highest dead row within the cap.
		stored := t.stored
		if err := s.trim(ctx, tx, key, &t, t.cap); err != nil {
			return err
		}
		r, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM timeline_members WHERE timeline_key = ? AND member = ?"), []byte(key), []byte(member))
		if err != nil {
			return fmt.Errorf("delete member: %w", err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return fmt.Errorf("delete member: %w", err)
		}
		removed = n == 1
		if n == 0 && t.stored == stored {
			return nil
		}
		t.stored -= n
		return s.setStored(ctx, tx, key, t)
	})
	if err != nil {
		return false, s.wrap(err, "remove from timeline")
	}
	return removed, nil
}

// TimelineRange implements cellar.TimelineStore. offset must be at least
// 0 and limit 1..1000. Members are ordered by score, ties by member bytes,
// both ascending, or both descending if desc. count is what TimelineCount
// returns, from the same snapshot.
func (s *Store) TimelineRange(ctx context.Context, key string, offset, limit int, desc bool) ([]cellar.TimelineItem, int64, error) {
	items := []cellar.TimelineItem{}
	if err := cellar.ValidateKey("timeline key", key); err != nil {
		return items, 0, err
	}
	if offset < 0 {
		return items, 0, cellar.Errorf(cellar.EINVALID, "offset must not be negative")
	}
	if limit < 1 || limit > cellar.MaxTimelineLimit {
		return items, 0, cellar.Errorf(cellar.EINVALID, "limit must be 1..%d", cellar.MaxTimelineLimit)
	}
	if err := s.ready(ctx); err != nil {
		return items, 0, err
	}
	var count int64
	err := s.inReadTx(ctx, func(tx *sql.Tx) error {
		var t timeline
		err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT cap, stored FROM timelines WHERE timeline_key = ?"), []byte(key)).Scan(&t.cap, &t.stored)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read timeline: %w", err)
		}
		count = min(t.stored, t.cap)
		if int64(offset) >= count {
			return nil
		}
		n := min(int64(limit), count-int64(offset))
		q := "SELECT member, score FROM timeline_members WHERE timeline_key = ? ORDER BY score DESC, member DESC LIMIT ? OFFSET ?"
		skip := int64(offset)
		if !desc {
			q = "SELECT member, score FROM timeline_members WHERE timeline_key = ? ORDER BY score ASC, member ASC LIMIT ? OFFSET ?"
			skip += t.stored - count // the rows beyond the cap, awaiting a trim
		}
		rows, err := tx.QueryContext(ctx, s.d.Rebind(q), []byte(key), n, skip)
		if err != nil {
			return fmt.Errorf("range timeline: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var member []byte
			var it cellar.TimelineItem
			if err := rows.Scan(&member, &it.Score); err != nil {
				return fmt.Errorf("range timeline: %w", err)
			}
			it.Member = string(member)
			items = append(items, it)
		}
		return rows.Err()
	})
	if err != nil {
		return []cellar.TimelineItem{}, 0, s.wrap(err, "range timeline")
	}
	return items, count, nil
}

// TimelineCount implements cellar.TimelineStore: at most the cap, and 0 for
// a timeline that was never written.
func (s *Store) TimelineCount(ctx context.Context, key string) (int64, error) {
	if err := cellar.ValidateKey("timeline key", key); err != nil {
		return 0, err
	}
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	var t timeline
	err := s.db.QueryRowContext(ctx, s.d.Rebind("SELECT cap, stored FROM timelines WHERE timeline_key = ?"), []byte(key)).Scan(&t.cap, &t.stored)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.wrap(err, "count timeline")
	}
	return min(t.stored, t.cap), nil
}

// capTrimStep is how many rows one transaction of SetTimelineCap deletes
// at most: lowering the cap of a full timeline of 1,000,000 members in one
// statement took MariaDB past the default node_timeout of 2 s, and was
// rolled back every time it was retried (2026-12-03 review). A tenth of
// that took 1.8-1.9 s there; a step of 8192 takes a small share of it.
var capTrimStep int64 = 8192

// afterCapTrimStep, if set (by tests), runs after each committed step of
// SetTimelineCap that left more to delete.
var afterCapTrimStep func()

// SetTimelineCap implements cellar.TimelineStore, creating the timeline
// if it does not exist. Lowering the cap deletes the members beyond it,
// lowest first, in steps of at most capTrimStep rows, one transaction
// each; the cap is set with the last step. Between steps the timeline
// keeps its old cap and has fewer members, the lowest gone, as if they had
// been removed: if ctx ends midway, the members deleted so far (all of
// which the new cap drops) stay deleted, the cap is unchanged, and calling
// again goes on from there.
func (s *Store) SetTimelineCap(ctx context.Context, key string, cap int) error {
	if err := cellar.ValidateKey("timeline key", key); err != nil {
		return err
	}
	if cap < 1 || cap > cellar.MaxTimelineCap {
		return cellar.Errorf(cellar.EINVALID, "cap must be 1..%d", cellar.MaxTimelineCap)
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	for done := false; !done; {
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			done = false
			t, err := s.lockTimeline(ctx, tx, key, true)
			if err != nil {
				return err
			}
			// Raising the cap would revive dead rows, so they go first;
			// lowering it deletes the members beyond it.
			keep := min(t.cap, int64(cap))
			if t.stored-keep > capTrimStep {
				if err := s.trim(ctx, tx, key, &t, t.stored-capTrimStep); err != nil {
					return err
				}
				return s.setStored(ctx, tx, key, t)
			}
			if err := s.trim(ctx, tx, key, &t, keep); err != nil {
				return err
			}
			t.cap = int64(cap)
			if _, err := tx.ExecContext(ctx, s.d.Rebind("UPDATE timelines SET cap = ?, stored = ? WHERE timeline_key = ?"), t.cap, t.stored, []byte(key)); err != nil {
				return fmt.Errorf("set cap: %w", err)
			}
			done = true
			return nil
		})
		if err != nil {
			return s.wrap(err, "set timeline cap")
		}
		if !done && afterCapTrimStep != nil {
			afterCapTrimStep()
		}
	}
	return nil
}

// timeline is a timeline's row.
type timeline struct {
	cap    int64
	stored int64 // member rows, which may exceed cap by up to trimSlack(cap)
}

// lockTimeline reads the row of timeline key and locks it until the end of
// tx. If the timeline does not exist, it creates it when create is set, and
// returns sql.ErrNoRows otherwise.
func (s *Store) lockTimeline(ctx context.Context, tx *sql.Tx, key string, create bool) (timeline, error) {
	var t timeline
	q := s.d.Rebind("SELECT cap, stored FROM timelines WHERE timeline_key = ?" + s.d.ForUpdate)
	err := tx.QueryRowContext(ctx, q, []byte(key)).Scan(&t.cap, &t.stored)
	if errors.Is(err, sql.ErrNoRows) && create {
		if _, err := tx.ExecContext(ctx, s.d.Rebind(s.d.InsertTimeline), []byte(key), cellar.DefaultTimelineCap); err != nil {
			return t, fmt.Errorf("create timeline: %w", err)
		}
		err = tx.QueryRowContext(ctx, q, []byte(key)).Scan(&t.cap, &t.stored)
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return t, fmt.Errorf("lock timeline: %w", err)
	}
	return t, err
}

// trim deletes the lowest rows of timeline key down to keep, if it stores
// more, and updates t.stored. The caller holds the timeline's lock and
// writes t.stored.
func (s *Store) trim(ctx context.Context, tx *sql.Tx, key string, t *timeline, keep int64) error {
	n := t.stored - keep
	if n <= 0 {
		return nil
	}
	// The n-th lowest row is the last to go; deleting up to it by a range
	// on the rank index is one statement whatever n is. The boundary is
	// read as the shard scan reads (Dialect.ScanLock): on InnoDB the
	// timeline's lock may be had before the previous writer's rows are
	// visible to a plain read, which would then find a boundary short of
	// them (and the count check below fail the add).
	var score float64
	var member []byte
	err := tx.QueryRowContext(ctx, s.d.Rebind("SELECT score, member FROM timeline_members WHERE timeline_key = ? ORDER BY score ASC, member ASC LIMIT 1 OFFSET ?"+s.d.ScanLock),
		[]byte(key), n-1).Scan(&score, &member)
	if err != nil {
		return fmt.Errorf("find trim boundary: %w", err)
	}
	r, err := tx.ExecContext(ctx, s.d.Rebind("DELETE FROM timeline_members WHERE timeline_key = ? AND (score < ? OR (score = ? AND member <= ?))"),
		[]byte(key), score, score, member)
	if err != nil {
		return fmt.Errorf("trim timeline: %w", err)
	}
	deleted, err := r.RowsAffected()
	if err != nil {
		return fmt.Errorf("trim timeline: %w", err)
	}
	if deleted != n {
		return fmt.Errorf("trim timeline: deleted %d rows; want %d", deleted, n)
	}
	t.stored -= deleted
	return nil
}

// insertMember inserts member unless the timeline holds it, reporting
// whether it did.
func (s *Store) insertMember(ctx context.Context, tx *sql.Tx, key, member string, score float64) (bool, error) {
	r, err := tx.ExecContext(ctx, s.d.Rebind(s.d.InsertMember), []byte(key), []byte(member), score)
	if err != nil {
		return false, fmt.Errorf("insert member: %w", err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("insert member: %w", err)
	}
	return n == 1, nil
}

func (s *Store) setStored(ctx context.Context, tx *sql.Tx, key string, t timeline) error {
	if _, err := tx.ExecContext(ctx, s.d.Rebind("UPDATE timelines SET stored = ? WHERE timeline_key = ?"), t.stored, []byte(key)); err != nil {
		return fmt.Errorf("update timeline count: %w", err)
	}
	return nil
}

// inTx runs f in a write transaction and commits it, running it again
// after deadlocks and serialization failures as the cell write path does.
// f must not keep results from a failed attempt.
func (s *Store) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.tryTx(ctx, s.stateTx(), f)
		if err == nil || attempt == 5 || !s.d.Retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
}

// stateTx returns the options of inTx's transactions (Dialect.StateTx).
func (s *Store) stateTx() *sql.TxOptions {
	if s.d.StateTx != nil {
		return s.d.StateTx
	}
	return s.d.WriteTx
}

// inReadTx runs f in a read-only transaction that sees one snapshot.
// (SQLite's driver begins a read-only transaction as DEFERRED even on a
// connection that begins others IMMEDIATE, so it takes no write lock.)
func (s *Store) inReadTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	return s.tryTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}, f)
}

func (s *Store) tryTx(ctx context.Context, opts *sql.TxOptions, f func(tx *sql.Tx) error) error {
	db := s.wdb
	if opts != nil && opts.ReadOnly {
		db = s.db
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}
