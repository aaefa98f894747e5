package trigger_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/client/trigger"
)

// leaseCalls counts and records the requests Run sends under leases.
type leaseCalls struct {
	renewals atomic.Int64
	refused  atomic.Int64 // acks, nacks and renewals answered 409
	mu       sync.Mutex   // protects settles
	settles  []int64      // the token of every ack and nack sent
	fail     func(n int64) bool
	status   int // of a failed renewal; 503 if 0
}

// roundTrip records r and sends it on, or answers the n-th renewal 503
// if fail(n).
func (lc *leaseCalls) roundTrip(r *http.Request, next http.RoundTripper) (*http.Response, error) {
	path := r.URL.Path
	switch {
	case strings.HasSuffix(path, "/renew"):
		if n := lc.renewals.Add(1); lc.fail != nil && lc.fail(n) {
			status := cmp.Or(lc.status, http.StatusServiceUnavailable)
			return &http.Response{StatusCode: status, Status: http.StatusText(status),
				Header: http.Header{}, Body: http.NoBody, Request: r}, nil
		}
	case strings.HasSuffix(path, "/ack"), strings.HasSuffix(path, "/nack"):
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		var req struct {
			Token int64 `json:"token"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, err
		}
		lc.mu.Lock()
		lc.settles = append(lc.settles, req.Token)
		lc.mu.Unlock()
	}
	resp, err := next.RoundTrip(r)
	if err == nil && resp.StatusCode == http.StatusConflict {
		lc.refused.Add(1)
	}
	return resp, err
}

// caughtUp waits until shard of trigger "t", which has cells, has none
// after its offset: it is listed with its offset at its head, or not
// listed at all (no lag, no lease, nothing parked).
func caughtUp(t *testing.T, c *client.Client, shard int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := c.TriggerStatus(context.Background(), "t")
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(st.Shards, func(s client.TriggerShardStatus) bool { return s.Shard == shard })
		if i < 0 || st.Shards[i].Offset == st.Shards[i].Head {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("shard %d not caught up within %v: %+v", shard, within, st.Shards[i])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A handler that takes three times the lease on one cell keeps its shard:
// Run renews the lease while it runs (every third of lease_ms, retrying a
// renewal that failed with 503 at the next tick), so a second consumer
// claiming all the while never gets the shard's cells, and every cell is
// handled and acknowledged once. Before, only acks renewed the lease: it
// ran out under the slow cell, and the second consumer got the shard.
func TestRunRenewsLeaseOfSlowHandler(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fail   func(n int64) bool
		status int
	}{
		{"steady", nil, 0},
		{"every other renewal 503", func(n int64) bool { return n%2 == 1 }, 0},
		{"every other renewal 500", func(n int64) bool { return n%2 == 1 }, http.StatusInternalServerError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const ttl = 600 * time.Millisecond
			lc := &leaseCalls{fail: tc.fail, status: tc.status}
			c := triggerServer(t, ttl, nil, roundTripFunc(lc.roundTrip))
			shard := putOneShard(t, c, 3)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()

			var mu sync.Mutex // protects handled and cancelled
			handled := map[int64]int{}
			var cancelled error
			first := make(chan struct{})
			slowDone := make(chan struct{})
			errc := make(chan error, 1)
			go func() {
				errc <- trigger.Run(ctx, c, "t", "p1", func(hctx context.Context, cell cellar.Cell) error {
					mu.Lock()
					handled[cell.AddedID]++
					slow := len(handled) == 1 && handled[cell.AddedID] == 1
					mu.Unlock()
					if !slow {
						return nil
					}
					close(first)
					defer close(slowDone)
					select {
					case <-time.After(3 * ttl):
						return nil
					case <-hctx.Done():
						mu.Lock()
						cancelled = context.Cause(hctx)
						mu.Unlock()
						return hctx.Err()
					}
				}, trigger.Options{Concurrency: 1, Wait: 50 * time.Millisecond, RetryDelay: 20 * time.Millisecond, Logger: quiet})
			}()
			select {
			case <-first:
			case <-time.After(10 * time.Second):
				t.Fatal("no cell delivered")
			}
			// A second consumer claims in a loop while the slow cell is
			// being handled.
			var stolen []int64
			for running := true; running; {
				select {
				case <-slowDone:
					running = false
				default:
				}
				if ids, ok := claimShardAs(t, ctx, c, "p2", shard); ok {
					stolen = ids
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			caughtUp(t, c, shard, 10*time.Second)
			// The batch is done: no renewal is sent any more.
			renewals := lc.renewals.Load()
			time.Sleep(ttl)
			stop()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(stolen) > 0 {
				t.Fatalf("p2 got cells %v of shard %d while p1's handler spent %v on a cell under a %v lease (%d renewals sent)", stolen, shard, 3*ttl, ttl, renewals)
			}
			if cancelled != nil {
				t.Fatalf("the slow handler's context was cancelled: %v", cancelled)
			}
			if len(handled) != 3 {
				t.Errorf("handled %v; want 3 cells", handled)
			}
			for id, n := range handled {
				if n != 1 {
					t.Errorf("cell %d handled %d times; want once", id, n)
				}
			}
			if n := lc.refused.Load(); n > 0 {
				t.Errorf("%d acks, nacks or renewals were refused as stale", n)
			}
			if renewals < 3 {
				t.Errorf("%d renewals in %v under a %v lease; want one every third of it", renewals, 3*ttl, ttl)
			}
			if n := lc.renewals.Load(); n != renewals {
				t.Errorf("%d renewals sent after the batch was acknowledged", n-renewals)
			}
		})
	}
}

// A renewal refused as stale (the trigger was reset under the slow
// handler) cancels the handler's context with ErrLeaseLost, and nothing is
// acknowledged under the lost token, whether the handler then fails (no
// nack) or finishes anyway (no ack): the batch comes again under a new
// lease. Before, the handler ran on and acked under the lost token.
func TestRunLeaseLostCancelsHandler(t *testing.T) {
	for _, tc := range []struct {
		name   string
		result func(hctx context.Context) error // what the cancelled handler returns
	}{
		{"handler fails", func(hctx context.Context) error { return hctx.Err() }},
		{"handler finishes", func(context.Context) error { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const ttl = 600 * time.Millisecond
			lc := &leaseCalls{}
			c := triggerServer(t, ttl, nil, roundTripFunc(lc.roundTrip))
			shard := putOneShard(t, c, 2)
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			var calls atomic.Int32
			blocked := make(chan struct{})
			cause := make(chan error, 1)
			errc := make(chan error, 1)
			go func() {
				errc <- trigger.Run(ctx, c, "t", "p1", func(hctx context.Context, cell cellar.Cell) error {
					if calls.Add(1) != 1 {
						return nil
					}
					close(blocked)
					select {
					case <-hctx.Done():
						cause <- context.Cause(hctx)
						return tc.result(hctx)
					case <-time.After(10 * time.Second):
						cause <- nil
						return errors.New("not cancelled")
					}
				}, trigger.Options{Concurrency: 1, Wait: 50 * time.Millisecond, RetryDelay: 20 * time.Millisecond, Logger: quiet})
			}()
			select {
			case <-blocked:
			case <-time.After(10 * time.Second):
				t.Fatal("no cell delivered")
			}
			st, err := c.TriggerStatus(ctx, "t")
			if err != nil {
				t.Fatal(err)
			}
			var lost int64
			for _, s := range st.Shards {
				if s.Shard == shard {
					lost = s.Token
				}
			}
			if err := c.ResetTrigger(ctx, "t"); err != nil {
				t.Fatal(err)
			}
			reset := time.Now()
			select {
			case err := <-cause:
				if !errors.Is(err, trigger.ErrLeaseLost) {
					t.Fatalf("handler's context cause = %v; want ErrLeaseLost", err)
				}
				if d := time.Since(reset); d > ttl {
					t.Errorf("handler cancelled %v after the reset; want within a renewal period (%v)", d, ttl/3)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("handler not cancelled within 5s of the reset")
			}
			// The batch comes again, under a new lease.
			deadline := time.Now().Add(10 * time.Second)
			for calls.Load() < 3 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			caughtUp(t, c, shard, 10*time.Second)
			stop()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			lc.mu.Lock()
			defer lc.mu.Unlock()
			for _, token := range lc.settles {
				if token <= lost {
					t.Errorf("an ack or nack was sent under the lost token %d (tokens sent: %v)", lost, lc.settles)
					break
				}
			}
			if n := calls.Load(); n != 3 {
				t.Errorf("handler called %d times; want 3 (the lost cell, then the batch again)", n)
			}
		})
	}
}
