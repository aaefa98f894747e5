// Package countertest provides an in-memory cellar.CounterNode with the
// contract of the real nodes (flush IDs applied once, overflow refused),
// and hooks to make it fail, for tests of what sits in front of a node.
// Tests of storage itself use real databases.
package countertest

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/cellar-db/cellar"
)

// Fault decides whether a call fails. op is "apply" or "read"; applied is
// true when asked after an apply took effect (the confirmation is then
// lost, as when a connection drops during COMMIT's answer).
type Fault func(op string, applied bool) error

// Node is an in-memory cellar.CounterNode. It is safe for concurrent use.
type Node struct {
	mu         sync.Mutex // protects the fields below
	values     map[string]int64
	flushIDs   map[string]bool
	fault      Fault
	flushes    int
	statements int
	duplicates int
}

var _ cellar.CounterNode = (*Node)(nil)

// New returns an empty node.
func New() *Node {
	return &Node{values: make(map[string]int64), flushIDs: make(map[string]bool)}
}

// SetFault installs f (nil: none).
func (n *Node) SetFault(f Fault) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.fault = f
}

// ApplyCounterDeltas implements cellar.CounterNode.
func (n *Node) ApplyCounterDeltas(ctx context.Context, flushID string, deltas map[string]int64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return cellar.Unavailable(err, "memory node: deadline")
	}
	if n.fault != nil {
		if err := n.fault("apply", false); err != nil {
			return err
		}
	}
	if n.flushIDs[flushID] {
		n.duplicates++
	} else {
		keys := make([]string, 0, len(deltas))
		for k := range deltas {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := cellar.ValidateRowKey(k); err != nil {
				return err
			}
			v, d := n.values[k], deltas[k]
			if s := v + d; (d > 0 && s < v) || (d < 0 && s > v) {
				return &cellar.Error{Code: cellar.EINVALID, Message: fmt.Sprintf("counter %q would overflow", k),
					Err: &cellar.CounterOverflowError{Key: k, Delta: d}}
			}
		}
		for _, k := range keys {
			n.values[k] += deltas[k]
		}
		n.flushIDs[flushID] = true
		n.flushes++
		for _, d := range deltas {
			if d != 0 {
				n.statements++
			}
		}
	}
	if n.fault != nil {
		return n.fault("apply", true)
	}
	return nil
}

// Counters implements cellar.CounterNode.
func (n *Node) Counters(ctx context.Context, keys []string) (map[string]int64, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, cellar.Unavailable(err, "memory node: deadline")
	}
	if n.fault != nil {
		if err := n.fault("read", false); err != nil {
			return nil, err
		}
	}
	out := make(map[string]int64, len(keys))
	for _, k := range keys {
		out[k] = n.values[k]
	}
	return out, nil
}

// Value returns the durable value of key.
func (n *Node) Value(key string) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.values[key]
}

// Set sets the durable value of key, as another writer would.
func (n *Node) Set(key string, v int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.values[key] = v
}

// Applied returns how many flushes the node applied, the statements (keys)
// they held, and how many flushes it skipped as already applied.
func (n *Node) Applied() (flushes, statements, duplicates int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.flushes, n.statements, n.duplicates
}
