package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/redis"
)

// Redis layout (P is Options.RedisPrefix, S the row key's logical shard):
//
//	P:cell:S:COLUMN:REF_KEY:ROW_KEY  a cell by full key (expires after RedisCellTTL)
//	P:latest:S:COLUMN:ROW_KEY        the latest cell of (ROW_KEY, COLUMN) (expires
//	                                 MaxStaleness after it was read from storage)
//	P:written                        pub/sub channel: cells just created, one per
//	                                 line as "REF_KEY COLUMN ROW_KEY"
//
// The row key comes last so that it needs no escaping: columns and ref
// keys hold no ':', and row keys no control characters. Values are the
// cell's JSON with its body as stored; a latest entry's value starts with
// its filler's MaxStaleness in milliseconds and a '|' ("1000|{...}"), so
// that a process with a shorter bound can tell the entry's age from its
// remaining TTL (age = that bound − PTTL) and serve it only while it is
// younger than its own bound.

// Scripts keep Redis's latest entries moving forward only, whoever writes
// them. The ref_key is read back from the stored JSON: `"ref_key":` cannot
// occur inside a JSON string (a quote in one is escaped), and the key's own
// field comes before the body, so the first match is the key's. Ref keys
// are compared as decimal strings (no sign, no leading zeros), since Lua's
// numbers are doubles.
const refOlder = `
local function bound(v)
  return string.match(v, '^(%d+)|')
end
local function older(old, ref)
  local r = string.match(old, '"ref_key":(%d+)')
  if not r then return true end
  return #r < #ref or (#r == #ref and r < ref)
end
`

// latestGetScript returns, for each key, its value and remaining
// milliseconds, or false and -2. Lookups send it as EVALSHA_RO of latestGet
// (its SHA-1, computed here once), not as its text.
var latestGetScript = `
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v then
    out[2*i-1] = v
    out[2*i] = redis.call('PTTL', k)
  else
    out[2*i-1] = false
    out[2*i] = -2
  end
end
return out
`

var latestGet = goredis.NewScript(latestGetScript)

// latestFillScript stores a latest cell read from storage (ARGV: ref_key,
// value, milliseconds to live, the filler's bound in milliseconds) unless
// Redis has a newer one, or the same one read no earlier (its age, its
// filler's bound less its PTTL, is no greater; an entry without a bound
// counts as this filler's, unless its PTTL is longer than that bound: then
// its age is unknown, and it is replaced).
var latestFillScript = refOlder + `
local old = redis.call('GET', KEYS[1])
if old and not older(old, ARGV[1]) then
  local r = string.match(old, '"ref_key":(%d+)')
  local left = redis.call('PTTL', KEYS[1])
  local mine = tonumber(ARGV[4]) - tonumber(ARGV[3])
  local b = bound(old)
  -- An entry without a bound (from a version before bounds) whose TTL
  -- outlives this filler's bound is of unknown age: replace it.
  local unknown = not b and left > tonumber(ARGV[4])
  if r ~= ARGV[1] or (not unknown and tonumber(b or ARGV[4]) - left <= mine) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`

// latestPushScript replaces a latest cell with one just created (ARGV:
// ref_key, the cell's JSON without a bound), keeping its expiry and its
// filler's bound, if Redis has an older one. Without one it stores
// nothing: the writer cannot know that its cell is the latest.
var latestPushScript = refOlder + `
local old = redis.call('GET', KEYS[1])
if not old or not older(old, ARGV[1]) then
  return 0
end
local b = bound(old)
local v = ARGV[2]
if b then
  v = b .. '|' .. v
end
redis.call('SET', KEYS[1], v, 'KEEPTTL')
return 1
`

// fill is a cell read from storage, to store in Redis under k.
type fill struct {
	k    key
	cell cellar.Cell
}

