package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// Backends are the storage engines the harness knows, in the order it runs
// them.
var Backends = []string{"sqlite", "postgres", "mysql"}

// Ops are the operations the harness measures, in the order it runs them.
var Ops = []string{"put", "get", "latest", "batchGet"}

// ParseList parses a comma-separated list of names from allowed, matched
// without regard to case and returned as allowed spells them, in the order
// given. It refuses unknown names, repeats and an empty list.
func ParseList(what, s string, allowed []string) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		name := ""
		for _, a := range allowed {
			if strings.EqualFold(f, a) {
				name = a
				break
			}
		}
		if name == "" {
			return nil, fmt.Errorf("unknown %s %q; choose from %s", what, f, strings.Join(allowed, ","))
		}
		if seen[name] {
			return nil, fmt.Errorf("%s %q is listed twice", what, name)
		}
		seen[name] = true
		out = append(out, name)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no %s given; choose from %s", what, strings.Join(allowed, ","))
	}
	return out, nil
}

// MaxConcurrency bounds one concurrency level of the matrix.
const MaxConcurrency = 4096

// ParseConcurrency parses a comma-separated list of concurrency levels, each
// 1..MaxConcurrency, in the order given, without repeats.
func ParseConcurrency(s string) ([]int, error) {
	var out []int
	seen := make(map[int]bool)
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > MaxConcurrency {
			return nil, fmt.Errorf("concurrency %q must be a whole number 1..%d", f, MaxConcurrency)
		}
		if seen[n] {
			return nil, fmt.Errorf("concurrency %d is listed twice", n)
		}
		seen[n] = true
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no concurrency level given")
	}
	return out, nil
}
