package trigger_test

import (
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/trigger"
)

// waitingClaim starts a claim that waits up to a minute and returns its
// result on the channel. It fails the test if the claim returns within
// 100ms: by then it is waiting.
func waitingClaim(t *testing.T, e *trigger.Engine, name, consumer string) <-chan trigger.Claim {
	t.Helper()
	done := make(chan trigger.Claim, 1)
	go func() {
		c, err := e.Claim(bg(), name, consumer, 10, time.Minute)
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	select {
	case c := <-done:
		t.Fatalf("claim returned %+v with nothing to deliver", c)
	case <-time.After(100 * time.Millisecond):
	}
	return done
}

// TestNotifyWakesClaim checks that a waiting claim is woken by Notify when
// a cell of its column commits, long before its poll (an hour) would look:
// not by cells of other columns, and also for a cell that was not notified
// (written by another process) when a later notification shows a gap.
func TestNotifyWakesClaim(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, b.dsn(t), t.TempDir()+"/n2.db", func(o *trigger.Options) { o.PollInterval = time.Hour })
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		e.define("other", trigger.Definition{Columns: []string{"b"}})
		// Both triggers are loaded (a first load looks at every shard with
		// cells): the notifications of column b go to "other" only.
		for _, name := range []string{"t", "other"} {
			if c := e.claim(name, "c", 10); c.Lease != nil {
				t.Fatalf("claim delivered %v", ids(c.Cells))
			}
		}

		done := waitingClaim(t, e.engine, "t", "c")
		e.put(rowIn(sh(2), 0), "b")
		select {
		case c := <-done:
			t.Fatalf("a cell of another column woke the claim: %+v", c)
		case <-time.After(100 * time.Millisecond):
		}
		// Not even to scan the shard and pass the offset over the cell.
		if off := e.offset("t", sh(2)); off != 0 {
			t.Fatalf("a cell of another column moved the offset to %d", off)
		}
		cell := e.put(rowIn(sh(2), 1), "a")
		select {
		case c := <-done:
			if c.Lease == nil || !slices.Equal(ids(c.Cells), []int64{cell.AddedID}) {
				t.Fatalf("woken claim = %+v; want cell %d", c, cell.AddedID)
			}
			if err := e.engine.Ack(bg(), "t", c.Lease.Token, c.Lease.Shard, cell.AddedID); err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Notify did not wake the waiting claim")
		}

		// A cell that nobody notified (another process wrote it), then a
		// notified one of another column in the same shard: the gap
		// between the heads wakes every trigger.
		done = waitingClaim(t, e.engine, "t", "c")
		e.notify.Store(false)
		unseen := e.put(rowIn(sh(6), 0), "a")
		e.notify.Store(true)
		select {
		case c := <-done:
			t.Fatalf("claim returned %+v before anything was notified", c)
		case <-time.After(100 * time.Millisecond):
		}
		e.put(rowIn(sh(6), 1), "b")
		select {
		case c := <-done:
			if c.Lease == nil || !slices.Equal(ids(c.Cells), []int64{unseen.AddedID}) {
				t.Fatalf("woken claim = %+v; want cell %d", c, unseen.AddedID)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a notification after a gap did not wake the waiting claim")
		}
	})
}