// shared is the Redis tier.
type shared struct {
	noRO    atomic.Bool // a node did not know EVALSHA_RO (before Redis 7.0): lookups send EVALSHA
	r       *redis.Cluster
	prefix  string
	channel string
	timeout time.Duration
	cellTTL time.Duration
	retry   int64 // nanoseconds
	bound   int64 // MaxStaleness in nanoseconds
	now     func() int64
	obs     Observer
	log     *slog.Logger
	heard   func(cellar.Key)
	// down holds, per node, the time until which it is left alone after a
	// failure (Unix nanoseconds). The map is fixed in newShared.
	down map[string]*atomic.Int64
	// lookups combines concurrent lookups, per node (coalesce.go). The map
	// is fixed in newShared.
	lookups map[string]*coalescer

	// The subscribers, one per node, are owned here: started in newShared,
	// stopped (cancel, close, wait) in close. life ends in close.
	life   context.Context
	cancel context.CancelFunc
	subs   []*goredis.PubSub
	wg     sync.WaitGroup
	// trips counts the combined round trips running (coalesce.go); close
	// waits for them, and once closed (under tripMu) none starts: a
	// caller's own round trip that ends after close answers the lookups
	// queued behind it as misses.
	trips  sync.WaitGroup
	tripMu sync.Mutex
	closed bool
}

func newShared(opts Options, now func() int64, heard func(cellar.Key)) *shared {
	s := &shared{
		r:       opts.Redis,
		prefix:  opts.RedisPrefix,
		channel: opts.RedisPrefix + ":written",
		timeout: opts.RedisTimeout,
		cellTTL: opts.RedisCellTTL,
		retry:   int64(opts.RedisRetry),
		bound:   int64(opts.MaxStaleness),
		now:     now,
		obs:     opts.Observer,
		log:     opts.Logger,
		heard:   heard,
		down:    make(map[string]*atomic.Int64),
		lookups: make(map[string]*coalescer),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.life, s.cancel = ctx, cancel
	for name, client := range s.r.Nodes() {
		s.down[name] = new(atomic.Int64)
		s.lookups[name] = newCoalescer(s, name, client)
	}
	if heard == nil {
		return s // nothing to tell
	}
	var ready []chan struct{}
	for name, client := range s.r.Nodes() {
		// Subscribing with a channel dials and waits for the node's answer
		// there and then; without one it does nothing yet, so that the
		// subscription is made in the listener, and a node that hangs
		// holds New up only to RedisTimeout below, not to the node's own
		// timeout, node after node (review of 2026-12-08: 6 s for two hung
		// nodes with a 100 ms RedisTimeout). A failed subscription is
		// remembered, and made again by Receive.
		ps := client.Subscribe(ctx)
		s.subs = append(s.subs, ps)
		r := make(chan struct{})
		ready = append(ready, r)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = ps.Subscribe(ctx, s.channel)
			s.listen(ctx, name, ps, r)
		}()
	}
	deadline := time.NewTimer(s.timeout)
	defer deadline.Stop()
	for _, r := range ready {
		select {
		case <-r:
		case <-deadline.C:
			s.log.Warn("redis cache: subscriptions not confirmed in time; news of other processes' writes may be missed until they are", "timeout", s.timeout)
			return s
		}
	}
	return s
}

func (s *shared) close() {
	s.cancel()
	for _, ps := range s.subs {
		ps.Close() // unblocks Receive
	}
	s.wg.Wait()
	s.tripMu.Lock()
	s.closed = true // no combined round trip starts from now on
	s.tripMu.Unlock()
	s.trips.Wait()
}

