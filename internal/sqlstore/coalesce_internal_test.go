package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
)

// fakeBatch answers every key with a cell whose body names the key, and
// records the size of each statement it was asked to run.
type fakeBatch struct {
	mu    sync.Mutex
	sizes []int
}

func (f *fakeBatch) batch(_ context.Context, keys []cellar.LookupKey, idx []int, res []cellar.GetResult) {
	f.mu.Lock()
	f.sizes = append(f.sizes, len(idx))
	f.mu.Unlock()
	for _, i := range idx {
		if keys[i].RowKey == "missing" {
			res[i].Err = cellar.Errorf(cellar.ENOTFOUND, "no cell")
			continue
		}
		res[i].Cell = &cellar.Cell{Key: cellar.Key{RowKey: keys[i].RowKey, Column: keys[i].Column}, Body: []byte(`"` + keys[i].RowKey + `"`)}
	}
}

func newTestCoalescer(limit int) (*coalescer, *fakeBatch) {
	f := &fakeBatch{}
	return &coalescer{limit: limit, batch: f.batch, gaveUp: func(err error) error {
		return cellar.Unavailable(err, "gave up")
	}}, f
}

// TestCoalescerQueuesBehindFullSlots holds the only statement slot with a
// read that blocks, queues readers behind it (one of which gives up), and
// checks that the next statement answers all the others at once, each
// with its own key's cell, and that a reader that finds a slot free reads
// alone.
func TestCoalescerQueuesBehindFullSlots(t *testing.T) {
	c, f := newTestCoalescer(1)
	ctx := context.Background()

	release := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := c.read(ctx, cellar.LookupKey{RowKey: "first", Column: "c"}, func(context.Context) (cellar.Cell, error) {
			<-release
			return cellar.Cell{Key: cellar.Key{RowKey: "first"}}, nil
		})
		first <- err
	}()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.inFlight == 1 })

	type answer struct {
		key  string
		cell cellar.Cell
		err  error
	}
	answers := make(chan answer, 8)
	keys := []string{"a", "b", "missing", "c", "d"}
	for _, k := range keys {
		go func() {
			cell, err := c.read(ctx, cellar.LookupKey{RowKey: k, Column: "c"}, func(context.Context) (cellar.Cell, error) {
				t.Errorf("read of %s ran alone while the only slot was taken", k)
				return cellar.Cell{}, nil
			})
			answers <- answer{k, cell, err}
		}()
	}
	quitter, quit := context.WithCancel(ctx)
	quitErr := make(chan error, 1)
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == len(keys) })
	go func() {
		_, err := c.read(quitter, cellar.LookupKey{RowKey: "quitter", Column: "c"}, nil)
		quitErr <- err
	}()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == len(keys)+1 })
	quit()
	select {
	case err := <-quitErr:
		if cellar.ErrorCode(err) != cellar.EUNAVAILABLE || !errors.Is(err, context.Canceled) {
			t.Errorf("reader that gave up: %v, want unavailable wrapping context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a queued reader whose context ended did not return")
	}

	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range keys {
		a := <-answers
		switch {
		case a.key == "missing":
			if cellar.ErrorCode(a.err) != cellar.ENOTFOUND {
				t.Errorf("missing key: %v, want not found", a.err)
			}
		case a.err != nil:
			t.Errorf("%s: %v", a.key, a.err)
		case a.cell.RowKey != a.key || string(a.cell.Body) != `"`+a.key+`"`:
			t.Errorf("read of %s answered with %+v", a.key, a.cell)
		}
	}
	f.mu.Lock()
	sizes := fmt.Sprint(f.sizes)
	f.mu.Unlock()
	// Five readers, padded to eight keys, in one statement; the quitter
	// is not read.
	if sizes != "[8]" {
		t.Errorf("statement sizes %s, want [8]", sizes)
	}
	if st, rd := c.combined.Load(), c.reads.Load(); st != 1 || rd != 5 {
		t.Errorf("stats: %d statements, %d reads; want 1, 5", st, rd)
	}
	// The statement's slot is released once it has answered.
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.inFlight == 0 && len(c.queue) == 0 })

	// With the slot free again, a read runs alone.
	alone := false
	if _, err := c.read(ctx, cellar.LookupKey{RowKey: "x", Column: "c"}, func(context.Context) (cellar.Cell, error) {
		alone = true
		return cellar.Cell{}, nil
	}); err != nil || !alone {
		t.Errorf("read with a free slot: alone=%v err=%v", alone, err)
	}
}

// TestCoalescerBoundsStatements queues more readers than one statement
// takes and checks they are answered in statements of at most
// maxCoalesced keys.
func TestCoalescerBoundsStatements(t *testing.T) {
	c, f := newTestCoalescer(1)
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		c.read(context.Background(), cellar.LookupKey{RowKey: "first", Column: "c"}, func(context.Context) (cellar.Cell, error) {
			<-release
			return cellar.Cell{}, nil
		})
		close(done)
	}()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.inFlight == 1 })
	const n = 2*maxCoalesced + 3
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := fmt.Sprintf("k%d", i)
			cell, err := c.read(context.Background(), cellar.LookupKey{RowKey: k, Column: "c"}, nil)
			if err != nil || cell.RowKey != k {
				t.Errorf("%s: %+v %v", k, cell, err)
			}
		}()
	}
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == n })
	close(release)
	wg.Wait()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	if fmt.Sprint(f.sizes) != fmt.Sprint([]int{maxCoalesced, maxCoalesced, 4}) {
		t.Errorf("statement sizes %v, want %d, %d, 4", f.sizes, maxCoalesced, maxCoalesced)
	}
}

// TestBatchContext checks that a combined read outlives a reader giving
// up and has the latest of the readers' deadlines.
func TestBatchContext(t *testing.T) {
	now := time.Now()
	early, cancelEarly := context.WithDeadline(context.Background(), now.Add(time.Second))
	defer cancelEarly()
	late, cancelLate := context.WithDeadline(context.Background(), now.Add(time.Hour))
	defer cancelLate()
	ctx, cancel := batchContext([]*pendingRead{{ctx: early}, {ctx: late}})
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || !d.Equal(now.Add(time.Hour)) {
		t.Errorf("deadline %v %v, want the later reader's", d, ok)
	}
	cancelEarly()
	if ctx.Err() != nil {
		t.Error("one reader giving up cancelled the combined read")
	}
	ctx2, cancel2 := batchContext([]*pendingRead{{ctx: late}, {ctx: context.Background()}})
	defer cancel2()
	if _, ok := ctx2.Deadline(); ok {
		t.Error("a reader without a deadline got one")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}
