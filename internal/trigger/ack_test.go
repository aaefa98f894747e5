package trigger_test

// Tests of acks and nacks at the edges of the lease's batch: replay
// batches (also after a reset), repeated acks and nacks, cells that were
// not delivered, and error texts every metadata node can store.

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/trigger"
)

// newQuietEnv opens an env whose copy of the trigger state is never
// refreshed in the background during the test, so that what a test sees
// is what the engine's own changes left in it.
func newQuietEnv(t *testing.T, b backend) *env {
	t.Helper()
	return newEnv(t, b, b.dsn(t), filepath.Join(t.TempDir(), "n2.db"), func(o *trigger.Options) { o.StateRefresh = time.Hour })
}

// parkCells writes n cells on shard and parks them all (the trigger has
// max_attempts 1), returning them in added_id order.
func parkCells(t *testing.T, e *env, name string, shard, n int) []cellar.Cell {
	t.Helper()
	var cells []cellar.Cell
	for i := 0; i < n; i++ {
		cells = append(cells, e.put(rowIn(shard, i), "a"))
	}
	for _, want := range cells {
		c := e.claim(name, "parker", 10)
		if c.Lease == nil || c.Cells[0].AddedID != want.AddedID {
			t.Fatalf("claim to park = %+v; want cell %d first", c, want.AddedID)
		}
		res, err := e.engine.Nack(bg(), name, c.Lease.Token, shard, want.AddedID, "boom")
		if err != nil || !res.Parked {
			t.Fatalf("Nack = %+v, %v; want parked", res, err)
		}
	}
	return cells
}

// replayAll replays the parked cells of trigger name and claims them as
// consumer c, checking that the claim is the replay of want.
func replayAll(t *testing.T, e *env, name string, want []cellar.Cell) trigger.Claim {
	t.Helper()
	if n, err := e.engine.Replay(bg(), name); err != nil || n != int64(len(want)) {
		t.Fatalf("Replay = %d, %v; want %d", n, err, len(want))
	}
	c := e.claim(name, "c", 10)
	if c.Lease == nil || !c.Replay || !slices.Equal(ids(c.Cells), ids(want)) {
		t.Fatalf("claim after replay = %+v; want the replay of %v", c, ids(want))
	}
	return c
}

func parkedIDs(t *testing.T, e *env, name string) []int64 {
	t.Helper()
	parked, err := e.engine.Parked(bg(), name, -1, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, p := range parked {
		out = append(out, p.AddedID)
	}
	return out
}

// TestReplayAfterReset guards that a replay batch is told by the cells the
// lease holds, not by the offset: after a reset the parked cells are above
// the offset (0), and their ack and nack must still be accepted, or the
// batch comes back after every lease and the shard's new cells never do.
func TestReplayAfterReset(t *testing.T) {
	setup := func(t *testing.T) (*env, cellar.Cell, trigger.Claim) {
		e := newQuietEnv(t, backends[0])
		e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
		p := parkCells(t, e, "t", sh(1), 1)[0]
		if err := e.engine.Reset(bg(), "t"); err != nil {
			t.Fatal(err)
		}
		return e, p, replayAll(t, e, "t", []cellar.Cell{p})
	}
	t.Run("ack", func(t *testing.T) {
		e, p, c := setup(t)
		if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(1), p.AddedID); err != nil {
			t.Fatalf("ack of the replayed cell under its own lease: %v", err)
		}
		if got := parkedIDs(t, e, "t"); len(got) != 0 {
			t.Fatalf("parked after the replay's ack = %v; want none", got)
		}
	})
	t.Run("nack", func(t *testing.T) {
		e, p, c := setup(t)
		res, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(1), p.AddedID, "again")
		if err != nil || !res.Parked {
			t.Fatalf("nack of the replayed cell under its own lease = %+v, %v; want parked again", res, err)
		}
		if got := parkedIDs(t, e, "t"); !slices.Equal(got, []int64{p.AddedID}) {
			t.Fatalf("parked after the replay's nack = %v; want [%d]", got, p.AddedID)
		}
	})
}

