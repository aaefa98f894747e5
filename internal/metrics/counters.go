package metrics

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// CounterTotals are a counter buffer's totals since it opened (its
// counter.Stats), read at every scrape.
type CounterTotals struct {
	Increments  int64 // acknowledged
	Commits     int64 // journal commits that wrote them (journal mode)
	Flushes     int64 // flushes the storage nodes confirmed
	Statements  int64 // counter updates those flushes sent
	FlushErrors int64 // flush attempts that failed, to be retried
	Rejected    int64 // deltas refused for overflow and set aside
}

// counterSource is the buffer CounterBuffer set.
type counterSource struct {
	mode string
	read func() CounterTotals
}

// counterCollector reports the totals of the counter buffer of this
// process. The buffer keeps them itself (atomically), so they are read at
// each scrape instead of being counted twice.
type counterCollector struct {
	src   atomic.Pointer[counterSource]
	descs []*prometheus.Desc // in the order of counterValues
}

func newCounterCollector() *counterCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"mode"}, nil)
	}
	return &counterCollector{descs: []*prometheus.Desc{
		d("cellar_counter_increments_total", "Counter increments acknowledged, by buffer mode (journal or redis)."),
		d("cellar_counter_journal_commits_total", "Journal commits that wrote the increments (journal mode; 0 in redis mode)."),
		d("cellar_counter_flushes_total", "Counter flushes the storage nodes confirmed."),
		d("cellar_counter_flush_statements_total", "Counter updates the confirmed flushes sent to the storage nodes: one per distinct key per flush."),
		d("cellar_counter_flush_errors_total", "Counter flush attempts that failed; they are retried. A rate above 0 for minutes means deltas are waiting (a storage or Redis node down)."),
		d("cellar_counter_rejected_total", "Counter deltas a storage node refused because they would overflow int64: set aside, not applied (docs/COUNTERS.md)."),
	}}
}

func counterValues(t CounterTotals) []int64 {
	return []int64{t.Increments, t.Commits, t.Flushes, t.Statements, t.FlushErrors, t.Rejected}
}

func (c *counterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *counterCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.src.Load()
	if src == nil {
		return // no buffer (yet): no series
	}
	for i, v := range counterValues(src.read()) {
		ch <- prometheus.MustNewConstMetric(c.descs[i], prometheus.CounterValue, float64(v), src.mode)
	}
}

// CounterBuffer reports the totals read returns, under the label
// mode="journal" or "redis", from now on; read must be safe to call at
// any time.
func (m *Metrics) CounterBuffer(mode string, read func() CounterTotals) {
	if m == nil {
		return
	}
	m.counters.src.Store(&counterSource{mode: mode, read: read})
}
