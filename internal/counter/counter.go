// Package counter buffers increments of cellar's counters in front of a
// cellar.CounterNode, so that however many increments a counter receives,
// its storage node sees one `value = value + delta` statement per flush.
//
// Two buffers implement cellar.CounterStore:
//
//   - Journal, for a single cellar process (the embedded default): every
//     increment is committed to a local SQLite journal (WAL,
//     synchronous=FULL, group commit) before it is acknowledged, and
//     replayed on start.
//   - RedisBuffer, for several processes: increments go to per-shard delta
//     hashes on named Redis nodes (package redis), which any process
//     flushes.
//
// Both flush on an interval. A flush is applied with a flush ID that the
// node records in the same transaction, and is retried with the same ID
// until the node confirms it, so it is applied exactly once across
// failures and crashes. docs/COUNTERS.md states the guarantees of each.
package counter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellar-db/cellar"
)

// Defaults for Options.
const (
	DefaultFlushInterval = time.Second
	DefaultFlushTimeout  = 10 * time.Second
	DefaultLease         = time.Minute
	DefaultMaxGroup      = 1024
	DefaultCommitDelay   = time.Millisecond
	DefaultRedisPrefix   = "cellar"
)

// Options configure a buffer.
type Options struct {
	// FlushInterval is how often buffered increments are flushed to the
	// node (default DefaultFlushInterval).
	FlushInterval time.Duration
	// FlushTimeout bounds one ApplyCounterDeltas call (default
	// DefaultFlushTimeout). A flush that times out is in doubt and is
	// retried, with the same flush ID, at the next interval.
	FlushTimeout time.Duration
	// Lease (Redis mode) is how long a process owns a flush it started:
	// once the lease runs out without the flush finishing (its process
	// died), any process finishes it (default DefaultLease). It must be
	// well above FlushTimeout, or two processes may apply one flush at
	// once (which the node's flush IDs still make harmless).
	Lease time.Duration
	// MaxGroup (journal mode) bounds the increments committed to the
	// journal together (default DefaultMaxGroup).
	MaxGroup int
	// CommitDelay is how long a group of increments may be held open for
	// more, as PostgreSQL's commit_delay does: the journal's commits and
	// the Redis batches. When the group taken from the queue is smaller
	// than the one before it, the loop waits until as many have come or
	// CommitDelay has passed. Each journal commit costs an fsync and a
	// transaction's CPU, each Redis batch a round trip and a script run,
	// whatever its size, so under concurrency fewer, larger groups leave
	// the CPU to the requests. A lone client is never held: after a group
	// of one there is no wait. 0 means DefaultCommitDelay; a negative
	// value turns it off.
	CommitDelay time.Duration
	// RedisPrefix (Redis mode) begins every Redis key of the buffer, as
	// RedisPrefix + ":ctr:" (default DefaultRedisPrefix). Datastores that
	// share Redis nodes need one each: a flush takes every delta buffered
	// under its prefix on a node.
	RedisPrefix string
	// Clock drives the flush interval and leases (default the system
	// clock).
	Clock Clock
	// Logger receives flush failures and refused deltas (default
	// slog.Default()).
	Logger *slog.Logger

	// roundDone, if set (by tests), receives a value after each flush
	// round the flusher runs on a tick.
	roundDone chan struct{}
	// loadWaits, if set (by tests), is called when the journal's load
	// is about to wait for a flight to be applied.
	loadWaits func()
}