// TestReplayAckRenewsLease guards that an ack within a replay batch renews
// the lease, as every ack does: a long replay batch acked every half lease
// is not handed to another consumer.
func TestReplayAckRenewsLease(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
	cells := parkCells(t, e, "t", sh(2), 2)
	c := replayAll(t, e, "t", cells)
	e.clock.Advance(testTTL * 6 / 10)
	if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(2), cells[0].AddedID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(testTTL * 6 / 10)
	if got := e.claim("t", "d", 10); got.Lease != nil {
		t.Fatalf("d got shard %d cells %v (replay %v) 0.6 lease after c's ack renewed c's lease", got.Lease.Shard, ids(got.Cells), got.Replay)
	}
	if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(2), cells[1].AddedID); err != nil {
		t.Fatalf("ack of the rest of the batch under the renewed lease: %v", err)
	}
}

// TestNackReplayed guards a nack within a replay batch: the replayed cells
// before it count as handled (they leave the parked list and are not
// delivered again), the cell is parked again, and the lease ends, so the
// shard's new cells go to the next claim.
func TestNackReplayed(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
	cells := parkCells(t, e, "t", sh(3), 3)
	c := replayAll(t, e, "t", cells)
	if res, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(3), cells[1].AddedID, "again"); err != nil || !res.Parked {
		t.Fatalf("Nack = %+v, %v", res, err)
	}
	if got := parkedIDs(t, e, "t"); !slices.Equal(got, []int64{cells[1].AddedID, cells[2].AddedID}) {
		t.Fatalf("parked after nacking the 2nd replayed cell = %v; want %v (the 1st was handled)", got, ids(cells[1:]))
	}
	// The lease ended: d gets the rest of the batch at once, without
	// the handled cell, and then the shard's new cell.
	next := e.put(rowIn(sh(3), 5), "a")
	d := e.claim("t", "d", 10)
	if d.Lease == nil || !d.Replay || !slices.Equal(ids(d.Cells), []int64{cells[2].AddedID}) {
		t.Fatalf("claim by d after c's nack = %+v; want the replay of %d", d, cells[2].AddedID)
	}
	if err := e.engine.Ack(bg(), "t", d.Lease.Token, sh(3), cells[2].AddedID); err != nil {
		t.Fatal(err)
	}
	if got := e.claim("t", "d", 10); got.Lease == nil || !slices.Equal(ids(got.Cells), []int64{next.AddedID}) {
		t.Fatalf("claim by d after its replay = %+v; want new cell %d", got, next.AddedID)
	}
}

// TestReplayDoneFreesShard guards that a replay batch acked to its end
// leaves its shard free: the same consumer's next claim gets the shard's
// new cells, instead of the shard counting as busy until the lease ends.
func TestReplayDoneFreesShard(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
	p := parkCells(t, e, "t", sh(4), 1)[0]
	c := replayAll(t, e, "t", []cellar.Cell{p})
	if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(4), p.AddedID); err != nil {
		t.Fatal(err)
	}
	next := e.put(rowIn(sh(4), 5), "a")
	if got := e.claim("t", "c", 10); got.Lease == nil || got.Replay || !slices.Equal(ids(got.Cells), []int64{next.AddedID}) {
		t.Fatalf("claim after the replay was acked = %+v; want new cell %d", got, next.AddedID)
	}
}

// TestRetriedNack guards a nack sent again after the cell was parked (its
// answer was lost): it does nothing and counts no second parked cell, so
// the trigger is not falsely paused.
func TestRetriedNack(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	cell := e.put(rowIn(sh(5), 0), "a")
	e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1, ParkThreshold: 1})
	c := e.claim("t", "c", 10)
	if res, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(5), cell.AddedID, "boom"); err != nil || !res.Parked {
		t.Fatalf("nack = %+v, %v; want parked", res, err)
	}
	if res, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(5), cell.AddedID, "boom"); err != nil || res.Parked {
		t.Fatalf("retried nack = %+v, %v; want nothing done", res, err)
	}
	e.put(rowIn(sh(6), 0), "a")
	if got := e.claim("t", "c", 10); got.Paused || got.Lease == nil {
		t.Fatalf("claim with 1 parked cell and threshold 1 = %+v (paused %v); want the new cell", ids(got.Cells), got.Paused)
	}
}

