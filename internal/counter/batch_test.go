package counter

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/counter/countertest"
	"github.com/cellar-db/cellar/internal/dbtest"
)

// batchIncr runs the increments of one key one after the other, in the
// order given, while other keys' run meanwhile: the first increment of
// "a" waits until every other key's increments are done, which they can
// only be if they do not wait behind it, and no second increment of "a"
// may start while it waits.
func TestBatchIncrOrderPerKey(t *testing.T) {
	incrs := []cellar.CounterIncrement{{Key: "a", By: 1}, {Key: "b", By: 1}, {Key: "a", By: 2}, {Key: "c", By: 1}, {Key: "a", By: 3}, {Key: "b", By: 2}}
	others := 0
	for _, in := range incrs {
		if in.Key != "a" {
			others++
		}
	}
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	inFlight := map[string]int{}
	applied := map[string][]int64{}
	done, overlap := 0, false
	incr := func(_ context.Context, key string, by int64) (int64, error) {
		mu.Lock()
		defer mu.Unlock()
		inFlight[key]++
		if inFlight[key] > 1 {
			overlap = true
		}
		if key == "a" && len(applied["a"]) == 0 {
			for done < others {
				cond.Wait()
			}
		}
		applied[key] = append(applied[key], by)
		inFlight[key]--
		if key != "a" {
			done++
			cond.Broadcast()
		}
		var sum int64
		for _, b := range applied[key] {
			sum += b
		}
		return sum, nil
	}
	res := batchIncr(context.Background(), incrs, incr)
	if overlap {
		t.Error("two increments of one key ran at once")
	}
	if got := applied["a"]; !slices.Equal(got, []int64{1, 2, 3}) {
		t.Errorf("increments of a applied as %v; want 1, 2, 3", got)
	}
	want := []int64{1, 1, 3, 1, 6, 3}
	for i, r := range res {
		if r.Key != incrs[i].Key || r.Err != nil || r.Value != want[i] {
			t.Errorf("result %d = %+v; want %s = %d", i, r, incrs[i].Key, want[i])
		}
	}
}

// BatchIncr on both buffers: values in order, one bad key or overflow
// failing alone, and the values durable after a flush.
func TestBatchIncrBuffers(t *testing.T) {
	for _, mode := range []string{"journal", "redis"} {
		t.Run(mode, func(t *testing.T) {
			node := countertest.New()
			var cs interface {
				cellar.CounterStore
				Flush(context.Context) error
			}
			if mode == "journal" {
				cs = openJournal(t, t.TempDir(), node, testOptions(newFakeClock()))
			} else {
				cs = openRedisBuffer(t, openCluster(t, dbtest.Redis(t), dbtest.Redis(t)), node, testOptions(newFakeClock()))
			}
			ctx := context.Background()
			incr(t, cs, "m", 1<<62, 1<<62)
			var incrs []cellar.CounterIncrement
			for i := range 300 { // more keys than batchIncrWorkers
				incrs = append(incrs, cellar.CounterIncrement{Key: fmt.Sprintf("k%d", i%150), By: int64(i)})
			}
			incrs = append(incrs, cellar.CounterIncrement{Key: "", By: 1}, cellar.CounterIncrement{Key: "m", By: 1 << 62}, cellar.CounterIncrement{Key: "m", By: -1})
			res := cs.BatchIncr(ctx, incrs)
			if len(res) != len(incrs) {
				t.Fatalf("%d results for %d increments", len(res), len(incrs))
			}
			for i := range 300 {
				want := int64(i)
				if i >= 150 {
					want += int64(i - 150)
				}
				if r := res[i]; r.Err != nil || r.Value != want || r.Key != incrs[i].Key {
					t.Errorf("result %d = %+v; want %s = %d", i, r, incrs[i].Key, want)
				}
			}
			wantCode(t, "the empty key", res[300].Err, cellar.EINVALID)
			wantCode(t, "an overflow", res[301].Err, cellar.EINVALID)
			if r := res[302]; r.Err != nil || r.Value != 1<<62-1 {
				t.Errorf("m after the overflow = %+v; want %d", r, int64(1<<62-1))
			}
			if err := cs.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if got := node.Value("k149"); got != 149+299 {
				t.Errorf("k149 on the node = %d; want %d", got, 149+299)
			}
		})
	}
}

// readCounting counts a node's reads of durable values.
type readCounting struct {
	cellar.CounterNode
	mu    sync.Mutex
	reads int
}

func (n *readCounting) Counters(ctx context.Context, keys []string) (map[string]int64, error) {
	n.mu.Lock()
	n.reads++
	n.mu.Unlock()
	return n.CounterNode.Counters(ctx, keys)
}