// listen applies the news of writes that arrive on one node until ctx ends.
// go-redis reconnects and resubscribes by itself; listen waits a little
// after each failure so that a node that is down is not hammered.
func (s *shared) listen(ctx context.Context, node string, ps *goredis.PubSub, ready chan struct{}) {
	const minWait, maxWait = 10 * time.Millisecond, time.Second
	wait := minWait
	failing := false
	for {
		msg, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.obs.ObserveCacheError(TierRedis, "subscribe")
			if !failing {
				s.log.Warn("redis cache: lost the subscription to news of writes; other processes' writes are seen within max staleness until it is back", "node", node, "err", err)
				failing = true
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			wait = min(2*wait, maxWait)
			continue
		}
		wait = minWait
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				if failing {
					s.log.Info("redis cache: subscribed again", "node", node)
					failing = false
				}
				select {
				case <-ready:
				default:
					close(ready)
				}
			}
		case *goredis.Message:
			for _, k := range parseWritten(m.Payload) {
				s.heard(k)
			}
		}
	}
}

func (s *shared) cellKey(shard int, k cellar.Key) string {
	return s.prefix + ":cell:" + strconv.Itoa(shard) + ":" + k.Column + ":" + strconv.FormatInt(k.RefKey, 10) + ":" + k.RowKey
}

func (s *shared) latestKey(shard int, row, col string) string {
	return s.prefix + ":latest:" + strconv.Itoa(shard) + ":" + col + ":" + row
}

// redisKey is the Redis key of the in-process key k (kindCell or
// kindLatest).
func (s *shared) redisKey(k key) string {
	shard := s.r.Shard(k.row)
	if k.kind == kindCell {
		return s.cellKey(shard, cellar.Key{RowKey: k.row, Column: k.col, RefKey: k.ref})
	}
	return s.latestKey(shard, k.row, k.col)
}

// formatWritten and parseWritten encode the news of created cells.
func formatWritten(cells []cellar.Cell) string {
	var b strings.Builder
	for _, c := range cells {
		fmt.Fprintf(&b, "%d %s %s\n", c.RefKey, c.Column, c.RowKey)
	}
	return b.String()
}

func parseWritten(payload string) []cellar.Key {
	var keys []cellar.Key
	for _, line := range strings.Split(payload, "\n") {
		ref, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		col, row, ok := strings.Cut(rest, " ")
		n, err := strconv.ParseInt(ref, 10, 64)
		if !ok || err != nil {
			continue
		}
		keys = append(keys, cellar.Key{RowKey: row, Column: col, RefKey: n})
	}
	return keys
}

// encodeCell is c's JSON with the body appended byte for byte as stored
// (an encoder would compact it, and json.Marshal would escape it).
func encodeCell(c cellar.Cell) ([]byte, error) {
	meta := c
	meta.Body = nil
	b, err := meta.MarshalJSON()
	if err != nil || len(c.Body) == 0 {
		return b, err
	}
	b = append(b[:len(b)-1], `,"body":`...)
	b = append(b, c.Body...)
	return append(b, '}'), nil
}

// decodeCell decodes a value stored under k, checking that it is k's.
func decodeCell(k key, v string) (cellar.Cell, error) {
	var c cellar.Cell
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		return c, err
	}
	if c.RowKey != k.row || c.Column != k.col || (k.kind == kindCell && c.RefKey != k.ref) || len(c.Body) == 0 {
		return c, fmt.Errorf("redis value for %q/%s holds %q/%s/%d", k.row, k.col, c.RowKey, c.Column, c.RefKey)
	}
	return c, nil
}

// batch is the work for one node.
type batch struct {
	node   string
	client *goredis.Client
	idx    []int // indexes into the caller's slice
}

// group assigns the n items to their nodes (by rowKey(i)), leaving out
// nodes that failed recently.
func (s *shared) group(n int, rowKey func(int) string) []*batch {
	var batches []*batch
	now := s.now()
	byNode := make(map[string]*batch)
	for i := 0; i < n; i++ {
		name, client := s.r.Node(s.r.Shard(rowKey(i)))
		if d := s.down[name]; client == nil || d != nil && now < d.Load() {
			continue
		}
		b := byNode[name]
		if b == nil {
			b = &batch{node: name, client: client}
			byNode[name] = b
			batches = append(batches, b)
		}
		b.idx = append(b.idx, i)
	}
	return batches
}