// A nack repeated after the one that set its cell's retry (its answer was
// lost) answers that retry and changes nothing: before, it was refused as
// "not delivered under this lease".
func TestRetriedNackOfRetryingCell(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	cell := e.put(rowIn(sh(5), 0), "a")
	e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 3})
	c := e.claim("t", "c", 10)
	first, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(5), cell.AddedID, "boom")
	if err != nil || first.Parked || first.Attempts != 1 {
		t.Fatalf("nack = %+v, %v; want a retry at attempt 1", first, err)
	}
	again, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(5), cell.AddedID, "boom")
	// (Times come back from the store at its millisecond precision.)
	if err != nil || again.Parked || again.Attempts != 1 || !again.RetryAt.Equal(first.RetryAt.Truncate(time.Millisecond)) {
		t.Fatalf("repeated nack = %+v, %v; want the same retry %+v", again, err, first)
	}
}

// TestNackOfAckedCell guards that a nack of a cell the consumer acked
// already does nothing and answers not parked.
func TestNackOfAckedCell(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	a := e.put(rowIn(sh(7), 0), "a")
	b := e.put(rowIn(sh(7), 1), "a")
	e.define("t", trigger.Definition{Columns: []string{"a"}})
	c := e.claim("t", "c", 10)
	if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(7), b.AddedID); err != nil {
		t.Fatal(err)
	}
	res, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(7), a.AddedID, "late")
	if err != nil || res.Parked || res.Attempts != 0 {
		t.Fatalf("nack of acked cell %d = %+v, %v; want nothing done", a.AddedID, res, err)
	}
	if got := parkedIDs(t, e, "t"); len(got) != 0 || e.offset("t", sh(7)) != b.AddedID {
		t.Fatalf("after the nack: parked %v, offset %d; want none, %d", got, e.offset("t", sh(7)), b.AddedID)
	}
}

// TestReplayLeaseRefusesUndeliveredAck guards that a new lease taken to
// replay does not inherit what the dead lease before it delivered: an ack
// under it of cells it never delivered is refused, and the offset stays.
func TestReplayLeaseRefusesUndeliveredAck(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
	p := parkCells(t, e, "t", sh(0), 1)[0]
	x1 := e.put(rowIn(sh(0), 5), "a")
	x2 := e.put(rowIn(sh(0), 6), "a")
	dead := e.claim("t", "dead", 10)
	if !slices.Equal(ids(dead.Cells), []int64{x1.AddedID, x2.AddedID}) {
		t.Fatalf("claim = %+v", dead)
	}
	// "dead" crashes; the parked cells are replayed.
	e.clock.Advance(testTTL + time.Second)
	c := replayAll(t, e, "t", []cellar.Cell{p})
	err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(0), x2.AddedID)
	wantCode(t, "ack under the replay lease of a cell it never delivered", err, cellar.ErrInvalid)
	if got := e.offset("t", sh(0)); got != p.AddedID {
		t.Fatalf("offset = %d; want %d", got, p.AddedID)
	}
}

// TestRepeatedAck guards that acking the same added_id again does nothing:
// it does not mark the shard busy, so its next cells go to the next claim
// (the Go package may ack the last cell of a batch twice).
func TestRepeatedAck(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	x := e.put(rowIn(sh(6), 0), "a")
	e.define("t", trigger.Definition{Columns: []string{"a"}})
	c := e.claim("t", "c", 10)
	if !slices.Equal(ids(c.Cells), []int64{x.AddedID}) {
		t.Fatalf("claim = %+v", c)
	}
	for i := 0; i < 2; i++ {
		if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(6), x.AddedID); err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
	}
	y := e.put(rowIn(sh(6), 1), "a")
	if got := e.claim("t", "c", 10); got.Lease == nil || !slices.Equal(ids(got.Cells), []int64{y.AddedID}) {
		t.Fatalf("claim after a repeated ack = %+v; want new cell %d", got, y.AddedID)
	}
}

