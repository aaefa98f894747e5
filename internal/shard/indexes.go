package shard

import (
	"context"
	"errors"
	"sync"

	"github.com/cellar-db/cellar"
)

var _ cellar.IndexStore = (*Store)(nil)

// indexNodeOfShard returns the node that holds logical shard sh, as an
// IndexStore: index entries live with the shard of their first field.
func (s *Store) indexNodeOfShard(sh int) (*Node, cellar.IndexStore, error) {
	n, err := s.nodeOfShard(sh)
	if err != nil {
		return nil, nil, err
	}
	return indexNode(n)
}

func indexNode(n *Node) (*Node, cellar.IndexStore, error) {
	is, ok := n.Store.(cellar.IndexStore)
	if !ok {
		return nil, nil, cellar.Internal(nil, "node %s does not store indexes", n.Name)
	}
	return n, is, nil
}

// indexNodeOfRow returns the node of rowKey's shard, which holds the row's
// record of where its entries are.
func (s *Store) indexNodeOfRow(rowKey string) (*Node, cellar.IndexStore, error) {
	if err := cellar.ValidateRowKey(rowKey); err != nil {
		return nil, nil, err
	}
	_, n := s.route(rowKey)
	return indexNode(n)
}

// PutIndexEntry implements cellar.IndexStore on the node of the entry's
// shard.
func (s *Store) PutIndexEntry(ctx context.Context, e cellar.IndexEntry) error {
	n, is, err := s.indexNodeOfShard(e.Loc.Shard)
	if err != nil {
		return err
	}
	return s.call(ctx, n, "index_put", func(ctx context.Context) error { return is.PutIndexEntry(ctx, e) })
}

// DeleteIndexEntry implements cellar.IndexStore on the node of loc's shard.
func (s *Store) DeleteIndexEntry(ctx context.Context, index string, gen int64, loc cellar.IndexLoc, rowKey string) error {
	n, is, err := s.indexNodeOfShard(loc.Shard)
	if err != nil {
		return err
	}
	return s.call(ctx, n, "index_delete", func(ctx context.Context) error {
		return is.DeleteIndexEntry(ctx, index, gen, loc, rowKey)
	})
}

// ScanIndex implements cellar.IndexStore on the node of q's shard.
func (s *Store) ScanIndex(ctx context.Context, q cellar.IndexScan) (entries []cellar.IndexEntry, err error) {
	n, is, err := s.indexNodeOfShard(q.Shard)
	if err != nil {
		return []cellar.IndexEntry{}, err
	}
	err = s.call(ctx, n, "index_scan", func(ctx context.Context) error {
		var err error
		entries, err = is.ScanIndex(ctx, q)
		return err
	})
	if entries == nil {
		entries = []cellar.IndexEntry{}
	}
	return entries, err
}

// IndexRow implements cellar.IndexStore on the node of rowKey's shard.
func (s *Store) IndexRow(ctx context.Context, index string, gen int64, rowKey string) (locs []cellar.IndexLoc, err error) {
	n, is, err := s.indexNodeOfRow(rowKey)
	if err != nil {
		return nil, err
	}
	err = s.call(ctx, n, "index_row", func(ctx context.Context) error {
		var err error
		locs, err = is.IndexRow(ctx, index, gen, rowKey)
		return err
	})
	return locs, err
}

// SetIndexRow implements cellar.IndexStore on the node of rowKey's shard.
func (s *Store) SetIndexRow(ctx context.Context, index string, gen int64, rowKey string, locs []cellar.IndexLoc) error {
	n, is, err := s.indexNodeOfRow(rowKey)
	if err != nil {
		return err
	}
	return s.call(ctx, n, "index_set_row", func(ctx context.Context) error {
		return is.SetIndexRow(ctx, index, gen, rowKey, locs)
	})
}

// DropIndex implements cellar.IndexStore on every node, in parallel. It
// returns the nodes' errors joined; a node that failed keeps its part, and
// calling DropIndex again finishes it.
func (s *Store) DropIndex(ctx context.Context, index string, gen int64) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // protects errs
		errs []error
	)
	for _, n := range s.nodes {
		n, is, err := indexNode(n)
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.call(ctx, n, "index_drop", func(ctx context.Context) error { return is.DropIndex(ctx, index, gen) })
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
