package trigger_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client/trigger"
)

// Run acks every half lease within a long batch (docs/TRIGGERS.md), half
// of the lease the claim gave: a 3 s batch under a 1 s lease costs about 6
// acks and the last. Before, the next renewal was reckoned from the
// claim's expiry, which the renewing ack had moved, so the intervals
// halved and then every cell was acked.
func TestRunRenewsEveryHalfLease(t *testing.T) {
	var acks atomic.Int64
	c := triggerServer(t, time.Second, nil, roundTripFunc(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/ack") {
			acks.Add(1)
		}
		return next.RoundTrip(r)
	}))
	// 60 cells in one shard: one batch.
	const n = 60
	putOneShard(t, c, n)
	ctx := context.Background()
	var mu sync.Mutex
	handled := 0
	done := make(chan struct{})
	runCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- trigger.Run(runCtx, c, "t", "p", func(ctx context.Context, cell cellar.Cell) error {
			time.Sleep(50 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			handled++
			if handled == n {
				close(done)
			}
			return nil
		}, trigger.Options{Concurrency: 1, MaxCells: 100, Wait: 100 * time.Millisecond})
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("batch not handled")
	}
	time.Sleep(200 * time.Millisecond) // the last ack
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// 3 s of work under a 1 s lease: an ack every 0.5 s is about 6, and
	// the last one.
	if got := acks.Load(); got > 15 {
		t.Fatalf("Run sent %d acks for one batch of %d cells taking %v under a %v lease; want about %d (one per half lease)",
			got, n, n*50*time.Millisecond, time.Second, 7)
	}
}