// TestNackRefusesOtherColumnCell guards that a nack may name only a
// delivered cell: not one of another column between two delivered ones,
// which it would otherwise park.
func TestNackRefusesOtherColumnCell(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	a1 := e.put(rowIn(sh(7), 0), "a")
	b := e.put(rowIn(sh(7), 1), "b")
	a2 := e.put(rowIn(sh(7), 2), "a")
	e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
	c := e.claim("t", "c", 10)
	if !slices.Equal(ids(c.Cells), []int64{a1.AddedID, a2.AddedID}) {
		t.Fatalf("claim = %+v", c)
	}
	_, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(7), b.AddedID, "no such cell delivered")
	wantCode(t, "nack of a cell of another column", err, cellar.ErrInvalid)
	if got := parkedIDs(t, e, "t"); len(got) != 0 {
		t.Fatalf("parked = %v; want none", got)
	}
}

// TestNackErrorText guards that a nack's error is stored the same on every
// metadata node: cut to 1000 bytes on a character boundary, and with NUL
// bytes (which PostgreSQL cannot store) replaced.
func TestNackErrorText(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		// Each cell waits for its retry after its nack: the next claim
		// gets the next one.
		nack := func(shard int, msg string) cellar.Cell {
			t.Helper()
			cell := e.put(rowIn(shard, 0), "a")
			c := e.claim("t", "c", 10)
			if c.Lease == nil || c.Cells[0].AddedID != cell.AddedID {
				t.Fatalf("claim = %+v; want cell %d", c, cell.AddedID)
			}
			if _, err := e.engine.Nack(bg(), "t", c.Lease.Token, shard, cell.AddedID, msg); err != nil {
				t.Fatalf("nack with error %.20q...: %v (code %s)", msg, err, cellar.ErrorCode(err))
			}
			return cell
		}
		long := nack(sh(1), strings.Repeat("x", 999)+"é and more") // é spans bytes 999-1000: it goes whole
		nul := nack(sh(2), "bad\x00byte")
		st, err := e.engine.Status(bg(), "t")
		if err != nil {
			t.Fatal(err)
		}
		got := map[int]string{}
		for _, s := range st.Shards {
			got[s.Shard] = s.LastError
		}
		if e := got[long.Shard]; !utf8.ValidString(e) || e != strings.Repeat("x", 999) {
			t.Errorf("last_error of the long error = %q...; want 999 x", e[min(len(e), 990):])
		}
		if e := got[nul.Shard]; e != "bad\uFFFDbyte" {
			t.Errorf("last_error of the error with a NUL = %q", e)
		}
	})
}

// TestConsumerControlCharacters guards that a consumer name with a NUL or
// another control character is refused with EINVALID on every metadata
// node (PostgreSQL cannot store a NUL).
func TestConsumerControlCharacters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		e.put(rowIn(sh(2), 0), "a")
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		for _, consumer := range []string{"worker\x00", "worker\n1", "a\x7f"} {
			_, err := e.engine.Claim(bg(), "t", consumer, 10, 0)
			wantCode(t, "claim by consumer "+strings.ReplaceAll(consumer, "\x00", `\x00`), err, cellar.ErrInvalid)
		}
		if c := e.claim("t", "wörker-1", 10); c.Lease == nil {
			t.Fatalf("claim by a UTF-8 consumer = %+v", c)
		}
	})
}

// Delete drops a trigger with its state: claims and acks under a lease
// taken before answer not found, and the name defined again starts over.
func TestDelete(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	cell := e.put(rowIn(sh(4), 0), "a")
	e.define("t", trigger.Definition{Columns: []string{"a"}})
	c := e.claim("t", "c", 10)
	if c.Lease == nil {
		t.Fatal("no lease")
	}
	if err := e.engine.Delete(bg(), "t"); err != nil {
		t.Fatal(err)
	}
	if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(4), cell.AddedID); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("ack after Delete: %v; want not found", err)
	}
	if _, err := e.engine.Claim(bg(), "t", "c", 10, 0); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("claim after Delete: %v; want not found", err)
	}
	if err := e.engine.Delete(bg(), "t"); !errors.Is(err, cellar.ErrNotFound) {
		t.Errorf("Delete again: %v; want not found", err)
	}
	e.define("t", trigger.Definition{Columns: []string{"a"}})
	if got := e.claim("t", "c", 10); got.Lease == nil || !slices.Equal(ids(got.Cells), []int64{cell.AddedID}) {
		t.Errorf("claim after defining the name again = %+v; want cell %d from the start", got, cell.AddedID)
	}
}

