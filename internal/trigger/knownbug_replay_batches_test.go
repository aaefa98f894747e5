//go:build knownbugs

// Known bug, found in the review of 2026-12-08 and not fixed yet (see the
// stop 20 note on issue 2): a consumer can get a replay batch and a batch
// of new cells of one shard at once through two servers, and with a reset
// a failed cell is then lost. These tests fail on every backend; they are
// kept out of the suite by the build tag until the fix lands:
//
//	go test -tags knownbugs ./internal/trigger -run 'TestReviewTrig' -count=1 -v
//
// Cause: claimShard's lease() refuses a renewal by the same owner only
// when Delivered > Acked and never looks at the replays the lease holds
// (replay = 2), and UpdateTriggerShardFrom's fast path and fallback read
// no held replays; TakeReplay changes no column of the shard's row, so a
// server's stale copy passes the one-statement update. ackRow then takes
// a replayed cell's ack for a plain one (isPlainAck before the held check)
// and moves the offset over a cell not handled.

package trigger_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/trigger"
)

// TRIGGERS.md: "a claim by the lease's own consumer with cells held is
// refused (never two batches of a shard at once, whichever servers the
// claims go through)", and replayed cells come "ahead of the shard's new
// cells". Consumer c has a replay batch of shard s out (taken through the
// first server); a second claim loop of c, through a second server whose
// copy predates the replay, is handed a batch of s's new cells as well:
// claimShard's transaction (lease()) checks Delivered > Acked only, never
// the held replays.
func TestReviewTrigReplayAndNewBatchAtOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
		s := sh(1)
		p := parkCells(t, e, "t", s, 1)[0]
		e2 := staleEngine(t, e)
		if got := claimOn(t, e2, "t", "warm", 10); got.Lease != nil {
			t.Fatalf("e2 delivered %+v", got)
		}
		one := replayAll(t, e, "t", []cellar.Cell{p}) // consumer c, loop 1, via e
		e.put(rowIn(s, 5), "a")
		two, err := e2.Claim(bg(), "t", "c", 10, 2*time.Second) // consumer c, loop 2, via e2
		if err != nil {
			t.Fatal(err)
		}
		if two.Lease != nil && two.Lease.Shard == s {
			t.Fatalf("consumer c got a second batch of shard %d (replay %v, cells %v, token %d) while its replay batch %v is out under token %d",
				s, two.Replay, ids(two.Cells), two.Lease.Token, ids(one.Cells), one.Lease.Token)
		}
	})
}

// The same two batches after a reset lose a failed cell. Shard s has q
// (acked) and p (parked); the trigger is reset (offset 0, p still parked)
// and p replayed. Loop 1 of consumer c gets the replay batch [p] through
// e; loop 2 of c, through e2 (whose copy predates the replay), gets the
// new-cell batch [q p r] under the same token. Loop 1 acks p: ackRow
// takes it as a plain ack (Acked 0 < p <= Delivered), so the offset jumps
// to p over q, which loop 2 has not handled yet. Loop 2 then fails on q:
// its nack is "at or below the offset" and does nothing. q failed and is
// neither retried nor parked: lost.
func TestReviewTrigReplayAckAfterResetLosesFailedCell(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
		s := sh(2)
		q := e.put(rowIn(s, 0), "a")
		c := e.claim("t", "w", 10)
		if c.Lease == nil || !slices.Equal(ids(c.Cells), []int64{q.AddedID}) {
			t.Fatalf("claim = %+v", c)
		}
		if err := e.engine.Ack(bg(), "t", c.Lease.Token, s, q.AddedID); err != nil {
			t.Fatal(err)
		}
		p := e.put(rowIn(s, 1), "a")
		c = e.claim("t", "w", 10)
		if c.Lease == nil || !slices.Equal(ids(c.Cells), []int64{p.AddedID}) {
			t.Fatalf("claim = %+v", c)
		}
		if res, err := e.engine.Nack(bg(), "t", c.Lease.Token, s, p.AddedID, "boom"); err != nil || !res.Parked {
			t.Fatalf("Nack = %+v, %v", res, err)
		}
		e2 := staleEngine(t, e)
		if got := claimOn(t, e2, "t", "warm", 10); got.Lease != nil {
			t.Fatalf("e2 delivered %+v", got)
		}
		if err := e.engine.Reset(bg(), "t"); err != nil {
			t.Fatal(err)
		}
		if n, err := e.engine.Replay(bg(), "t"); err != nil || n != 1 {
			t.Fatalf("Replay = %d, %v", n, err)
		}
		one := e.claim("t", "c", 1)
		if one.Lease == nil || !one.Replay || !slices.Equal(ids(one.Cells), []int64{p.AddedID}) {
			t.Fatalf("loop 1 claim = %+v; want the replay of %d", one, p.AddedID)
		}
		r := e.put(rowIn(s, 2), "a")
		two, err := e2.Claim(bg(), "t", "c", 10, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if two.Lease == nil || two.Lease.Shard != s || two.Replay || len(two.Cells) == 0 || two.Cells[0].AddedID != q.AddedID {
			t.Skipf("loop 2 claim = %+v: no second batch starting at q, scenario does not arise", two)
		}
		t.Logf("loop 1: replay %v token %d; loop 2: new cells %v token %d (r=%d)", ids(one.Cells), one.Lease.Token, ids(two.Cells), two.Lease.Token, r.AddedID)
		if err := e.engine.Ack(bg(), "t", one.Lease.Token, s, p.AddedID); err != nil {
			t.Fatal(err)
		}
		res, err := e2.Nack(bg(), "t", two.Lease.Token, s, q.AddedID, "q failed")
		if err != nil {
			t.Fatal(err)
		}
		parked := parkedIDs(t, e, "t")
		if !res.Parked && res.RetryAt.IsZero() && !slices.Contains(parked, q.AddedID) {
			t.Fatalf("cell %d failed and was lost: nack answered %+v, offset %d, parked %v", q.AddedID, res, e.offset("t", s), parked)
		}
	})
}
