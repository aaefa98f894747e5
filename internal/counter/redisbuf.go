package counter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/redis"
)

// RedisBuffer is the counter buffer shared by several cellar processes: an
// increment is run by an atomic script on the Redis node that holds the
// key's logical shard (increments waiting together share one run), adding
// to that shard's delta hash, and is acknowledged once Redis has run it.
// Every process flushes every node on the interval, each storage node's
// counters there apart (a pair: see scripts.go), so that a storage node
// that is down holds back only its own; a flush atomically renames the
// pair's delta hashes to a per-flush hash recorded under a flush ID,
// applies them to the storage node with that ID, and deletes them. A flush left behind by a dead process is finished by any
// other once its lease runs out, with the same ID, so it is applied once.
//
// What is acknowledged is as durable as Redis keeps it: on a server
// without persistence, a Redis crash loses the deltas it buffered (see
// docs/COUNTERS.md).
type RedisBuffer struct {
	cluster *redis.Cluster
	node    cellar.CounterNode
	placer  cellar.CounterPlacer // node, if it names the storage node of a key; else nil
	opts    Options
	log     *slog.Logger
	owner   string // this process, in flush records
	keys    keyspace
	stats   stats

	batchers map[string]*batcher // by node; fixed after OpenRedis

	closeMu sync.RWMutex // protects closed, and orders incrs.Add before incrs.Wait
	closed  bool
	incrs   sync.WaitGroup // increments in progress

	ctx    context.Context // cancelled by Close, after the last increment
	cancel context.CancelFunc
	wg     sync.WaitGroup // the flusher and the batchers

	flushMu sync.Mutex // serializes flush rounds, and protects stuck
	// stuck holds, by Redis node and storage node (pairKey), this
	// process's flush whose apply or finish failed. While it is stuck no
	// new flush of that pair starts: the storage node's increments keep
	// adding up in their delta hashes meanwhile, while the other storage
	// nodes' counters on the Redis node are flushed.
	stuck map[pairKey]string
}

// pairKey names the counters of storage node storage on Redis node redis.
type pairKey struct{ redis, storage string }

var _ cellar.CounterStore = (*RedisBuffer)(nil)

// maxLoadTries bounds how often an increment reloads a durable value that
// flushes keep changing under it.
const maxLoadTries = 8

