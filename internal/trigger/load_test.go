package trigger_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/trigger"
)

type cellID struct {
	shard int
	id    int64
}

// ledger records what happened during a load test, in one sequence.
type ledger struct {
	mu      sync.Mutex // protects everything below
	seq     int64
	written map[cellID]bool // cells of the trigger's column
	handled map[cellID]int
	ackedAt map[cellID]int64 // seq at which an ack covering the cell returned
	// ackedUpTo lists, per shard, the added_ids up to which accepted acks
	// and nacks acknowledged.
	ackedUpTo map[int][]int64
	batches   []batch
	stale     int
	crashes   int
}

type batch struct {
	startSeq int64
	shard    int
	ids      []int64
}

func (l *ledger) next() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return l.seq
}

// TestAtLeastOnceUnderLoad runs consumers against a steady write load.
// Consumers crash mid-batch (they abandon their lease without acking and
// come back under a new name, as a restarted process would), fail cells
// now and then, and leases expire all the time on a fast clock. Afterwards
// every written cell was handled at least once, every batch was a run of
// consecutive cells of its shard in added_id order that began right after
// a point an ack had reached, and no cell was delivered again after an ack
// covering it returned.
func TestAtLeastOnceUnderLoad(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := newTestEnv(t, b)
		e.define("t", trigger.Definition{Columns: []string{"a"}, MaxAttempts: 1000})
		l := &ledger{written: map[cellID]bool{}, handled: map[cellID]int{}, ackedAt: map[cellID]int64{}, ackedUpTo: map[int][]int64{}}
		runLoad(t, e, []*trigger.Engine{e.engine}, l, 1500*time.Millisecond)
		l.check(t)
	})
}

// check checks what the ledger recorded, as TestAtLeastOnceUnderLoad says.
func (l *ledger) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	perShard := map[int][]int64{}
	for c := range l.written {
		perShard[c.shard] = append(perShard[c.shard], c.id)
	}
	missing := 0
	for c := range l.written {
		if l.handled[c] == 0 {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d cells were never handled", missing, len(l.written))
	}
	for s := range perShard {
		slices.Sort(perShard[s])
	}
	redelivered := 0
	for _, bt := range l.batches {
		all := perShard[bt.shard]
		i := slices.Index(all, bt.ids[0])
		if i < 0 || i+len(bt.ids) > len(all) || !slices.Equal(all[i:i+len(bt.ids)], bt.ids) {
			t.Fatalf("batch %v of shard %d is not a run of its consecutive cells", bt.ids, bt.shard)
		}
		// The claim read after the shard's offset, which an ack had moved
		// to somewhere between the previous cell and this one (cells of
		// other columns lie between).
		if i > 0 && !slices.ContainsFunc(l.ackedUpTo[bt.shard], func(u int64) bool { return u >= all[i-1] && u < bt.ids[0] }) {
			t.Fatalf("batch %v of shard %d does not begin after an acknowledged cell (acks reached %v)", bt.ids, bt.shard, l.ackedUpTo[bt.shard])
		}
		for _, id := range bt.ids {
			if at, ok := l.ackedAt[cellID{bt.shard, id}]; ok && at < bt.startSeq {
				t.Fatalf("cell %d of shard %d was delivered again after an ack covering it", id, bt.shard)
			}
			if l.handled[cellID{bt.shard, id}] > 1 {
				redelivered++
			}
		}
	}
	t.Logf("%d cells written, %d batches, %d crashes, %d stale acks refused, %d deliveries beyond the first",
		len(l.written), len(l.batches), l.crashes, l.stale, redelivered)
	if l.crashes == 0 || len(l.written) == 0 {
		t.Fatalf("the test did not exercise crashes (%d) or writes (%d)", l.crashes, len(l.written))
	}
}

