package shard_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/dbtest"
	"github.com/cellar-db/cellar/internal/postgres"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

// keyOn returns a key with prefix whose shard is on node under m.
func keyOn(m *cellar.ShardMap, node, prefix string) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("%s-%d", prefix, i)
		if m.NodeOf(cellar.ShardOf(k, m.ShardCount)) == node {
			return k
		}
	}
}

// TestCounterFlushPartialFailure fails a flush on some nodes, by taking
// the PostgreSQL node away and by overflowing a counter on another, and
// retries it with the same flush id: each node applies it exactly once.
func TestCounterFlushPartialFailure(t *testing.T) {
	const shards = 30
	real := dbtest.Postgres(t)
	u, err := url.Parse(real)
	if err != nil {
		t.Fatal(err)
	}
	proxy := dbtest.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	m := thirds(shards)
	nodes := openNodes(t, shards, u.String())
	s, err := shard.New(m, nodes, shard.Options{NodeTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lite, pg, my := keyOn(m, "lite", "c"), keyOn(m, "pg", "c"), keyOn(m, "my", "c")
	all := func(d int64) map[string]int64 { return map[string]int64{lite: d, pg: d, my: d} }
	if err := s.ApplyCounterDeltas(ctx, "f0", all(1)); err != nil {
		t.Fatal(err)
	}

	// Stopping the proxy drops the pooled connections too: a call on one of
	// them must also come back unavailable (pgx's ErrConnClosed).
	proxy.Stop()
	err = s.ApplyCounterDeltas(ctx, "f1", all(10))
	if !errors.Is(err, cellar.ErrUnavailable) || cellar.ErrorCode(err) != cellar.EUNAVAILABLE {
		t.Errorf("flush with the pg node down: %v; want unavailable", err)
	}
	// Reads of the nodes that answer still come back.
	vals, err := s.Counters(ctx, []string{lite, pg, my})
	if !errors.Is(err, cellar.ErrUnavailable) || len(vals) != 2 || vals[lite] != 11 || vals[my] != 11 {
		t.Errorf("Counters with the pg node down = %v, %v; want lite and my at 11 and unavailable", vals, err)
	}
	// Two nodes failing at once: pg is down, and lite's counter would
	// overflow. The flush is refused (retrying cannot help) and the
	// error carries both failures.
	err = s.ApplyCounterDeltas(ctx, "f2", map[string]int64{lite: math.MaxInt64, pg: 1, my: 1})
	if cellar.ErrorCode(err) != cellar.EINVALID || !errors.Is(err, cellar.ErrUnavailable) ||
		!strings.Contains(cellar.ErrorMessage(err), "node lite") || !strings.Contains(cellar.ErrorMessage(err), "node pg") ||
		!strings.Contains(cellar.ErrorMessage(err), lite) {
		t.Errorf("flush failing on two nodes: %v; want invalid_argument naming both nodes and counter %s", err, lite)
	}

	// The node comes back (a new connection to the same database).
	pgBack, err := postgres.Open(ctx, real, postgres.Options{Options: sqlstore.Options{Name: "pg", ShardCount: shards}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pgBack.Close() })
	nodes[1] = &shard.Node{Name: "pg", Driver: "postgres", Store: pgBack}
	s, err = shard.New(m, nodes, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		id     string
		deltas map[string]int64
	}{{"f1", all(10)}, {"f2", all(100)}, {"f1", all(10)}, {"f2", all(100)}} {
		if err := s.ApplyCounterDeltas(ctx, f.id, f.deltas); err != nil {
			t.Errorf("retry of %s: %v", f.id, err)
		}
	}
	// f1 is now applied on pg only (the others had it), f2 on lite (which
	// had refused it) and pg (which had been down), not on my.
	want := map[string]int64{lite: 111, pg: 111, my: 12}
	got, err := s.Counters(ctx, []string{lite, pg, my})
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after the retries, counters = %v, %v; want %v", got, err, want)
	}
}

// TestTimelinePlacement checks that a timeline lives on the node of its
// key's shard and nowhere else.
func TestTimelinePlacement(t *testing.T) {
	const shards = 30
	m := thirds(shards)
	nodes := openNodes(t, shards, "")
	s, err := shard.New(m, nodes, shard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, owner := range []string{"lite", "pg", "my"} {
		k := keyOn(m, owner, "tl")
		if err := s.TimelineAdd(ctx, k, "m", 1); err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			got, err := n.Store.(cellar.TimelineStore).TimelineCount(ctx, k)
			want := int64(0)
			if n.Name == owner {
				want = 1
			}
			if err != nil || got != want {
				t.Errorf("timeline %s (on %s): node %s counts %d, %v; want %d", k, owner, n.Name, got, err, want)
			}
		}
	}
}
