// Package cache is a read-through cache of cells: a cellar.Store that
// answers Get, Latest, Row and BatchGet from memory when it can and asks
// the store behind it (the sharding layer) for the rest.
//
// It has two tiers: an in-process tier bounded by memory, and an optional
// shared tier in Redis, spread over named nodes by logical shard. A cell
// fetched by its full key is immutable and is cached until memory runs
// short. Latest cells, rows and "not found" answers can change, so each is
// served only until it is Options.MaxStaleness old, counted from when it
// was read from the backing store; writes through a Store update its own
// entries at once, and with Redis they are announced over pub/sub so that
// other processes drop theirs within moments. docs/CACHE.md has the whole
// contract.
//
// The cache never fails a read: when Redis fails, reads go to the backing
// store, and the failure is counted.
package cache

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/redis"
)

// Tiers, as named in metrics.
const (
	TierLocal = "local"
	TierRedis = "redis"
)

// Observer counts what the cache does; *metrics.Metrics is one.
type Observer interface {
	// ObserveCache counts lookups in tier that it answered (hits) and
	// that it did not (misses).
	ObserveCache(tier string, hits, misses int)
	// ObserveCacheError counts a failed operation on tier, such as "get",
	// "fill", "push" or "subscribe".
	ObserveCacheError(tier, op string)
}

// Defaults for Options.
const (
	DefaultMaxBytes     = 64 << 20
	DefaultMaxStaleness = time.Second
	DefaultRedisPrefix  = "cellar"
	DefaultRedisTimeout = 100 * time.Millisecond
	DefaultRedisCellTTL = time.Hour
	DefaultRedisRetry   = time.Second
)

