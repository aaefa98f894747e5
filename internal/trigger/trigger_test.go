package trigger_test

import (
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/trigger"
)

// TestDeliverInOrder writes cells of two columns over every shard and
// checks that a trigger on one of them delivers exactly its cells, each
// once when acked, in added_id order per shard, and nothing after.
func TestDeliverInOrder(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		want := map[int][]int64{}
		for i := 0; i < 60; i++ {
			col := "a"
			if i%3 == 0 {
				col = "b"
			}
			c := e.put(rowIn(sh(i%8), i/8), col)
			if col == "a" {
				want[c.Shard] = append(want[c.Shard], c.AddedID)
			}
		}
		e.define("t1", trigger.Definition{Columns: []string{"a"}})
		got := map[int][]int64{}
		for n := 0; ; n++ {
			if n > 100 {
				t.Fatal("claims never ran out")
			}
			c := e.claim("t1", "c1", 3)
			if c.Lease == nil {
				break
			}
			if len(c.Cells) == 0 || len(c.Cells) > 3 {
				t.Fatalf("claim returned %d cells; want 1..3", len(c.Cells))
			}
			for _, cell := range c.Cells {
				if cell.Column != "a" || cell.Shard != c.Lease.Shard {
					t.Fatalf("claim on shard %d delivered %+v", c.Lease.Shard, cell.Key)
				}
				got[cell.Shard] = append(got[cell.Shard], cell.AddedID)
			}
			if err := e.engine.Ack(bg(), "t1", c.Lease.Token, c.Lease.Shard, c.Cells[len(c.Cells)-1].AddedID); err != nil {
				t.Fatal(err)
			}
		}
		for s := 0; s < testShards; s++ {
			if !slices.Equal(got[s], want[s]) {
				t.Errorf("shard %d: delivered %v; want %v", s, got[s], want[s])
			}
		}
		st, err := e.engine.Status(bg(), "t1")
		if err != nil {
			t.Fatal(err)
		}
		// The last cells of some shards are of column b: the offset moved
		// over them, so nothing is behind.
		if st.Totals.LagCells != 0 || st.Totals.ShardsBehind != 0 {
			t.Errorf("status after draining: totals %+v; want no lag", st.Totals)
		}
		// A trigger on both columns gets all 60.
		e.define("t2", trigger.Definition{Columns: []string{"b", "a"}})
		n := 0
		for {
			c := e.claim("t2", "c1", 1000)
			if c.Lease == nil {
				break
			}
			n += len(c.Cells)
			if err := e.engine.Ack(bg(), "t2", c.Lease.Token, c.Lease.Shard, c.Cells[len(c.Cells)-1].AddedID); err != nil {
				t.Fatal(err)
			}
		}
		if n != 60 {
			t.Errorf("trigger on a and b delivered %d cells; want 60", n)
		}
	})
}

// TestStartLatest checks that a trigger started at the latest cells skips
// those written before it.
func TestStartLatest(t *testing.T) {
	e := newTestEnv(t, backends[0])
	e.put(rowIn(sh(1), 0), "a")
	e.define("t", trigger.Definition{Columns: []string{"a"}, Start: trigger.StartLatest})
	if c := e.claim("t", "c", 10); c.Lease != nil {
		t.Fatalf("claim delivered %v written before the trigger", ids(c.Cells))
	}
	later := e.put(rowIn(sh(1), 1), "a")
	c := e.claim("t", "c", 10)
	if c.Lease == nil || !slices.Equal(ids(c.Cells), []int64{later.AddedID}) {
		t.Fatalf("claim = %+v; want the cell written after the trigger", c)
	}
}

