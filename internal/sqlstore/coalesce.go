package sqlstore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellar-db/cellar"
)

// DefaultCoalesceReads is how many point-read statements (get, latest) a
// node runs at once before further point reads wait and are read
// together (Options.CoalesceReads).
const DefaultCoalesceReads = 4

// maxCoalesced bounds the keys of one combined read.
const maxCoalesced = 64

// A coalescer combines concurrent point reads of one kind (exact get or
// latest) on one node into the statement BatchGet issues, as group commit
// does for writes. A read that finds fewer than limit statements in flight
// runs its own statement at once, so a lone read costs what it did without
// coalescing; a read that finds limit in flight joins a queue, and the next
// statement to finish hands the whole queue (up to maxCoalesced keys) to
// one UNION ALL of index lookups. Under load that turns tens of round trips
// and statement executions into one.
//
// Every queued read arrived before the statement that answers it was
// sent, so it sees every write committed before it arrived, as its own
// statement would have. A combined read is padded to a power of two keys,
// and exact and latest reads are kept apart, so that a node sees seven
// statement shapes per kind: each connection prepares each shape once.
// (Unpadded, the 64 shapes × the pool's connections kept PostgreSQL
// preparing statements for many seconds and cost more CPU than they
// saved.)
//
// This is written here rather than taken from a library: it is the read
// side of the store's own batching (BatchGetSQL), and the generic
// "dataloader" packages batch on a timer, which would add latency to every
// read instead of only to reads that would otherwise queue for the pool.
type coalescer struct {
	limit int
	// batch reads keys[idx[j]] into res[idx[j]] in one statement
	// (Store.batchGet).
	batch func(ctx context.Context, keys []cellar.LookupKey, idx []int, res []cellar.GetResult)
	// gaveUp is the error of a reader whose context ended while it waited.
	gaveUp func(error) error

	mu       sync.Mutex
	inFlight int // statements running, single or combined
	queue    []*pendingRead

	combined atomic.Int64 // statements that answered more than one read
	reads    atomic.Int64 // reads answered by those statements
}

type pendingRead struct {
	ctx  context.Context
	key  cellar.LookupKey
	done chan struct{}
	res  cellar.GetResult
}

func newCoalescer(s *Store, limit int, op string) *coalescer {
	return &coalescer{
		limit:  limit,
		batch:  s.batchGet,
		gaveUp: func(err error) error { return s.wrap(err, "%s", op) },
	}
}

// read answers key, by single (its own statement) when a statement slot
// is free and otherwise in the next combined statement.
func (c *coalescer) read(ctx context.Context, key cellar.LookupKey, single func(context.Context) (cellar.Cell, error)) (cellar.Cell, error) {
	c.mu.Lock()
	if c.inFlight < c.limit {
		c.inFlight++
		c.mu.Unlock()
		cell, err := single(ctx)
		c.finish()
		return cell, err
	}
	p := &pendingRead{ctx: ctx, key: key, done: make(chan struct{})}
	c.queue = append(c.queue, p)
	c.mu.Unlock()
	select {
	case <-p.done:
		if p.res.Err != nil {
			return cellar.Cell{}, p.res.Err
		}
		return *p.res.Cell, nil
	case <-ctx.Done():
		// The combined statement may still read the key; nobody waits.
		return cellar.Cell{}, c.gaveUp(ctx.Err())
	}
}

// finish releases a statement slot, or hands it to the queued reads.
func (c *coalescer) finish() {
	c.mu.Lock()
	batch := c.take()
	if batch == nil {
		c.inFlight--
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	go c.drain(batch)
}

// drain answers batch and then whatever queued meanwhile, on the slot it
// was handed.
func (c *coalescer) drain(batch []*pendingRead) {
	for batch != nil {
		c.answer(batch)
		c.mu.Lock()
		batch = c.take()
		if batch == nil {
			c.inFlight--
		}
		c.mu.Unlock()
	}
}

// take removes up to maxCoalesced waiting reads from the queue, dropping
// those whose callers have given up. It returns nil when none remain.
// c.mu must be held.
func (c *coalescer) take() []*pendingRead {
	var batch []*pendingRead
	n := 0
	for n < len(c.queue) && len(batch) < maxCoalesced {
		p := c.queue[n]
		n++
		if p.ctx.Err() == nil {
			batch = append(batch, p)
		}
	}
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil
	}
	return batch
}

// answer reads batch in one statement and wakes its readers.
func (c *coalescer) answer(batch []*pendingRead) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	// Padded to a power of two with copies of the last key, so that a
	// node's connections prepare few statement shapes.
	n := 1
	for n < len(batch) {
		n *= 2
	}
	keys := make([]cellar.LookupKey, n)
	idx := make([]int, n)
	for i := range keys {
		keys[i], idx[i] = batch[min(i, len(batch)-1)].key, i
	}
	res := make([]cellar.GetResult, n)
	c.batch(ctx, keys, idx, res)
	if len(batch) > 1 {
		c.combined.Add(1)
		c.reads.Add(int64(len(batch)))
	}
	for i, p := range batch {
		p.res = res[i]
		close(p.done)
	}
}

// batchContext returns a context for a statement answering batch: not
// cancelled by any one reader giving up, and with the latest of their
// deadlines (none if one of them has none).
func batchContext(batch []*pendingRead) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, p := range batch {
		d, ok := p.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.WithoutCancel(batch[0].ctx))
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}

// CoalesceStats reports how many statements answered more than one point
// read, and how many reads they answered, since the node was opened.
func (s *Store) CoalesceStats() (statements, reads int64) {
	for _, c := range []*coalescer{s.getc, s.latestc} {
		if c != nil {
			statements += c.combined.Load()
			reads += c.reads.Load()
		}
	}
	return statements, reads
}
