package sqlstore

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/cellar-db/cellar"
)

// committer implements group commit: puts that arrive while a transaction
// commits are queued and written together in the next one, so they share
// its fsync. It runs one goroutine, started by Open and stopped by Close.
type committer struct {
	s        *Store
	maxGroup int
	queue    chan *groupReq
	ctx      context.Context // cancelled by stop
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the run goroutine

	mu      sync.RWMutex   // protects closed
	closed  bool           // stop has begun: no new submits
	callers sync.WaitGroup // submits in progress; stop waits for them
}

// groupReq is one caller's cells; done is closed when their results are set.
type groupReq struct {
	ctx   context.Context
	items []*writeItem
	done  chan struct{}
}

func startCommitter(s *Store, maxGroup int) *committer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &committer{s: s, maxGroup: maxGroup, queue: make(chan *groupReq, 4*maxGroup), ctx: ctx, cancel: cancel}
	c.wg.Add(1)
	go c.run()
	return c
}

// stop refuses new submits, lets those in progress finish (the committer
// still runs for them), then stops the committer.
func (c *committer) stop() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.callers.Wait()
	c.cancel()
	c.wg.Wait()
}

// submit queues items and waits for their results, until ctx ends. If
// ctx ends before the items are queued, the results say so and nothing is
// written. If it ends while they wait in the queue or are being written
// (the file locked by another process, a stalled disk), submit returns
// unavailable at once, as every storage call does at its deadline: the
// outcome is then unknown (the cells may be stored; a retry of an equal
// put learns its metadata). The committer works on copies of the items
// owned by the request, so that it never touches the caller's after
// submit returns.
func (c *committer) submit(ctx context.Context, items []*writeItem) {
	fail := func(err error) {
		for _, it := range items {
			*it.res = cellar.PutResult{Err: err}
		}
	}
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		fail(cellar.Errorf(cellar.EUNAVAILABLE, "node %s is closing", c.s.name))
		return
	}
	c.callers.Add(1)
	c.mu.RUnlock()
	defer c.callers.Done()
	cells := make([]cellar.NewCell, len(items))
	results := make([]cellar.PutResult, len(items))
	own := make([]writeItem, len(items))
	ptrs := make([]*writeItem, len(items))
	for i, it := range items {
		cells[i] = *it.cell
		cells[i].Body = bytes.Clone(it.cell.Body) // the caller may reuse its buffer once answered
		own[i] = writeItem{cell: &cells[i], shard: it.shard, res: &results[i]}
		ptrs[i] = &own[i]
	}
	r := &groupReq{ctx: ctx, items: ptrs, done: make(chan struct{})}
	select {
	case c.queue <- r:
	case <-ctx.Done():
		fail(cellar.Unavailable(ctx.Err(), "node %s: put not started before the deadline", c.s.name))
		return
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		select {
		case <-r.done: // finished meanwhile: the outcome is known
		default:
			fail(cellar.Unavailable(ctx.Err(), "node %s: put not finished before the deadline; it may have been stored", c.s.name))
			return
		}
	}
	for i, it := range items {
		*it.res = results[i]
	}
}

func (c *committer) run() {
	defer c.wg.Done()
	for {
		var first *groupReq
		select {
		case first = <-c.queue:
		case <-c.ctx.Done():
			c.drain()
			return
		}
		group := []*groupReq{first}
		n := len(first.items)
	fill:
		for n < c.maxGroup {
			select {
			case r := <-c.queue:
				group = append(group, r)
				n += len(r.items)
			default:
				break fill
			}
		}
		c.commit(group)
	}
}

// commit writes one group in one transaction. Requests whose callers have
// already given up are dropped before the write, so nothing they were not
// told about is written.
func (c *committer) commit(group []*groupReq) {
	var items []*writeItem
	for _, r := range group {
		if err := r.ctx.Err(); err != nil {
			for _, it := range r.items {
				*it.res = cellar.PutResult{Err: cellar.Unavailable(err, "node %s: put not started before the deadline", c.s.name)}
			}
			continue
		}
		items = append(items, r.items...)
	}
	if len(items) > 0 {
		// The group's deadline is independent of any one caller's: a
		// caller leaving must not abort the others' transaction.
		ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		c.s.write(ctx, items)
		cancel()
	}
	for _, r := range group {
		close(r.done)
	}
}

// drain fails the requests still queued at shutdown.
func (c *committer) drain() {
	for {
		select {
		case r := <-c.queue:
			for _, it := range r.items {
				*it.res = cellar.PutResult{Err: cellar.Errorf(cellar.EUNAVAILABLE, "node %s is closing", c.s.name)}
			}
			close(r.done)
		default:
			return
		}
	}
}