// TestStaleLease has two consumers race for one shard: after the first
// one's lease expires and the second takes the shard, the first one's ack
// is refused and does not move the offset.
func TestStaleLease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		var cells []cellar.Cell
		for i := 0; i < 4; i++ {
			cells = append(cells, e.put(rowIn(sh(2), i), "a"))
		}
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		c1 := e.claim("t", "old", 2)
		if c1.Lease == nil || c1.Lease.Shard != sh(2) {
			t.Fatalf("first claim = %+v; want shard 2", c1)
		}
		// While the lease holds, the other consumer gets nothing.
		if c := e.claim("t", "new", 2); c.Lease != nil {
			t.Fatalf("second consumer got shard %d leased to the first", c.Lease.Shard)
		}
		e.clock.Advance(testTTL + time.Second)
		st, err := e.engine.Status(bg(), "t")
		if err != nil {
			t.Fatal(err)
		}
		if st.Totals.LagCells != 4 || st.Totals.LagSeconds < testTTL.Seconds() || len(st.Shards) != 1 || st.Shards[0].Owner != "" {
			t.Fatalf("status after the lease expired: %+v %+v; want 4 cells and over %v behind, no owner", st.Totals, st.Shards, testTTL)
		}
		c2 := e.claim("t", "new", 10)
		if c2.Lease == nil || c2.Lease.Shard != sh(2) || c2.Lease.Token <= c1.Lease.Token {
			t.Fatalf("claim after expiry = %+v; want shard 2 with a token above %d", c2.Lease, c1.Lease.Token)
		}
		if !slices.Equal(ids(c2.Cells), ids(cells)) {
			t.Fatalf("takeover delivered %v; want all of %v again", ids(c2.Cells), ids(cells))
		}
		err = e.engine.Ack(bg(), "t", c1.Lease.Token, sh(2), c1.Cells[1].AddedID)
		wantCode(t, "ack with the stale token", err, cellar.ErrConflict)
		_, err = e.engine.Nack(bg(), "t", c1.Lease.Token, sh(2), c1.Cells[0].AddedID, "boom")
		wantCode(t, "nack with the stale token", err, cellar.ErrConflict)
		if off := e.offset("t", sh(2)); off != 0 {
			t.Fatalf("offset after stale ack = %d; want 0", off)
		}
		if err := e.engine.Ack(bg(), "t", c2.Lease.Token, sh(2), cells[3].AddedID); err != nil {
			t.Fatal(err)
		}
		if off := e.offset("t", sh(2)); off != cells[3].AddedID {
			t.Fatalf("offset = %d; want %d", off, cells[3].AddedID)
		}
		// An ack beyond what was delivered is refused.
		more := e.put(rowIn(sh(2), 10), "a")
		err = e.engine.Ack(bg(), "t", c2.Lease.Token, sh(2), more.AddedID)
		wantCode(t, "ack of an undelivered cell", err, cellar.ErrInvalid)
		// Reset ends the lease.
		if err := e.engine.Reset(bg(), "t"); err != nil {
			t.Fatal(err)
		}
		err = e.engine.Ack(bg(), "t", c2.Lease.Token, sh(2), cells[3].AddedID)
		wantCode(t, "ack after reset", err, cellar.ErrConflict)
		c3 := e.claim("t", "new", 10)
		if c3.Lease == nil || len(c3.Cells) != 5 {
			t.Fatalf("claim after reset = %+v; want all 5 cells again", c3)
		}
	})
}

