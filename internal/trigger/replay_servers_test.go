package trigger_test

// Replays and leases across servers and repeated acks: each test guards
// a bug found in a review on 2026-12-03 (a cell lost or skipped).

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/trigger"
)

// TestRepeatedAckKeepsReplayBatch: docs/TRIGGERS.md promises "Acking
// again an added_id at or below the offset does nothing". A consumer acks
// its batch of new cells, then claims again and (same consumer, lease
// renewed with the same token) gets a replay batch; a repeated (late,
// retried) ack of the earlier batch's last cell, which is at the offset,
// must not count as an ack of the replay batch. It removes the replayed
// cell from the parked list, unhandled: the cell is lost.
func TestRepeatedAckKeepsReplayBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
		s := sh(1)
		p := parkCells(t, e, "t", s, 1)[0]
		x := e.put(rowIn(s, 5), "a")
		c := e.claim("t", "c", 10)
		if c.Lease == nil || c.Replay || !slices.Equal(ids(c.Cells), []int64{x.AddedID}) {
			t.Fatalf("claim = %+v; want new cell %d", c, x.AddedID)
		}
		if err := e.engine.Ack(bg(), "t", c.Lease.Token, s, x.AddedID); err != nil {
			t.Fatal(err)
		}
		r := replayAll(t, e, "t", []cellar.Cell{p})
		if r.Lease.Token != c.Lease.Token {
			t.Logf("replay lease token %d, earlier %d", r.Lease.Token, c.Lease.Token)
		}
		// The earlier batch's ack, again (its answer was lost, say).
		if err := e.engine.Ack(bg(), "t", c.Lease.Token, s, x.AddedID); err != nil {
			t.Fatalf("repeated ack: %v", err)
		}
		if got := parkedIDs(t, e, "t"); !slices.Equal(got, []int64{p.AddedID}) {
			t.Fatalf("parked after a repeated ack of cell %d (at the offset) = %v; want [%d]: the replayed cell, never handled, was dropped",
				x.AddedID, got, p.AddedID)
		}
	})
}

// TestNewLeaseTakesBackHeldReplays: the fixer's note. The
// replayed cells held by a lease that expired stay held (replay = 2) when
// a second server whose copy does not know of the replay leases the shard
// the normal way (claimShard does not requeue them). A repeated ack under
// that new lease then deletes them from the parked list: never handled by
// anyone, and gone.
func TestNewLeaseTakesBackHeldReplays(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
		s := sh(2)
		p := parkCells(t, e, "t", s, 1)[0]
		// The second server loads the trigger now (after the park, before
		// the replay) and does not refresh during the test.
		e2 := staleEngine(t, e)
		if got := claimOn(t, e2, "t", "warm", 10); got.Lease != nil {
			t.Fatalf("e2 delivered %+v", got)
		}
		// Through the first server: replay, a consumer takes the batch
		// and dies.
		replayAll(t, e, "t", []cellar.Cell{p})
		e.clock.Advance(testTTL + time.Second)
		// A new cell; the second server leases the shard the normal way.
		x := e.put(rowIn(s, 5), "a")
		c, err := e2.Claim(bg(), "t", "d", 10, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if c.Lease == nil || c.Lease.Shard != s || c.Replay || !slices.Equal(ids(c.Cells), []int64{x.AddedID}) {
			t.Fatalf("e2 claim = %+v; want new cell %d of shard %d", c, x.AddedID, s)
		}
		if err := e2.Ack(bg(), "t", c.Lease.Token, s, x.AddedID); err != nil {
			t.Fatal(err)
		}
		if err := e2.Ack(bg(), "t", c.Lease.Token, s, x.AddedID); err != nil {
			t.Fatalf("repeated ack: %v", err)
		}
		if got := parkedIDs(t, e, "t"); !slices.Equal(got, []int64{p.AddedID}) {
			t.Fatalf("parked after d's repeated ack of its own cell %d = %v; want [%d] (the dead lease's replayed cell, never handled)",
				x.AddedID, got, p.AddedID)
		}
	})
}

// TestOneReplayBatchPerShard: docs/TRIGGERS.md: "A consumer
// never gets a shard on which it has a batch out (delivered but not
// acknowledged), so one consumer name may run several claim loops at
// once". For a replay batch this is only kept in each engine's memory
// (replayOut): the stored lease is renewed for the same owner with nothing
// to stop it (lease() checks only Delivered > Acked). So a second loop of
// the same consumer, claiming through a second server, gets a second
// replay batch of the same shard while the first is out. The batches then
// trample each other: the second loop's nack counts the first loop's
// cell as handled (AckReplayed addedID-1), so when the first loop fails
// on it, its nack does nothing: a failed cell dropped from the parked
// list.
func TestOneReplayBatchPerShard(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		s := sh(3)
		p := parkedForReplay(t, e, s)
		// A second server, with a fresh copy (it knows of the replay).
		e2 := staleEngine(t, e)
		// Loop 1 of consumer c, through the first server.
		one := e.claim("t", "c", 1)
		if one.Lease == nil || !one.Replay || !slices.Equal(ids(one.Cells), []int64{p[0].AddedID}) {
			t.Fatalf("loop 1 claim = %+v; want the replay of %d", one, p[0].AddedID)
		}
		// Loop 2 of consumer c, through the second server.
		two := claimOn(t, e2, "t", "c", 1)
		if two.Lease == nil {
			return // the promise holds
		}
		t.Errorf("loop 2 of consumer c got shard %d (replay %v, cells %v, token %d) while loop 1 has replay batch %v out under token %d",
			two.Lease.Shard, two.Replay, ids(two.Cells), two.Lease.Token, ids(one.Cells), one.Lease.Token)
		if two.Lease.Shard != s || !slices.Equal(ids(two.Cells), []int64{p[1].AddedID}) {
			return
		}
		// Loop 2 fails on its cell; loop 1 then fails on its own.
		if _, err := e2.Nack(bg(), "t", two.Lease.Token, s, p[1].AddedID, "fail 2"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.engine.Nack(bg(), "t", one.Lease.Token, s, p[0].AddedID, "fail 1"); err != nil {
			t.Fatal(err)
		}
		if got := parkedIDs(t, e, "t"); !slices.Equal(got, ids(p)) {
			t.Fatalf("parked after both replayed cells failed = %v; want %v (cell %d, which failed, is gone)", got, ids(p), p[0].AddedID)
		}
	})
}

