package cellar

import (
	"context"
	"strings"
)

// DefaultTimelineCap is how many members a timeline keeps unless its cap
// is set otherwise.
const DefaultTimelineCap = 10000

// Limits on timelines: the largest cap, and the most members one range
// returns.
const (
	MaxTimelineCap   = 1_000_000
	MaxTimelineLimit = 1000
)

// TimelineItem is one member of a timeline and its score.
type TimelineItem struct {
	Member string  `json:"member"`
	Score  float64 `json:"score"`
}

// TimelineStore keeps capped timelines: per key, the members with the
// highest scores, at most the timeline's cap of them. Timeline keys follow
// the row key rules and are sharded like row keys.
type TimelineStore interface {
	// TimelineAdd adds member with score, or updates the score of a member
	// already there. Past the cap, the lowest scores are trimmed (amortized:
	// see the implementation for when). Returns EINVALID for a bad key or
	// member, or a score that is NaN or infinite.
	TimelineAdd(ctx context.Context, key, member string, score float64) error

	// TimelineRemove removes member; removed is false if it was not there.
	TimelineRemove(ctx context.Context, key, member string) (removed bool, err error)

	// TimelineRange returns up to limit members from offset, ordered by
	// score (descending if desc; ties by member), and the timeline's count.
	TimelineRange(ctx context.Context, key string, offset, limit int, desc bool) (items []TimelineItem, count int64, err error)

	// TimelineCount returns how many members the timeline holds.
	TimelineCount(ctx context.Context, key string) (int64, error)

	// SetTimelineCap sets the cap of timeline key (1..1,000,000).
	SetTimelineCap(ctx context.Context, key string, cap int) error
}

// ScoreUnderflows reports whether the number literal s (JSON, or Go
// syntax as strconv.ParseFloat reads it, hex floats included) is not zero
// as written, for a digit other than 0 comes before its exponent, yet is
// too small for a float64 and reads as f = 0 (1e-400, 0x1p-2000). Such
// scores are refused like those too large.
func ScoreUnderflows(s string, f float64) bool {
	if f != 0 {
		return false
	}
	s = strings.TrimLeft(s, "+-")
	digits, exponent := "123456789", "eE"
	if len(s) > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		s, digits, exponent = s[2:], "123456789abcdefABCDEF", "pP"
	}
	if i := strings.IndexAny(s, exponent); i >= 0 {
		s = s[:i]
	}
	return strings.ContainsAny(s, digits)
}
