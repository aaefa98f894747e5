package counter

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/counter/countertest"
)

// partialNode is a node of two storage nodes, one down: a read answers
// the keys of the node that is up and fails with the other's error, as
// shard.Store.Counters does. onRead runs at the start of the first read;
// applies wait for release.
type partialNode struct {
	*countertest.Node
	down    string // the key on the node that is down
	once    sync.Once
	onRead  func()
	release chan struct{}
}

func (n *partialNode) Counters(ctx context.Context, keys []string) (map[string]int64, error) {
	n.once.Do(func() {
		if n.onRead != nil {
			n.onRead()
		}
	})
	var up []string
	failed := false
	for _, k := range keys {
		if k == n.down {
			failed = true
		} else {
			up = append(up, k)
		}
	}
	vals, err := n.Node.Counters(ctx, up)
	if err != nil {
		return nil, err
	}
	if failed {
		return vals, cellar.Errorf(cellar.EUNAVAILABLE, "node of %q is down", n.down)
	}
	return vals, nil
}

func (n *partialNode) ApplyCounterDeltas(ctx context.Context, id string, deltas map[string]int64) error {
	select {
	case <-n.release:
	case <-ctx.Done():
		return cellar.Unavailable(ctx.Err(), "apply")
	}
	return n.Node.ApplyCounterDeltas(ctx, id, deltas)
}

// With one storage node down, a batch read in the journal fails only that
// node's keys: also a replayed key whose node answered but which went into
// a flush's flight while it was read. load waits for such a flight when
// the read succeeded, but returns the other node's error at once when it
// did not, and BatchCounters gives that error to the in-flight key.
func TestJournalPartialReadOfAnInFlightKey(t *testing.T) {
	dir := t.TempDir()
	base := countertest.New()
	base.Set("up", 10)
	base.Set("down", 20)
	j := openJournal(t, dir, base, testOptions(newFakeClock()))
	incr(t, j, "up", 1, 11)
	incr(t, j, "down", 1, 21)
	j.crash() // both increments replayed at the next start, durable values unknown

	node := &partialNode{Node: base, down: "down", release: make(chan struct{})}
	j2 := openJournal(t, dir, node, testOptions(newFakeClock()))
	flushed := make(chan error, 1)
	node.onRead = func() {
		// The flusher takes the pending increments into a flight while
		// the read is under way.
		startFlushIntoFlight(j2, flushed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan []cellar.CounterResult, 1)
	go func() { done <- j2.BatchCounters(ctx, []string{"up", "down"}) }()
	var res []cellar.CounterResult
	select {
	case res = <-done:
	case <-time.After(200 * time.Millisecond):
		// Waiting for the flight, as load does when the read succeeds:
		// let the flush finish.
		close(node.release)
		res = <-done
	}
	select {
	case <-node.release:
	default:
		close(node.release)
	}
	if err := <-flushed; err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if res[0].Err != nil || res[0].Value != 11 {
		t.Errorf("%q (its node up) = %d, %v; want 11: only the down node's key fails", res[0].Key, res[0].Value, res[0].Err)
	}
	if cellar.ErrorCode(res[1].Err) != cellar.EUNAVAILABLE {
		t.Errorf("%q (its node down) = %d, %v; want unavailable", res[1].Key, res[1].Value, res[1].Err)
	}
}

// Close ends an Incr that waits for a flush from before a restart with
// the closing error, at once. (Review of stop 18: it was left waiting
// until its own deadline, after Close had closed the journal.)
func TestJournalCloseEndsIncrWaitingForFlight(t *testing.T) {
	dir := t.TempDir()
	base := countertest.New()
	j := openJournal(t, dir, base, testOptions(newFakeClock()))
	incr(t, j, "old", 1, 1)
	j.crash()

	var mu sync.Mutex
	down := true
	base.SetFault(func(op string, applied bool) error {
		mu.Lock()
		defer mu.Unlock()
		if down && op == "apply" && !applied {
			return errDown
		}
		return nil
	})
	j2 := openJournal(t, dir, base, testOptions(newFakeClock()))
	if err := j2.Flush(context.Background()); err == nil {
		t.Fatal("Flush with writes failing: no error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	type result struct {
		err error
		at  time.Duration
	}
	got := make(chan result, 1)
	start := time.Now()
	go func() {
		_, err := j2.Incr(ctx, "old", 1)
		got <- result{err, time.Since(start)}
	}()
	time.Sleep(100 * time.Millisecond) // the Incr waits for the flight
	closeAt := time.Since(start)
	if err := j2.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	r := <-got
	if r.at-closeAt > time.Second || cellar.ErrorCode(r.err) != cellar.EUNAVAILABLE || r.err.Error() != errClosed.Error() {
		t.Errorf("Incr waiting for a replayed flight when Close was called (%v in): returned %v after Close, with %v; want the closing error at once", closeAt.Round(time.Millisecond), (r.at - closeAt).Round(time.Millisecond), r.err)
	}
}

// startFlushIntoFlight starts a flush of j, its error to flushed, and
// returns once the flush has taken the pending increments into a flight.
func startFlushIntoFlight(j *Journal, flushed chan<- error) {
	go func() { flushed <- j.Flush(context.Background()) }()
	for {
		j.mu.Lock()
		f := j.flight
		j.mu.Unlock()
		if f != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