// TestSecondEngineStaleCopy runs a second engine over the same nodes, as a
// second server would, whose copy of the trigger's state is not refreshed
// during the test: what the first engine does must not let it deliver a
// shard leased to another consumer, accept an ack under a lease that a
// reset ended, or skip cells.
func TestSecondEngineStaleCopy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		e2 := staleEngine(t, e)
		var cells []cellar.Cell
		for i := 0; i < 3; i++ {
			cells = append(cells, e.put(rowIn(sh(5), i), "a"))
		}
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		// e2 claims and acks the first two, then lets the shard go after
		// its lease: its copy shows the shard free.
		c := claimOn(t, e2, "t", "x", 2)
		if !slices.Equal(ids(c.Cells), ids(cells[:2])) {
			t.Fatalf("e2 delivered %v", ids(c.Cells))
		}
		if err := e2.Ack(bg(), "t", c.Lease.Token, sh(5), cells[1].AddedID); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(testTTL + time.Second)
		// e takes the shard; e2's copy does not know.
		held := e.claim("t", "y", 10)
		if held.Lease == nil || !slices.Equal(ids(held.Cells), ids(cells[2:])) {
			t.Fatalf("e delivered %+v; want the third cell", held)
		}
		if got := claimOn(t, e2, "t", "x", 10); got.Lease != nil {
			t.Fatalf("e2 delivered %v of a shard leased to another consumer", ids(got.Cells))
		}
		if err := e.engine.Ack(bg(), "t", held.Lease.Token, sh(5), cells[2].AddedID); err != nil {
			t.Fatal(err)
		}
		// e resets the trigger: e2's copy still has the old offset and
		// token, and must not accept an ack under the ended lease.
		if err := e.engine.Reset(bg(), "t"); err != nil {
			t.Fatal(err)
		}
		err := e2.Ack(bg(), "t", held.Lease.Token, sh(5), cells[2].AddedID)
		wantCode(t, "ack through e2 after a reset through e", err, cellar.ErrConflict)
		// The refused ack showed e2 the stored row: it delivers from the
		// start again, in order, nothing skipped.
		e.clock.Advance(testTTL + time.Second)
		again := claimOn(t, e2, "t", "x", 10)
		if !slices.Equal(ids(again.Cells), ids(cells)) {
			t.Fatalf("after the reset e2 delivered %v; want %v", ids(again.Cells), ids(cells))
		}
		// More cells, written through e (which e2 is not told of): e2
		// finds them by polling, after the offset e acked.
		if err := e2.Ack(bg(), "t", again.Lease.Token, sh(5), cells[2].AddedID); err != nil {
			t.Fatal(err)
		}
		more := e.put(rowIn(sh(5), 3), "a")
		c, err = e2.Claim(bg(), "t", "x", 10, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(c.Cells), []int64{more.AddedID}) {
			t.Fatalf("e2 then delivered %v; want %d", ids(c.Cells), more.AddedID)
		}
	})
}

func claimOn(t *testing.T, e *trigger.Engine, name, consumer string, max int) trigger.Claim {
	t.Helper()
	c, err := e.Claim(bg(), name, consumer, max, 0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTwoEnginesUnderLoad is the load test with its consumers spread over
// two engines over the same nodes, as over two servers: the writes notify
// the first only, the second finds them by polling, and both refresh their
// copies of the state often (so that stale and fresh copies mix) and
// measure lag (which moves offsets over cells of other columns).
func TestTwoEnginesUnderLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newEnv(t, b, b.dsn(t), t.TempDir()+"/n2.db", func(o *trigger.Options) {
			o.StateRefresh = 100 * time.Millisecond
			o.Observe = &observer{}
			o.LagInterval = 200 * time.Millisecond
		})
		e2, err := trigger.New(e.opts)
		if err != nil {
			t.Fatal(err)
		}
		e.engine.Start()
		e2.Start()
		defer e2.Close()
		e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1000})
		l := &ledger{written: map[cellID]bool{}, handled: map[cellID]int{}, ackedAt: map[cellID]int64{}, ackedUpTo: map[int][]int64{}}
		runLoad(t, e, []*trigger.Engine{e.engine, e2}, l, 1500*time.Millisecond)
		l.check(t)
	})
}

