package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/cellar-db/cellar"
)

var _ cellar.CounterNode = (*Store)(nil)

// ApplyCounterDeltas implements cellar.CounterNode. The deltas are split by
// the node of each key's shard, and every node applies its part under the
// same flushID, all nodes in parallel. Each node records the flush, so when
// some nodes fail, retrying the whole flush with the same flushID applies
// it only on the nodes that had not.
//
// All keys are checked before any node is called: a bad key applies
// nothing anywhere. An overflow applies nothing on its node but does not
// stop the other nodes. The error of a flush that failed on several nodes
// names each node's failure; its code is invalid_argument if any node
// refused the flush (retrying cannot help), else unavailable if any node
// was unavailable, else internal; errors.Is matches every node's error.
// When some nodes applied their part and others failed, the error is a
// *cellar.PartialApplyError naming the keys not applied.
func (s *Store) ApplyCounterDeltas(ctx context.Context, flushID string, deltas map[string]int64) error {
	parts := make(map[*Node]map[string]int64)
	for k, d := range deltas {
		if err := cellar.ValidateKey("counter key", k); err != nil {
			return err
		}
		_, n := s.route(k)
		if parts[n] == nil {
			parts[n] = make(map[string]int64)
		}
		parts[n][k] = d
	}
	errs := eachNodeErrs(ctx, s, "apply_counter_deltas", parts, func(ctx context.Context, cn cellar.CounterNode, part map[string]int64) error {
		return cn.ApplyCounterDeltas(ctx, flushID, part)
	})
	err := joinNodeErrors("apply_counter_deltas", errs)
	if err == nil || len(errs) == len(parts) {
		return err
	}
	// Some nodes applied their part: say which keys they did not, so that
	// a buffer can let the applied part go.
	pe := &cellar.PartialApplyError{Err: err}
	for n, part := range parts {
		if _, failed := errs[n.Name]; failed {
			pe.Nodes = append(pe.Nodes, n.Name)
			for k := range part {
				pe.Unapplied = append(pe.Unapplied, k)
			}
		}
	}
	slices.Sort(pe.Nodes)
	slices.Sort(pe.Unapplied)
	return pe
}

var _ cellar.CounterShardPlacer = (*Store)(nil)

// CounterShardCount implements cellar.CounterShardPlacer.
func (s *Store) CounterShardCount() int { return s.Map().ShardCount }

// CounterNodeName implements cellar.CounterPlacer: the node of key's shard
// under the current map.
func (s *Store) CounterNodeName(key string) string {
	_, n := s.route(key)
	return n.Name
}

// Counters implements cellar.CounterNode, reading each node's keys with
// one call, all nodes in parallel. The map holds every key of the nodes
// that answered (0 for a counter never incremented). If some nodes fail,
// the error is combined as ApplyCounterDeltas combines it, and the keys of
// the failed nodes are missing from the map: a key is in it exactly when
// its value is known.
func (s *Store) Counters(ctx context.Context, keys []string) (map[string]int64, error) {
	parts := make(map[*Node][]string)
	for _, k := range keys {
		if err := cellar.ValidateKey("counter key", k); err != nil {
			return nil, err
		}
		_, n := s.route(k)
		parts[n] = append(parts[n], k)
	}
	out := make(map[string]int64, len(keys))
	var mu sync.Mutex // protects out
	err := eachNode(ctx, s, "counters", parts, func(ctx context.Context, cn cellar.CounterNode, part []string) error {
		vals, err := cn.Counters(ctx, part)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, k := range part {
			out[k] = vals[k]
		}
		return nil
	})
	return out, err
}

// eachNode calls f for each node's part, all nodes in parallel, each
// call under the node deadline, and combines the errors.
func eachNode[P any](ctx context.Context, s *Store, op string, parts map[*Node]P, f func(ctx context.Context, cn cellar.CounterNode, part P) error) error {
	return joinNodeErrors(op, eachNodeErrs(ctx, s, op, parts, f))
}

// eachNodeErrs is eachNode with the errors by node name, not combined.
func eachNodeErrs[P any](ctx context.Context, s *Store, op string, parts map[*Node]P, f func(ctx context.Context, cn cellar.CounterNode, part P) error) map[string]error {
	var mu sync.Mutex // protects errs
	errs := make(map[string]error)
	var wg sync.WaitGroup
	for n, part := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.call(ctx, n, op, func(ctx context.Context) error {
				cn, ok := n.Store.(cellar.CounterNode)
				if !ok {
					return cellar.Internal(nil, "node %s does not store counters", n.Name)
				}
				return f(ctx, cn, part)
			})
			if err != nil {
				mu.Lock()
				errs[n.Name] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// joinNodeErrors combines the errors of one operation on several nodes,
// keyed by node name, into one *cellar.Error (see ApplyCounterDeltas).
func joinNodeErrors(op string, errs map[string]error) error {
	if len(errs) == 0 {
		return nil
	}
	names := make([]string, 0, len(errs))
	codes := make(map[string]bool)
	for name, err := range errs {
		names = append(names, name)
		codes[cellar.ErrorCode(err)] = true
	}
	if len(errs) == 1 {
		return errs[names[0]]
	}
	slices.Sort(names)
	msgs := make([]string, len(names))
	causes := make([]error, len(names))
	for i, name := range names {
		msgs[i] = fmt.Sprintf("node %s: %s", name, cellar.ErrorMessage(errs[name]))
		causes[i] = errs[name]
	}
	code := cellar.EINTERNAL
	switch {
	case len(codes) == 1:
		code = cellar.ErrorCode(causes[0])
	case codes[cellar.EINVALID]:
		code = cellar.EINVALID
	case codes[cellar.EUNAVAILABLE]:
		code = cellar.EUNAVAILABLE
	}
	return &cellar.Error{
		Code:    code,
		Message: fmt.Sprintf("%s failed on %d nodes: %s", strings.ReplaceAll(op, "_", " "), len(names), strings.Join(msgs, "; ")),
		Err:     errors.Join(causes...),
	}
}
