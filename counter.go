package cellar

import (
	"context"
	"fmt"
)

// CounterStore is a set of int64 counters addressed by key. Counter keys
// follow the row key rules (ValidateRowKey) and are sharded like row keys,
// by ShardOf.
type CounterStore interface {
	// Incr adds by (which may be negative) to the counter key and returns
	// its new value. Returns EINVALID for a bad key, or if the counter would
	// overflow int64 (then nothing is added).
	Incr(ctx context.Context, key string, by int64) (int64, error)

	// Counter returns the value of key; 0 for a counter never incremented.
	Counter(ctx context.Context, key string) (int64, error)

	// BatchCounters returns the value of each key, in order.
	BatchCounters(ctx context.Context, keys []string) []CounterResult

	// BatchIncr adds each increment as Incr does and returns one result
	// per increment, in order: the counter's value after it, or its
	// error. Increments of one key are added in the order given; results
	// are independent (one's failure does not fail or undo the others).
	BatchIncr(ctx context.Context, incrs []CounterIncrement) []CounterResult
}

// CounterIncrement is one increment of BatchIncr.
type CounterIncrement struct {
	Key string
	By  int64
}

// CounterResult is one result of BatchCounters or BatchIncr.
type CounterResult struct {
	Key   string
	Value int64
	Err   error
}

// CounterNode stores counter values durably: each storage node, and the
// sharding layer over them. Buffers in front of it (internal/counter) turn
// many increments into one delta per key per flush.
type CounterNode interface {
	// ApplyCounterDeltas adds each delta to its counter, with one statement
	// per key, in one transaction per node, and records flushID there in
	// the same transaction: applying a flushID that a node has already
	// applied changes nothing on that node, so a retried flush is never
	// applied twice. If any counter on a node would overflow int64, nothing
	// is applied on that node and the error (EINVALID) names the key and
	// wraps a *CounterOverflowError (one per refusing node, when several
	// nodes' errors are combined).
	ApplyCounterDeltas(ctx context.Context, flushID string, deltas map[string]int64) error

	// Counters returns the durable values of keys; 0 for absent keys.
	Counters(ctx context.Context, keys []string) (map[string]int64, error)
}

// PartialApplyError is the error of ApplyCounterDeltas on a CounterNode
// over several storage nodes (the sharding layer) when some of them
// applied their part of the flush and others failed. Every key of the
// flush that is not in Unapplied was applied, and the flush ID recorded
// on its node; the keys in Unapplied, those of the failed nodes (Nodes),
// may or may not have been. Err is the combined error of the failed nodes.
type PartialApplyError struct {
	Unapplied []string
	Nodes     []string
	Err       error
}

func (e *PartialApplyError) Error() string { return e.Err.Error() }
func (e *PartialApplyError) Unwrap() error { return e.Err }

// CounterPlacer is implemented by a CounterNode over several storage
// nodes: CounterNodeName names the storage node that holds counter key
// (as PartialApplyError.Nodes names them).
type CounterPlacer interface {
	CounterNodeName(key string) string
}

// CounterShardPlacer is a CounterPlacer that places counters by logical
// shard (ShardOf over CounterShardCount shards): all the counters of a
// shard are on one storage node.
type CounterShardPlacer interface {
	CounterPlacer
	CounterShardCount() int
}

// CounterOverflowError is the cause of a flush a node refused because
// adding Delta to counter Key would overflow int64. It tells the buffers
// which key to set aside: the other nodes of the flush may have applied
// their part, so the durable values read afterwards cannot tell.
type CounterOverflowError struct {
	Key   string
	Delta int64
}

func (e *CounterOverflowError) Error() string {
	return fmt.Sprintf("counter %q would overflow int64 adding %d", e.Key, e.Delta)
}

// CounterOverflows returns the keys of every *CounterOverflowError in
// err's tree.
func CounterOverflows(err error) []string {
	var keys []string
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *CounterOverflowError:
			keys = append(keys, e.Key)
		case interface{ Unwrap() []error }:
			for _, c := range e.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return keys
}