// Options configure a Store. The zero value is an in-process cache of
// DefaultMaxBytes.
type Options struct {
	// MaxBytes bounds the in-process tier: the bytes of its keys and bodies
	// plus a fixed overhead per entry (default DefaultMaxBytes). A negative
	// value turns the in-process tier off.
	MaxBytes int64
	// MaxStaleness bounds how old an answer that can change may be when it
	// is served: a latest cell, a row, or "not found" (default
	// DefaultMaxStaleness). A write acknowledged MaxStaleness ago is seen
	// by every Store, whatever failed.
	MaxStaleness time.Duration
	// Redis, if not nil, is the shared tier, and carries news of writes
	// between processes.
	Redis *redis.Cluster
	// RedisPrefix begins every Redis key and the pub/sub channel of this
	// datastore (default DefaultRedisPrefix).
	RedisPrefix string
	// RedisTimeout bounds each round trip to Redis (default
	// DefaultRedisTimeout); a round trip also gets at most half of what
	// remains of the caller's deadline. The Redis clients must honour
	// context deadlines (go-redis: ContextTimeoutEnabled) for it to hold.
	RedisTimeout time.Duration
	// RedisCellTTL is how long Redis keeps a cell fetched by its full key
	// (default DefaultRedisCellTTL); such cells never change, so this only
	// bounds Redis memory.
	RedisCellTTL time.Duration
	// RedisRetry is how long a Redis node that failed is left alone before
	// it is tried again (default DefaultRedisRetry).
	RedisRetry time.Duration
	// Observer, if not nil, counts hits, misses and errors.
	Observer Observer
	// Logger receives Redis failures, once per failing spell of a node
	// (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

// Store is a cellar.Store that caches the reads of another.
//
// The cells it returns share their bodies with the cache: callers must not
// modify them.
type Store struct {
	next   cellar.Store
	local  *local  // nil if off
	shared *shared // nil without Redis
	obs    Observer
	now    func() int64 // Unix nanoseconds
	ttl    int64        // MaxStaleness in nanoseconds
}

var _ cellar.Store = (*Store)(nil)

// New returns a Store that caches the reads of next. With opts.Redis, it
// subscribes to news of writes on every Redis node, waiting up to
// RedisTimeout for the subscriptions to be confirmed; a node that does not
// answer is subscribed to when it does.
func New(next cellar.Store, opts Options) (*Store, error) {
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxStaleness <= 0 {
		opts.MaxStaleness = DefaultMaxStaleness
	}
	if opts.RedisPrefix == "" {
		opts.RedisPrefix = DefaultRedisPrefix
	}
	if opts.RedisTimeout <= 0 {
		opts.RedisTimeout = DefaultRedisTimeout
	}
	if opts.RedisCellTTL <= 0 {
		opts.RedisCellTTL = DefaultRedisCellTTL
	}
	if opts.RedisRetry <= 0 {
		opts.RedisRetry = DefaultRedisRetry
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	// Ages are measured on the monotonic clock, so that a wall clock
	// stepped back cannot make an answer live longer.
	base := time.Now()
	s := &Store{next: next, obs: opts.Observer, ttl: int64(opts.MaxStaleness), now: func() int64 {
		return base.UnixNano() + int64(time.Since(base))
	}}
	// otter's own clock only decides when memory is reclaimed; what is
	// served is decided by s.now.
	var clock otter.Clock
	if opts.Now != nil {
		now := opts.Now
		s.now = func() int64 { return now().UnixNano() }
		clock = &clockAdapter{now: s.now}
	}
	if opts.MaxBytes > 0 {
		l, err := newLocal(opts.MaxBytes, opts.MaxStaleness, s.now, clock)
		if err != nil {
			return nil, err
		}
		s.local = l
	}
	if opts.Redis != nil {
		var heard func(cellar.Key)
		if s.local != nil {
			heard = s.heard
		}
		s.shared = newShared(opts, s.now, heard)
	}
	return s, nil
}

// Close stops listening for news of writes. It does not close the backing
// store or the Redis clients, which belong to the caller.
func (s *Store) Close() error {
	if s.shared != nil {
		s.shared.close()
	}
	if s.local != nil {
		s.local.close()
	}
	return nil
}

// Size returns the bytes that the in-process tier holds, as its weigher
// counts them (bodies and keys plus a fixed overhead per entry).
func (s *Store) Size() int64 {
	if s.local == nil {
		return 0
	}
	s.local.c.CleanUp()
	return int64(s.local.c.WeightedSize())
}

// heard is told of a cell that some process created.
func (s *Store) heard(k cellar.Key) { s.local.exists(k, false) }

// pending is a lookup that no tier has answered yet.
type pending struct {
	i      int              // its index in the results
	k      key              // what it looks up
	floors map[string]int64 // the in-process marker of k, if any
}

// fetcher reads lookups from the backing store: one result per key.
type fetcher func(ctx context.Context, keys []cellar.LookupKey) []cellar.GetResult

// read answers the lookups ps into res: from the in-process tier, then
// Redis, then one call of fetch for the rest, filling the tiers with what
// it returns.
func (s *Store) read(ctx context.Context, ps []pending, res []cellar.GetResult, fetch fetcher) {
	if s.local != nil && len(ps) > 0 {
		now := s.now()
		rest := ps[:0]
		for _, p := range ps {
			e, ok := s.local.get(p.k)
			if ok && e.answers(now) {
				res[p.i] = result(e)
				continue
			}
			if m := e.marker(now); m != nil {
				// Also from an expired answer: the marker it kept
				// outlives it.
				p.floors = m.floors
			}
			rest = append(rest, p)
		}
		s.obs.ObserveCache(TierLocal, len(ps)-len(rest), len(rest))
		ps = rest
	}
	if s.shared != nil && len(ps) > 0 {
		ps = s.shared.lookup(ctx, ps, func(p pending, a *entry) {
			res[p.i] = result(a)
			s.fillLocal(p.k, a)
		})
	}
	if len(ps) == 0 {
		return
	}

	// One backing call for the misses, each distinct key once.
	first := make(map[key]int, len(ps))
	var keys []cellar.LookupKey
	for _, p := range ps {
		if _, ok := first[p.k]; !ok {
			first[p.k] = len(keys)
			keys = append(keys, p.k.lookup())
		}
	}
	asOf := s.now()
	out := fetch(ctx, keys)
	var found []fill
	for j, r := range out {
		k := keys[j]
		var a *entry
		switch {
		case r.Err == nil && r.Cell != nil:
			a = &entry{cells: []cellar.Cell{*r.Cell}}
			if k.RefKey == nil {
				a.expires = asOf + s.ttl
			}
		case errors.Is(r.Err, cellar.ErrNotFound):
			a = &entry{err: r.Err, expires: asOf + s.ttl}
		}
		// An answer this process knows to be stale (its own write came
		// after the read began) stays out of Redis too, where a process
		// that never held the key would serve it for up to MaxStaleness,
		// whatever the news of the write (review of 2026-12-08).
		if a != nil && !s.fillLocal(lookupKey(k), a) && len(a.cells) > 0 {
			found = append(found, fill{k: lookupKey(k), cell: *r.Cell})
		}
	}
	for _, p := range ps {
		r := out[first[p.k]]
		if r.Cell != nil {
			c := *r.Cell
			r.Cell = &c
		}
		res[p.i] = r
	}
	if s.shared != nil && len(found) > 0 {
		s.shared.fill(ctx, found, asOf+s.ttl)
	}
}

// fillLocal stores the answer a, read from Redis or storage, under k in
// the in-process tier. A latest cell also reaches the row's entry, so that
// Row(row) does not then serve an older row than the cell just served.
//
// It reports whether the in-process tier knows a to be stale (local.fill).
func (s *Store) fillLocal(k key, a *entry) (stale bool) {
	if s.local == nil {
		return false
	}
	stale = s.local.fill(k, a)
	if k.kind == kindLatest && len(a.cells) > 0 {
		s.local.seen(a.cells[0])
	}
	return stale
}

// result is the answer a as a GetResult.
func result(a *entry) cellar.GetResult {
	if len(a.cells) == 0 {
		return cellar.GetResult{Err: a.err}
	}
	c := a.cells[0]
	return cellar.GetResult{Cell: &c}
}

// one reads a single lookup, with fetch asking the backing store for it.
func (s *Store) one(ctx context.Context, k cellar.LookupKey, fetch func(ctx context.Context) (cellar.Cell, error)) (cellar.Cell, error) {
	res := make([]cellar.GetResult, 1)
	s.read(ctx, []pending{{k: lookupKey(k)}}, res, func(ctx context.Context, _ []cellar.LookupKey) []cellar.GetResult {
		c, err := fetch(ctx)
		if err != nil {
			return []cellar.GetResult{{Err: err}}
		}
		return []cellar.GetResult{{Cell: &c}}
	})
	if res[0].Err != nil {
		return cellar.Cell{}, res[0].Err
	}
	return *res[0].Cell, nil
}

// Get implements cellar.Store.
func (s *Store) Get(ctx context.Context, k cellar.Key) (cellar.Cell, error) {
	if err := k.Validate(); err != nil {
		return cellar.Cell{}, err
	}
	ref := k.RefKey
	return s.one(ctx, cellar.LookupKey{RowKey: k.RowKey, Column: k.Column, RefKey: &ref}, func(ctx context.Context) (cellar.Cell, error) {
		return s.next.Get(ctx, k)
	})
}

// Latest implements cellar.Store.
func (s *Store) Latest(ctx context.Context, rowKey, column string) (cellar.Cell, error) {
	k := cellar.LookupKey{RowKey: rowKey, Column: column}
	if err := k.Validate(); err != nil {
		return cellar.Cell{}, err
	}
	return s.one(ctx, k, func(ctx context.Context) (cellar.Cell, error) {
		return s.next.Latest(ctx, rowKey, column)
	})
}

// BatchGet implements cellar.Store: what the tiers miss is read with one
// BatchGet of the backing store.
func (s *Store) BatchGet(ctx context.Context, keys []cellar.LookupKey) []cellar.GetResult {
	res := make([]cellar.GetResult, len(keys))
	ps := make([]pending, 0, len(keys))
	for i, k := range keys {
		if err := k.Validate(); err != nil {
			res[i].Err = err
			continue
		}
		ps = append(ps, pending{i: i, k: lookupKey(k)})
	}
	s.read(ctx, ps, res, s.next.BatchGet)
	// Cached cells count too: the backing store bounded the misses alone,
	// so a miss it left out may fit the whole answer, and is asked for
	// again, of the store alone (it missed every tier, and was counted
	// so; the cell is not cached, as rare as this is). The hits are taken
	// for the store's too: a hit left out only makes a miss asked again.
	return cellar.FillBatchGet(ctx, keys, res, func(int) string { return "" }, s.next.BatchGet)
}

// Row implements cellar.Store. A row with named columns is put together
// from the latest cells of those columns, the misses read with one Row
// call; a whole row is cached in-process as one entry.
func (s *Store) Row(ctx context.Context, rowKey string, columns []string) ([]cellar.Cell, error) {
	if err := cellar.ValidateRowKey(rowKey); err != nil {
		return nil, err
	}
	for _, c := range columns {
		if err := cellar.ValidateColumn(c); err != nil {
			return nil, err
		}
	}
	if len(columns) == 0 {
		return s.wholeRow(ctx, rowKey)
	}
	cols := slices.Clone(columns)
	slices.Sort(cols)
	cols = slices.Compact(cols)
	ps := make([]pending, len(cols))
	for i, c := range cols {
		ps[i] = pending{i: i, k: latestKey(rowKey, c)}
	}
	res := make([]cellar.GetResult, len(cols))
	s.read(ctx, ps, res, func(ctx context.Context, keys []cellar.LookupKey) []cellar.GetResult {
		missing := make([]string, len(keys))
		for j, k := range keys {
			missing[j] = k.Column
		}
		out := make([]cellar.GetResult, len(keys))
		cells, err := s.next.Row(ctx, rowKey, missing)
		byCol := make(map[string]*cellar.Cell, len(cells))
		for j := range cells {
			byCol[cells[j].Column] = &cells[j]
		}
		for j, k := range keys {
			switch {
			case err != nil:
				out[j].Err = err
			case byCol[k.Column] != nil:
				out[j].Cell = byCol[k.Column]
			default:
				out[j].Err = notFound(rowKey, k.Column)
			}
		}
		return out
	})
	row := make([]cellar.Cell, 0, len(cols))
	for _, r := range res {
		switch {
		case r.Cell != nil:
			row = append(row, *r.Cell)
		case !errors.Is(r.Err, cellar.ErrNotFound):
			return nil, r.Err
		}
	}
	// Cached cells count toward the bound as the node's do.
	if err := cellar.BoundRow(rowKey, row); err != nil {
		return nil, err
	}
	return row, nil
}

// notFound is the error of a missing latest cell, worded as the SQL nodes
// word it.
func notFound(rowKey, column string) error {
	return cellar.Errorf(cellar.ENOTFOUND, "no cell in row %q column %s", rowKey, column)
}

// wholeRow serves Row without columns, from the in-process tier only.
func (s *Store) wholeRow(ctx context.Context, rowKey string) ([]cellar.Cell, error) {
	k := key{kind: kindRow, row: rowKey}
	if s.local != nil {
		e, ok := s.local.get(k)
		hit := ok && e.answers(s.now())
		s.obs.ObserveCache(TierLocal, b2i(hit), b2i(!hit))
		if hit {
			// The entry grows as columns are written and read after it
			// was filled: it is bounded as the node bounds a row.
			if err := cellar.BoundRow(rowKey, e.cells); err != nil {
				return nil, err
			}
			return append(make([]cellar.Cell, 0, len(e.cells)), e.cells...), nil
		}
	}
	asOf := s.now()
	cells, err := s.next.Row(ctx, rowKey, nil)
	if err != nil || s.local == nil {
		return cells, err
	}
	// Rows come ordered by column bytewise, as the merges expect; check
	// rather than trust it.
	if !slices.IsSortedFunc(cells, func(a, b cellar.Cell) int { return cmp.Compare(a.Column, b.Column) }) {
		return cells, nil
	}
	expires := asOf + s.ttl
	s.local.fill(k, &entry{cells: slices.Clone(cells), expires: expires})
	for _, c := range cells {
		s.local.fill(latestKey(rowKey, c.Column), &entry{cells: []cellar.Cell{c}, expires: expires})
	}
	return cells, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Put implements cellar.Store, and updates the cache with the cell it
// created.
func (s *Store) Put(ctx context.Context, c cellar.NewCell) (cellar.Cell, bool, error) {
	cell, created, err := s.next.Put(ctx, c)
	s.wrote(ctx, []cellar.NewCell{c}, []cellar.PutResult{{Cell: cell, Created: created, Err: err}})
	return cell, created, err
}

// BatchPut implements cellar.Store, and updates the cache with the cells it
// created.
func (s *Store) BatchPut(ctx context.Context, cells []cellar.NewCell) []cellar.PutResult {
	res := s.next.BatchPut(ctx, cells)
	s.wrote(ctx, cells, res)
	return res
}

// wrote records the outcome of writing cells: the cells created (pushed
// into the in-process entries, Redis's latest entries and announced to
// other processes), and the cells found to exist already (a replay or a
// conflict), which stale entries must not contradict.
func (s *Store) wrote(ctx context.Context, cells []cellar.NewCell, res []cellar.PutResult) {
	var created []cellar.Cell
	for i, r := range res {
		switch {
		case r.Err == nil && r.Created:
			c := r.Cell
			c.Body = append([]byte(nil), cells[i].Body...) // stored as written
			created = append(created, c)
			if s.local != nil {
				s.local.created(c)
			}
		case r.Err == nil || errors.Is(r.Err, cellar.ErrConflict):
			if s.local != nil {
				s.local.exists(cells[i].Key, true)
			}
		}
	}
	if s.shared != nil && len(created) > 0 {
		s.shared.push(ctx, created)
	}
}

// Scan implements cellar.Store; scans are not cached.
func (s *Store) Scan(ctx context.Context, shard int, after int64, limit int, column string) (cellar.ScanResult, error) {
	return s.next.Scan(ctx, shard, after, limit, column)
}

type nopObserver struct{}

func (nopObserver) ObserveCache(string, int, int)    {}
func (nopObserver) ObserveCacheError(string, string) {}

// clockAdapter gives otter a test's clock. It does not tick: expired
// entries are never served anyway, and are dropped when memory runs short.
type clockAdapter struct{ now func() int64 }

func (c *clockAdapter) NowNano() int64                      { return c.now() }
func (c *clockAdapter) Tick(time.Duration) <-chan time.Time { return nil }
