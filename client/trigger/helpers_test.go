package trigger_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
	engine "github.com/cellar-db/cellar/internal/trigger"
)

// shards is the datastore's number of logical shards, as cellar's default.
const shards = 4096

// sharded is a sharding store over nodes (the first one holds the trigger
// state) that notifies a trigger engine of every put, as cellar serve
// wires them.
type sharded struct {
	cells  *shard.Store
	nodes  []*shard.Node
	engine atomic.Pointer[engine.Engine]
}

// newSharded splits the shards evenly over nodes.
func newSharded(tb testing.TB, nodes ...*sqlstore.Store) *sharded {
	tb.Helper()
	s := &sharded{}
	m := &cellar.ShardMap{Version: 1, ShardCount: shards}
	for i, n := range nodes {
		name := fmt.Sprintf("n%d", i)
		s.nodes = append(s.nodes, &shard.Node{Name: name, Store: n})
		m.Assignments = append(m.Assignments, cellar.Assignment{Node: name,
			ShardRange: cellar.ShardRange{First: i * shards / len(nodes), Last: (i+1)*shards/len(nodes) - 1}})
	}
	cells, err := shard.New(m, s.nodes, shard.Options{NodeTimeout: 10 * time.Second, Committed: func(sh int, addedID int64, column string) {
		if e := s.engine.Load(); e != nil {
			e.Notify(sh, addedID, column)
		}
	}})
	if err != nil {
		tb.Fatal(err)
	}
	s.cells = cells
	return s
}

// start makes a trigger engine over the store (replacing the last one) and
// returns it; mod may change its options.
func (s *sharded) start(tb testing.TB, mod func(*engine.Options)) *engine.Engine {
	tb.Helper()
	meta := s.nodes[0].Store.(*sqlstore.Store)
	opts := engine.Options{Cells: s.cells, State: meta, KnownHeads: engine.NodeHeads(s.cells.Map, s.nodes, 5*time.Second), ShardCount: shards}
	if mod != nil {
		mod(&opts)
	}
	e, err := engine.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	s.engine.Store(e)
	return e
}

// newServer serves a SQLite node with triggers over HTTP.
func newServer(tb testing.TB) (*client.Client, *sharded) {
	tb.Helper()
	st := openSQLite(tb, filepath.Join(tb.TempDir(), "n.db"))
	tb.Cleanup(func() { st.Close() })
	s := newSharded(tb, st)
	e := s.start(tb, func(o *engine.Options) {
		o.PollInterval = 5 * time.Millisecond
		o.Backoff = func(int) time.Duration { return 10 * time.Millisecond }
	})
	tb.Cleanup(func() { e.Close() })
	srv := httptest.NewServer(cellarhttp.NewHandler(s.cells, cellarhttp.Options{Triggers: e, Logger: slog.New(slog.DiscardHandler)}))
	tb.Cleanup(srv.Close)
	return client.New(srv.URL), s
}

func openSQLite(tb testing.TB, path string) *sqlstore.Store {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), path, sqlite.Options{Options: sqlstore.Options{Name: "n", ShardCount: shards, Create: true}})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// roundTripFunc is a RoundTripper running f, which may call next.
type roundTripFunc func(r *http.Request, next http.RoundTripper) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) {
	return f(r, http.DefaultTransport)
}

// triggerServer serves triggers with lease ttl and clock now (nil: time.Now);
// the returned client sends through rt (nil: the default transport).
func triggerServer(t *testing.T, ttl time.Duration, now func() time.Time, rt http.RoundTripper) *client.Client {
	t.Helper()
	st := openSQLite(t, filepath.Join(t.TempDir(), "n.db"))
	t.Cleanup(func() { st.Close() })
	s := newSharded(t, st)
	e := s.start(t, func(o *engine.Options) {
		o.PollInterval = 5 * time.Millisecond
		o.LeaseTTL = ttl
		o.Backoff = func(int) time.Duration { return 10 * time.Millisecond }
		if now != nil {
			o.Now = now
		}
	})
	t.Cleanup(func() { e.Close() })
	srv := httptest.NewServer(cellarhttp.NewHandler(s.cells, cellarhttp.Options{Triggers: e, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	if rt == nil {
		rt = http.DefaultTransport
	}
	return client.New(srv.URL, client.WithHTTPClient(&http.Client{Transport: rt}))
}

// putOneShard defines trigger "t" on column a and writes n cells of it
// in one shard, which it returns.
func putOneShard(t *testing.T, c *client.Client, n int) int {
	t.Helper()
	ctx := context.Background()
	if _, _, err := c.DefineTrigger(ctx, "t", client.TriggerDefinition{Columns: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	target := cellar.ShardOf("k0", shards)
	for i, put := 0, 0; put < n; i++ {
		k := "k" + strconv.Itoa(i)
		if cellar.ShardOf(k, shards) != target {
			continue
		}
		if _, _, err := c.Put(ctx, cellar.NewCell{Key: cellar.Key{RowKey: k, Column: "a", RefKey: 1}, Body: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		put++
	}
	return target
}

func shardOffset(t *testing.T, c *client.Client, shard int) int64 {
	t.Helper()
	st, err := c.TriggerStatus(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Shards {
		if s.Shard == shard {
			return s.Offset
		}
	}
	return 0
}

var quiet = slog.New(slog.DiscardHandler)

// claimShardAs claims trigger "t" once as consumer, and returns the
// added_ids of the cells delivered if the lease is of shard.
func claimShardAs(t *testing.T, ctx context.Context, c *client.Client, consumer string, shard int) ([]int64, bool) {
	t.Helper()
	cl, err := c.ClaimTrigger(ctx, "t", consumer, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Lease == nil || cl.Lease.Shard != shard {
		return nil, false
	}
	var ids []int64
	for _, cell := range cl.Cells {
		ids = append(ids, cell.AddedID)
	}
	return ids, true
}
