package trigger_test

// Tests of Renew: the lease of a consumer whose handler spends longer
// than the lease on one cell, which has nothing new to ack.

import (
	"slices"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

// row returns the stored row of shard of trigger name.
func (e *env) row(name string, shard int) sqlstore.TriggerShard {
	e.tb.Helper()
	rows, err := e.meta.TriggerShards(bg(), name)
	if err != nil {
		e.tb.Fatal(err)
	}
	for _, r := range rows {
		if r.Shard == shard {
			return r
		}
	}
	return sqlstore.TriggerShard{Shard: shard}
}

// wantRow fails unless the stored row of shard is want: nothing changed.
func (e *env) wantRow(what, name string, shard int, want sqlstore.TriggerShard) {
	e.tb.Helper()
	if got := e.row(name, shard); got != want {
		e.tb.Fatalf("%s: row of shard %d = %+v; want it unchanged, %+v", what, shard, got, want)
	}
}

// TestRenew guards that a renewal extends the lease for the TTL from now
// without an ack, so that no other consumer gets the shard while a slow
// handler works on one cell; and that acking again a cell at or below the
// offset, the only thing such a consumer could ack, does not.
func TestRenew(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		x := e.put(rowIn(sh(3), 0), "a")
		y := e.put(rowIn(sh(3), 1), "a")
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		c := e.claim("t", "slow", 1)
		if c.Lease == nil || !slices.Equal(ids(c.Cells), []int64{x.AddedID}) {
			t.Fatalf("claim = %+v; want cell %d", c, x.AddedID)
		}
		// Three times the lease on the cell, renewing every 0.6 lease.
		for i := 0; i < 5; i++ {
			e.clock.Advance(testTTL * 6 / 10)
			l, err := e.engine.Renew(bg(), "t", c.Lease.Token, sh(3))
			if err != nil {
				t.Fatalf("renewal %d: %v", i, err)
			}
			want := e.clock.Now().Add(testTTL).Truncate(time.Millisecond)
			if l.Shard != sh(3) || l.Token != c.Lease.Token || !l.ExpiresAt.Equal(want) || l.TTL != testTTL {
				t.Fatalf("renewal %d = %+v; want shard %d, token %d, expiring at %v, TTL %v", i, l, sh(3), c.Lease.Token, want, testTTL)
			}
			if r := e.row("t", sh(3)); !r.ExpiresAt.Equal(want) || r.Owner != "slow" || r.Delivered != x.AddedID || r.Acked != 0 {
				t.Fatalf("stored row after renewal %d = %+v; want owner slow, delivered %d, offset 0, expiring at %v", i, r, x.AddedID, want)
			}
			if got := e.claim("t", "other", 10); got.Lease != nil {
				t.Fatalf("after renewal %d, other got shard %d cells %v", i, got.Lease.Shard, ids(got.Cells))
			}
		}
		if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(3), x.AddedID); err != nil {
			t.Fatalf("ack under the renewed lease: %v", err)
		}
		// Acking the cell again does nothing, renewal included.
		before := e.row("t", sh(3))
		e.clock.Advance(testTTL / 2)
		if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(3), x.AddedID); err != nil {
			t.Fatal(err)
		}
		e.wantRow("repeated ack", "t", sh(3), before)
		// The same consumer's next claim takes the next cell under the
		// same lease.
		if got := e.claim("t", "slow", 10); got.Lease == nil || got.Lease.Token != c.Lease.Token || !slices.Equal(ids(got.Cells), []int64{y.AddedID}) {
			t.Fatalf("next claim = %+v; want cell %d under token %d", got, y.AddedID, c.Lease.Token)
		}
	})
}

// TestRenewExpired guards the choice for a lease that expired but that
// nobody took: it is still the shard's current lease (an ack under it is
// accepted), and a renewal revives it.
func TestRenewExpired(t *testing.T) {
	e := newTestEnv(t, backends[0])
	x := e.put(rowIn(sh(1), 0), "a")
	e.define("t", trigger.Definition{Columns: []string{"a"}})
	c := e.claim("t", "slow", 10)
	e.clock.Advance(testTTL + time.Second)
	l, err := e.engine.Renew(bg(), "t", c.Lease.Token, sh(1))
	if err != nil || l.Token != c.Lease.Token || !l.ExpiresAt.After(e.clock.Now()) {
		t.Fatalf("renewal of an expired lease nobody took = %+v, %v; want it renewed", l, err)
	}
	if got := e.claim("t", "other", 10); got.Lease != nil {
		t.Fatalf("other got shard %d cells %v after the lease was revived", got.Lease.Shard, ids(got.Cells))
	}
	if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(1), x.AddedID); err != nil {
		t.Fatal(err)
	}
}

