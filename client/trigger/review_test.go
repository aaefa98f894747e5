package trigger_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/client/trigger"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	engine "github.com/cellar-db/cellar/internal/trigger"
)

// Run returns once ctx is done and the batches in progress have
// acknowledged what they handled: also when ctx is cancelled while a
// mid-batch renewing ack is in flight (it was sent under ctx, aborted, and
// the handled cells went unacknowledged).
func TestRunCancelDuringRenewalAckKeepsProgress(t *testing.T) {
	var stop atomic.Pointer[context.CancelFunc]
	var first atomic.Bool
	rt := roundTripFunc(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/ack") && first.CompareAndSwap(false, true) {
			// The process is told to stop while its renewing ack is on
			// the wire (a slow network).
			(*stop.Load())()
			select {
			case <-r.Context().Done():
				return nil, r.Context().Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		return next.RoundTrip(r)
	})
	c := triggerServer(t, time.Second, nil, rt)
	shard := putOneShard(t, c, 20)
	ctx, cancel := context.WithCancel(context.Background())
	stop.Store(&cancel)
	var mu sync.Mutex
	var last int64
	err := trigger.Run(ctx, c, "t", "p", func(ctx context.Context, cell cellar.Cell) error {
		time.Sleep(100 * time.Millisecond)
		mu.Lock()
		last = cell.AddedID
		mu.Unlock()
		return nil
	}, trigger.Options{Concurrency: 1, Wait: 50 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if last == 0 {
		t.Fatal("nothing handled")
	}
	if off := shardOffset(t, c, shard); off < last {
		t.Fatalf("after Run returned, offset of shard %d is %d; handled up to %d: the handled cells were not acknowledged", shard, off, last)
	}
}

// On ctx cancel Run stops promptly even if the server does not answer (a
// network black hole): the final ack of a cut-short batch waits no longer
// than the lease it acks under lasts.
func TestRunStopsOnSilentServer(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var stopped atomic.Bool
	rt := roundTripFunc(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if stopped.Load() && (strings.HasSuffix(r.URL.Path, "/ack") || strings.HasSuffix(r.URL.Path, "/nack")) {
			select { // black hole
			case <-r.Context().Done():
				return nil, r.Context().Err()
			case <-release:
				return nil, errors.New("dropped")
			}
		}
		return next.RoundTrip(r)
	})
	c := triggerServer(t, time.Second, nil, rt)
	putOneShard(t, c, 5)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		errc <- trigger.Run(ctx, c, "t", "p", func(ctx context.Context, cell cellar.Cell) error {
			once.Do(func() { close(started) })
			<-ctx.Done()
			return nil // handled anyway
		}, trigger.Options{Concurrency: 1, Wait: 50 * time.Millisecond, Logger: quiet})
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no cell delivered")
	}
	stopped.Store(true)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return 5s after ctx was cancelled (lease 1s): its final ack has no deadline")
	}
}

