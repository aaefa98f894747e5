package client_test

import (
	"context"
	"errors"
	"math"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/cellar-db/cellar/internal/storetest"
)

// newTimelineServer starts the real HTTP API, with timelines, over a fresh
// SQLite node.
func newTimelineServer(tb testing.TB, shards int, opts cellarhttp.Options, copts ...client.Option) (*client.Client, *sqlstore.Store) {
	tb.Helper()
	store, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "t", ShardCount: shards, Create: true}})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { store.Close() })
	opts.Timelines = store
	srv := httptest.NewServer(cellarhttp.NewHandler(store, opts))
	tb.Cleanup(srv.Close)
	return client.New(srv.URL, copts...), store
}

// TestTimelineConformance runs the timeline suite through the client, the
// HTTP API and a SQLite node: every key, member and score the suite uses
// must survive the trip.
func TestTimelineConformance(t *testing.T) {
	storetest.RunTimelines(t, func(tb testing.TB, shards int) cellar.TimelineStore {
		c, _ := newTimelineServer(tb, shards, cellarhttp.Options{})
		return c
	})
}

func TestTimelineClient(t *testing.T) {
	c, store := newTimelineServer(t, shardCount, cellarhttp.Options{})
	ctx := context.Background()
	for _, key := range []string{"/", ".", "..", "a/b", "%2F", "日本"} {
		if err := c.TimelineAdd(ctx, key, "/", 2.5); err != nil {
			t.Fatalf("TimelineAdd(%q): %v", key, err)
		}
		if n, err := store.TimelineCount(ctx, key); err != nil || n != 1 {
			t.Errorf("the store counts timeline %q at %d, %v; want 1", key, n, err)
		}
		items, count, err := c.TimelineRange(ctx, key, 0, 10, false)
		if err != nil || count != 1 || len(items) != 1 || items[0] != (cellar.TimelineItem{Member: "/", Score: 2.5}) {
			t.Errorf("TimelineRange(%q) = %v, %d, %v; want one member / at 2.5", key, items, count, err)
		}
		if removed, err := c.TimelineRemove(ctx, key, "/"); err != nil || !removed {
			t.Errorf("TimelineRemove(%q, /) = %t, %v; want true", key, removed, err)
		}
	}
	// Refused before sending: JSON cannot carry these.
	for _, score := range []float64{math.NaN(), math.Inf(1)} {
		if err := c.TimelineAdd(ctx, "k", "m", score); !errors.Is(err, cellar.ErrInvalid) {
			t.Errorf("TimelineAdd with score %v: %v; want invalid", score, err)
		}
	}
	if err := c.TimelineAdd(ctx, "k", "\xff", 1); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("TimelineAdd with an invalid UTF-8 member: %v; want invalid", err)
	}
	if _, err := c.TimelineRemove(ctx, "k", ""); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("TimelineRemove of an empty member: %v; want invalid", err)
	}
	// The server's errors come back with their codes.
	if _, _, err := c.TimelineRange(ctx, "k", 0, 5000, true); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("TimelineRange with limit 5000: %v; want invalid", err)
	}
	if err := c.SetTimelineCap(ctx, "k", 0); !errors.Is(err, cellar.ErrInvalid) {
		t.Errorf("SetTimelineCap(0): %v; want invalid", err)
	}
}

func TestTimelineClientAuth(t *testing.T) {
	opts := cellarhttp.Options{Tokens: []cellarhttp.Token{{Secret: "reader", Scopes: []string{cellarhttp.ScopeRead}}}}
	c, _ := newTimelineServer(t, shardCount, opts, client.WithToken("reader"))
	ctx := context.Background()
	if _, _, err := c.TimelineRange(ctx, "k", 0, 10, true); err != nil {
		t.Errorf("TimelineRange with a read token: %v", err)
	}
	if err := c.TimelineAdd(ctx, "k", "m", 1); !errors.Is(err, cellar.ErrPermissionDenied) {
		t.Errorf("TimelineAdd with a read token: %v; want permission denied", err)
	}
	if err := c.SetTimelineCap(ctx, "k", 5); !errors.Is(err, cellar.ErrPermissionDenied) {
		t.Errorf("SetTimelineCap with a read token: %v; want permission denied", err)
	}
}