// TestRenewStale guards that a renewal under a lease that is not the
// shard's current one is refused with ECONFLICT and changes nothing: the
// lease expired and another consumer took the shard, the trigger was
// reset, or a nack ended the lease; also through a second server whose
// copy of the rows is stale.
func TestRenewStale(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 3})
		// The second server's copy of the rows is loaded (by a claim that
		// finds nothing) and then never refreshed.
		other := staleEngine(t, e)
		if c, err := other.Claim(bg(), "t", "x", 10, 0); err != nil || c.Lease != nil {
			t.Fatalf("claim through the second server = %+v, %v; want nothing", c, err)
		}
		x := e.put(rowIn(sh(5), 0), "a")
		c1 := e.claim("t", "old", 10)
		if c1.Lease == nil {
			t.Fatal("no lease")
		}
		// The second server learns of the first lease.
		if _, err := other.Renew(bg(), "t", c1.Lease.Token, sh(5)); err != nil {
			t.Fatal(err)
		}

		e.clock.Advance(testTTL + time.Second)
		c2 := e.claim("t", "new", 10)
		if c2.Lease == nil || c2.Lease.Token <= c1.Lease.Token {
			t.Fatalf("claim after expiry = %+v; want a new lease", c2.Lease)
		}
		taken := e.row("t", sh(5))
		e.clock.Advance(time.Second)
		for _, eng := range []*trigger.Engine{e.engine, other} {
			_, err := eng.Renew(bg(), "t", c1.Lease.Token, sh(5))
			wantCode(t, "renewal after another consumer took the shard", err, cellar.ErrConflict)
			e.wantRow("stale renewal", "t", sh(5), taken)
		}
		if got := e.claim("t", "old", 10); got.Lease != nil {
			t.Fatalf("old got shard %d back after its stale renewal", got.Lease.Shard)
		}

		// A nack ends the lease; its token stays the shard's until the
		// next lease, but it holds nothing to renew.
		if _, err := e.engine.Nack(bg(), "t", c2.Lease.Token, sh(5), x.AddedID, "boom"); err != nil {
			t.Fatal(err)
		}
		nacked := e.row("t", sh(5))
		_, err := e.engine.Renew(bg(), "t", c2.Lease.Token, sh(5))
		wantCode(t, "renewal after the nack that ended the lease", err, cellar.ErrConflict)
		e.wantRow("renewal after a nack", "t", sh(5), nacked)

	})
}

// TestRenewAfterReset guards that a reset ends every lease for renewals
// too, also through a second server whose copy of the rows shows the
// lease: the renewal is refused with ECONFLICT and changes nothing.
func TestRenewAfterReset(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		other := staleEngine(t, e)
		if c, err := other.Claim(bg(), "t", "x", 10, 0); err != nil || c.Lease != nil {
			t.Fatalf("claim through the second server = %+v, %v; want nothing", c, err)
		}
		e.put(rowIn(sh(4), 0), "a")
		c := e.claim("t", "c", 10)
		if c.Lease == nil {
			t.Fatal("no lease")
		}
		// The second server's copy learns of the lease, and is then never
		// refreshed.
		if _, err := other.Renew(bg(), "t", c.Lease.Token, sh(4)); err != nil {
			t.Fatal(err)
		}
		if err := e.engine.Reset(bg(), "t"); err != nil {
			t.Fatal(err)
		}
		reset := e.row("t", sh(4))
		for _, eng := range []*trigger.Engine{e.engine, other} {
			_, err := eng.Renew(bg(), "t", c.Lease.Token, sh(4))
			wantCode(t, "renewal after reset", err, cellar.ErrConflict)
			e.wantRow("renewal after reset", "t", sh(4), reset)
		}
	})
}

// TestRenewInvalid guards that a renewal with a bad name, a shard out of
// range or of an unknown trigger is refused before anything changes.
func TestRenewInvalid(t *testing.T) {
	e := newTestEnv(t, backends[0])
	e.put(rowIn(sh(2), 0), "a")
	e.define("t", trigger.Definition{Columns: []string{"a"}})
	c := e.claim("t", "c", 10)
	e.clock.Advance(time.Second)
	before := e.row("t", sh(2))
	for _, tc := range []struct {
		name  string
		shard int
		want  *cellar.Error
	}{
		{"t", -1, cellar.ErrInvalid},
		{"t", testShards, cellar.ErrInvalid},
		{"t", 1 << 40, cellar.ErrInvalid},
		{"bad name", sh(2), cellar.ErrInvalid},
		{"", sh(2), cellar.ErrInvalid},
		{"nope", sh(2), cellar.ErrNotFound},
	} {
		_, err := e.engine.Renew(bg(), tc.name, c.Lease.Token, tc.shard)
		wantCode(t, "Renew("+tc.name+")", err, tc.want)
	}
	e.wantRow("refused renewals", "t", sh(2), before)
}

// TestRenewReplay guards that renewing a lease with a replay batch out
// keeps the batch: its cells stay held (no second batch of the shard), and
// their ack under the renewed lease removes them from the parked ones.
func TestRenewReplay(t *testing.T) {
	e := newQuietEnv(t, backends[0])
	e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
	cells := parkCells(t, e, "t", sh(6), 2)
	c := replayAll(t, e, "t", cells)
	e.clock.Advance(testTTL * 6 / 10)
	if _, err := e.engine.Renew(bg(), "t", c.Lease.Token, sh(6)); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(testTTL * 6 / 10)
	if got := e.claim("t", "d", 10); got.Lease != nil {
		t.Fatalf("d got shard %d cells %v (replay %v) while c's renewed lease holds it", got.Lease.Shard, ids(got.Cells), got.Replay)
	}
	if got := e.claim("t", "c", 10); got.Lease != nil {
		t.Fatalf("c got a second batch %v (replay %v) of shard %d while its replay batch is out", ids(got.Cells), got.Replay, got.Lease.Shard)
	}
	if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(6), cells[1].AddedID); err != nil {
		t.Fatal(err)
	}
	if got := parkedIDs(t, e, "t"); len(got) != 0 {
		t.Fatalf("parked after the replay's ack = %v; want none", got)
	}
}