// Run returns nil once ctx is done, also when ctx was cancelled with a
// cause (or context.WithTimeoutCause): the cause is not a fatal error.
func TestRunCancelCauseIsNotAnError(t *testing.T) {
	c := triggerServer(t, time.Second, nil, nil)
	putOneShard(t, c, 1)
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(200*time.Millisecond, func() { cancel(errors.New("shutting down: SIGTERM")) })
	err := trigger.Run(ctx, c, "t", "p", func(context.Context, cellar.Cell) error { return nil },
		trigger.Options{Concurrency: 2, Wait: 50 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatalf("Run = %v after ctx was cancelled; want nil", err)
	}
}

// overlapping runs two consumers on trigger "t" and reports whether a cell
// of the shard was being handled by both at once.
func overlapping(t *testing.T, c *client.Client, perCell time.Duration, n int) (overlap bool, maxInFlight int32) {
	t.Helper()
	var inFlight, peak atomic.Int32
	var handled sync.Map
	var count atomic.Int32
	all := make(chan struct{})
	var once sync.Once
	handler := func(ctx context.Context, cell cellar.Cell) error {
		v := inFlight.Add(1)
		for {
			p := peak.Load()
			if v <= p || peak.CompareAndSwap(p, v) {
				break
			}
		}
		time.Sleep(perCell)
		inFlight.Add(-1)
		if _, dup := handled.LoadOrStore(cell.AddedID, true); !dup && int(count.Add(1)) == n {
			once.Do(func() { close(all) })
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, name := range []string{"p1", "p2"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			trigger.Run(ctx, c, "t", name, handler, trigger.Options{Concurrency: 1, Wait: 50 * time.Millisecond, RetryDelay: 20 * time.Millisecond, Logger: quiet})
		}()
	}
	select {
	case <-all:
	case <-time.After(15 * time.Second):
		t.Error("not every cell was handled within 15s")
	}
	cancel()
	wg.Wait()
	return peak.Load() > 1, peak.Load()
}

// Renewals are timed by lease_ms on the client's clock, not by the
// server's expires_at: with the server's clock 3 s ahead and a 1 s lease
// (renewals every 2 s, by expires_at), the lease ran out mid-batch and two
// consumers handled the shard's cells at once.
func TestRunClockSkewKeepsLease(t *testing.T) {
	skew := 3 * time.Second
	c := triggerServer(t, time.Second, func() time.Time { return time.Now().Add(skew) }, nil)
	putOneShard(t, c, 30)
	if overlap, peak := overlapping(t, c, 100*time.Millisecond, 30); overlap {
		t.Fatalf("two consumers handled cells of one shard at once (peak %d) with cells of 100ms under a 1s lease and a server clock %v ahead", peak, skew)
	}
}

// A transient failure of the final ack (a 503 from a proxy during a
// server restart) is retried while the lease lasts: the shard does not
// stall until it expires, and the batch is not handled again.
func TestRunRetriesAck(t *testing.T) {
	var failed atomic.Bool
	rt := roundTripFunc(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/ack") && failed.CompareAndSwap(false, true) {
			return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
				Header: http.Header{}, Body: http.NoBody, Request: r}, nil
		}
		return next.RoundTrip(r)
	})
	c := triggerServer(t, 500*time.Millisecond, nil, rt)
	shard := putOneShard(t, c, 5)
	var times sync.Map
	var dups atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- trigger.Run(ctx, c, "t", "p", func(ctx context.Context, cell cellar.Cell) error {
			if _, dup := times.LoadOrStore(cell.AddedID, true); dup {
				dups.Add(1)
			}
			return nil
		}, trigger.Options{Concurrency: 1, Wait: 50 * time.Millisecond, RetryDelay: 20 * time.Millisecond, Logger: quiet})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for shardOffset(t, c, shard) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if d := dups.Load(); d > 0 {
		t.Fatalf("%d cells handled twice after one 503 on the ack: the ack was not retried", d)
	}
}

const panicURLEnv = "CELLAR_TEST_PANIC_URL"

// TestRunPanicChild is the consumer process of
// TestRunHandlerPanic: its handler panics on every cell.
func TestRunPanicChild(t *testing.T) {
	url := os.Getenv(panicURLEnv)
	if url == "" {
		t.Skip("child process only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	trigger.Run(ctx, client.New(url), "t", "p", func(context.Context, cellar.Cell) error {
		panic("poison cell")
	}, trigger.Options{Concurrency: 1, Wait: 50 * time.Millisecond, Logger: quiet})
}

