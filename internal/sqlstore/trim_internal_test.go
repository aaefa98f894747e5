package sqlstore

import "testing"

// TestTrimSlack: a tenth of the cap, at least 8, at most maxTrimSlack, so
// that the add that trims a large timeline does bounded work.
func TestTrimSlack(t *testing.T) {
	for _, tt := range []struct{ cap, want int64 }{{1, 8}, {80, 8}, {1000, 100}, {10_000, 1000}, {10_240, 1024}, {1_000_000, maxTrimSlack}} {
		if got := trimSlack(tt.cap); got != tt.want {
			t.Errorf("trimSlack(%d) = %d; want %d", tt.cap, got, tt.want)
		}
	}
}
