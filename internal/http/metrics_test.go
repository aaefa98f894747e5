package http

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

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