// errTimedOut is the cause of a Redis round trip cut short by its timeout
// (try's, or a combined round trip's).
var errTimedOut = errors.New("redis cache: round trip timed out")

// each runs f for every batch, in parallel, each under the Redis timeout,
// and reports failures (try).
func (s *shared) each(ctx context.Context, op string, batches []*batch, f func(ctx context.Context, b *batch) error) {
	if len(batches) == 1 {
		s.try(ctx, batches[0].node, op, func(ctx context.Context) error { return f(ctx, batches[0]) })
		return
	}
	var wg sync.WaitGroup
	for _, b := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.try(ctx, b.node, op, func(ctx context.Context) error { return f(ctx, b) })
		}()
	}
	wg.Wait()
}

// try runs f, one caller's round trip to node, under the Redis timeout,
// and fails the node if it should.
//
// A round trip gets at most half of what remains of the caller's deadline
// (budget), so that a hung node leaves the read time for storage. A
// cut-off of at least half the Redis timeout that fires fails the node,
// even if the caller's context has ended since, so that it is left alone;
// a shorter one says more about the caller's budget than about the node (a
// healthy node a few milliseconds away would fail for everyone), so the
// call only goes without Redis. Other errors fail the node unless the
// caller gave up first.
func (s *shared) try(ctx context.Context, node, op string, f func(ctx context.Context) error) {
	timeout := s.budget(ctx)
	telling := timeout >= s.timeout/2
	cctx, cancel := context.WithTimeoutCause(ctx, timeout, errTimedOut)
	defer cancel()
	err := f(cctx)
	if err == nil {
		return
	}
	// The client's socket deadline, taken from cctx, may fire a moment
	// before cctx's own timer: past the deadline, it was the cut-off.
	dl, _ := cctx.Deadline()
	cut := context.Cause(cctx) == errTimedOut || !time.Now().Before(dl)
	if cut && telling || !cut && ctx.Err() == nil {
		s.fail(node, op, err)
	}
}

// budget is how long a caller with ctx waits for a Redis round trip: the
// Redis timeout, or half of what remains of its deadline if that is less.
func (s *shared) budget(ctx context.Context) time.Duration {
	timeout := s.timeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d)/2)
	}
	return timeout
}

// isDown reports whether node is being left alone after a failure.
func (s *shared) isDown(node string) bool {
	d := s.down[node]
	return d != nil && s.now() < d.Load()
}

// fail counts a failed operation on node and leaves the node alone for a
// while, so that a node that is down or hung costs one timeout per retry
// period rather than one per request.
func (s *shared) fail(node, op string, err error) {
	s.obs.ObserveCacheError(TierRedis, op)
	d := s.down[node]
	if d == nil {
		return
	}
	now := s.now()
	if prev := d.Swap(now + s.retry); prev <= now {
		s.log.Warn("redis cache: node failed; reads go to storage", "node", node, "op", op, "err", err, "retry_in", time.Duration(s.retry))
	}
}

// lookup asks Redis for ps: per node, one round trip of its own or a
// share of one combined with other callers' (coalesce.go), all nodes in
// parallel. hit is called for each answer; the rest are returned.
func (s *shared) lookup(ctx context.Context, ps []pending, hit func(pending, *entry)) []pending {
	batches := s.group(len(ps), func(i int) string { return ps[i].k.row })
	answers := make([]*entry, len(ps))
	ask := func(b *batch) {
		keys := make([]key, len(b.idx))
		for j, i := range b.idx {
			keys[j] = ps[i].k
		}
		for j, a := range s.lookups[b.node].lookup(ctx, keys) {
			answers[b.idx[j]] = a
		}
	}
	if len(batches) == 1 {
		ask(batches[0])
	} else {
		var wg sync.WaitGroup
		for _, b := range batches {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ask(b)
			}()
		}
		wg.Wait()
	}
	var rest []pending
	for i, a := range answers {
		switch {
		case a == nil:
			rest = append(rest, ps[i])
		case ps[i].floors != nil && !a.satisfies(ps[i].floors):
			// Older than a write this process knows of.
			rest = append(rest, ps[i])
		default:
			hit(ps[i], a)
		}
	}
	s.obs.ObserveCache(TierRedis, len(ps)-len(rest), len(rest))
	return rest
}

