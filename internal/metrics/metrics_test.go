package metrics

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cellar-db/cellar"
)

func TestObserve(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, nil)
	m.ObserveRequest("GET /v1/rows/{row_key}", 200, 3*time.Millisecond)
	m.ObserveRequest("GET /v1/rows/{row_key}", 200, 5*time.Millisecond)
	m.ObserveRequest("GET /v1/rows/{row_key}", 503, time.Second)
	m.ObserveStorage("n1", "get", time.Millisecond, nil)
	m.ObserveStorage("n1", "get", time.Millisecond, cellar.Errorf(cellar.ENOTFOUND, "no cell"))
	m.ObserveStorage("n1", "put", time.Millisecond, cellar.Unavailable(errors.New("refused"), "node n1 is unavailable"))
	m.ObserveStorage("n2", "put", time.Millisecond, errors.New("not a cellar error"))

	tests := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"requests 200", m.requests.WithLabelValues("GET /v1/rows/{row_key}", "200"), 2},
		{"requests 503", m.requests.WithLabelValues("GET /v1/rows/{row_key}", "503"), 1},
		{"errors n1 get not_found", m.storageErrors.WithLabelValues("n1", "get", cellar.ENOTFOUND), 1},
		{"errors n1 put unavailable", m.storageErrors.WithLabelValues("n1", "put", cellar.EUNAVAILABLE), 1},
		{"errors n2 put internal", m.storageErrors.WithLabelValues("n2", "put", cellar.EINTERNAL), 1},
	}
	for _, tt := range tests {
		if got := testutil.ToFloat64(tt.c); got != tt.want {
			t.Errorf("%s = %v; want %v", tt.name, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(m.storageDuration); n != 3 {
		t.Errorf("storage duration series = %d; want 3 (n1/get, n1/put, n2/put)", n)
	}
	// Each observation counts, the ones under label values seen before too.
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`cellar_http_request_duration_seconds_count{code="200",route="GET /v1/rows/{row_key}"} 2`,
		`cellar_storage_op_duration_seconds_count{node="n1",op="get"} 2`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	const want = `
# HELP cellar_storage_errors_total Storage node calls that returned an error, by node, operation and cellar error code (not_found included).
# TYPE cellar_storage_errors_total counter
cellar_storage_errors_total{code="internal",node="n2",op="put"} 1
cellar_storage_errors_total{code="not_found",node="n1",op="get"} 1
cellar_storage_errors_total{code="unavailable",node="n1",op="put"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cellar_storage_errors_total"); err != nil {
		t.Error(err)
	}
}

func TestHandler(t *testing.T) {
	m := New(nil, nil)
	m.ObserveStorage("n1", "scan", 2*time.Millisecond, nil)
	m.ObserveRequest("GET /healthz", 200, time.Millisecond)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`cellar_storage_op_duration_seconds_count{node="n1",op="scan"} 1`,
		`cellar_http_request_duration_seconds_bucket{code="200",route="GET /healthz",le="0.001"} 1`,
		`cellar_http_requests_total{code="200",route="GET /healthz"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
}

func TestNewTwiceReusesCollectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := New(reg, nil), New(reg, nil)
	a.ObserveRequest("r", 200, time.Millisecond)
	b.ObserveRequest("r", 200, time.Millisecond)
	if got := testutil.ToFloat64(a.requests.WithLabelValues("r", "200")); got != 2 {
		t.Errorf("requests after two New on one registry = %v; want 2", got)
	}
}

func TestNil(t *testing.T) {
	var m *Metrics
	m.ObserveRequest("r", 200, time.Millisecond)
	m.ObserveStorage("n", "get", time.Millisecond, errors.New("x"))
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("nil Metrics handler status = %d; want 404", rec.Code)
	}
}

// The duration buckets reach past the longest wait a request may ask for
// (trigger claims and index wait_for, 60 s), so that long polls are not all
// lumped in +Inf.
func TestDurationBucketsCoverLongWaits(t *testing.T) {
	if top := durationBuckets[len(durationBuckets)-1]; top < 60 {
		t.Errorf("largest duration bucket %gs; want at least 60s", top)
	}
}