// OpenRedis returns a buffer over cluster in front of node, and starts
// flushing every node of cluster every opts.FlushInterval. The caller
// keeps ownership of cluster (Close does not close it); it must be opened
// with Retries 0, so that an increment is never sent twice.
func OpenRedis(ctx context.Context, cluster *redis.Cluster, node cellar.CounterNode, opts Options) (*RedisBuffer, error) {
	opts.setDefaults()
	if opts.Lease <= opts.FlushTimeout {
		return nil, cellar.Errorf(cellar.EINVALID, "counter flush lease %v must be longer than the flush timeout %v", opts.Lease, opts.FlushTimeout)
	}
	b := &RedisBuffer{
		cluster: cluster,
		node:    node,
		placer:  pairPlacer(node, cluster.Shards()),
		opts:    opts,
		log:     opts.Logger,
		owner:   newFlushID("p-"),
		keys:    newKeyspace(opts.RedisPrefix),
		stuck:   make(map[pairKey]string),
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.batchers = make(map[string]*batcher)
	for name, cl := range cluster.Nodes() {
		bt := &batcher{name: name, cl: cl, queue: make(chan *incrCall, 4*maxBatch)}
		b.batchers[name] = bt
		for i := 0; i < batchWorkers; i++ {
			b.wg.Add(1)
			go b.batchLoop(bt)
		}
	}
	tick, stop := opts.Clock.Tick(opts.FlushInterval)
	b.wg.Add(1)
	go b.flushLoop(tick, stop)
	return b, nil
}

// Increments go to a node in batches: those that arrive while batches are
// in flight are sent together in one run of incrScript, as the journal's
// group commit shares one fsync, and held open like the journal's groups
// (Options.CommitDelay). Each increment in a batch is still checked and
// applied as if alone, in order.
const (
	batchWorkers = 4   // batches in flight per node
	maxBatch     = 256 // increments per batch
)

// batcher sends the increments of one Redis node.
type batcher struct {
	name  string
	cl    *goredis.Client
	queue chan *incrCall
}

// incrCall is one increment waiting for its batch.
type incrCall struct {
	ctx  context.Context
	args [6]any // key, by, shard, loaded value, gen, storage node
	res  []string
	err  error
	done chan struct{}
}

// call sends one increment and returns the script's answer for it. Once
// queued, it waits for the batch's outcome even past ctx, so that the
// answer is the truth (the node's timeouts bound the wait).
func (bt *batcher) call(ctx context.Context, args [6]any) ([]string, error) {
	c := &incrCall{ctx: ctx, args: args, done: make(chan struct{})}
	select {
	case bt.queue <- c:
	case <-ctx.Done():
		return nil, cellar.Unavailable(ctx.Err(), "counter %q: increment not started before the deadline", truncate(args[0].(string), 80))
	}
	<-c.done
	return c.res, c.err
}

// batchLoop runs batches of bt's increments until Close.
func (b *RedisBuffer) batchLoop(bt *batcher) {
	defer b.wg.Done()
	g := gatherer[*incrCall]{queue: bt.queue, max: maxBatch, delay: b.opts.CommitDelay}
	for {
		var first *incrCall
		select {
		case first = <-bt.queue:
		case <-b.ctx.Done():
			return // Close waited for every increment: the queue is empty
		}
		b.runBatch(bt, g.gather(first))
	}
}

// runBatch sends calls in one script run. Calls whose callers gave up
// before it are dropped, and told so: nothing they were not told about is
// sent.
func (b *RedisBuffer) runBatch(bt *batcher, calls []*incrCall) {
	args := make([]any, 3, 3+6*len(calls))
	args[0], args[1], args[2] = genSeed(), string(b.keys), newFlushID("r-")
	live := calls[:0:0]
	for _, c := range calls {
		if err := c.ctx.Err(); err != nil {
			c.err = cellar.Unavailable(err, "counter %q: increment not started before the deadline", truncate(c.args[0].(string), 80))
			close(c.done)
			continue
		}
		live = append(live, c)
		args = append(args, c.args[:]...)
	}
	if len(live) == 0 {
		return
	}
	res, err := incrScript.Run(b.ctx, bt.cl, nil, args...).Slice()
	if err == nil && len(res) != len(live) {
		err = fmt.Errorf("increment script returned %d answers for %d increments", len(res), len(live))
	}
	if err != nil {
		err = nodeError(bt.name, err)
	}
	for i, c := range live {
		if c.err = err; err == nil {
			c.res, c.err = answer(res[i])
			if c.err != nil {
				c.err = cellar.Internal(c.err, "redis node %s", bt.name)
			}
		}
		close(c.done)
	}
}

// answer returns a script's answer for one item: a list of strings.
func answer(v any) ([]string, error) {
	items, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("answer %v is not a list", v)
	}
	out := make([]string, len(items))
	for i, it := range items {
		if out[i], ok = it.(string); !ok {
			return nil, fmt.Errorf("answer %v is not a list of strings", v)
		}
	}
	return out, nil
}

// genSeed is a random starting gen (52 bits, so that Lua, were it ever to
// parse it, would keep it exact).
func genSeed() string { return strconv.FormatUint(rand.Uint64()>>12, 10) }