// runLoad writes for writeFor and runs three consumers, spread over
// engines, until they have caught up.
func runLoad(t *testing.T, e *env, engines []*trigger.Engine, l *ledger, writeFor time.Duration) {
	var writing atomic.Bool
	writing.Store(true)
	var wg sync.WaitGroup
	// Writers: cells of the trigger's column and of another one.
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; writing.Load(); i++ {
				col := "a"
				if i%4 == 3 {
					col = "b"
				}
				c := e.put(fmt.Sprintf("w%d-%d", w, i), col)
				if col == "a" {
					l.mu.Lock()
					l.written[cellID{c.Shard, c.AddedID}] = true
					l.mu.Unlock()
				}
			}
		}()
	}
	// The clock runs fast: a lease lasts about 20ms of real time.
	stop := make(chan struct{})
	var tick sync.WaitGroup
	tick.Add(1)
	go func() {
		defer tick.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				e.clock.Advance(time.Second)
			}
		}
	}()
	var chaos atomic.Bool
	chaos.Store(true)
	var consumers sync.WaitGroup
	var idle [3]atomic.Int64 // empty claims in a row, per consumer
	done := make(chan struct{})
	for ci := 0; ci < 3; ci++ {
		consumers.Add(1)
		go func() {
			defer consumers.Done()
			rng := rand.New(rand.NewPCG(uint64(ci), 1))
			eng := engines[ci%len(engines)]
			gen := 0
			for {
				select {
				case <-done:
					return
				default:
				}
				name := fmt.Sprintf("c%d-%d", ci, gen)
				start := l.next()
				c, err := eng.Claim(bg(), "t", name, 1+rng.IntN(20), 10*time.Millisecond)
				if err != nil {
					t.Error(err)
					return
				}
				if c.Lease == nil {
					idle[ci].Add(1)
					continue
				}
				idle[ci].Store(0)
				l.mu.Lock()
				l.batches = append(l.batches, batch{startSeq: start, shard: c.Lease.Shard, ids: ids(c.Cells)})
				l.mu.Unlock()
				n := len(c.Cells)
				crash := chaos.Load() && rng.IntN(4) == 0
				fail := -1
				if crash {
					n = rng.IntN(len(c.Cells) + 1)
				} else if chaos.Load() && rng.IntN(10) == 0 {
					fail = rng.IntN(len(c.Cells))
					n = fail
				}
				l.mu.Lock()
				for _, cell := range c.Cells[:n] {
					l.handled[cellID{cell.Shard, cell.AddedID}]++
				}
				if crash {
					l.crashes++
				}
				l.mu.Unlock()
				if crash {
					gen++ // the process died; a new one starts
					continue
				}
				if chaos.Load() && rng.IntN(8) == 0 {
					time.Sleep(30 * time.Millisecond) // the lease may expire and be taken
				}
				var upTo int64
				if fail >= 0 {
					_, err = eng.Nack(bg(), "t", c.Lease.Token, c.Lease.Shard, c.Cells[fail].AddedID, "handler failed")
					upTo = c.Cells[fail].AddedID - 1
				} else {
					upTo = c.Cells[len(c.Cells)-1].AddedID
					err = eng.Ack(bg(), "t", c.Lease.Token, c.Lease.Shard, upTo)
				}
				switch {
				case errors.Is(err, cellar.ErrConflict):
					l.mu.Lock()
					l.stale++
					l.mu.Unlock()
				case err != nil:
					t.Error(err)
					return
				default:
					at := l.next()
					l.mu.Lock()
					l.ackedUpTo[c.Lease.Shard] = append(l.ackedUpTo[c.Lease.Shard], upTo)
					for _, cell := range c.Cells {
						if cell.AddedID <= upTo {
							if _, ok := l.ackedAt[cellID{cell.Shard, cell.AddedID}]; !ok {
								l.ackedAt[cellID{cell.Shard, cell.AddedID}] = at
							}
						}
					}
					l.mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(writeFor)
	// On a loaded machine the consumers may not have crashed yet: write
	// on until they have (the check fails a run that never exercised it).
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		l.mu.Lock()
		crashed := l.crashes >= 3
		l.mu.Unlock()
		if crashed {
			break
		}
	}
	writing.Store(false)
	wg.Wait()
	chaos.Store(false)
	// Drain: wait until the trigger has caught up.
	// The consumers stop before the test can fail: they must not report
	// after it ended.
	var failure error
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := e.engine.Status(bg(), "t")
		if err != nil {
			failure = err
			break
		}
		if st.Totals.LagCells == 0 && idle[0].Load() > 2 && idle[1].Load() > 2 && idle[2].Load() > 2 {
			break
		}
		if time.Now().After(deadline) {
			failure = fmt.Errorf("consumers did not catch up: %+v", st.Totals)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(done)
	consumers.Wait()
	close(stop)
	tick.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
}
