package main

import (
	"context"
	"errors"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// observedMeta is the metadata node as the trigger engine, the index
// manager and the map refresher use it: each call is observed as the
// sharding layer observes the calls to a data node (the storage metrics
// per node and op), so that trigger state, index records and map reloads
// show in /metrics too. Unlike a data node's calls they keep their
// caller's deadline, with none of their own: some (deleting or replaying a
// trigger) move many rows.
type observedMeta struct {
	*sqlstore.Store
	node    string
	observe shard.Observer
}

// observed runs f, one call of op, and observes it, except when its caller
// abandoned it, as the sharding layer does.
func observed[T any](m *observedMeta, ctx context.Context, op string, f func() (T, error)) (T, error) {
	start := time.Now()
	v, err := f()
	if !(err != nil && errors.Is(ctx.Err(), context.Canceled)) {
		m.observe(m.node, op, time.Since(start), err)
	}
	return v, err
}

func observedErr(m *observedMeta, ctx context.Context, op string, f func() error) error {
	_, err := observed(m, ctx, op, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

// pair carries a call's two results through observed.
type pair[A, B any] struct {
	a A
	b B
}

func (m *observedMeta) PutTrigger(ctx context.Context, def sqlstore.TriggerDef, start map[int]int64) (bool, error) {
	return observed(m, ctx, "put_trigger", func() (bool, error) { return m.Store.PutTrigger(ctx, def, start) })
}

func (m *observedMeta) Trigger(ctx context.Context, name string) (sqlstore.TriggerDef, error) {
	return observed(m, ctx, "trigger", func() (sqlstore.TriggerDef, error) { return m.Store.Trigger(ctx, name) })
}

func (m *observedMeta) Triggers(ctx context.Context) ([]sqlstore.TriggerDef, error) {
	return observed(m, ctx, "triggers", func() ([]sqlstore.TriggerDef, error) { return m.Store.Triggers(ctx) })
}

func (m *observedMeta) TriggerShards(ctx context.Context, name string) ([]sqlstore.TriggerShard, error) {
	return observed(m, ctx, "trigger_shards", func() ([]sqlstore.TriggerShard, error) { return m.Store.TriggerShards(ctx, name) })
}

func (m *observedMeta) UpdateTriggerShard(ctx context.Context, name string, shard int, f func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error)) (sqlstore.TriggerShard, error) {
	return observed(m, ctx, "update_trigger_shard", func() (sqlstore.TriggerShard, error) { return m.Store.UpdateTriggerShard(ctx, name, shard, f) })
}

func (m *observedMeta) UpdateTriggerShardFrom(ctx context.Context, name string, shard int, have sqlstore.TriggerShard, f func(ts *sqlstore.TriggerShard) (sqlstore.ShardEffects, error)) (out, seen sqlstore.TriggerShard, err error) {
	p, err := observed(m, ctx, "update_trigger_shard", func() (pair[sqlstore.TriggerShard, sqlstore.TriggerShard], error) {
		out, seen, err := m.Store.UpdateTriggerShardFrom(ctx, name, shard, have, f)
		return pair[sqlstore.TriggerShard, sqlstore.TriggerShard]{out, seen}, err
	})
	return p.a, p.b, err
}

func (m *observedMeta) UpdateTriggerShardHeld(ctx context.Context, name string, shard int, f func(ts *sqlstore.TriggerShard, held []int64) (sqlstore.ShardEffects, error)) (out, seen sqlstore.TriggerShard, err error) {
	p, err := observed(m, ctx, "update_trigger_shard", func() (pair[sqlstore.TriggerShard, sqlstore.TriggerShard], error) {
		out, seen, err := m.Store.UpdateTriggerShardHeld(ctx, name, shard, f)
		return pair[sqlstore.TriggerShard, sqlstore.TriggerShard]{out, seen}, err
	})
	return p.a, p.b, err
}

func (m *observedMeta) ResetTrigger(ctx context.Context, name string) error {
	return observedErr(m, ctx, "reset_trigger", func() error { return m.Store.ResetTrigger(ctx, name) })
}

func (m *observedMeta) DeleteTrigger(ctx context.Context, name string) error {
	return observedErr(m, ctx, "delete_trigger", func() error { return m.Store.DeleteTrigger(ctx, name) })
}

func (m *observedMeta) SeeConsumer(ctx context.Context, name, consumer string, now, liveSince time.Time) (int, error) {
	return observed(m, ctx, "see_consumer", func() (int, error) { return m.Store.SeeConsumer(ctx, name, consumer, now, liveSince) })
}

func (m *observedMeta) LiveConsumers(ctx context.Context, name string, liveSince time.Time) (int, error) {
	return observed(m, ctx, "live_consumers", func() (int, error) { return m.Store.LiveConsumers(ctx, name, liveSince) })
}

func (m *observedMeta) ParkedCells(ctx context.Context, name string, afterShard int, afterAddedID int64, limit int) ([]sqlstore.ParkedCell, error) {
	return observed(m, ctx, "parked_cells", func() ([]sqlstore.ParkedCell, error) {
		return m.Store.ParkedCells(ctx, name, afterShard, afterAddedID, limit)
	})
}

func (m *observedMeta) ParkedCounts(ctx context.Context, name string) (map[int]int, error) {
	return observed(m, ctx, "parked_counts", func() (map[int]int, error) { return m.Store.ParkedCounts(ctx, name) })
}

func (m *observedMeta) ReplayParked(ctx context.Context, name string) (int64, error) {
	return observed(m, ctx, "replay_parked", func() (int64, error) { return m.Store.ReplayParked(ctx, name) })
}

func (m *observedMeta) ReplayShards(ctx context.Context, name string) ([]int, error) {
	return observed(m, ctx, "replay_shards", func() ([]int, error) { return m.Store.ReplayShards(ctx, name) })
}

func (m *observedMeta) TakeReplay(ctx context.Context, name string, shard int, token int64, limit int) ([]sqlstore.ParkedCell, int, error) {
	p, err := observed(m, ctx, "take_replay", func() (pair[[]sqlstore.ParkedCell, int], error) {
		taken, held, err := m.Store.TakeReplay(ctx, name, shard, token, limit)
		return pair[[]sqlstore.ParkedCell, int]{taken, held}, err
	})
	return p.a, p.b, err
}

func (m *observedMeta) TriggerOffset(ctx context.Context, name string, shard int) (int64, error) {
	return observed(m, ctx, "trigger_offset", func() (int64, error) { return m.Store.TriggerOffset(ctx, name, shard) })
}

func (m *observedMeta) IndexRecord(ctx context.Context, name string) (sqlstore.IndexRecord, error) {
	return observed(m, ctx, "index_record", func() (sqlstore.IndexRecord, error) { return m.Store.IndexRecord(ctx, name) })
}

func (m *observedMeta) IndexRecords(ctx context.Context) ([]sqlstore.IndexRecord, error) {
	return observed(m, ctx, "index_records", func() ([]sqlstore.IndexRecord, error) { return m.Store.IndexRecords(ctx) })
}

func (m *observedMeta) UpdateIndexRecord(ctx context.Context, name string, f func(rec *sqlstore.IndexRecord) error) (sqlstore.IndexRecord, error) {
	return observed(m, ctx, "update_index_record", func() (sqlstore.IndexRecord, error) { return m.Store.UpdateIndexRecord(ctx, name, f) })
}

func (m *observedMeta) ShardMap(ctx context.Context) (*cellar.ShardMap, error) {
	return observed(m, ctx, "shard_map", func() (*cellar.ShardMap, error) { return m.Store.ShardMap(ctx) })
}
