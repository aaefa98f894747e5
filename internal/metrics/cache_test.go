package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestObserveCache(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, nil)
	m.ObserveCache("local", 3, 1)
	m.ObserveCache("local", 0, 2)
	m.ObserveCache("redis", 1, 0)
	m.ObserveCacheError("redis", "get")
	m.ObserveCacheError("redis", "get")
	m.ObserveCacheError("redis", "push")

	const want = `
# HELP cellar_cache_errors_total Failed cache operations, by tier and operation; reads go to storage instead.
# TYPE cellar_cache_errors_total counter
cellar_cache_errors_total{op="get",tier="redis"} 2
cellar_cache_errors_total{op="push",tier="redis"} 1
# HELP cellar_cache_hits_total Cache lookups answered, by tier (local: in-process; redis: shared).
# TYPE cellar_cache_hits_total counter
cellar_cache_hits_total{tier="local"} 3
cellar_cache_hits_total{tier="redis"} 1
# HELP cellar_cache_misses_total Cache lookups not answered, by tier; a redis miss goes to storage.
# TYPE cellar_cache_misses_total counter
cellar_cache_misses_total{tier="local"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "cellar_cache_hits_total", "cellar_cache_misses_total", "cellar_cache_errors_total"); err != nil {
		t.Error(err)
	}

	// A nil *Metrics records nothing, and does not panic.
	var none *Metrics
	none.ObserveCache("local", 1, 1)
	none.ObserveCacheError("redis", "get")
}
