package cellar_test

import (
	"strconv"
	"testing"

	"github.com/cellar-db/cellar"
)

// ScoreUnderflows reads Go syntax too (the CLI reads SCORE with
// strconv.ParseFloat, which takes hex floats): in a hex float 'e' is a
// digit and 'p' the exponent.
func TestScoreUnderflows(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"0x0p5", false},    // zero as written
		{"0x0.0p-3", false}, // zero as written
		{"0xep-2000", true}, // 14 * 2^-2000: reads as 0
		{"0x1p-2000", true}, // control, already right
		{"1e-400", true},    // control
		{"0e-400", false},   // control
	} {
		f, err := strconv.ParseFloat(tc.s, 64)
		if err != nil || f != 0 {
			t.Fatalf("ParseFloat(%q) = %v, %v", tc.s, f, err)
		}
		if got := cellar.ScoreUnderflows(tc.s, f); got != tc.want {
			t.Errorf("ScoreUnderflows(%q, 0) = %v; want %v", tc.s, got, tc.want)
		}
	}
}