// Incr implements cellar.CounterStore. The increment is acknowledged once
// the Redis node holding the key's shard ran it; if the node does not
// answer, Incr returns EUNAVAILABLE and the increment may or may not have
// been applied.
func (b *RedisBuffer) Incr(ctx context.Context, key string, by int64) (int64, error) {
	if err := cellar.ValidateRowKey(key); err != nil {
		return 0, err
	}
	b.closeMu.RLock()
	if b.closed {
		b.closeMu.RUnlock()
		return 0, errClosed
	}
	b.incrs.Add(1)
	b.closeMu.RUnlock()
	defer b.incrs.Done()
	s := b.cluster.Shard(key)
	name, _ := b.cluster.Node(s)
	bt := b.batchers[name]
	storage := b.storageNode(key)
	loaded, gen := "", ""
	for try := 0; try < maxLoadTries; try++ {
		res, err := bt.call(ctx, [6]any{key, by, s, loaded, gen, storage})
		if err != nil {
			return 0, err
		}
		switch {
		case len(res) == 2 && res[0] == "ok":
			v, err := strconv.ParseInt(res[1], 10, 64)
			if err != nil {
				return 0, cellar.Internal(err, "counter %q: redis node %s returned %q", truncate(key, 80), name, res[1])
			}
			b.stats.increments.Add(1)
			return v, nil
		case len(res) == 1 && res[0] == "overflow":
			return 0, overflowError(key, by)
		case len(res) == 2 && res[0] == "load":
			vals, err := b.node.Counters(ctx, []string{key})
			if err != nil {
				return 0, fmt.Errorf("read durable counter: %w", err)
			}
			loaded, gen = strconv.FormatInt(vals[key], 10), res[1]
		default:
			return 0, cellar.Internal(nil, "counter %q: redis node %s answered %q", truncate(key, 80), name, res)
		}
	}
	return 0, cellar.Errorf(cellar.EUNAVAILABLE, "counter %q: flushes kept changing it while its durable value was read; retry", truncate(key, 80))
}

// nodeError classifies an error talking to a Redis node. A node that is
// down, hung, loading or read-only, or refusing writes for the time being
// (out of memory, a failed background save: MISCONF, too few replicas:
// NOREPLICAS), is unavailable; an error reply to a well-formed script is a
// bug (internal).
func nodeError(name string, err error) error {
	var rerr goredis.Error
	if errors.As(err, &rerr) && !errors.Is(err, goredis.Nil) {
		msg := err.Error()
		for _, transient := range []string{"LOADING", "READONLY", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "OOM", "MISCONF", "NOREPLICAS"} {
			if strings.HasPrefix(msg, transient) {
				return cellar.Unavailable(err, "redis node %s is unavailable", name)
			}
		}
		// Refusals of the connection's setup: the node is as unusable as
		// one that is down, until its config (password, db) is mended.
		for _, setup := range []string{"NOAUTH", "WRONGPASS", "NOPERM", "ERR DB index", "ERR invalid password", "ERR AUTH"} {
			if strings.HasPrefix(msg, setup) {
				return cellar.Unavailable(err, "redis node %s refuses cellar's connection: check its db and password in the config", name)
			}
		}
		return cellar.Internal(err, "redis node %s", name)
	}
	var nerr net.Error
	if errors.As(err, &nerr) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return cellar.Unavailable(err, "redis node %s is unavailable", name)
	}
	return cellar.Unavailable(err, "redis node %s is unavailable", name)
}

// Counter implements cellar.CounterStore.
func (b *RedisBuffer) Counter(ctx context.Context, key string) (int64, error) {
	r := b.BatchCounters(ctx, []string{key})
	return r[0].Value, r[0].Err
}

