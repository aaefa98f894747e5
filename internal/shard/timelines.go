package shard

import (
	"context"

	"github.com/cellar-db/cellar"
)

var _ cellar.TimelineStore = (*Store)(nil)

// timelineNode returns the node that holds timeline key, by the key's
// shard, as a TimelineStore.
func (s *Store) timelineNode(key string) (*Node, cellar.TimelineStore, error) {
	if err := cellar.ValidateKey("timeline key", key); err != nil {
		return nil, nil, err
	}
	_, n := s.route(key)
	ts, ok := n.Store.(cellar.TimelineStore)
	if !ok {
		return nil, nil, cellar.Internal(nil, "node %s does not store timelines", n.Name)
	}
	return n, ts, nil
}

// TimelineAdd implements cellar.TimelineStore on the node of key's shard.
func (s *Store) TimelineAdd(ctx context.Context, key, member string, score float64) error {
	n, ts, err := s.timelineNode(key)
	if err != nil {
		return err
	}
	return s.call(ctx, n, "timeline_add", func(ctx context.Context) error {
		return ts.TimelineAdd(ctx, key, member, score)
	})
}

// TimelineRemove implements cellar.TimelineStore on the node of key's
// shard.
func (s *Store) TimelineRemove(ctx context.Context, key, member string) (removed bool, err error) {
	n, ts, err := s.timelineNode(key)
	if err != nil {
		return false, err
	}
	err = s.call(ctx, n, "timeline_remove", func(ctx context.Context) error {
		var err error
		removed, err = ts.TimelineRemove(ctx, key, member)
		return err
	})
	return removed, err
}

// TimelineRange implements cellar.TimelineStore on the node of key's
// shard.
func (s *Store) TimelineRange(ctx context.Context, key string, offset, limit int, desc bool) (items []cellar.TimelineItem, count int64, err error) {
	n, ts, err := s.timelineNode(key)
	if err != nil {
		return []cellar.TimelineItem{}, 0, err
	}
	err = s.call(ctx, n, "timeline_range", func(ctx context.Context) error {
		var err error
		items, count, err = ts.TimelineRange(ctx, key, offset, limit, desc)
		return err
	})
	if items == nil {
		items = []cellar.TimelineItem{}
	}
	return items, count, err
}

// TimelineCount implements cellar.TimelineStore on the node of key's
// shard.
func (s *Store) TimelineCount(ctx context.Context, key string) (count int64, err error) {
	n, ts, err := s.timelineNode(key)
	if err != nil {
		return 0, err
	}
	err = s.call(ctx, n, "timeline_count", func(ctx context.Context) error {
		var err error
		count, err = ts.TimelineCount(ctx, key)
		return err
	})
	return count, err
}

// SetTimelineCap implements cellar.TimelineStore on the node of key's
// shard.
func (s *Store) SetTimelineCap(ctx context.Context, key string, cap int) error {
	n, ts, err := s.timelineNode(key)
	if err != nil {
		return err
	}
	return s.call(ctx, n, "timeline_cap", func(ctx context.Context) error {
		return ts.SetTimelineCap(ctx, key, cap)
	})
}
