// Package shard is the sharding layer: a cellar.Store over many storage
// nodes, routing each row key to the node that holds its logical shard
// under the current shard map. Like Perkeep's blobserver/shard, it is just
// another implementation of the storage interface.
//
// Each call to a node runs under its own deadline, so a node that is down or
// hanging fails only the requests for its shards, and fails them quickly.
package shard

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cellar-db/cellar"
)

// Node is one storage node as the sharding layer sees it.
type Node struct {
	Name   string
	Driver string // "sqlite", "postgres" or "mysql", for /v1/shards
	Store  cellar.Store
}

// Observer is told about every call to a node, for metrics.
type Observer func(node, op string, d time.Duration, err error)

// Options configure a Store.
type Options struct {
	// NodeTimeout is the deadline for one call to one node (default 2s).
	// It is applied on top of the caller's own deadline.
	NodeTimeout time.Duration
	// Observe, if not nil, is called after every node call.
	Observe Observer
	// Committed, if not nil, is called after every put that created a
	// cell (Put, and each created item of BatchPut), once the cell is
	// committed: the trigger engine's Notify. It runs on the writer's
	// goroutine and must be quick.
	Committed func(shard int, addedID int64, column string)
}

// Store routes cell operations to nodes by the shard map.
type Store struct {
	nodes     map[string]*Node
	timeout   time.Duration
	observe   Observer
	committed func(shard int, addedID int64, column string)

	mu      sync.RWMutex // protects m and byShard
	m       *cellar.ShardMap
	byShard []*Node // shard -> node under m
}

var _ cellar.Store = (*Store)(nil)

// New returns a Store over nodes with shard map m. Every node m names must
// be in nodes. The Store does not own the nodes: Close does not close them.
func New(m *cellar.ShardMap, nodes []*Node, opts Options) (*Store, error) {
	s := &Store{nodes: make(map[string]*Node), timeout: opts.NodeTimeout, observe: opts.Observe, committed: opts.Committed}
	if s.timeout <= 0 {
		s.timeout = 2 * time.Second
	}
	for _, n := range nodes {
		s.nodes[n.Name] = n
	}
	if err := s.SetMap(m); err != nil {
		return nil, err
	}
	return s, nil
}