// BatchCounters implements cellar.CounterStore. Each Redis node answers
// for its keys in one script, in parallel; keys with nothing buffered are
// then read from the storage node in one call. A Redis node that is down
// fails only its keys.
func (b *RedisBuffer) BatchCounters(ctx context.Context, keys []string) []cellar.CounterResult {
	res := make([]cellar.CounterResult, len(keys))
	type batch struct {
		cl   *goredis.Client
		idx  []int
		args []any
	}
	byNode := make(map[string]*batch)
	for i, err := range validateKeys(keys) {
		res[i].Key = keys[i]
		if err != nil {
			res[i].Err = err
			continue
		}
		s := b.cluster.Shard(keys[i])
		name, cl := b.cluster.Node(s)
		bt := byNode[name]
		if bt == nil {
			bt = &batch{cl: cl, args: []any{string(b.keys)}}
			byNode[name] = bt
		}
		bt.idx = append(bt.idx, i)
		bt.args = append(bt.args, s, keys[i])
	}
	var mu sync.Mutex // protects fromNode
	var fromNode []int
	var wg sync.WaitGroup
	for name, bt := range byNode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vals, err := readScript.RunRO(ctx, bt.cl, nil, bt.args...).StringSlice()
			if err == nil && len(vals) != len(bt.idx) {
				err = fmt.Errorf("read script returned %d values for %d keys", len(vals), len(bt.idx))
			}
			if err != nil {
				err = nodeError(name, err)
				for _, i := range bt.idx {
					res[i].Err = err
				}
				return
			}
			for n, i := range bt.idx {
				switch v := vals[n]; v {
				case "":
					mu.Lock()
					fromNode = append(fromNode, i)
					mu.Unlock()
				case "!":
					res[i].Err = cellar.Errorf(cellar.EINTERNAL, "counter %q is out of range", truncate(keys[i], 80))
				default:
					res[i].Value, res[i].Err = strconv.ParseInt(v, 10, 64)
				}
			}
		}()
	}
	wg.Wait()
	if len(fromNode) > 0 {
		ks := make([]string, len(fromNode))
		for n, i := range fromNode {
			ks[n] = keys[i]
		}
		vals, err := b.node.Counters(ctx, ks)
		nodeResults(res, fromNode, keys, vals, err)
	}
	return res
}

// pairPlacer returns node as the placer of the buffer's pairs: nil (one
// unnamed pair) unless it names the storage nodes of counters, and also
// nil if it places them by a shard count other than the cluster's, where a
// Redis shard's counters, whose deltas are flushed together, may be on
// several storage nodes. (cellar serve gives both the datastore's count.)
func pairPlacer(node cellar.CounterNode, shards int) cellar.CounterPlacer {
	p := placer(node)
	if sp, ok := p.(cellar.CounterShardPlacer); ok && sp.CounterShardCount() != shards {
		return nil
	}
	return p
}

// storageNode names the storage node of key's counter, or "" if the
// node in front of which the buffer runs does not name them.
func (b *RedisBuffer) storageNode(key string) string {
	if b.placer == nil {
		return ""
	}
	return b.placer.CounterNodeName(key)
}

// Flush runs one flush round now (the flusher does so every interval):
// on every node of the cluster, for every storage node with counters
// there, it retries this process's stuck flush, finishes flushes whose
// owner's lease ran out, and flushes the deltas buffered there. Nodes and
// storage nodes are flushed in parallel; the error joins those of the
// pairs that failed, whose flushes are retried next round.
func (b *RedisBuffer) Flush(ctx context.Context) error {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	nodes := b.cluster.Nodes()
	names := make([]string, 0, len(nodes))
	for name := range nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	var mu sync.Mutex // protects errs and b.stuck below
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		b.stats.flushErrors.Add(1)
	}
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := nodes[name]
			storage, err := cl.SMembers(ctx, b.keys.pairs()).Result()
			if err != nil {
				fail(fmt.Errorf("redis node %s: %w", name, nodeError(name, err)))
				return
			}
			storage = append(storage, "") // the pair of keys no storage node named, and of the layout before pairs
			var pwg sync.WaitGroup
			for _, x := range storage {
				pk := pairKey{name, x}
				mu.Lock()
				was := b.stuck[pk]
				mu.Unlock()
				pwg.Add(1)
				go func() {
					defer pwg.Done()
					stuck, err := b.flushPair(ctx, name, cl, x, was)
					mu.Lock()
					if stuck == "" {
						delete(b.stuck, pk)
					} else {
						b.stuck[pk] = stuck
					}
					mu.Unlock()
					if err != nil {
						if x != "" {
							err = fmt.Errorf("storage node %s: %w", x, err)
						}
						fail(fmt.Errorf("redis node %s: %w", name, err))
					}
				}()
			}
			pwg.Wait()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// flushPair runs a flush round on node name's pair of storage node x and
