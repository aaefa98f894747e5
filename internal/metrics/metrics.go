// Package metrics holds cellar's Prometheus metrics: HTTP requests by route
// and status, storage node calls by node and operation, and cache lookups
// by tier.
package metrics

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cellar-db/cellar"
)

// Metrics records cellar's metrics. A nil *Metrics records nothing, so
// callers need not check whether metrics are enabled.
type Metrics struct {
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	storageDuration *prometheus.HistogramVec
	storageErrors   *prometheus.CounterVec
	cacheHits       *prometheus.CounterVec
	cacheMisses     *prometheus.CounterVec
	cacheErrors     *prometheus.CounterVec
	triggerCells    *prometheus.CounterVec
	triggerLagCells *prometheus.GaugeVec
	triggerLagSecs  *prometheus.GaugeVec
	counters        *counterCollector
	gatherer        prometheus.Gatherer

	// Every request and storage call records under a few label values;
	// the metrics for each set are looked up once and kept here, sparing
	// the label hashing and the vector's lock on every call.
	requestMetrics sync.Map // requestLabels -> *requestMetrics
	storageMetrics sync.Map // storageLabels -> prometheus.Observer
}

type requestLabels struct {
	route string
	code  int
}

type requestMetrics struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

type storageLabels struct{ node, op string }

// durationBuckets span a local SQLite read (well under a millisecond) to
// the longest waits a request may ask for: a trigger claim's long poll and
// an index query's wait_for, up to 60 s each.
var durationBuckets = prometheus.ExponentialBuckets(0.00025, 2, 19) // 250µs .. ~65s

// New registers cellar's metrics with reg and serves gatherer from Handler.
// If reg is nil, New uses a registry of its own (and as the gatherer, too,
// when gatherer is nil); if gatherer is nil and reg is a Gatherer (such as
// a *prometheus.Registry), reg is the gatherer. New may be called more than
// once with the same registry: it then reuses the collectors registered
// first. It panics if reg holds different metrics under cellar's names.
func New(reg prometheus.Registerer, gatherer prometheus.Gatherer) *Metrics {
	if reg == nil {
		r := prometheus.NewRegistry()
		reg = r
		if gatherer == nil {
			gatherer = r
		}
	}
	if gatherer == nil {
		if g, ok := reg.(prometheus.Gatherer); ok {
			gatherer = g
		} else {
			gatherer = prometheus.DefaultGatherer
		}
	}
	return &Metrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellar_http_requests_total",
			Help: "HTTP requests served, by route pattern and status code.",
		}, []string{"route", "code"})),
		requestDuration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cellar_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route pattern and status code.",
			Buckets: durationBuckets,
		}, []string{"route", "code"})),
		storageDuration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cellar_storage_op_duration_seconds",
			Help:    "Time of one call to a storage node, by node and operation, whether it failed or not.",
			Buckets: durationBuckets,
		}, []string{"node", "op"})),
		storageErrors: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellar_storage_errors_total",
			Help: "Storage node calls that returned an error, by node, operation and cellar error code (not_found included).",
		}, []string{"node", "op", "code"})),
		cacheHits: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellar_cache_hits_total",
			Help: "Cache lookups answered, by tier (local: in-process; redis: shared).",
		}, []string{"tier"})),
		cacheMisses: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellar_cache_misses_total",
			Help: "Cache lookups not answered, by tier; a redis miss goes to storage.",
		}, []string{"tier"})),
		cacheErrors: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellar_cache_errors_total",
			Help: "Failed cache operations, by tier and operation; reads go to storage instead.",
		}, []string{"tier", "op"})),
		triggerCells: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellar_trigger_cells_total",
			Help: "Cells of triggers, by trigger and event (delivered: handed to a consumer, counting redeliveries; acked: cells the offsets moved over, of any column).",
		}, []string{"trigger", "event"})),
		triggerLagCells: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cellar_trigger_lag_cells",
			Help: "Cells after a trigger's offsets, of any column (an upper bound on its backlog), as last measured.",
		}, []string{"trigger"})),
		triggerLagSecs: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cellar_trigger_lag_seconds",
			Help: "Age of the oldest cell a trigger has yet to acknowledge, over its shards, as last measured.",
		}, []string{"trigger"})),
		counters: register(reg, newCounterCollector()),
		gatherer: gatherer,
	}
}

// register registers c with reg, or returns the equal collector registered
// before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("metrics: " + err.Error())
	}
	return c
}

// ObserveRequest records one HTTP request. route is the pattern that
// matched (such as "GET /v1/rows/{row_key}"), never the raw path, so that
// the number of series stays bounded.
func (m *Metrics) ObserveRequest(route string, code int, d time.Duration) {
	if m == nil {
		return
	}
	k := requestLabels{route, code}
	v, ok := m.requestMetrics.Load(k)
	if !ok {
		c := strconv.Itoa(code)
		v, _ = m.requestMetrics.LoadOrStore(k, &requestMetrics{
			count:    m.requests.WithLabelValues(route, c),
			duration: m.requestDuration.WithLabelValues(route, c),
		})
	}
	rm := v.(*requestMetrics)
	rm.count.Inc()
	rm.duration.Observe(d.Seconds())
}

// ObserveStorage records one call to a storage node: its duration, and if
// err is not nil, an error under err's cellar error code. op names the
// Store method, such as "put" or "scan".
func (m *Metrics) ObserveStorage(node, op string, d time.Duration, err error) {
	if m == nil {
		return
	}
	k := storageLabels{node, op}
	v, ok := m.storageMetrics.Load(k)
	if !ok {
		v, _ = m.storageMetrics.LoadOrStore(k, m.storageDuration.WithLabelValues(node, op))
	}
	v.(prometheus.Observer).Observe(d.Seconds())
	if err != nil {
		m.storageErrors.WithLabelValues(node, op, cellar.ErrorCode(err)).Inc()
	}
}

// ObserveCache counts lookups in a cache tier ("local" or "redis"): hits
// answered there, misses passed on to the next tier or to storage.
func (m *Metrics) ObserveCache(tier string, hits, misses int) {
	if m == nil {
		return
	}
	if hits > 0 {
		m.cacheHits.WithLabelValues(tier).Add(float64(hits))
	}
	if misses > 0 {
		m.cacheMisses.WithLabelValues(tier).Add(float64(misses))
	}
}

// ObserveCacheError counts a failed operation on a cache tier, such as a
// Redis "get", "fill", "push" or "subscribe".
func (m *Metrics) ObserveCacheError(tier, op string) {
	if m == nil {
		return
	}
	m.cacheErrors.WithLabelValues(tier, op).Inc()
}

// Handler serves the gatherer's metrics in the Prometheus exposition
// formats.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}
