package shard_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/metrics"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A call whose caller went away (its context cancelled: the HTTP server
// cancels it when the connection closes) is not counted as an error of
// the healthy node it was reading from, so client churn does not look
// like node errors in cellar_storage_errors_total.
func TestClientCancelIsNotANodeError(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, reg)
	s := oneNode(t, 4, openLite(t, "lite", 4), shard.Options{NodeTimeout: time.Hour, Observe: m.ObserveStorage})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the client hung up
	_, err := s.Latest(ctx, "r", "c")
	t.Logf("Latest with a cancelled context: %v", err)
	if n := testutil.CollectAndCount(reg, "cellar_storage_errors_total"); n != 0 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "cellar_storage_errors_total" {
				for _, mt := range mf.GetMetric() {
					t.Errorf("after only a client cancel, node error series %v = %v; want none (the node is healthy)", mt.GetLabel(), mt.GetCounter().GetValue())
				}
			}
		}
	}
}

// plainTimeoutNode reports a deadline the way some drivers do: as a
// plain error (internal), once its context ends.
type plainTimeoutNode struct{ cellar.Store }

func (s *plainTimeoutNode) Latest(ctx context.Context, row, col string) (cellar.Cell, error) {
	<-ctx.Done()
	return cellar.Cell{}, errors.New("driver: i/o timeout")
}

// TestDeadlineErrorNamesTimeWaited guards that the error a call makes of a
// driver's timeout names the time waited and the deadline that ended it:
// under a caller's 50ms deadline with a node timeout of 1h it said "did not
// answer within 1h0m0s". (Review of stop 19.)
func TestDeadlineErrorNamesTimeWaited(t *testing.T) {
	s := oneNode(t, 4, &plainTimeoutNode{openLite(t, "lite", 4)}, shard.Options{NodeTimeout: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Latest(ctx, "r", "c")
	if cellar.ErrorCode(err) != cellar.EUNAVAILABLE {
		t.Fatalf("Latest = %v; want unavailable", err)
	}
	if msg := cellar.ErrorMessage(err); strings.Contains(msg, "1h0m0s") || !strings.Contains(msg, "context deadline exceeded") {
		t.Errorf("error after the caller's 50ms deadline says %q; want the time waited and the deadline, not the 1h node_timeout, which never ran", msg)
	}
}

// openLite opens a fresh SQLite node named name, closed when tb ends.
func openLite(tb testing.TB, name string, shards int) *sqlstore.Store {
	tb.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), name+".db"),
		sqlite.Options{Options: sqlstore.Options{Name: name, ShardCount: shards, Create: true}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// oneNode is a sharding layer over the one node n, named lite.
func oneNode(tb testing.TB, shards int, n cellar.Store, opts shard.Options) *shard.Store {
	tb.Helper()
	s, err := shard.New(&cellar.ShardMap{Version: 1, ShardCount: shards, Assignments: []cellar.Assignment{
		{Node: "lite", ShardRange: cellar.ShardRange{First: 0, Last: shards - 1}},
	}}, []*shard.Node{{Name: "lite", Driver: "sqlite", Store: n}}, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