// TestNackBackoffParkReplay checks retries with backoff (the shard waits
// for the failed cell), parking after max_attempts, pausing past the
// threshold, and replay.
func TestNackBackoffParkReplay(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		first := e.put(rowIn(sh(3), 0), "a")
		second := e.put(rowIn(sh(3), 1), "a")
		third := e.put(rowIn(sh(3), 2), "a")
		e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 3, ParkThreshold: 1})
		c := e.claim("t", "c", 10)
		if !slices.Equal(ids(c.Cells), []int64{first.AddedID, second.AddedID, third.AddedID}) {
			t.Fatalf("claim delivered %v", ids(c.Cells))
		}
		// The first cell is handled, the second fails.
		for attempt := 1; attempt <= 3; attempt++ {
			res, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(3), second.AddedID, "boom")
			if err != nil {
				t.Fatal(err)
			}
			if attempt < 3 {
				if res.Parked || res.Attempts != attempt {
					t.Fatalf("nack %d = %+v; want attempt %d, not parked", attempt, res, attempt)
				}
				if got := e.claim("t", "c", 10); got.Lease != nil {
					t.Fatalf("during backoff, claim delivered %v", ids(got.Cells))
				}
				st, err := e.engine.Status(bg(), "t")
				if err != nil {
					t.Fatal(err)
				}
				if len(st.Shards) != 1 || st.Shards[0].LastError != "boom" || st.Shards[0].Attempts != attempt || st.Shards[0].Offset != first.AddedID {
					t.Fatalf("status during backoff: %+v", st.Shards)
				}
				e.clock.Advance(trigger.DefaultBackoff(attempt))
				c = e.claim("t", "c", 10)
				if !slices.Equal(ids(c.Cells), []int64{second.AddedID, third.AddedID}) {
					t.Fatalf("after backoff, claim delivered %v; want the failed cell first", ids(c.Cells))
				}
				continue
			}
			if !res.Parked {
				t.Fatalf("nack %d = %+v; want parked", attempt, res)
			}
		}
		c = e.claim("t", "c", 10)
		if !slices.Equal(ids(c.Cells), []int64{third.AddedID}) {
			t.Fatalf("after parking, claim delivered %v; want the next cell", ids(c.Cells))
		}
		if _, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(3), third.AddedID, "bad"); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(time.Hour)
		for i := 0; i < 2; i++ {
			c = e.claim("t", "c", 10)
			if _, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(3), third.AddedID, "bad"); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(time.Hour)
		}
		// Two parked cells pass the threshold of 1.
		e.put(rowIn(sh(4), 0), "a")
		if c := e.claim("t", "c", 10); !c.Paused || c.Lease != nil {
			t.Fatalf("claim with 2 parked = %+v; want paused", c)
		}
		st, err := e.engine.Status(bg(), "t")
		if err != nil {
			t.Fatal(err)
		}
		if !st.Paused || st.Totals.Parked != 2 {
			t.Fatalf("status: paused %v, parked %d; want paused with 2", st.Paused, st.Totals.Parked)
		}
		parked, err := e.engine.Parked(bg(), "t", -1, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(parked) != 2 || parked[0].AddedID != second.AddedID || parked[0].LastError != "boom" || parked[0].Key != second.Key {
			t.Fatalf("parked = %+v", parked)
		}
		if n, err := e.engine.Replay(bg(), "t"); err != nil || n != 2 {
			t.Fatalf("Replay = %d, %v; want 2", n, err)
		}
		// Replays come first, in claims of their own.
		var replayed []int64
		for i := 0; i < 5; i++ {
			c = e.claim("t", "c", 10)
			if c.Lease == nil {
				break
			}
			if c.Replay {
				replayed = append(replayed, ids(c.Cells)...)
			}
			if err := e.engine.Ack(bg(), "t", c.Lease.Token, c.Lease.Shard, c.Cells[len(c.Cells)-1].AddedID); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.Equal(replayed, []int64{second.AddedID, third.AddedID}) {
			t.Fatalf("replayed %v", replayed)
		}
		st, err = e.engine.Status(bg(), "t")
		if err != nil {
			t.Fatal(err)
		}
		if st.Paused || st.Totals.Parked != 0 || st.Totals.LagCells != 0 {
			t.Fatalf("after replay: %+v", st.Totals)
		}
	})
}

// TestOffsetsSurviveReopen checks that offsets are stored: a new engine
// over reopened nodes carries on after them.
func TestOffsetsSurviveReopen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		dsn, other := b.dsn(t), filepath.Join(t.TempDir(), "n2.db")
		e := newEnv(t, b, dsn, other, nil)
		var cells []cellar.Cell
		for i := 0; i < 6; i++ {
			cells = append(cells, e.put(rowIn(sh(5), i), "a"))
		}
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		c := e.claim("t", "c", 4)
		if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(5), c.Cells[3].AddedID); err != nil {
			t.Fatal(err)
		}
		e.meta.Close()
		e.nodes[1].Store.Close()
		e2 := newEnv(t, b, dsn, other, nil)
		e2.clock.Advance(testTTL) // c's lease is over
		c = e2.claim("t", "c2", 10)
		if !slices.Equal(ids(c.Cells), ids(cells[4:])) {
			t.Fatalf("after reopening, claim delivered %v; want %v", ids(c.Cells), ids(cells[4:]))
		}
	})
}

// TestFairShare checks that consumers share the shards with work: none
// holds more than ceil(shards with work / live consumers), and a joining
// consumer gets shards once the others claim again.
func TestFairShare(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		fill := func(round int) {
			for s := 0; s < 6; s++ {
				e.put(rowIn(sh(s), round), "a")
			}
		}
		fill(0)
		consumers := []string{"c1", "c2", "c3"}
		for _, c := range consumers {
			e.claim("t", c, 1) // each is live and holds one lease
		}
		held := map[string]int{"c1": 1, "c2": 1, "c3": 1}
		for round := 0; round < 3; round++ {
			for _, c := range consumers {
				if got := e.claim("t", c, 1); got.Lease != nil {
					held[c]++
				}
			}
		}
		for c, n := range held {
			if n != 2 {
				t.Errorf("%s holds %d leases; want 2 (6 shards, 3 consumers)", c, n)
			}
		}

		// A lone consumer takes everything; a joining one gets its share.
		e.clock.Advance(testTTL + time.Second)
		fill(1)
		lone := map[int]trigger.Lease{}
		for i := 0; i < 10; i++ {
			c := e.claim("t", "a1", 1000)
			if c.Lease == nil {
				break
			}
			lone[c.Lease.Shard] = *c.Lease
			if err := e.engine.Ack(bg(), "t", c.Lease.Token, c.Lease.Shard, c.Cells[len(c.Cells)-1].AddedID); err != nil {
				t.Fatal(err)
			}
		}
		if len(lone) != 6 {
			t.Fatalf("a lone consumer took %d shards; want 6", len(lone))
		}
		fill(2)
		if c := e.claim("t", "a2", 1); c.Lease != nil {
			t.Fatalf("joining consumer took shard %d still leased to a1", c.Lease.Shard)
		}
		// a1 claims again: now two are live, it keeps 3 and lets 3 go.
		if c := e.claim("t", "a1", 1000); c.Lease == nil {
			t.Fatal("a1 got nothing")
		}
		got := 0
		for i := 0; i < 5; i++ {
			if c := e.claim("t", "a2", 1); c.Lease != nil {
				got++
			}
		}
		if got != 3 {
			t.Errorf("joining consumer got %d shards; want 3", got)
		}
	})
}

