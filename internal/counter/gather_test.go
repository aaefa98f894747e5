package counter

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar/internal/counter/countertest"
)

// gatherWithin runs g.gather(first) and fails tb if it has not returned
// within limit (a hold it should not have made).
func gatherWithin(tb testing.TB, g *gatherer[*incrReq], first *incrReq, limit time.Duration) []*incrReq {
	tb.Helper()
	got := make(chan []*incrReq, 1)
	go func() { got <- g.gather(first) }()
	select {
	case group := <-got:
		return group
	case <-time.After(limit):
		tb.Fatalf("gather held the group for more than %v", limit)
		return nil
	}
}

func TestGatherHolding(t *testing.T) {
	req := func() *incrReq { return &incrReq{key: "k", by: 1} }
	queued := func(n int) chan *incrReq {
		q := make(chan *incrReq, 64)
		for i := 0; i < n; i++ {
			q <- req()
		}
		return q
	}

	t.Run("a group of one is not held", func(t *testing.T) {
		g := &gatherer[*incrReq]{queue: queued(0), max: 64, delay: time.Hour, prev: 1}
		if n := len(gatherWithin(t, g, req(), 10*time.Second)); n != 1 {
			t.Errorf("group of %d; want 1", n)
		}
	})
	t.Run("no delay, no holding", func(t *testing.T) {
		g := &gatherer[*incrReq]{queue: queued(1), max: 64, delay: -1, prev: 10}
		if n := len(gatherWithin(t, g, req(), 10*time.Second)); n != 2 {
			t.Errorf("group of %d; want the 2 there were", n)
		}
	})
	t.Run("held until as many as before", func(t *testing.T) {
		q := queued(1)
		g := &gatherer[*incrReq]{queue: q, max: 64, delay: time.Hour, prev: 4}
		go func() {
			time.Sleep(10 * time.Millisecond)
			q <- req()
			q <- req()
			q <- req() // the fifth is left for the next group
		}()
		if n := len(gatherWithin(t, g, req(), 10*time.Second)); n != 4 {
			t.Errorf("group of %d; want 4, as many as the group before", n)
		}
		if g.prev != 4 {
			t.Errorf("prev = %d after a group of 4", g.prev)
		}
	})
	t.Run("held no longer than the delay", func(t *testing.T) {
		const delay = 30 * time.Millisecond
		g := &gatherer[*incrReq]{queue: queued(0), max: 64, delay: delay, prev: 8}
		start := time.Now()
		if n := len(gatherWithin(t, g, req(), 10*time.Second)); n != 1 {
			t.Errorf("group of %d; want 1", n)
		}
		if el := time.Since(start); el < delay {
			t.Errorf("returned after %v; want a hold of the delay, %v", el, delay)
		}
		if g.prev != 1 {
			t.Errorf("prev = %d after a group of 1", g.prev)
		}
		// The timer is reused: the next hold waits again.
		g.prev = 8
		start = time.Now()
		gatherWithin(t, g, req(), 10*time.Second)
		if el := time.Since(start); el < delay {
			t.Errorf("second hold returned after %v; want %v", el, delay)
		}
	})
	t.Run("never more than max", func(t *testing.T) {
		g := &gatherer[*incrReq]{queue: queued(10), max: 4, delay: time.Hour, prev: 10}
		if n := len(gatherWithin(t, g, req(), 10*time.Second)); n != 4 {
			t.Errorf("group of %d; want max, 4", n)
		}
	})
}

// TestJournalCommitDelay: with a commit delay far longer than the test, a
// lone client's increments are not held; with a short one, concurrent
// increments all commit and count, in fewer commits than increments.
func TestJournalCommitDelay(t *testing.T) {
	node := countertest.New()
	clock := newFakeClock()
	opts := testOptions(clock)
	opts.CommitDelay = time.Hour
	j := openJournal(t, t.TempDir(), node, opts)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := int64(1); i <= 5; i++ {
			incr(t, j, "lone", 1, i)
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("a lone client's increments were held")
	}
	if st := j.Stats(); st.Commits != 5 || st.Increments != 5 {
		t.Errorf("stats after 5 lone increments: %+v; want 5 commits of 1", st)
	}

	// Concurrent clients. A group is held for at most the delay (at the
	// end of a burst, for fewer clients than the group before had).
	opts.CommitDelay = 5 * time.Millisecond
	j = openJournal(t, t.TempDir(), node, opts)
	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if _, err := j.Incr(context.Background(), "busy", 1); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	wantCounter(t, j, "busy", 160)
	if st := j.Stats(); st.Increments != 160 || st.Commits >= 160 || st.Commits == 0 {
		t.Errorf("stats after 160 concurrent increments: %+v; want them in fewer commits", st)
	}
}
