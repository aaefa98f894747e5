package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

const (
	// coalesceLimit is how many lookup round trips a Redis node has in
	// flight before further lookups to it queue and are sent together.
	coalesceLimit = 4
	// maxCoalesced bounds the keys of one combined round trip. A lookup
	// with more (a large BatchGet) is still sent whole, alone.
	maxCoalesced = 128
)

// A coalescer combines concurrent lookups on one Redis node into one
// pipelined round trip, as internal/sqlstore's coalescer does for SQL point
// reads. A lookup that finds fewer than limit round trips in flight to the
// node sends its own at once, so a lone lookup costs what it did; one that
// finds limit in flight queues, and the next round trip to finish sends the
// whole queue (up to max keys, each distinct key once) as one pipeline: an
// MGET and one EVALSHA. Under load that turns tens of round trips, with the
// syscalls and wake-ups of each on both sides, into one.
//
// Every queued lookup arrived before the round trip that answers it was
// sent, so it sees every write Redis held when it arrived, as a round trip
// of its own would have. What is judged per caller stays with the caller:
// lookup applies each caller's freshness floors to its own keys and counts
// its own hits and misses, and a latest entry's age is counted from when
// the round trip that read it was sent.
//
// A combined round trip serves callers with different deadlines, so it is
// nobody's:
//   - A queued caller waits at most what a round trip of its own would get
//     (shared.budget: RedisTimeout, or half of what remains of its
//     deadline), queue and round trip together, and then leaves: its keys
//     are misses, read from storage. It never waits past its deadline.
//   - The combined round trip runs under RedisTimeout alone, outside every
//     caller's context: a caller leaving does not cut it short for the
//     others, and it ends even if all have left. Only close cancels it.
//   - Its cut-off is therefore a full RedisTimeout, which fails the node
//     as any cut-off of at least half of it does; so does any other error,
//     which no caller's giving up can have caused. A caller short of time
//     never fails a node (it only leaves), and a node that does not answer
//     within RedisTimeout fails while lookups wait on it.
//   - Lookups still queued when their node has failed are answered as
//     misses at once, without a round trip.
//
// Written here rather than taken from a library for sqlstore's reason: the
// "dataloader" packages batch on a timer, which adds latency to every
// lookup instead of only to those that would otherwise wait for Redis.
type coalescer struct {
	s      *shared
	node   string
	client *goredis.Client
	limit  int // round trips in flight before lookups queue
	max    int // keys of a combined round trip

	mu       sync.Mutex // protects inFlight and queue
	inFlight int        // round trips running, alone or combined
	queue    []*request
}

// A request is a queued lookup of keys on the coalescer's node.
type request struct {
	ctx  context.Context
	keys []key
	left atomic.Bool   // the caller has stopped waiting
	done chan struct{} // closed once answers is set
	// answers holds one answer per key (nil for none), shared with the
	// other callers that asked for the same key: entries are not modified
	// once made.
	answers []*entry
}

func newCoalescer(s *shared, node string, client *goredis.Client) *coalescer {
	return &coalescer{s: s, node: node, client: client, limit: coalesceLimit, max: maxCoalesced}
}

// lookup returns the node's answers to keys, one per key (nil for none),
// from a round trip of its own when one may start and otherwise from the
// next combined one; nil if it got none in time.
func (c *coalescer) lookup(ctx context.Context, keys []key) []*entry {
	c.mu.Lock()
	if c.inFlight < c.limit {
		c.inFlight++
		c.mu.Unlock()
		answers := make([]*entry, len(keys))
		c.s.try(ctx, c.node, "get", func(ctx context.Context) error {
			return c.s.get(ctx, c.client, keys, answers)
		})
		c.finish()
		return answers
	}
	wait := c.s.budget(ctx)
	if wait <= 0 {
		c.mu.Unlock()
		return nil
	}
	r := &request{ctx: ctx, keys: keys, done: make(chan struct{})}
	c.queue = append(c.queue, r)
	c.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-r.done:
		return r.answers
	case <-t.C:
	case <-ctx.Done():
	}
	// Not waiting any longer: the round trip, if sent, goes on for the
	// others, and take drops the request if it is not.
	r.left.Store(true)
	return nil
}

// finish releases a round trip's slot, or hands it to the queued lookups.
func (c *coalescer) finish() {
	c.mu.Lock()
	batch := c.take()
	if batch == nil {
		c.inFlight--
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	// Owned by shared: close cancels its round trip and waits for it, or,
	// closed, lets none start.
	c.s.tripMu.Lock()
	if c.s.closed {
		c.s.tripMu.Unlock()
		c.drain(batch, miss) // no round trip on a closed tier
		return
	}
	c.s.trips.Add(1)
	c.s.tripMu.Unlock()
	go func() {
		defer c.s.trips.Done()
		c.drain(batch, c.answer)
	}()
}

// miss answers every key of batch as a miss, without a round trip.
func miss(batch []*request) {
	for _, r := range batch {
		r.answers = make([]*entry, len(r.keys))
		close(r.done)
	}
}

// drain answers batch with answer, and then whatever queued meanwhile, on
// the slot it was handed, and releases the slot.
func (c *coalescer) drain(batch []*request, answer func([]*request)) {
	for batch != nil {
		answer(batch)
		c.mu.Lock()
		batch = c.take()
		if batch == nil {
			c.inFlight--
		}
		c.mu.Unlock()
	}
}

// take removes from the queue the requests of the next combined round
// trip, up to c.max keys (at least one request), dropping those whose
// callers have left. It returns nil when none remain. c.mu must be held.
func (c *coalescer) take() []*request {
	var batch []*request
	n, keys := 0, 0
	for ; n < len(c.queue); n++ {
		r := c.queue[n]
		if r.left.Load() || r.ctx.Err() != nil {
			continue
		}
		if len(batch) > 0 && keys+len(r.keys) > c.max {
			break
		}
		batch = append(batch, r)
		keys += len(r.keys)
	}
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil
	}
	return batch
}

// answer reads the keys of batch in one round trip and wakes its callers.
func (c *coalescer) answer(batch []*request) {
	var keys []key
	at := make(map[key]int)
	for _, r := range batch {
		for _, k := range r.keys {
			if _, ok := at[k]; !ok {
				at[k] = len(keys)
				keys = append(keys, k)
			}
		}
	}
	answers := make([]*entry, len(keys))
	if !c.s.isDown(c.node) {
		ctx, cancel := context.WithTimeoutCause(c.s.life, c.s.timeout, errTimedOut)
		err := c.s.get(ctx, c.client, keys, answers)
		cancel()
		if err != nil && c.s.life.Err() == nil {
			c.s.fail(c.node, "get", err)
		}
	}
	for _, r := range batch {
		r.answers = make([]*entry, len(r.keys))
		for j, k := range r.keys {
			r.answers[j] = answers[at[k]]
		}
		close(r.done)
	}
}