// get reads keys from one node in one pipelined round trip (an MGET of
// the cells by full key and an EVALSHA_RO of latestGet for the latest
// cells) into answers (nil where Redis has no answer). Read-only, the
// script is answered while the node holds writes back (CLIENT PAUSE WRITE,
// as a failover does), which holds back every EVALSHA.
func (s *shared) get(ctx context.Context, client *goredis.Client, keys []key, answers []*entry) error {
	var cells, latest []int
	var cellKeys, latestKeys []string
	for i, k := range keys {
		if k.kind == kindCell {
			cells, cellKeys = append(cells, i), append(cellKeys, s.redisKey(k))
		} else {
			latest, latestKeys = append(latest, i), append(latestKeys, s.redisKey(k))
		}
	}
	var mget *goredis.SliceCmd
	var lget *goredis.Cmd
	sent := s.now()
	ro := !s.noRO.Load()
	_, err := client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		if len(cellKeys) > 0 {
			mget = p.MGet(ctx, cellKeys...)
		}
		if len(latestKeys) > 0 {
			if ro {
				lget = latestGet.EvalShaRO(ctx, p, latestKeys)
			} else {
				lget = latestGet.EvalSha(ctx, p, latestKeys)
			}
		}
		return nil
	})
	mgetOK := mget == nil || mget.Err() == nil
	if lget != nil && ro && goredis.HasErrorPrefix(lget.Err(), "unknown command") && mgetOK {
		// A server before Redis 7.0 has no EVALSHA_RO: the lookups of
		// this cache send EVALSHA from now on (and wait out a CLIENT
		// PAUSE WRITE there).
		s.noRO.Store(true)
		ro = false
		lget = latestGet.EvalSha(ctx, client, latestKeys)
		err = lget.Err()
	}
	if lget != nil && noScript(lget.Err()) && mgetOK {
		// The node has lost its scripts (a restart, SCRIPT FLUSH, a
		// replica promoted): EVAL sends the text, which also loads it
		// for the next EVALSHA. Inside a pipeline go-redis cannot fall
		// back by itself (Script.Run needs the reply before it decides).
		if ro {
			lget = latestGet.EvalRO(ctx, client, latestKeys)
		} else {
			lget = latestGet.Eval(ctx, client, latestKeys)
		}
		err = lget.Err()
	}
	if err != nil {
		return err
	}
	if mget != nil {
		for j, v := range mget.Val() {
			if str, ok := v.(string); ok {
				answers[cells[j]] = s.decode(keys[cells[j]], str, 0)
			}
		}
	}
	if lget != nil {
		vals, err := lget.Slice()
		if err != nil || len(vals) != 2*len(latest) {
			return fmt.Errorf("latest lookup returned %d values for %d keys: %v", len(vals), len(latest), err)
		}
		for j, i := range latest {
			str, ok := vals[2*j].(string)
			ms, _ := vals[2*j+1].(int64)
			if !ok || ms <= 0 {
				continue
			}
			// The answer keeps its age: it expires here when it does in
			// Redis, or sooner if it would outlive this process's bound.
			// Its remaining TTL is counted from sent, before Redis read
			// it, so the answer never outlives the entry.
			left := ms * int64(time.Millisecond)
			if b, rest, ok := cutBound(str); ok {
				if age := b - left; age >= s.bound {
					continue
				} else {
					left = min(left, s.bound-age)
				}
				str = rest
			} else if left > s.bound {
				// Without a bound (from a version before bounds) and
				// outliving this one's: of unknown age.
				continue
			}
			answers[i] = s.decode(keys[i], str, sent+left)
		}
	}
	return nil
}

