package counter

import (
	"context"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/cellar-db/cellar/internal/dbtest"
)

// totalScript runs luaTotal on ARGV, "nil" standing for a missing field,
// and answers the sum or "!" for out of range.
var totalScript = goredis.NewScript(luaTotal + `
local vals = {}
for i, v in ipairs(ARGV) do
  if v == 'nil' then vals[i] = false else vals[i] = v end
end
return total(vals) or '!'
`)

// luaTotal's sums equal exact ones, out of range exactly when they leave
// int64, for values of every size and sign in any order (the scripts'
// reads and overflow checks rest on it), and it writes nothing.
func TestLuaTotalExact(t *testing.T) {
	srv := dbtest.Redis(t)
	cl := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer cl.Close()
	ctx := context.Background()
	edges := []int64{0, 1, -1, 999999999, 1000000000, -1000000000, 1e15 - 1, 1e15, -1e15, 1 << 52, 1<<53 + 1,
		math.MaxInt64, math.MaxInt64 - 1, math.MinInt64, math.MinInt64 + 1, math.MaxInt64 / 2, math.MinInt64 / 2}
	rng := rand.New(rand.NewPCG(18, 4))
	value := func() int64 {
		switch rng.IntN(4) {
		case 0:
			return edges[rng.IntN(len(edges))]
		case 1:
			return rng.Int64N(2_000_000) - 1_000_000
		case 2:
			return edges[rng.IntN(len(edges))] - rng.Int64N(1000) + 500
		default:
			return int64(rng.Uint64())
		}
	}
	cases := [][]string{
		{"9223372036854775807"}, {"-9223372036854775808"},
		{"9223372036854775807", "1"}, {"-9223372036854775808", "-1"},
		{"9223372036854775607", "-100", "250"}, {"9223372036854775607", "250", "-100"},
		{"-9223372036854775808", "9223372036854775807", "1"}, {"1000000000000000", "nil", "-1"},
		{"-999999999", "-1", "1000000000000000"}, {"-1000000000", "1"}, {"-1", "-1000000000000000000"},
	}
	for range 3000 {
		n := 1 + rng.IntN(12)
		c := make([]string, n)
		for i := range c {
			if rng.IntN(8) == 0 {
				c[i] = "nil"
			} else {
				c[i] = strconv.FormatInt(value(), 10)
			}
		}
		cases = append(cases, c)
	}
	lo, hi := big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64)
	for _, c := range cases {
		sum := new(big.Int)
		args := make([]any, len(c))
		for i, v := range c {
			args[i] = v
			if v != "nil" {
				b, _ := new(big.Int).SetString(v, 10)
				sum.Add(sum, b)
			}
		}
		want := sum.String()
		if sum.Cmp(lo) < 0 || sum.Cmp(hi) > 0 {
			want = "!"
		}
		got, err := totalScript.Run(ctx, cl, nil, args...).Text()
		if err != nil {
			t.Fatalf("total(%v): %v", c, err)
		}
		if got != want {
			t.Errorf("total(%v) = %s; want %s", c, got, want)
		}
	}
	if n, err := cl.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Errorf("keys after the sums = %d, %v; want none written", n, err)
	}
}