// SetMap installs a new shard map. It returns EINVALID if the map does not
// cover every shard, names an unknown node, changes the shard count, or is
// older than the current map.
func (s *Store) SetMap(m *cellar.ShardMap) error {
	known := make(map[string]bool, len(s.nodes))
	for name := range s.nodes {
		known[name] = true
	}
	if err := m.Validate(known); err != nil {
		return err
	}
	byShard := make([]*Node, m.ShardCount)
	for _, a := range m.Assignments {
		for i := a.First; i <= a.Last; i++ {
			byShard[i] = s.nodes[a.Node]
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m != nil {
		if m.ShardCount != s.m.ShardCount {
			return cellar.Errorf(cellar.EINVALID, "shard count cannot change from %d to %d", s.m.ShardCount, m.ShardCount)
		}
		if m.Version < s.m.Version {
			return cellar.Errorf(cellar.EINVALID, "shard map version %d is older than the current %d", m.Version, s.m.Version)
		}
	}
	s.m, s.byShard = m, byShard
	return nil
}

// Map returns the current shard map. Callers must not modify it.
func (s *Store) Map() *cellar.ShardMap {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m
}

// Topology describes the current layout, for GET /v1/shards.
func (s *Store) Topology() cellar.Topology {
	m := s.Map()
	t := cellar.Topology{ShardCount: m.ShardCount, Version: m.Version}
	byNode := make(map[string]*cellar.NodeInfo)
	for _, a := range m.Assignments {
		ni := byNode[a.Node]
		if ni == nil {
			ni = &cellar.NodeInfo{Name: a.Node, Driver: s.nodes[a.Node].Driver}
			byNode[a.Node] = ni
		}
		ni.Ranges = append(ni.Ranges, a.ShardRange)
	}
	for _, n := range s.nodes {
		if byNode[n.Name] == nil {
			byNode[n.Name] = &cellar.NodeInfo{Name: n.Name, Driver: n.Driver, Ranges: []cellar.ShardRange{}}
		}
	}
	for _, ni := range byNode {
		sort.Slice(ni.Ranges, func(i, j int) bool { return ni.Ranges[i].First < ni.Ranges[j].First })
		t.Nodes = append(t.Nodes, *ni)
	}
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
	return t
}

// route returns the shard of rowKey and its node.
func (s *Store) route(rowKey string) (int, *Node) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sh := cellar.ShardOf(rowKey, s.m.ShardCount)
	return sh, s.byShard[sh]
}

// nodeOfShard returns the node of logical shard sh under the current map.
// Returns EINVALID for a shard out of range.
func (s *Store) nodeOfShard(sh int) (*Node, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if count := s.m.ShardCount; sh < 0 || sh >= count {
		return nil, cellar.Errorf(cellar.EINVALID, "shard %d is out of range 0..%d", sh, count-1)
	}
	return s.byShard[sh], nil
}

// call runs f against n under the node deadline and reports it.
func (s *Store) call(ctx context.Context, n *Node, op string, f func(ctx context.Context) error) error {
	start := time.Now()
	caller := ctx
	// A caller's deadline that comes first makes a node deadline moot:
	// it could not fire before, so the timer and context it costs are
	// spared.
	if dl, ok := ctx.Deadline(); !ok || dl.Sub(start) > s.timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	err := f(ctx)
	if err != nil && ctx.Err() != nil && cellar.ErrorCode(err) == cellar.EINTERNAL {
		// A driver may report a deadline as something else; the caller
		// should see the node as unavailable, not cellar as broken.
		err = notAnswered(ctx, n, start, err)
	}
	// A call its caller abandoned (a client that hung up) says nothing of
	// the node: it is not counted, lest client churn look like node errors.
	if s.observe != nil && !(err != nil && errors.Is(caller.Err(), context.Canceled)) {
		s.observe(n.Name, op, time.Since(start), err)
	}
	return err
}

// notAnswered is the error of a call to n, begun at start, that failed
// with err once ctx ended: it names the time waited and why it ended (the
// node deadline, the caller's, or the caller's cancel), as the node
// deadline alone may not have run.
func notAnswered(ctx context.Context, n *Node, start time.Time, err error) error {
	return cellar.Unavailable(err, "node %s did not answer in %s (%v)", n.Name, time.Since(start).Round(time.Millisecond), ctx.Err())
}

// Put implements cellar.Store.
func (s *Store) Put(ctx context.Context, c cellar.NewCell) (cell cellar.Cell, created bool, err error) {
	if err := cellar.ValidateRowKey(c.RowKey); err != nil {
		return cell, false, err
	}
	_, n := s.route(c.RowKey)
	err = s.call(ctx, n, "put", func(ctx context.Context) error {
		var err error
		cell, created, err = n.Store.Put(ctx, c)
		return err
	})
	if err == nil && created && s.committed != nil {
		s.committed(cell.Shard, cell.AddedID, cell.Column)
	}
	return cell, created, err
}

// Get implements cellar.Store.
func (s *Store) Get(ctx context.Context, k cellar.Key) (cell cellar.Cell, err error) {
	if err := cellar.ValidateRowKey(k.RowKey); err != nil {
		return cell, err
	}
	_, n := s.route(k.RowKey)
	err = s.call(ctx, n, "get", func(ctx context.Context) error {
		var err error
		cell, err = n.Store.Get(ctx, k)
		return err
	})
	return cell, err
}

// Latest implements cellar.Store.
func (s *Store) Latest(ctx context.Context, rowKey, column string) (cell cellar.Cell, err error) {
	if err := cellar.ValidateRowKey(rowKey); err != nil {
		return cell, err
	}
	_, n := s.route(rowKey)
	err = s.call(ctx, n, "latest", func(ctx context.Context) error {
		var err error
		cell, err = n.Store.Latest(ctx, rowKey, column)
		return err
	})
	return cell, err
}

// Row implements cellar.Store.
func (s *Store) Row(ctx context.Context, rowKey string, columns []string) (cells []cellar.Cell, err error) {
	if err := cellar.ValidateRowKey(rowKey); err != nil {
		return nil, err
	}
	_, n := s.route(rowKey)
	err = s.call(ctx, n, "row", func(ctx context.Context) error {
		var err error
		cells, err = n.Store.Row(ctx, rowKey, columns)
		return err
	})
	return cells, err
}

// Scan implements cellar.Store.
func (s *Store) Scan(ctx context.Context, shard int, after int64, limit int, column string) (res cellar.ScanResult, err error) {
	n, err := s.nodeOfShard(shard)
	if err != nil {
		return cellar.ScanResult{Cells: []cellar.Cell{}, Next: after}, err
	}
	err = s.call(ctx, n, "scan", func(ctx context.Context) error {
		var err error
		res, err = n.Store.Scan(ctx, shard, after, limit, column)
		return err
	})
	return res, err
}

// BatchGet implements cellar.Store: keys are grouped by node and each
// node's keys are fetched with one call, all nodes in parallel.
func (s *Store) BatchGet(ctx context.Context, keys []cellar.LookupKey) []cellar.GetResult {
	// Each node bounds its own part; together they are bounded again, and
	// a cell a node left out that fits the whole answer is asked for again.
	fetch := func(ctx context.Context, keys []cellar.LookupKey) []cellar.GetResult {
		return fanOut(ctx, s, "batch_get", keys,
			func(k cellar.LookupKey) string { return k.RowKey },
			func(err error) cellar.GetResult { return cellar.GetResult{Err: err} },
			func(r cellar.GetResult) error { return r.Err },
			func(ctx context.Context, n *Node, sub []cellar.LookupKey) []cellar.GetResult {
				return n.Store.BatchGet(ctx, sub)
			})
	}
	nodeOf := func(i int) string {
		_, n := s.route(keys[i].RowKey)
		return n.Name
	}
	return cellar.FillBatchGet(ctx, keys, fetch(ctx, keys), nodeOf, fetch)
}

// BatchPut implements cellar.Store, grouping by node like BatchGet.
func (s *Store) BatchPut(ctx context.Context, cells []cellar.NewCell) []cellar.PutResult {
	res := fanOut(ctx, s, "batch_put", cells,
		func(c cellar.NewCell) string { return c.RowKey },
		func(err error) cellar.PutResult { return cellar.PutResult{Err: err} },
		func(r cellar.PutResult) error { return r.Err },
		func(ctx context.Context, n *Node, sub []cellar.NewCell) []cellar.PutResult {
			return n.Store.BatchPut(ctx, sub)
		})
	if s.committed != nil {
		for _, r := range res {
			if r.Err == nil && r.Created {
				s.committed(r.Cell.Shard, r.Cell.AddedID, r.Cell.Column)
			}
		}
	}
	return res
}

// fanOut runs a batch operation: it validates each item's row key, groups
// the items by node, calls each node once with its items (all nodes in
// parallel, each under the node deadline), and puts the results back in
// request order.
func fanOut[I, R any](ctx context.Context, s *Store, op string, items []I,
	rowKey func(I) string, failed func(error) R, errOf func(R) error,
	call func(context.Context, *Node, []I) []R) []R {
	res := make([]R, len(items))
	groups := make(map[*Node][]int)
	for i, it := range items {
		if err := cellar.ValidateRowKey(rowKey(it)); err != nil {
			res[i] = failed(err)
			continue
		}
		_, n := s.route(rowKey(it))
		groups[n] = append(groups[n], i)
	}
	var wg sync.WaitGroup
	for n, idx := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub := make([]I, len(idx))
			for j, i := range idx {
				sub[j] = items[i]
			}
			var out []R
			start := time.Now()
			// Per-item errors (not found, conflict) are not node failures;
			// the call counts as failed only when every item failed alike.
			_ = s.call(ctx, n, op, func(ctx context.Context) error {
				out = call(ctx, n, sub)
				if ctx.Err() != nil {
					// As call does for one error: a deadline the driver
					// reported as something else is the node's.
					for j := range out {
						if err := errOf(out[j]); cellar.ErrorCode(err) == cellar.EINTERNAL {
							out[j] = failed(notAnswered(ctx, n, start, err))
						}
					}
				}
				return commonError(len(out), func(j int) error { return errOf(out[j]) })
			})
			for j, i := range idx {
				res[i] = out[j]
			}
		}()
	}
	wg.Wait()
	return res
}

// commonError returns the error shared by all n results if it is a node
// failure (unavailable or internal), else nil.
func commonError(n int, errAt func(int) error) error {
	if n == 0 {
		return nil
	}
	first := errAt(0)
	code := cellar.ErrorCode(first)
	if code != cellar.EUNAVAILABLE && code != cellar.EINTERNAL {
		return nil
	}
	for j := 1; j < n; j++ {
		if cellar.ErrorCode(errAt(j)) != code {
			return nil
		}
	}
	return first
}

// Close implements cellar.Store. The nodes are owned by the caller.
func (s *Store) Close() error { return nil }

// String describes the store for logs.
func (s *Store) String() string {
	m := s.Map()
	return fmt.Sprintf("%d shards over %d nodes (map version %d)", m.ShardCount, len(s.nodes), m.Version)
}