// TestInternalTriggerLoops runs an internal trigger (a name with a leading
// underscore, as secondary indexes use) through the Go API with four claim
// loops of one consumer, and checks that each cell is handled once and in
// order per shard.
func TestInternalTriggerLoops(t *testing.T) {
	e := newTestEnv(t, backends[0])
	name := "_index.users_by_city"
	e.define(name, trigger.Definition{Columns: []string{"a"}})
	want := map[int][]int64{}
	for i := 0; i < 40; i++ {
		c := e.put(rowIn(sh(i%8), i/8), "a")
		want[c.Shard] = append(want[c.Shard], c.AddedID)
	}
	var mu sync.Mutex // protects got
	got := map[int][]int64{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := e.engine.Claim(bg(), name, "worker", 2, 50*time.Millisecond)
				if err != nil {
					t.Error(err)
					return
				}
				if c.Lease == nil {
					return
				}
				mu.Lock()
				got[c.Lease.Shard] = append(got[c.Lease.Shard], ids(c.Cells)...)
				mu.Unlock()
				if err := e.engine.Ack(bg(), name, c.Lease.Token, c.Lease.Shard, c.Cells[len(c.Cells)-1].AddedID); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for s, w := range want {
		if !slices.Equal(got[s], w) {
			t.Errorf("shard %d: handled %v; want %v", s, got[s], w)
		}
	}
}

// TestDeletedTriggerEndsClaims guards that a trigger deleted on the
// metadata node (as an index's maintenance trigger is) is not served on
// from the engine's copy: the refresh that finds it gone drops the copy,
// and claims and acks answer not found instead of delivering its cells.
func TestDeletedTriggerEndsClaims(t *testing.T) {
	e := newEnv(t, backends[0], backends[0].dsn(t), filepath.Join(t.TempDir(), "n2.db"), func(o *trigger.Options) { o.StateRefresh = 10 * time.Millisecond })
	e.define("t", trigger.Definition{Columns: []string{"a"}})
	e.put(rowIn(sh(1), 0), "a")
	c := e.claim("t", "c", 10)
	if c.Lease == nil {
		t.Fatalf("claim = %+v", c)
	}
	if err := e.meta.DeleteTrigger(bg(), "t"); err != nil {
		t.Fatal(err)
	}
	e.put(rowIn(sh(2), 0), "a")
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := e.engine.Claim(bg(), "t", "c", 10, 20*time.Millisecond)
		if errors.Is(err, cellar.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("claims of the deleted trigger go on: last %+v", got)
		}
	}
	err := e.engine.Ack(bg(), "t", c.Lease.Token, c.Lease.Shard, c.Cells[0].AddedID)
	wantCode(t, "ack of the deleted trigger", err, cellar.ErrNotFound)
}

// A server whose copy of a trigger predates a widening does not deliver
// the old column's cells past one of the new column: its claim checks the
// stored columns in its transaction, as passing over does, and drops the
// copy. (Review of stop 18: it delivered a2 and not b1 before it, and the
// ack of a2 moved the offset over b1.)
func TestStaleCopyClaimDoesNotSkipNewColumn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newQuietEnv(t, b)
		e2 := staleCopyOfColumnA(t, e)
		s := sh(6)
		b1 := e.put(rowIn(s, 0), "b")
		// Widen the trigger through the first server.
		e.define("t", trigger.Definition{Columns: []string{"a", "b"}})
		a2 := e.put(rowIn(s, 1), "a")
		c, err := e2.Claim(bg(), "t", "x", 10, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if c.Lease == nil {
			// It found its copy stale and delivered nothing: the cell
			// comes through the other server.
			if later := e.claim("t", "y", 10); !slices.Contains(ids(later.Cells), b1.AddedID) {
				t.Errorf("after the stale server delivered nothing, the up-to-date server's claim = %v; want b1 = %d", ids(later.Cells), b1.AddedID)
			}
			return
		}
		if !slices.Contains(ids(c.Cells), b1.AddedID) {
			if err := e2.Ack(bg(), "t", c.Lease.Token, s, c.Cells[len(c.Cells)-1].AddedID); err != nil {
				t.Fatal(err)
			}
			// Is b1 ever delivered afterwards, through the up-to-date server?
			later := e.claim("t", "y", 10)
			t.Errorf("after widening to [a b], the stale server delivered %v (not b1 = %d); after its ack the offset is %d and the up-to-date server's claim = %v: cell b1 skipped (a2 = %d)",
				ids(c.Cells), b1.AddedID, e.offset("t", s), ids(later.Cells), a2.AddedID)
		}
	})
}

// staleCopyOfColumnA defines trigger t of column a and returns a second
// engine whose copy of it is loaded (by a claim that finds nothing) and
// then not refreshed.
func staleCopyOfColumnA(t *testing.T, e *env) *trigger.Engine {
	t.Helper()
	e.define("t", trigger.Definition{Columns: []string{"a"}})
	e2 := staleEngine(t, e)
	if got := claimOn(t, e2, "t", "warm", 10); got.Lease != nil {
		t.Fatalf("e2 delivered %+v", got)
	}
	return e2
}