// A consumer of a deleted trigger that still holds its lease cannot move
// the offset of the trigger defined again under the same name: the new
// trigger's tokens start above the old one's (sqlstore tokenFloor), so its
// ack is stale. (Review of stop 18: both first leases took token 1, and
// the old consumer's ack passed over a cell of the new trigger.)
func TestDeleteAndDefineAgainFencesOldLeases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		s := sh(1)
		b1 := e.put(rowIn(s, 0), "b")
		a2 := e.put(rowIn(s, 1), "a")
		b3 := e.put(rowIn(s, 2), "b")
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		old := e.claim("t", "old", 10)
		if old.Lease == nil || !slices.Equal(ids(old.Cells), []int64{a2.AddedID}) {
			t.Fatalf("old claim = %+v; want cell %d", old, a2.AddedID)
		}
		if err := e.engine.Delete(bg(), "t"); err != nil {
			t.Fatal(err)
		}
		e.define("t", trigger.Definition{Columns: []string{"b"}})
		fresh := e.claim("t", "new", 10)
		if fresh.Lease == nil || !slices.Equal(ids(fresh.Cells), []int64{b1.AddedID, b3.AddedID}) {
			t.Fatalf("new claim = %+v; want cells %d, %d", fresh, b1.AddedID, b3.AddedID)
		}
		// The consumer of the deleted trigger finishes its batch and acks.
		err := e.engine.Ack(bg(), "t", old.Lease.Token, s, a2.AddedID)
		if err == nil {
			// The new consumer fails on b1.
			res, nerr := e.engine.Nack(bg(), "t", fresh.Lease.Token, s, b1.AddedID, "fail")
			t.Errorf("ack under the deleted trigger's lease (token %d) was accepted: offset now %d; "+
				"the new consumer's nack of b1 (cell %d) then = %+v, %v (not retried, not parked: skipped)",
				old.Lease.Token, e.offset("t", s), b1.AddedID, res, nerr)
			return
		}
		if !errors.Is(err, cellar.ErrConflict) && !errors.Is(err, cellar.ErrNotFound) {
			t.Errorf("stale ack: %v; want conflict", err)
		}
	})
}

// A parked cell delivered again after a reset and parked again is still
// one parked cell in the engine's count, which decides pausing, as in the
// stored rows. (Review of stop 18: the count went up by one, so that a
// trigger at its park_threshold paused until the next state refresh.)
func TestParkedAgainAfterResetCountsOnce(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1, ParkThreshold: 1})
	s := sh(3)
	p := parkCells(t, e, "t", s, 1)[0]
	if err := e.engine.Reset(bg(), "t"); err != nil {
		t.Fatal(err)
	}
	c := e.claim("t", "c", 10)
	if c.Lease == nil || !slices.Equal(ids(c.Cells), []int64{p.AddedID}) {
		t.Fatalf("claim after reset = %+v; want cell %d again", c, p.AddedID)
	}
	if res, err := e.engine.Nack(bg(), "t", c.Lease.Token, s, p.AddedID, "boom again"); err != nil || !res.Parked {
		t.Fatalf("Nack = %+v, %v; want parked", res, err)
	}
	x := e.put(rowIn(sh(4), 0), "a")
	st, err := e.engine.Status(bg(), "t")
	if err != nil {
		t.Fatal(err)
	}
	got := e.claim("t", "c", 10)
	if got.Paused {
		t.Errorf("claim of new cell %d answers paused, but the status says parked %d, paused %v (park_threshold 1: pause only above 1)",
			x.AddedID, st.Totals.Parked, st.Paused)
	}
}