// returns the flush left stuck there, if any.
//
// A flush that failed only for counters now on other storage nodes (their
// shards moved since they were buffered: elsewhereError) does not hold the
// pair back: it stays recorded, and is retried once its lease runs out,
// while the pair's newer deltas are flushed. Counters of a moved shard
// buffered after the move are in their new node's pair.
func (b *RedisBuffer) flushPair(ctx context.Context, name string, cl *goredis.Client, x, stuck string) (string, error) {
	q := b.keys.pair(x)
	var aside []error // of flushes that failed elsewhere
	if stuck != "" {
		if err := b.resume(ctx, name, cl, x, stuck); err != nil {
			if !isElsewhere(err) {
				return stuck, err
			}
			aside = append(aside, err)
		}
	}
	now := b.opts.Clock.Now().UnixMilli()
	expired, err := cl.ZRangeArgs(ctx, goredis.ZRangeArgs{Key: q.flushes(), Start: "-inf", Stop: now, ByScore: true, Count: 100}).Result()
	if err != nil {
		return "", nodeError(name, err)
	}
	for _, id := range expired {
		if err := b.resume(ctx, name, cl, x, id); err != nil {
			if !isElsewhere(err) {
				return id, errors.Join(append(aside, err)...)
			}
			aside = append(aside, err)
		}
	}
	stuck, err = b.begin(ctx, name, cl, x)
	return stuck, errors.Join(append(aside, err)...)
}

// begin starts a flush of the deltas of node name's pair of storage node x
// and runs it, returning it if it is left stuck.
func (b *RedisBuffer) begin(ctx context.Context, name string, cl *goredis.Client, x string) (string, error) {
	deadline := b.opts.Clock.Now().Add(b.opts.Lease).UnixMilli()
	res, err := beginScript.Run(ctx, cl, nil, newFlushID("r-"), deadline, b.owner, string(b.keys), x).StringSlice()
	if err == nil && len(res) == 0 {
		err = fmt.Errorf("begin script returned no flush ID")
	}
	if err != nil {
		// It may have begun nonetheless, under an ID this process did not
		// learn: the flush is then finished once its lease runs out.
		return "", nodeError(name, err)
	}
	id, shards := res[0], res[1:]
	if len(shards) == 0 {
		return "", nil
	}
	if err := b.run(ctx, name, cl, x, id, shards); err != nil {
		if isElsewhere(err) {
			return "", err
		}
		return id, err
	}
	return "", nil
}

// elsewhereError is the error of a flush of storage node x's pair whose
// apply failed only for counters that the node placer now puts on other
// storage nodes.
type elsewhereError struct{ err error }

func (e *elsewhereError) Error() string { return e.err.Error() }
func (e *elsewhereError) Unwrap() error { return e.err }

func isElsewhere(err error) bool {
	var e *elsewhereError
	return errors.As(err, &e)
}

// elsewhere reports whether the failed apply (err) of deltas, a flush of
// storage node x's pair, failed only for counters now on other storage
// nodes: the keys a *cellar.PartialApplyError names, or all of them.
func (b *RedisBuffer) elsewhere(x string, deltas map[string]int64, err error) bool {
	if x == "" || b.placer == nil {
		return false
	}
	unapplied := slices.Collect(maps.Keys(deltas))
	if pe := (*cellar.PartialApplyError)(nil); errors.As(err, &pe) {
		unapplied = pe.Unapplied
	}
	failed := false
	for _, k := range unapplied {
		if _, in := deltas[k]; !in {
			continue
		}
		if b.placer.CounterNodeName(k) == x {
			return false
		}
		failed = true
	}
	return failed
}

// resume claims flush id (renewing this process's lease, or taking over a
// dead owner's) and runs it. A flush that is finished, or held by a live
// owner, is left alone.
func (b *RedisBuffer) resume(ctx context.Context, name string, cl *goredis.Client, x, id string) error {
	q := b.keys.pair(x)
	now := b.opts.Clock.Now()
	shards, err := claimScript.Run(ctx, cl, []string{q.flushes(), b.keys.flushRecord(id)},
		id, now.UnixMilli(), now.Add(b.opts.Lease).UnixMilli(), b.owner).Text()
	if errors.Is(err, goredis.Nil) {
		return nil
	}
	if err != nil {
		return nodeError(name, err)
	}
	return b.run(ctx, name, cl, x, id, strings.Split(shards, ","))
}