// A handler panic fails the attempt (a nack), as an error does: the
// consumer process lives on, and the cell is parked after max_attempts (1
// here) instead of killing every consumer that claims it.
func TestRunHandlerPanic(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "n.db"))
	t.Cleanup(func() { st.Close() })
	s := newSharded(t, st)
	e := s.start(t, func(o *engine.Options) { o.PollInterval = 5 * time.Millisecond; o.LeaseTTL = time.Second })
	t.Cleanup(func() { e.Close() })
	srv := httptest.NewServer(cellarhttp.NewHandler(s.cells, cellarhttp.Options{Triggers: e, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	c := client.New(srv.URL)
	ctx := context.Background()
	if _, _, err := c.DefineTrigger(ctx, "t", client.TriggerDefinition{Columns: []string{"a"}, MaxAttempts: 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: "r", Column: "a", RefKey: 1}, Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunPanicChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), panicURLEnv+"="+srv.URL)
	out, err := cmd.CombinedOutput()
	st2, serr := c.TriggerStatus(ctx, "t")
	if serr != nil {
		t.Fatal(serr)
	}
	if err != nil || st2.Totals.Parked != 1 {
		first := string(out)
		if i := strings.Index(first, "\n\ngoroutine"); i > 0 {
			first = first[:i]
		}
		t.Fatalf("consumer process: %v, parked %d (want it alive and the cell parked after max_attempts 1); output:\n%s", err, st2.Totals.Parked, first)
	}
}

// While the server refuses claims (503), each loop's pause between claims
// doubles from RetryDelay up to 8 times it: a server that is down is not
// hammered by every consumer at once.
func TestRunClaimBackoff(t *testing.T) {
	var claims atomic.Int32
	rt := roundTripFunc(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/claim") {
			claims.Add(1)
			return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
				Header: http.Header{}, Body: http.NoBody, Request: r}, nil
		}
		return next.RoundTrip(r)
	})
	c := triggerServer(t, time.Second, nil, rt)
	putOneShard(t, c, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := trigger.Run(ctx, c, "t", "p", func(context.Context, cellar.Cell) error { return nil },
		trigger.Options{Concurrency: 1, RetryDelay: 20 * time.Millisecond, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	// 20, 40, 80, then 160 ms a pause (less up to a quarter of jitter):
	// about 9 claims in a second, against some 50 at a fixed 20 ms.
	if n := claims.Load(); n < 2 || n > 16 {
		t.Errorf("%d claims in 1 s while refused, RetryDelay 20ms; want 2..16 (backing off to 160ms)", n)
	}
}

// TestRenewalsOutliveRunCancel guards that renewals go on while a
// handler finishes its cell after Run's ctx was cancelled (a graceful
// shutdown). (Review of stop 19.)
//
// docs/TRIGGERS.md: "While a batch is handled, Run renews its lease in the
// background every third of lease_ms ... until the batch is acked or
// nacked; so a handler may take longer than the lease on one cell and its
// shard is not given to another consumer meanwhile", and Run "returns nil
// once ctx is done and the batches in progress have acknowledged what they
// handled".
//
// The keeper's renewal context was derived from Run's ctx, so renewals
// stopped the moment ctx was cancelled, not when the batch was acked. A handler that
// needs longer than the rest of the lease to finish the cell it is on (an
// SMTP send already under way) then loses its shard to another consumer,
// and its final ack, whose deadline is the (no longer renewed) local
// expiry, is never sent: the handled cell is not acknowledged.
func TestRenewalsOutliveRunCancel(t *testing.T) {
	// "other consumer claims": p2 must not get the shard meanwhile.
	// "alone": nobody else claims; p1's final ack must reach the server.
	for _, p2claims := range []bool{true, false} {
		name := map[bool]string{true: "other consumer claims", false: "alone"}[p2claims]
		t.Run(name, func(t *testing.T) { renewalsAfterCancel(t, p2claims) })
	}
}

func renewalsAfterCancel(t *testing.T, p2claims bool) {
	const ttl = 600 * time.Millisecond
	c := triggerServer(t, ttl, nil, nil)
	shard := putOneShard(t, c, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	finished := make(chan struct{})
	var handled atomic.Int64
	errc := make(chan error, 1)
	go func() {
		errc <- trigger.Run(ctx, c, "t", "p1", func(hctx context.Context, cell cellar.Cell) error {
			close(started)
			<-hctx.Done()
			// Finishing the cell takes 2.5 leases after the stop.
			time.Sleep(5 * ttl / 2)
			handled.Store(cell.AddedID)
			close(finished)
			return nil
		}, trigger.Options{Concurrency: 1, Wait: 50 * time.Millisecond, RetryDelay: 20 * time.Millisecond, Logger: quiet})
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no cell delivered")
	}
	cancel() // graceful stop while the handler is on its cell
	var stolen []int64
	for running := p2claims; running; {
		select {
		case <-finished:
			running = false
			continue
		default:
		}
		if ids, ok := claimShardAs(t, context.Background(), c, "p2", shard); ok {
			stolen = ids
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if len(stolen) > 0 {
		t.Fatalf("p2 got cells %v of shard %d while p1's handler was still finishing them after Run's ctx was cancelled: renewals stopped with ctx, not with the batch", stolen, shard)
	}
	if off, last := shardOffset(t, c, shard), handled.Load(); off < last {
		t.Fatalf("after Run returned, offset of shard %d is %d; p1 handled up to %d: the final ack was not sent (its deadline, the unrenewed lease, had passed)", shard, off, last)
	}
}

// TestHugeHandlerErrorStillParks guards that a handler error with a long
// message is still nacked, so that a cell that always fails is parked
// after max_attempts. (Review of stop 19.)
//
// docs/TRIGGERS.md: "nacks on a handler error or panic (a cell that always
// panics is parked after max_attempts)"; the nack's error text "is cut to
// 1000 bytes". Run sent err.Error() whole; past the server's body limit
// (max_body_bytes, 1 MiB by default) the nack was refused with 413, which
// Run only logged ("trigger ack failed"). No attempt was recorded: the
// cell was delivered again after every lease, never parked, and its shard
// stuck behind it.
func TestHugeHandlerErrorStillParks(t *testing.T) {
	const ttl = 300 * time.Millisecond
	c := triggerServer(t, ttl, nil, nil)
	ctx := context.Background()
	if _, _, err := c.DefineTrigger(ctx, "t", client.TriggerDefinition{Columns: []string{"a"}, MaxAttempts: 1}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: "r", Column: "a", RefKey: 1}, Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	huge := strings.Repeat("upstream said: ", 100_000) // 1.5 MB, e.g. an error quoting a response body
	var calls atomic.Int32
	runCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- trigger.Run(runCtx, c, "t", "p", func(context.Context, cellar.Cell) error {
			calls.Add(1)
			return errors.New(huge)
		}, trigger.Options{Concurrency: 1, Wait: 50 * time.Millisecond, RetryDelay: 20 * time.Millisecond, Logger: quiet})
	}()
	parked := 0
	for deadline := time.Now().Add(8 * ttl); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		st, err := c.TriggerStatus(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		if parked = st.Totals.Parked; parked == 1 {
			break
		}
	}
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if parked != 1 {
		t.Fatalf("max_attempts 1: the failing cell was handled %d times and never parked (parked %d): the nack carrying a %d-byte error was refused and only logged", calls.Load(), parked, len(huge))
	}
}

// TestOptionsHeldToServerLimits guards that a Wait past a minute and a
// MaxCells past 1000, the server's limits, are asked as those limits: the
// server refused them with 400, which Run took as fatal, returning at once
// and handling nothing. (Review of stop 19.)
func TestOptionsHeldToServerLimits(t *testing.T) {
	c := triggerServer(t, time.Second, nil, nil)
	putOneShard(t, c, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	handled := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- trigger.Run(ctx, c, "t", "p", func(context.Context, cellar.Cell) error {
			once.Do(func() { close(handled) })
			return nil
		}, trigger.Options{Concurrency: 1, Wait: 2 * time.Minute, MaxCells: 5000, Logger: quiet})
	}()
	select {
	case <-handled:
		cancel()
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	case err := <-errc:
		t.Fatalf("Run with Wait 2m = %v without handling the cell; want the wait and cells cut to what the server allows", err)
	case <-time.After(10 * time.Second):
		t.Fatal("cell not handled within 10s")
	}
}

// TestSubMillisecondWaitStillWaits guards that a Wait below a millisecond
// is asked as one: it went out as wait_ms 0, and an idle Run claimed in a
// tight loop. (A bound, not a timing: a millisecond's wait allows at most
// about 300 claims in 300 ms however slow the machine; the loop made tens
// of thousands.) (Review of stop 19.)
func TestSubMillisecondWaitStillWaits(t *testing.T) {
	var claims atomic.Int64
	c := triggerServer(t, time.Second, nil, roundTripFunc(func(r *http.Request, next http.RoundTripper) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/claim") {
			claims.Add(1)
		}
		return next.RoundTrip(r)
	}))
	putOneShard(t, c, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := trigger.Run(ctx, c, "t", "p", func(context.Context, cellar.Cell) error { return nil },
		trigger.Options{Concurrency: 1, Wait: time.Nanosecond, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	if n := claims.Load(); n > 400 {
		t.Errorf("an idle Run with Wait 1ns made %d claims in 300ms; want a millisecond's wait per claim (at most about 300)", n)
	}
}