// TestStaleColumnsDoNotPassOver: a trigger's columns are widened
// through one server (PUT keeps the offsets; that server's engine then
// delivers the new column's cells after the offsets: load raises known
// "Cells of other columns were passed over: they may be the trigger's
// now"). A second server whose copy still has the old columns moves the
// offsets over those cells as "cells of other columns" (claimShard's and
// passOver's transactions check only that the offset did not move, not
// the definition), so they are never delivered. TRIGGERS.md: a stale copy
// "can cost a wasted attempt or a delay, and never a wrong answer".
func TestStaleColumnsDoNotPassOver(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		e2 := staleCopyOfColumnA(t, e)
		s := sh(6)
		bc := e.put(rowIn(s, 0), "b")
		// Widen the trigger through the first server.
		e.define("t", trigger.Definition{Columns: []string{"a", "b"}})
		// The second server's consumers poll (it finds the new head).
		c, err := e2.Claim(bg(), "t", "x", 10, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if c.Lease == nil { // not through the stale server: through the other
			c = e.claim("t", "x", 10)
		}
		if c.Lease == nil || !slices.Equal(ids(c.Cells), []int64{bc.AddedID}) {
			t.Fatalf("claim through the server that widened the trigger = %+v; want cell %d of column b (offset now %d)",
				c, bc.AddedID, e.offset("t", s))
		}
	})
}

// pausingTakeState is the metadata node with a pause in the first
// TakeReplay: between claimReplay's lease transaction and its take of the
// replayed cells.
type pausingTakeState struct {
	*sqlstore.Store
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (s *pausingTakeState) TakeReplay(ctx context.Context, name string, shard int, token int64, limit int) ([]sqlstore.ParkedCell, int, error) {
	s.once.Do(func() {
		close(s.entered)
		<-s.release
	})
	return s.Store.TakeReplay(ctx, name, shard, token, limit)
}

// Two claim loops of one consumer through two servers, both past the
// lease transaction of a replay claim before either takes its cells: the
// second take finds the first's batch held and takes nothing (TakeReplay
// checks the lease and the held cells under the shard's row lock), so
// that a nack in one batch cannot remove a cell of another that then
// fails unrecorded. (Review of stop 18: both took a batch, and a failed
// replayed cell was lost.)
func TestOneReplayBatchWhileATakeWaits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		s := sh(3)
		p := parkedForReplay(t, e, s)
		ps := &pausingTakeState{Store: e.meta, entered: make(chan struct{}), release: make(chan struct{})}
		opts := e.opts
		opts.State = ps
		opts.StateRefresh = time.Hour
		e1, err := trigger.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		defer e1.Close()
		e2 := staleEngine(t, e)
		type res struct {
			c   trigger.Claim
			err error
		}
		done := make(chan res, 1)
		go func() {
			c, err := e1.Claim(bg(), "t", "c", 1, 0)
			done <- res{c, err}
		}()
		select {
		case <-ps.entered:
		case r := <-done:
			t.Fatalf("loop 1 claim returned before taking replays: %+v, %v", r.c, r.err)
		case <-time.After(10 * time.Second):
			t.Fatal("loop 1 never took replays")
		}
		two, err := e2.Claim(bg(), "t", "c", 1, 0)
		if err != nil {
			t.Fatal(err)
		}
		close(ps.release)
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		one := r.c
		if one.Lease == nil || two.Lease == nil {
			return // one batch at a time: the promise holds
		}
		t.Errorf("two replay batches of shard %d at once for consumer c: loop 1 %v (token %d), loop 2 %v (token %d)",
			s, ids(one.Cells), one.Lease.Token, ids(two.Cells), two.Lease.Token)
		if len(one.Cells) != 1 || len(two.Cells) != 1 {
			return
		}
		// Each loop fails on its cell: the one holding the later cell first.
		first, firstE, second, secondE := one, e1, two, e2
		if two.Cells[0].AddedID > one.Cells[0].AddedID {
			first, firstE, second, secondE = two, e2, one, e1
		}
		if _, err := firstE.Nack(bg(), "t", first.Lease.Token, s, first.Cells[0].AddedID, "fail"); err != nil {
			t.Fatal(err)
		}
		nr, err := secondE.Nack(bg(), "t", second.Lease.Token, s, second.Cells[0].AddedID, "fail")
		if err != nil {
			t.Fatal(err)
		}
		if got := parkedIDs(t, e, "t"); !slices.Equal(got, ids(p)) {
			t.Errorf("parked after both replayed cells failed = %v; want %v: cell %d failed and is gone (its nack answered %+v)",
				got, ids(p), second.Cells[0].AddedID, nr)
		}
	})
}

// parkedForReplay defines trigger t of column a with one attempt, parks
// two cells of shard s and asks for them to be replayed; it returns them.
func parkedForReplay(t *testing.T, e *env, s int) []cellar.Cell {
	t.Helper()
	e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
	p := parkCells(t, e, "t", s, 2)
	if n, err := e.engine.Replay(bg(), "t"); err != nil || n != 2 {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	return p
}