// run applies flush id of shards, of storage node x's pair, to the
// storage node and finishes it.
func (b *RedisBuffer) run(ctx context.Context, name string, cl *goredis.Client, x, id string, shards []string) error {
	q := b.keys.pair(x)
	pipe := cl.Pipeline()
	meta := pipe.HGetAll(ctx, b.keys.flushRecord(id))
	parts := make([]*goredis.MapStringStringCmd, len(shards))
	for i, s := range shards {
		parts[i] = pipe.HGetAll(ctx, b.keys.shardFlush(s, id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nodeError(name, err)
	}
	rejected := make(map[string]bool)
	for f := range meta.Val() {
		if k, ok := strings.CutPrefix(f, "rej:"); ok {
			rejected[k] = true
		}
	}
	deltas := make(map[string]int64)
	for _, part := range parts {
		for k, v := range part.Val() {
			if rejected[k] {
				continue
			}
			d, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return cellar.Internal(err, "flush %s holds %q for counter %q", id, v, k)
			}
			deltas[k] = d // a key lives in one shard: no two parts share it
		}
	}
	n, err := applyFlush(ctx, b.node, id, deltas, b.opts.FlushTimeout, func(ctx context.Context, bad, durable map[string]int64) error {
		fields := make([]any, 0, 2*len(bad))
		for k, d := range bad {
			fields = append(fields, "rej:"+k, d)
			b.log.Error("counter delta set aside: it would overflow the counter", "key", k, "delta", d, "durable", durable[k], "flush", id)
		}
		if err := cl.HSet(ctx, b.keys.flushRecord(id), fields...).Err(); err != nil {
			return nodeError(name, err)
		}
		b.stats.rejected.Add(int64(len(bad)))
		return nil
	})
	if err != nil {
		if b.elsewhere(x, deltas, err) {
			return &elsewhereError{err}
		}
		return err
	}
	if err := finishScript.Run(ctx, cl, []string{q.flushes(), b.keys.flushRecord(id), b.keys.rejected()}, id, genSeed(), string(b.keys)).Err(); err != nil {
		return fmt.Errorf("flush %s is applied but not finished: %w", id, nodeError(name, err))
	}
	b.stats.flushed(n)
	return nil
}

// Stats returns the buffer's counts of increments and flushes (this
// process's share).
func (b *RedisBuffer) Stats() Stats { return b.stats.snapshot() }

// Close stops accepting increments, waits for those in progress, stops
// the flusher and the batchers, and makes a last flush round. What that
// round cannot flush stays in Redis, for other processes or the next
// start. It does not close the cluster.
func (b *RedisBuffer) Close() error {
	b.closeMu.Lock()
	if b.closed {
		b.closeMu.Unlock()
		return nil
	}
	b.closed = true
	b.closeMu.Unlock()
	b.incrs.Wait()
	b.cancel()
	b.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.FlushTimeout)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		b.log.Warn("last counter flush failed; the deltas stay in redis", "err", err)
	}
	return nil
}

func (b *RedisBuffer) flushLoop(tick <-chan time.Time, stop func()) {
	defer b.wg.Done()
	defer stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-tick:
			if err := b.Flush(b.ctx); err != nil && b.ctx.Err() == nil {
				b.log.Warn("counter flush failed; retrying at the next interval", "err", err)
			}
			b.opts.signalRound(b.ctx)
		}
	}
}

// BatchIncr implements cellar.CounterStore: each increment is run as Incr
// runs it, the batch's sharing script runs.
func (b *RedisBuffer) BatchIncr(ctx context.Context, incrs []cellar.CounterIncrement) []cellar.CounterResult {
	return batchIncr(ctx, incrs, b.Incr)
}
