package counter

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/counter/countertest"
)

// fakeClock is a Clock that moves only when the test says so.
type fakeClock struct {
	mu   sync.Mutex // protects now
	now  time.Time
	tick chan time.Time // unbuffered: a send returns once the flusher took it
	done chan struct{}  // the flusher finished the round of a tick
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), tick: make(chan time.Time), done: make(chan struct{})}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Tick(time.Duration) (<-chan time.Time, func()) { return c.tick, func() {} }

// Set moves the clock by d without a tick.
func (c *fakeClock) Set(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Advance moves the clock by d and has the flusher run one round, and
// waits for the round to end.
func (c *fakeClock) Advance(tb testing.TB, d time.Duration) {
	tb.Helper()
	c.Set(d)
	select {
	case c.tick <- c.Now():
	case <-time.After(30 * time.Second):
		tb.Fatal("the flusher did not take a tick within 30s")
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		tb.Fatal("the flusher did not finish a round within 30s")
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testOptions(clock *fakeClock) Options {
	return Options{FlushInterval: time.Second, FlushTimeout: 2 * time.Second, Lease: 10 * time.Second, Clock: clock, Logger: quietLogger(), roundDone: clock.done}
}

// openJournal opens a journal in dir over node, closed when tb ends.
func openJournal(tb testing.TB, dir string, node cellar.CounterNode, opts Options) *Journal {
	tb.Helper()
	j, err := OpenJournal(context.Background(), filepath.Join(dir, "counters.journal"), node, opts)
	if err != nil {
		tb.Fatalf("OpenJournal: %v", err)
	}
	tb.Cleanup(func() { j.Close() })
	return j
}

// crash stops j the way kill -9 would, as far as the journal can tell: no
// last flush, no further writes.
func (j *Journal) crash() {
	j.mu.Lock()
	j.closed = true
	j.mu.Unlock()
	j.incrs.Wait()
	j.cancel()
	j.wg.Wait()
	j.db.Close()
}

func incr(tb testing.TB, s cellar.CounterStore, key string, by, want int64) {
	tb.Helper()
	got, err := s.Incr(context.Background(), key, by)
	if err != nil || got != want {
		tb.Fatalf("Incr(%q, %d) = %d, %v; want %d", key, by, got, err, want)
	}
}

func wantCounter(tb testing.TB, s cellar.CounterStore, key string, want int64) {
	tb.Helper()
	got, err := s.Counter(context.Background(), key)
	if err != nil || got != want {
		tb.Fatalf("Counter(%q) = %d, %v; want %d", key, got, err, want)
	}
}

func wantCode(tb testing.TB, what string, err error, code string) {
	tb.Helper()
	if cellar.ErrorCode(err) != code {
		tb.Fatalf("%s: error %v; want code %s", what, err, code)
	}
}

var errDown = cellar.Errorf(cellar.EUNAVAILABLE, "node is down")

// downFault fails every call while down is set.
func downFault(down *bool, mu *sync.Mutex) countertest.Fault {
	return func(op string, applied bool) error {
		mu.Lock()
		defer mu.Unlock()
		if *down && !applied {
			return errDown
		}
		return nil
	}
}

// switchDown makes node fail its calls while the returned switch is set
// (downFault), and returns the switch.
func switchDown(node *countertest.Node) func(down bool) {
	var mu sync.Mutex
	down := false
	node.SetFault(downFault(&down, &mu))
	return func(v bool) {
		mu.Lock()
		down = v
		mu.Unlock()
	}
}

// durableOn returns counter k's value stored on node s.
func durableOn(tb testing.TB, s cellar.CounterNode, k string) int64 {
	tb.Helper()
	vals, err := s.Counters(context.Background(), []string{k})
	if err != nil {
		tb.Fatal(err)
	}
	return vals[k]
}

// lostAck applies the next n applies but reports them failed, as when
// the connection drops while COMMIT's answer is on its way.
func lostAck(n *int, mu *sync.Mutex) countertest.Fault {
	return func(op string, applied bool) error {
		mu.Lock()
		defer mu.Unlock()
		if op == "apply" && applied && *n > 0 {
			*n--
			return cellar.Unavailable(errors.New("connection reset"), "node is unavailable")
		}
		return nil
	}
}
