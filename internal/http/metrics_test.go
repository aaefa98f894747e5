package http

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/metrics"
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
