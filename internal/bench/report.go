package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// WriteJSON writes rep as indented JSON.
func WriteJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteMarkdown writes rep as Markdown, ready to paste into BENCHMARKS.md.
func WriteMarkdown(w io.Writer, rep *Report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# cellar bench\n\n")
	fmt.Fprintf(&b, "- command: `%s`\n", rep.Command)
	fmt.Fprintf(&b, "- date: %s\n", rep.Date)
	fmt.Fprintf(&b, "- commit: %s\n", rep.Commit)
	fmt.Fprintf(&b, "- Go: %s %s, GOMAXPROCS=%d, NumCPU=%d\n", rep.GoVersion, rep.Platform, rep.GOMAXPROCS, rep.NumCPU)
	if rep.CPU != "" {
		fmt.Fprintf(&b, "- CPU: %s\n", rep.CPU)
	}
	if rep.LoadBefore != "" {
		fmt.Fprintf(&b, "- load average (1/5/15 min): %s before, %s after", rep.LoadBefore, rep.LoadAfter)
		if lo, hi, ok := loadRange(rep); ok {
			fmt.Fprintf(&b, "; 1-min load at the end of each measurement: %.2f to %.2f", lo, hi)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "- each cell: %s warm-up, %s measured per side", rep.Warmup, rep.Duration)
	if rep.Rounds > 1 {
		fmt.Fprintf(&b, ", in %d rounds (a warm-up before each), the sides taking turns", rep.Rounds)
	}
	b.WriteString("\n")
	b.WriteString("\nMethod:\n\n")
	for _, m := range rep.Method {
		fmt.Fprintf(&b, "- %s\n", m)
	}
	for _, br := range rep.Backends {
		fmt.Fprintf(&b, "\n## %s\n\n", br.Name)
		if br.Skipped != "" {
			fmt.Fprintf(&b, "Skipped: %s.\n", br.Skipped)
			continue
		}
		if br.Server != "" {
			fmt.Fprintf(&b, "%s.\n\n", br.Server)
		}
		if len(br.Results) > 0 {
			b.WriteString("| op | conc | cellar ops/s | cellar p50 | cellar p99 | via Go client ops/s | p50 | p99 | direct ops/s | direct p50 | direct p99 | ratio | ratio via Go client |\n")
			b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
			for _, r := range br.Results {
				fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %.2f |\n", r.Op, r.Concurrency,
					rate(r.Cellar.OpsPerSec), latency(r.Cellar.P50Ms), latency(r.Cellar.P99Ms),
					rate(r.Client.OpsPerSec), latency(r.Client.P50Ms), latency(r.Client.P99Ms),
					rate(r.Direct.OpsPerSec), latency(r.Direct.P50Ms), latency(r.Direct.P99Ms), down(r.Ratio, 2), down(r.ClientRatio, 2))
			}
			if br.Results[0].Cellar.MachineCores > 0 {
				fmt.Fprintf(&b, "\nCPU time per operation: of this process (load generator and cellar server; for SQLite the database engine too), of the database server where it runs on this machine, and of the whole machine (%d CPUs, whatever else it ran included), with the CPU cores busy on the whole machine during each measurement:\n\n", rep.NumCPU)
				b.WriteString("| op | conc | side | process CPU/op | database CPU/op | machine CPU/op | machine busy |\n")
				b.WriteString("|---|--:|---|--:|--:|--:|--:|\n")
				for _, r := range br.Results {
					for _, side := range r.sides() {
						fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %.2f |\n", r.Op, r.Concurrency, side.name,
							micros(side.st.ProcessCPUPerOpUs), micros(side.st.DBCPUPerOpUs), micros(side.st.MachineCPUPerOpUs), side.st.MachineCores)
					}
				}
			}
			var coalesced []string
			for _, r := range br.Results {
				if c := r.Coalesced; c.Statements > 0 {
					coalesced = append(coalesced, fmt.Sprintf("%s c=%d: %d statements answered %d reads (%.1f each)",
						r.Op, r.Concurrency, c.Statements, c.Reads, float64(c.Reads)/float64(c.Statements)))
				}
			}
			if len(coalesced) > 0 {
				fmt.Fprintf(&b, "\nCoalesced point reads (statements of the node that answered more than one get or latest; both cellar sides, warm-ups included): %s.\n", strings.Join(coalesced, "; "))
			}
			for _, r := range br.Results {
				for _, side := range r.sides() {
					if side.st.Errors > 0 {
						fmt.Fprintf(&b, "\n%s %s c=%d: %d operations failed; first: %s\n", side.name, r.Op, r.Concurrency, side.st.Errors, side.st.FirstError)
					}
				}
			}
		}
		if br.Error != "" {
			fmt.Fprintf(&b, "\nFailed: %s\n", br.Error)
		}
	}
	if gc := rep.GroupCommit; gc != nil {
		b.WriteString("\n## SQLite group commit\n\n")
		fmt.Fprintf(&b, "Durable puts (synchronous=FULL) over HTTP at concurrency %d, each mode on a fresh datastore preloaded as above", gc.Concurrency)
		if rep.Rounds > 1 {
			fmt.Fprintf(&b, ", in %d rounds: in each, both modes by the lean load generator, then both through the Go client, group commit first in odd rounds and one transaction per put first in even ones, each mode's datastore carrying on from its last round", rep.Rounds)
		}
		b.WriteString(".\n\n")
		if gc.Error != "" {
			fmt.Fprintf(&b, "Failed: %s\n", gc.Error)
		} else {
			sides := []side{
				{"group commit", gc.Group}, {"one transaction per put", gc.Single},
				{"group commit, via Go client", gc.ClientGroup}, {"one transaction per put, via Go client", gc.ClientSingle},
			}
			b.WriteString("| mode | conc | ops/s | p50 | p99 | process CPU/op | machine CPU/op |\n|---|--:|--:|--:|--:|--:|--:|\n")
			for _, side := range sides {
				fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s |\n", side.name, gc.Concurrency, rate(side.st.OpsPerSec),
					latency(side.st.P50Ms), latency(side.st.P99Ms), micros(side.st.ProcessCPUPerOpUs), micros(side.st.MachineCPUPerOpUs))
			}
			fmt.Fprintf(&b, "\nGroup commit / one transaction per put: %.2fx (via Go client: %.2fx)\n", down(gc.Ratio, 2), down(gc.ClientRatio, 2))
			if len(gc.RoundRatios) > 1 || len(gc.ClientRoundRatios) > 1 {
				fmt.Fprintf(&b, "\nPer round: %s (via Go client: %s)\n", spread(gc.RoundRatios), spread(gc.ClientRoundRatios))
			}
			for _, side := range sides {
				if side.st.Errors > 0 {
					fmt.Fprintf(&b, "\n%s: %d operations failed; first: %s\n", side.name, side.st.Errors, side.st.FirstError)
				}
			}
		}
	}
	b.WriteString("\n## Targets\n\n")
	for _, t := range rep.Targets {
		verdict := "not measured"
		if t.Measured {
			verdict = "**not met**"
			if t.Met {
				verdict = "**met**"
			}
		}
		fmt.Fprintf(&b, "- %s: %s (%s)\n", t.Name, verdict, t.Detail)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

type side struct {
	name string
	st   Stats
}

// sides are r's three measurements, named as the report names them.
func (r Result) sides() []side {
	return []side{{"cellar", r.Cellar}, {"via Go client", r.Client}, {"direct", r.Direct}}
}

// micros formats a CPU time per operation; 0 is unknown.
func micros(us float64) string {
	if us == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f µs", us)
}

// rate formats a throughput.
func rate(opsPerSec float64) string { return fmt.Sprintf("%.0f", opsPerSec) }

// latency formats milliseconds with about three significant digits.
func latency(ms float64) string {
	switch {
	case ms == 0:
		return "-"
	case ms < 1:
		return fmt.Sprintf("%.3f ms", ms)
	case ms < 100:
		return fmt.Sprintf("%.2f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// loadRange returns the least and greatest 1-minute load average seen at
// the end of a measurement.
func loadRange(rep *Report) (lo, hi float64, ok bool) {
	var all []Stats
	for _, br := range rep.Backends {
		for _, r := range br.Results {
			all = append(all, r.Cellar, r.Client, r.Direct)
		}
	}
	if gc := rep.GroupCommit; gc != nil {
		all = append(all, gc.Group, gc.Single, gc.ClientGroup, gc.ClientSingle)
	}
	for _, st := range all {
		if st.Load1 == 0 {
			continue
		}
		if !ok || st.Load1 < lo {
			lo = st.Load1
		}
		if !ok || st.Load1 > hi {
			hi = st.Load1
		}
		ok = true
	}
	return lo, hi, ok
}

// spread formats ratios as their median, range and values in order:
// "median 4.1x (3.6-5.1x; 4.1, 5.1, 3.6)".
// The figures are cut toward zero, as every printed ratio is; "none" if
// there are none (a side that measured nothing in every round).
func spread(ratios []float64) string {
	sorted := slices.Sorted(slices.Values(ratios))
	n := len(sorted)
	if n == 0 {
		return "none"
	}
	med := sorted[n/2]
	if n%2 == 0 {
		med = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	each := make([]string, n)
	for i, r := range ratios {
		each[i] = fmt.Sprintf("%.1f", down(r, 1))
	}
	return fmt.Sprintf("median %.1fx (%.1f-%.1fx; %s)", down(med, 1), down(sorted[0], 1), down(sorted[n-1], 1), strings.Join(each, ", "))
}

// down cuts x to digits decimals, toward zero: a ratio printed never reads
// as a target it falls short of (4.996 as 5.00x beside "not met"). The
// nudge keeps a float a hair below its decimal (5.1*100 is 509.99...) at
// that decimal.
func down(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Trunc(x*p+1e-9) / p
}
