package metrics

import "github.com/prometheus/client_golang/prometheus"

// TriggerDelivered records cells handed to a trigger's consumer.
func (m *Metrics) TriggerDelivered(trigger string, cells int) {
	if m == nil || cells <= 0 {
		return
	}
	m.triggerCells.WithLabelValues(trigger, "delivered").Add(float64(cells))
}

// TriggerAcked records cells a trigger's offsets moved over: its
// throughput.
func (m *Metrics) TriggerAcked(trigger string, cells int) {
	if m == nil || cells <= 0 {
		return
	}
	m.triggerCells.WithLabelValues(trigger, "acked").Add(float64(cells))
}

// TriggerLag records a trigger's measured lag.
func (m *Metrics) TriggerLag(trigger string, cells int64, seconds float64) {
	if m == nil {
		return
	}
	m.triggerLagCells.WithLabelValues(trigger).Set(float64(cells))
	m.triggerLagSecs.WithLabelValues(trigger).Set(seconds)
}

// TriggerGone drops the series of a trigger that no longer exists, so that
// a deleted trigger's lag does not stay at its last value (and alert)
// forever, and deleted names do not pile up.
func (m *Metrics) TriggerGone(trigger string) {
	if m == nil {
		return
	}
	m.triggerLagCells.DeleteLabelValues(trigger)
	m.triggerLagSecs.DeleteLabelValues(trigger)
	m.triggerCells.DeletePartialMatch(prometheus.Labels{"trigger": trigger})
}
