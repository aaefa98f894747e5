package trigger_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/client"
	"github.com/cellar-db/cellar/client/trigger"
	cellarhttp "github.com/cellar-db/cellar/internal/http"
	engine "github.com/cellar-db/cellar/internal/trigger"
)

// countAcks counts the ack requests sent through it.
type countAcks struct {
	acks atomic.Int64
	next http.RoundTripper
}

func (c *countAcks) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/ack") {
		c.acks.Add(1)
	}
	return c.next.RoundTrip(r)
}

// Run acks every half lease within a long batch (docs/TRIGGERS.md), half
// of the lease the claim gave: a 3 s batch under a 1 s lease costs about 6
// acks and the last. Before, the next renewal was reckoned from the
// claim's expiry, which the renewing ack had moved, so the intervals
// halved and then every cell was acked.
func TestRunRenewsEveryHalfLease(t *testing.T) {
	st := openSQLite(t, filepath.Join(t.TempDir(), "n.db"))
	t.Cleanup(func() { st.Close() })
	s := newSharded(t, st)
	e := s.start(t, func(o *engine.Options) {
		o.PollInterval = 5 * time.Millisecond
		o.LeaseTTL = time.Second
	})
	t.Cleanup(func() { e.Close() })
	srv := httptest.NewServer(cellarhttp.NewHandler(s.cells, cellarhttp.Options{Triggers: e, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	counter := &countAcks{next: http.DefaultTransport}
	c := client.New(srv.URL, client.WithHTTPClient(&http.Client{Transport: counter}))
	ctx := context.Background()
	if _, _, err := c.DefineTrigger(ctx, "t", client.TriggerDefinition{Columns: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	// 60 cells in one shard: one batch.
	const n = 60
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
	var mu sync.Mutex
	handled := 0
	done := make(chan struct{})
	runCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- trigger.Run(runCtx, c, "t", "p", func(ctx context.Context, cell cellar.Cell) error {
			time.Sleep(50 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			handled++
			if handled == n {
				close(done)
			}
			return nil
		}, trigger.Options{Concurrency: 1, MaxCells: 100, Wait: 100 * time.Millisecond})
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("batch not handled")
	}
	time.Sleep(200 * time.Millisecond) // the last ack
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// 3 s of work under a 1 s lease: an ack every 0.5 s is about 6, and
	// the last one.
	if got := counter.acks.Load(); got > 15 {
		t.Fatalf("Run sent %d acks for one batch of %d cells taking %v under a %v lease; want about %d (one per half lease)",
			got, n, n*50*time.Millisecond, time.Second, 7)
	}
}
