package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestTriggerMetrics(t *testing.T) {
	m := New(prometheus.NewRegistry(), nil)
	m.TriggerDelivered("mail", 5)
	m.TriggerDelivered("mail", 2)
	m.TriggerAcked("mail", 4)
	m.TriggerLag("mail", 12, 1.5)
	m.TriggerLag("mail", 3, 0.25)
	for _, tt := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"delivered", m.triggerCells.WithLabelValues("mail", "delivered"), 7},
		{"acked", m.triggerCells.WithLabelValues("mail", "acked"), 4},
		{"lag cells", m.triggerLagCells.WithLabelValues("mail"), 3},
		{"lag seconds", m.triggerLagSecs.WithLabelValues("mail"), 0.25},
	} {
		if got := testutil.ToFloat64(tt.c); got != tt.want {
			t.Errorf("%s = %v; want %v", tt.name, got, tt.want)
		}
	}
	// A trigger gone takes its series with it, and only its own.
	m.TriggerLag("push", 1, 1)
	m.TriggerAcked("push", 1)
	m.TriggerGone("mail")
	for _, tt := range []struct {
		name string
		c    prometheus.Collector
		want int
	}{{"cells", m.triggerCells, 1}, {"lag cells", m.triggerLagCells, 1}, {"lag seconds", m.triggerLagSecs, 1}} {
		if got := testutil.CollectAndCount(tt.c); got != tt.want {
			t.Errorf("%s series after mail is gone: %d; want %d (push's)", tt.name, got, tt.want)
		}
	}
	var none *Metrics
	none.TriggerDelivered("mail", 1)
	none.TriggerAcked("mail", 1)
	none.TriggerLag("mail", 1, 1)
	none.TriggerGone("mail")
}