// noScript reports whether err is Redis's NOSCRIPT: the script's SHA-1 is
// not in the node's script cache. go-redis hands it over as is from a
// pipeline, and as goredis.ErrNoScript from a single command.
func noScript(err error) bool {
	return err != nil && (errors.Is(err, goredis.ErrNoScript) || goredis.HasErrorPrefix(err, "NOSCRIPT"))
}

// cutBound splits a latest entry's value into its filler's bound (in
// nanoseconds) and the cell's JSON; ok is false for a value without one.
func cutBound(v string) (bound int64, rest string, ok bool) {
	b, rest, ok := strings.Cut(v, "|")
	if !ok || b == "" || len(b) > 19 || strings.Trim(b, "0123456789") != "" {
		return 0, v, false
	}
	ms, err := strconv.ParseInt(b, 10, 64)
	if err != nil {
		return 0, v, false
	}
	// A bound beyond what nanoseconds hold (about 292 years) is as long.
	return int64(min(time.Duration(ms), math.MaxInt64/time.Millisecond) * time.Millisecond), rest, true
}

// decode returns the answer stored in Redis under k, or nil (counting an
// error) if the value is not one.
func (s *shared) decode(k key, v string, expires int64) *entry {
	c, err := decodeCell(k, v)
	if err != nil {
		s.obs.ObserveCacheError(TierRedis, "decode")
		return nil
	}
	return &entry{cells: []cellar.Cell{c}, expires: expires}
}

// fill stores cells read from storage: cells by full key for RedisCellTTL,
// latest cells until expires (Unix nanoseconds), unless Redis has newer.
func (s *shared) fill(ctx context.Context, fs []fill, expires int64) {
	ttl := time.Duration(expires - s.now())
	if ttl < time.Millisecond {
		// Too old to store a latest cell; cells by full key are still fine.
		var cells []fill
		for _, f := range fs {
			if f.k.kind == kindCell {
				cells = append(cells, f)
			}
		}
		fs = cells
	}
	batches := s.group(len(fs), func(i int) string { return fs[i].k.row })
	s.each(ctx, "fill", batches, func(ctx context.Context, b *batch) error {
		cmds, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, i := range b.idx {
				v, err := encodeCell(fs[i].cell)
				if err != nil {
					return err
				}
				if fs[i].k.kind == kindCell {
					p.Set(ctx, s.redisKey(fs[i].k), v, s.cellTTL)
				} else {
					b := time.Duration(s.bound).Milliseconds()
					v = append(strconv.AppendInt(nil, b, 10), append([]byte{'|'}, v...)...)
					p.Eval(ctx, latestFillScript, []string{s.redisKey(fs[i].k)}, fs[i].cell.RefKey, v, ttl.Milliseconds(), b)
				}
			}
			return nil
		})
		return firstErr(cmds, err)
	})
}

// push replaces Redis's latest cells with the cells just created where
// Redis has older ones, and announces the cells to every process.
func (s *shared) push(ctx context.Context, created []cellar.Cell) {
	batches := s.group(len(created), func(i int) string { return created[i].RowKey })
	s.each(ctx, "push", batches, func(ctx context.Context, b *batch) error {
		news := make([]cellar.Cell, 0, len(b.idx))
		cmds, err := b.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, i := range b.idx {
				c := created[i]
				v, err := encodeCell(c)
				if err != nil {
					return err
				}
				p.Eval(ctx, latestPushScript, []string{s.latestKey(s.r.Shard(c.RowKey), c.RowKey, c.Column)}, c.RefKey, v)
				news = append(news, c)
			}
			p.Publish(ctx, s.channel, formatWritten(news))
			return nil
		})
		return firstErr(cmds, err)
	})
}

// firstErr is the pipeline's error or that of its first failed command.
func firstErr(cmds []goredis.Cmder, err error) error {
	if err != nil {
		return err
	}
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return err
		}
	}
	return nil
}
