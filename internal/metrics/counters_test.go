package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCounterBuffer(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, nil)
	if n := testutil.CollectAndCount(m.counters); n != 0 {
		t.Errorf("before CounterBuffer: %d series; want none", n)
	}
	totals := CounterTotals{Increments: 7, Commits: 3, Flushes: 2, Statements: 4, FlushErrors: 1, Rejected: 5}
	// A second New on the registry (as a second server in one process
	// would) reports through the same collector.
	New(reg, nil).CounterBuffer("journal", func() CounterTotals { return totals })
	want := `
# HELP cellar_counter_flush_errors_total Counter flush attempts that failed; they are retried. A rate above 0 for minutes means deltas are waiting (a storage or Redis node down).
# TYPE cellar_counter_flush_errors_total counter
cellar_counter_flush_errors_total{mode="journal"} 1
# HELP cellar_counter_increments_total Counter increments acknowledged, by buffer mode (journal or redis).
# TYPE cellar_counter_increments_total counter
cellar_counter_increments_total{mode="journal"} 7
# HELP cellar_counter_rejected_total Counter deltas a storage node refused because they would overflow int64: set aside, not applied (docs/COUNTERS.md).
# TYPE cellar_counter_rejected_total counter
cellar_counter_rejected_total{mode="journal"} 5
`
	names := []string{"cellar_counter_increments_total", "cellar_counter_flush_errors_total", "cellar_counter_rejected_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// Read at each scrape, not when set.
	totals.Flushes, totals.Statements, totals.Commits = 9, 11, 13
	for name, v := range map[string]float64{"cellar_counter_flushes_total": 9, "cellar_counter_flush_statements_total": 11, "cellar_counter_journal_commits_total": 13} {
		if got := gathered(t, reg, name); got != v {
			t.Errorf("%s = %v; want %v", name, got, v)
		}
	}
}

// gathered is the value of reg's only series named name.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no single series %s", name)
	return 0
}

func TestCounterBufferNil(t *testing.T) {
	var m *Metrics
	m.CounterBuffer("journal", func() CounterTotals { return CounterTotals{} })
}