func (o *Options) setDefaults() {
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = DefaultFlushTimeout
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.MaxGroup <= 0 {
		o.MaxGroup = DefaultMaxGroup
	}
	if o.CommitDelay == 0 {
		o.CommitDelay = DefaultCommitDelay
	}
	if o.RedisPrefix == "" {
		o.RedisPrefix = DefaultRedisPrefix
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Clock is the time source of a buffer; tests drive it by hand.
type Clock interface {
	Now() time.Time
	// Tick returns a channel that receives a value every d, and a function
	// that stops it.
	Tick(d time.Duration) (<-chan time.Time, func())
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Tick(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// Stats describe a buffer's work since it was opened.
type Stats struct {
	// Increments is the number of increments acknowledged.
	Increments int64
	// Commits (journal mode) is the number of journal commits that wrote
	// them.
	Commits int64
	// Flushes is the number of flushes the node confirmed.
	Flushes int64
	// Statements is the number of counter updates those flushes sent: one
	// per distinct key with a non-zero delta in each flush.
	Statements int64
	// LastFlushKeys is the number of distinct keys (so statements) of the
	// last confirmed flush.
	LastFlushKeys int64
	// MaxFlushKeys is the largest number of keys in one confirmed flush.
	MaxFlushKeys int64
	// FlushErrors counts flush attempts that failed (and will be retried).
	FlushErrors int64
	// Rejected counts deltas the node refused because they would overflow
	// int64; they are set aside (see docs/COUNTERS.md), not applied.
	Rejected int64
}

// stats are a buffer's Stats, updated atomically.
type stats struct {
	increments, commits, flushes, statements, lastKeys, maxKeys, flushErrors, rejected atomic.Int64
}

func (s *stats) snapshot() Stats {
	return Stats{
		Increments:    s.increments.Load(),
		Commits:       s.commits.Load(),
		Flushes:       s.flushes.Load(),
		Statements:    s.statements.Load(),
		LastFlushKeys: s.lastKeys.Load(),
		MaxFlushKeys:  s.maxKeys.Load(),
		FlushErrors:   s.flushErrors.Load(),
		Rejected:      s.rejected.Load(),
	}
}

func (s *stats) flushed(keys int) {
	s.flushes.Add(1)
	s.statements.Add(int64(keys))
	s.lastKeys.Store(int64(keys))
	for {
		m := s.maxKeys.Load()
		if int64(keys) <= m || s.maxKeys.CompareAndSwap(m, int64(keys)) {
			return
		}
	}
}

// add returns a+b, and false if that overflows int64.
func add(a, b int64) (int64, bool) {
	c := a + b
	if (b > 0 && c < a) || (b < 0 && c > a) {
		return 0, false
	}
	return c, true
}

// sum returns the sum of vs, and false if it is out of the range of
// int64. It adds in 128 bits, so intermediate sums may leave the range.
func sum(vs ...int64) (int64, bool) {
	var hi, lo uint64 // two's complement
	for _, v := range vs {
		var carry, ext uint64
		if v < 0 {
			ext = math.MaxUint64
		}
		lo, carry = bits.Add64(lo, uint64(v), 0)
		hi, _ = bits.Add64(hi, ext, carry)
	}
	if (int64(lo) >= 0 && hi == 0) || (int64(lo) < 0 && hi == math.MaxUint64) {
		return int64(lo), true
	}
	return 0, false
}

func overflowError(key string, by int64) error {
	return cellar.Errorf(cellar.EINVALID, "counter %q: adding %d would overflow the range of a 64-bit integer (%d..%d): its value would, or the increments buffered since the last flush would (those are cleared by the next flush, within its interval)",
		truncate(key, 80), by, int64(math.MinInt64), int64(math.MaxInt64))
}

// newFlushID returns a unique flush ID with the given mode prefix.
func newFlushID(prefix string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// nonZero returns the deltas that change something.
func nonZero(deltas map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(deltas))
	for k, d := range deltas {
		if d != 0 {
			out[k] = d
		}
	}
	return out
}

// applyFlush applies deltas as flush id, with the node's own overflow
// check settled: if the node refuses the flush because keys would overflow
// (the error's cellar.CounterOverflows), applyFlush reads their durable
// values, sets them aside (calling reject, which must make that durable
// before it returns, so that a replay of the flush leaves those keys out
// too) and applies the rest under the same id; the nodes that applied their
// part the first time skip it. The refusing node names the keys, because
// the values read afterwards cannot tell: on the nodes that applied, they
// already hold the delta. A node that refuses for another reason keeps the
// flush pending: it is retried at the next interval, so one bad key cannot
// wedge the buffer, and no delta is dropped for a reason that may pass. It
// returns how many keys were applied.
func applyFlush(ctx context.Context, node cellar.CounterNode, id string, deltas map[string]int64, timeout time.Duration,
	reject func(ctx context.Context, bad map[string]int64, durable map[string]int64) error) (int, error) {
	// The node gets the zero deltas too (it skips them), so that every
	// node holding a key of the flush records its ID: should the same
	// deltas come back from a Redis restored from older data, with some
	// but not all of their increments, they are known there.
	send := maps.Clone(deltas)
	deltas = nonZero(deltas)
	for {
		if len(send) == 0 {
			return 0, nil
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		err := node.ApplyCounterDeltas(actx, id, send)
		cancel()
		if err == nil {
			return len(deltas), nil
		}
		if !errors.Is(err, cellar.ErrInvalid) {
			return 0, fmt.Errorf("apply flush %s of %d keys: %w", id, len(deltas), err)
		}
		bad := make(map[string]int64)
		for _, k := range cellar.CounterOverflows(err) {
			if d, ok := deltas[k]; ok {
				bad[k] = d
			}
		}
		if len(bad) == 0 {
			return 0, fmt.Errorf("apply flush %s: node refused it, naming no delta of the flush that overflows: %w", id, err)
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		cur, cerr := node.Counters(rctx, slices.Collect(maps.Keys(bad)))
		cancel()
		if cerr != nil {
			return 0, fmt.Errorf("apply flush %s: node refused it (%v); reading the overflowing counters: %w", id, err, cerr)
		}
		if err := reject(ctx, bad, cur); err != nil {
			return 0, fmt.Errorf("apply flush %s: set aside %d overflowing deltas: %w", id, len(bad), err)
		}
		for k := range bad {
			delete(send, k)
			delete(deltas, k)
		}
	}
}

// roundDone tells a test that the flusher finished a round.
func (o *Options) signalRound(ctx context.Context) {
	if o.roundDone == nil {
		return
	}
	select {
	case o.roundDone <- struct{}{}:
	case <-ctx.Done():
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "..."
}

// validateKeys returns the validation error of each key, nil for valid ones.
func validateKeys(keys []string) []error {
	errs := make([]error, len(keys))
	for i, k := range keys {
		errs[i] = cellar.ValidateRowKey(k)
	}
	return errs
}

// nodeResults sets res[i] for each i in idx from a node read of keys[i]:
// its value if vals holds it, else the read's error if there was one (a
// failed node's keys are missing from vals, and the others are answered),
// else 0, a counter never incremented.
func nodeResults(res []cellar.CounterResult, idx []int, keys []string, vals map[string]int64, err error) {
	for _, i := range idx {
		v, ok := vals[keys[i]]
		if !ok && err != nil {
			res[i].Err = err
			continue
		}
		res[i].Value = v
	}
}

// batchIncr runs incrs through incr, the buffer's Incr, and returns their
// results in order (cellar.CounterStore.BatchIncr). The increments of one
// key are run one after the other, in order; different keys run at once,
// so that they share the buffer's groups (one journal commit, one Redis
// script run) rather than waiting for one each; at most batchIncrWorkers
// at a time, which bounds the node reads of keys seen for the first time.
func batchIncr(ctx context.Context, incrs []cellar.CounterIncrement, incr func(ctx context.Context, key string, by int64) (int64, error)) []cellar.CounterResult {
	res := make([]cellar.CounterResult, len(incrs))
	byKey := make(map[string][]int)
	var keys []string
	for i, in := range incrs {
		res[i].Key = in.Key
		if byKey[in.Key] == nil {
			keys = append(keys, in.Key)
		}
		byKey[in.Key] = append(byKey[in.Key], i)
	}
	work := make(chan []int)
	var wg sync.WaitGroup
	for range min(len(keys), batchIncrWorkers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for idx := range work {
				for _, i := range idx {
					res[i].Value, res[i].Err = incr(ctx, incrs[i].Key, incrs[i].By)
				}
			}
		}()
	}
	for _, k := range keys {
		work <- byKey[k]
	}
	close(work)
	wg.Wait()
	return res
}

// batchIncrWorkers bounds the keys of one BatchIncr in progress at once:
// as many as a Redis batch holds (maxBatch).
const batchIncrWorkers = maxBatch