// TestLongPoll checks that a waiting claim returns as soon as a cell
// arrives, and an empty one after the wait.
func TestLongPoll(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		e.define("t", trigger.Definition{Columns: []string{"a"}})
		start := time.Now()
		c, err := e.engine.Claim(bg(), "t", "c", 10, 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if c.Lease != nil || c.Cells == nil || len(c.Cells) != 0 || time.Since(start) < 50*time.Millisecond {
			t.Fatalf("claim with nothing to deliver = %+v after %v; want empty after the wait", c, time.Since(start))
		}
		done := make(chan trigger.Claim, 1)
		go func() {
			c, err := e.engine.Claim(bg(), "t", "c", 10, 30*time.Second)
			if err != nil {
				t.Error(err)
			}
			done <- c
		}()
		time.Sleep(100 * time.Millisecond)
		cell := e.put(rowIn(sh(6), 0), "a")
		written := time.Now()
		select {
		case c := <-done:
			if !slices.Equal(ids(c.Cells), []int64{cell.AddedID}) {
				t.Fatalf("long poll delivered %v", ids(c.Cells))
			}
			if d := time.Since(written); d > 5*time.Second {
				t.Fatalf("long poll returned %v after the write", d)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("long poll did not return when a cell arrived")
		}
	})
}

// TestDefineValidates checks definitions and names.
func TestDefineValidates(t *testing.T) {
	e := newTestEnv(t, backends[0])
	for _, tc := range []struct {
		name string
		def  trigger.Definition
	}{
		{"bad name!", trigger.Definition{Columns: []string{"a"}}},
		{"t", trigger.Definition{}},
		{"t", trigger.Definition{Columns: []string{"1bad"}}},
		{"t", trigger.Definition{Columns: []string{"a"}, Start: "middle"}},
		{"t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: -1}},
		{"t", trigger.Definition{Columns: []string{"a"}, ParkThreshold: -1}},
	} {
		_, _, err := e.engine.Define(bg(), tc.name, tc.def)
		wantCode(t, "Define("+tc.name+")", err, cellar.ErrInvalid)
	}
	tr, created, err := e.engine.Define(bg(), "t", trigger.Definition{Columns: []string{"b", "a", "b"}})
	if err != nil || !created {
		t.Fatalf("Define = %v, %v", created, err)
	}
	if !slices.Equal(tr.Columns, []string{"a", "b"}) || tr.Start != "earliest" || tr.MaxAttempts != trigger.DefaultMaxAttempts || tr.ParkThreshold != trigger.DefaultParkThreshold {
		t.Errorf("defined %+v", tr)
	}
	if _, created, err := e.engine.Define(bg(), "t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 2}); err != nil || created {
		t.Fatalf("update = %v, %v; want updated", created, err)
	}
	_, err = e.engine.Claim(bg(), "nope", "c", 1, 0)
	wantCode(t, "claim of an unknown trigger", err, cellar.ErrNotFound)
	list, err := e.engine.Triggers(bg())
	if err != nil || len(list) != 1 || list[0].MaxAttempts != 2 {
		t.Fatalf("Triggers = %+v, %v", list, err)
	}
}

// observer records what the engine reports.
type observer struct {
	mu                 sync.Mutex // protects the fields below
	delivered, acked   int
	lagCells, lagCalls int64
	gone               []string
}

func (o *observer) TriggerGone(name string) {
	o.mu.Lock()
	o.gone = append(o.gone, name)
	o.mu.Unlock()
}

func (o *observer) goneNow() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.gone)
}

