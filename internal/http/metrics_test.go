package http

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/metrics"
	"github.com/cellar-db/cellar/internal/shard"
	"github.com/cellar-db/cellar/internal/sqlite"
	"github.com/cellar-db/cellar/internal/sqlstore"
)

func newMetrics() *metrics.Metrics { return metrics.New(prometheus.NewRegistry(), nil) }

func TestMetricsEndpoint(t *testing.T) {
	c := newServer(t, openStore(t), Options{Metrics: newMetrics()})
	c.do("PUT", cellPath("m", "c", 1), `{}`).want(t, 201, "")
	c.do("PUT", cellPath("m", "c", 1), `{}`).want(t, 200, "")
	c.do("GET", cellPath("m/x", "c", 1), "").want(t, 404, "")
	c.do("GET", "/nowhere", "").want(t, 404, "")

	r := c.do("GET", "/metrics", "").want(t, 200, "")
	for _, want := range []string{
		`cellar_http_requests_total{code="201",route="PUT /v1/cells/{row_key}/{column}/{ref_key}"} 1`,
		`cellar_http_requests_total{code="200",route="PUT /v1/cells/{row_key}/{column}/{ref_key}"} 1`,
		`cellar_http_requests_total{code="404",route="GET /v1/cells/{row_key}/{column}/{ref_key}"} 1`,
		`cellar_http_requests_total{code="404",route="unmatched"} 1`,
		`cellar_http_request_duration_seconds_count{code="201",route="PUT /v1/cells/{row_key}/{column}/{ref_key}"} 1`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(string(r.body), "m/x") || strings.Contains(string(r.body), "nowhere") {
		t.Errorf("/metrics holds raw paths:\n%s", r.body)
	}
}

// TestMetricsRoutes checks the route label of requests that no route
// serves (404, 405) and of one whose handler panics.
func TestMetricsRoutes(t *testing.T) {
	st := &faultStore{Store: openStore(t), get: func(context.Context, cellar.Key) (cellar.Cell, error) { panic("boom") }}
	c := newServer(t, st, Options{Metrics: newMetrics(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c.do("GET", cellPath("m", "c", 1), "").want(t, 500, cellar.EINTERNAL)
	c.do("DELETE", cellPath("m", "c", 1), "").want(t, 405, codeMethodNotAllowed)
	c.do("GET", "/v2/nowhere", "").want(t, 404, cellar.ENOTFOUND)

	r := c.do("GET", "/metrics", "").want(t, 200, "")
	for _, want := range []string{
		`cellar_http_requests_total{code="500",route="GET /v1/cells/{row_key}/{column}/{ref_key}"} 1`,
		`cellar_http_requests_total{code="405",route="unmatched"} 1`,
		`cellar_http_requests_total{code="404",route="unmatched"} 1`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// slowLatestNode is a healthy node that is slow to answer Latest: it answers
// only when its caller's context ends.
type slowLatestNode struct {
	cellar.Store
	started chan struct{}
}

func (s *slowLatestNode) Latest(ctx context.Context, row, col string) (cellar.Cell, error) {
	s.started <- struct{}{}
	<-ctx.Done()
	return cellar.Cell{}, cellar.Unavailable(ctx.Err(), "node lite: %v", ctx.Err())
}

// TestClientHangupCountedAs499 guards that a client that hangs up while
// its request waits for a (healthy) node is counted once, as 499, not as a
// server failure: the request was counted as 503 (and logged as "storage
// unavailable"), so client timeouts raised the 5xx rate operators alert
// on, while the storage layer already leaves such calls out of its errors.
// (Review of stop 19.)
func TestClientHangupCountedAs499(t *testing.T) {
	const shards = testShards
	lite, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "n.db"),
		sqlite.Options{Options: sqlstore.Options{Name: "lite", ShardCount: shards, Create: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lite.Close() })
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, reg)
	node := &slowLatestNode{Store: lite, started: make(chan struct{}, 1)}
	st, err := shard.New(&cellar.ShardMap{Version: 1, ShardCount: shards, Assignments: []cellar.Assignment{
		{Node: "lite", ShardRange: cellar.ShardRange{First: 0, Last: shards - 1}},
	}}, []*shard.Node{{Name: "lite", Driver: "sqlite", Store: node}}, shard.Options{NodeTimeout: time.Minute, Observe: m.ObserveStorage})
	if err != nil {
		t.Fatal(err)
	}
	c := newServer(t, st, Options{Metrics: m, RequestTimeout: time.Minute})

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", c.url+"/v1/cells/r/c", nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() { <-node.started; cancel() }() // the client gives up
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("request was answered (%d) before the client hung up", resp.StatusCode)
	}

	const route = "GET /v1/cells/{row_key}/{column}"
	var lines []string
	var total float64
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines, total = nil, 0
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "cellar_http_requests_total" {
				continue
			}
			for _, mt := range mf.GetMetric() {
				var r, code string
				for _, l := range mt.GetLabel() {
					switch l.GetName() {
					case "route":
						r = l.GetValue()
					case "code":
						code = l.GetValue()
					}
				}
				if r == route {
					total += mt.GetCounter().GetValue()
					lines = append(lines, code)
					if strings.HasPrefix(code, "5") {
						t.Errorf("client hang-up recorded as cellar_http_requests_total{route=%q,code=%q}; want a non-5xx code (e.g. 499): the server did not fail", route, code)
					}
				}
			}
		}
		if total > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if total != 1 {
		t.Errorf("requests recorded for %s = %v (codes %v); want 1", route, total, lines)
	}
}
