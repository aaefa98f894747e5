package trigger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/shard"
)

// headNode is a storage node that reports its shards' last added_ids
// (*sqlstore.Store).
type headNode interface {
	ShardHeads(ctx context.Context) (map[int]int64, error)
}

// NodeHeads returns a Heads that asks every node, in parallel and each
// under timeout (0: no timeout of its own), for the heads of the shards
// that shardMap assigns to it. A node that fails or hangs only leaves its
// shards out (and the error is returned with the rest).
func NodeHeads(shardMap func() *cellar.ShardMap, nodes []*shard.Node, timeout time.Duration) Heads {
	return func(ctx context.Context) (map[int]int64, error) {
		m := shardMap()
		owner := make(map[int]string, m.ShardCount)
		for _, a := range m.Assignments {
			for i := a.First; i <= a.Last; i++ {
				owner[i] = a.Node
			}
		}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex // protects out and errs
			out  = make(map[int]int64)
			errs []error
		)
		for _, n := range nodes {
			hn, ok := n.Store.(headNode)
			if !ok {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := ctx
				if timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, timeout)
					defer cancel()
				}
				heads, err := hn.ShardHeads(ctx)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
					return
				}
				for s, h := range heads {
					if owner[s] == n.Name {
						out[s] = h
					}
				}
			}()
		}
		wg.Wait()
		return out, errors.Join(errs...)
	}
}
