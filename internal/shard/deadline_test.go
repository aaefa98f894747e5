package shard_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// deadlineStore records the deadline of the context each Latest gets.
type deadlineStore struct {
	cellar.Store
	deadline time.Time
	has      bool
}

func (s *deadlineStore) Latest(ctx context.Context, row, col string) (cellar.Cell, error) {
	s.deadline, s.has = ctx.Deadline()
	return s.Store.Latest(ctx, row, col)
}

// TestNodeDeadline checks that a node call runs under the sooner of the
// caller's deadline and the node deadline.
func TestNodeDeadline(t *testing.T) {
	const shards, timeout = 16, time.Hour
	lite, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "lite", ShardCount: shards, Create: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lite.Close() })
	node := &deadlineStore{Store: lite}
	s, err := shard.New(&cellar.ShardMap{Version: 1, ShardCount: shards, Assignments: []cellar.Assignment{
		{Node: "lite", ShardRange: cellar.ShardRange{First: 0, Last: shards - 1}},
	}}, []*shard.Node{{Name: "lite", Driver: "sqlite", Store: node}}, shard.Options{NodeTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	sooner, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	later, cancel := context.WithTimeout(context.Background(), 2*timeout)
	defer cancel()
	for _, tt := range []struct {
		name string
		ctx  context.Context
		node bool // want the node deadline, not the caller's
	}{
		{"no deadline", context.Background(), true},
		{"caller's later", later, true},
		{"caller's sooner", sooner, false},
	} {
		start := time.Now()
		if _, err := s.Latest(tt.ctx, "r", "c"); cellar.ErrorCode(err) != cellar.ENOTFOUND {
			t.Fatalf("%s: Latest = %v; want not found", tt.name, err)
		}
		if !node.has {
			t.Errorf("%s: the node call had no deadline", tt.name)
			continue
		}
		if tt.node {
			if d := node.deadline.Sub(start); d < timeout || d > timeout+time.Minute {
				t.Errorf("%s: node call deadline in %v; want the node deadline, %v", tt.name, d, timeout)
			}
		} else if want, _ := tt.ctx.Deadline(); !node.deadline.Equal(want) {
			t.Errorf("%s: node call deadline %v; want the caller's %v", tt.name, node.deadline, want)
		}
	}
}

// lateStore answers only once its deadline has passed, with an internal
// error, as a driver may report a deadline.
type lateStore struct{ cellar.Store }

func (lateStore) Latest(ctx context.Context, row, col string) (cellar.Cell, error) {
	<-ctx.Done()
	return cellar.Cell{}, cellar.Internal(ctx.Err(), "i/o on a closed connection")
}

func (lateStore) BatchGet(ctx context.Context, keys []cellar.LookupKey) []cellar.GetResult {
	<-ctx.Done()
	res := make([]cellar.GetResult, len(keys))
	for i := range res {
		res[i].Err = cellar.Internal(ctx.Err(), "i/o on a closed connection")
	}
	return res
}

// TestNodeDeadlineInBatches: a node that misses its deadline is
// unavailable to a batch's items as to a single read, not internal.
func TestNodeDeadlineInBatches(t *testing.T) {
	s, err := shard.New(&cellar.ShardMap{Version: 1, ShardCount: 4, Assignments: []cellar.Assignment{{Node: "late", ShardRange: cellar.ShardRange{First: 0, Last: 3}}}},
		[]*shard.Node{{Name: "late", Store: lateStore{}}}, shard.Options{NodeTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Latest(context.Background(), "r", "c"); cellar.ErrorCode(err) != cellar.EUNAVAILABLE {
		t.Errorf("Latest on a late node: %v; want unavailable", err)
	}
	for _, r := range s.BatchGet(context.Background(), []cellar.LookupKey{{RowKey: "r", Column: "c"}, {RowKey: "q", Column: "c"}}) {
		if cellar.ErrorCode(r.Err) != cellar.EUNAVAILABLE {
			t.Errorf("BatchGet item on a late node: %v; want unavailable", r.Err)
		}
	}
}