// The journal reads the durable values of a batch's new keys together,
// not one read per key; a key whose node is down fails alone, and a key
// known already is not read again.
func TestJournalBatchIncrReadsNewKeysTogether(t *testing.T) {
	base := countertest.New()
	base.Set("k7", 100)
	node := &readCounting{CounterNode: &partialNode{Node: base, down: "down", release: make(chan struct{})}}
	j := openJournal(t, t.TempDir(), node, testOptions(newFakeClock()))
	ctx := context.Background()
	incr(t, j, "known", 5, 5)
	node.reads = 0
	var incrs []cellar.CounterIncrement
	for i := range 200 {
		incrs = append(incrs, cellar.CounterIncrement{Key: fmt.Sprintf("k%d", i%100), By: 1})
	}
	incrs = append(incrs, cellar.CounterIncrement{Key: "down", By: 1}, cellar.CounterIncrement{Key: "known", By: 1}, cellar.CounterIncrement{Key: "", By: 1})
	res := j.BatchIncr(ctx, incrs)
	for i := range 200 {
		want := int64(1 + i/100)
		if i%100 == 7 {
			want += 100
		}
		if r := res[i]; r.Err != nil || r.Value != want {
			t.Errorf("result %d = %+v; want %s = %d", i, r, incrs[i].Key, want)
		}
	}
	wantCode(t, "the key on the node that is down", res[200].Err, cellar.EUNAVAILABLE)
	if r := res[201]; r.Err != nil || r.Value != 6 {
		t.Errorf("known = %+v; want 6", r)
	}
	wantCode(t, "the empty key", res[202].Err, cellar.EINVALID)
	// One read of the 101 new keys, and the down key's own read again.
	if node.reads != 2 {
		t.Errorf("the batch read the node %d times; want 2 (its new keys together, then the key that failed)", node.reads)
	}
}

// hangNode is a storage layer of several nodes, one of which hangs: a read
// of keys including hangKey answers the other keys only once ctx ends (as
// shard.Store.Counters does when one node hangs and the request deadline
// is shorter than NodeTimeout), with an unavailable error.
type hangNode struct {
	*countertest.Node
	hangKey string
}

func (n *hangNode) Counters(ctx context.Context, keys []string) (map[string]int64, error) {
	var up []string
	hang := false
	for _, k := range keys {
		if k == n.hangKey {
			hang = true
		} else {
			up = append(up, k)
		}
	}
	if !hang {
		return n.Node.Counters(ctx, up)
	}
	vals, _ := n.Node.Counters(context.Background(), up)
	<-ctx.Done()
	return vals, cellar.Unavailable(ctx.Err(), "node of %q hangs", n.hangKey)
}

// A batch of new keys, one on a storage node that hangs: the preload's
// read gets half the deadline, so the other keys' increments still run,
// as they would alone, and only the hanging node's key fails. (Review of
// stop 18: the preload took the whole deadline and every key failed.)
func TestJournalBatchIncrPreloadBoundedByHangingNode(t *testing.T) {
	node := &hangNode{Node: countertest.New(), hangKey: "hang"}
	j := openJournal(t, t.TempDir(), node, testOptions(newFakeClock()))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res := j.BatchIncr(ctx, []cellar.CounterIncrement{{Key: "a1", By: 1}, {Key: "a2", By: 1}, {Key: "hang", By: 1}})
	for _, r := range res[:2] {
		if r.Err != nil || r.Value != 1 {
			t.Errorf("BatchIncr: %s (its node healthy) = %d, %v; want 1 (only the hanging node's key fails)", r.Key, r.Value, r.Err)
		}
	}
	wantCode(t, "the key on the hanging node", res[2].Err, cellar.EUNAVAILABLE)
}

// The preload does not wait for a flush from before a restart that took a
// key of the batch while it read: only that key's increments wait for it.
// (Review of stop 18: the whole batch waited, and failed at its deadline.)
func TestJournalBatchIncrPreloadDoesNotWaitForFlights(t *testing.T) {
	dir := t.TempDir()
	base := countertest.New()
	j := openJournal(t, dir, base, testOptions(newFakeClock()))
	incr(t, j, "old", 1, 1)
	j.crash() // "old" replayed at the next start, its durable value unknown

	node := &partialNode{Node: base, down: "nothing-is-down", release: make(chan struct{})}
	j2 := openJournal(t, dir, node, testOptions(newFakeClock()))
	defer func() {
		select {
		case <-node.release:
		default:
			close(node.release)
		}
	}()
	flushed := make(chan error, 1)
	node.onRead = func() {
		// The flusher takes the replayed increment into a flight while the
		// preload's read is under way; its apply is held.
		startFlushIntoFlight(j2, flushed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res := j2.BatchIncr(ctx, []cellar.CounterIncrement{{Key: "new", By: 1}, {Key: "old", By: 1}})
	close(node.release)
	<-flushed
	if r := res[0]; r.Err != nil || r.Value != 1 {
		t.Errorf("BatchIncr: %s (no flight of its own) = %d, %v; want 1: only \"old\" must wait for the replayed flight", r.Key, r.Value, r.Err)
	}
}