func (o *observer) TriggerDelivered(_ string, n int) { o.mu.Lock(); o.delivered += n; o.mu.Unlock() }
func (o *observer) TriggerAcked(_ string, n int)     { o.mu.Lock(); o.acked += n; o.mu.Unlock() }
func (o *observer) TriggerLag(_ string, cells int64, _ float64) {
	o.mu.Lock()
	o.lagCells, o.lagCalls = cells, o.lagCalls+1
	o.mu.Unlock()
}

// TestObserver checks the reports for metrics: deliveries, acks, and the
// lag that the started engine measures on its own.
func TestObserver(t *testing.T) {
	obs := &observer{}
	b := backends[0]
	e := newEnv(t, b, b.dsn(t), filepath.Join(t.TempDir(), "n2.db"), func(o *trigger.Options) {
		o.Observe = obs
		o.LagInterval = 10 * time.Millisecond
	})
	e.define("t", trigger.Definition{Columns: []string{"a"}})
	for i := 0; i < 3; i++ {
		e.put(rowIn(sh(1), i), "a")
	}
	c := e.claim("t", "c", 2)
	if err := e.engine.Ack(bg(), "t", c.Lease.Token, sh(1), c.Cells[1].AddedID); err != nil {
		t.Fatal(err)
	}
	e.engine.Start()
	defer e.engine.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		obs.mu.Lock()
		d, a, lag, calls := obs.delivered, obs.acked, obs.lagCells, obs.lagCalls
		obs.mu.Unlock()
		if calls > 0 {
			if d != 2 || a != 2 || lag != 1 {
				t.Fatalf("reported delivered %d, acked %d, lag %d; want 2, 2, 1", d, a, lag)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the monitor never reported lag")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A trigger deleted here is gone from the reports at once; one deleted
	// by another process, at the monitor's next round.
	e.define("other", trigger.Definition{Columns: []string{"a"}})
	obs.mu.Lock()
	base := obs.lagCalls
	obs.mu.Unlock()
	waitFor(t, "a lag round that sees other", func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return obs.lagCalls > base+2
	})
	if err := e.engine.Delete(bg(), "t"); err != nil {
		t.Fatal(err)
	}
	if g := obs.goneNow(); !slices.Equal(g, []string{"t"}) {
		t.Errorf("gone after Delete(t) = %q; want [t]", g)
	}
	if err := e.meta.DeleteTrigger(bg(), "other"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "other reported gone", func() bool { return slices.Contains(obs.goneNow(), "other") })
	if err := e.engine.Close(); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestReplayTakeover checks that replayed cells held by a consumer are not
// handed out twice while its lease holds, and are delivered again to the
// next consumer after it dies.
func TestReplayTakeover(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		cell := e.put(rowIn(sh(7), 0), "a")
		e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1})
		c := e.claim("t", "c", 10)
		if res, err := e.engine.Nack(bg(), "t", c.Lease.Token, sh(7), cell.AddedID, "x"); err != nil || !res.Parked {
			t.Fatalf("Nack = %+v, %v", res, err)
		}
		if _, err := e.engine.Replay(bg(), "t"); err != nil {
			t.Fatal(err)
		}
		first := e.claim("t", "c", 10)
		if !first.Replay || !slices.Equal(ids(first.Cells), []int64{cell.AddedID}) {
			t.Fatalf("claim after replay = %+v", first)
		}
		// The same consumer claiming again (another of its loops) and
		// another consumer get nothing while the lease holds.
		for _, who := range []string{"c", "d"} {
			if got := e.claim("t", who, 10); got.Lease != nil {
				t.Fatalf("%s got %v (replay %v) while c holds the replay", who, ids(got.Cells), got.Replay)
			}
		}
		// c dies; after its lease, d gets the replayed cell.
		e.clock.Advance(testTTL + time.Second)
		second := e.claim("t", "d", 10)
		if !second.Replay || !slices.Equal(ids(second.Cells), []int64{cell.AddedID}) || second.Lease.Token <= first.Lease.Token {
			t.Fatalf("claim after takeover = %+v", second)
		}
		err := e.engine.Ack(bg(), "t", first.Lease.Token, sh(7), cell.AddedID)
		wantCode(t, "ack of the replay under the dead lease", err, cellar.ErrConflict)
		if err := e.engine.Ack(bg(), "t", second.Lease.Token, sh(7), cell.AddedID); err != nil {
			t.Fatal(err)
		}
		if p, err := e.engine.Parked(bg(), "t", -1, 0, 10); err != nil || len(p) != 0 {
			t.Fatalf("parked after the replay's ack = %+v, %v", p, err)
		}
	})
}
