package bench

import (
	"encoding/json"
	"fmt"
	"io"
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
	fmt.Fprintf(&b, "- each cell: %s warm-up, %s measured\n", rep.Warmup, rep.Duration)
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
			b.WriteString("| op | conc | cellar ops/s | cellar p50 | cellar p99 | direct ops/s | direct p50 | direct p99 | ratio |\n")
			b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
			for _, r := range br.Results {
				fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %.2f |\n", r.Op, r.Concurrency,
					rate(r.Cellar.OpsPerSec), latency(r.Cellar.P50Ms), latency(r.Cellar.P99Ms),
					rate(r.Direct.OpsPerSec), latency(r.Direct.P50Ms), latency(r.Direct.P99Ms), r.Ratio)
			}
			if br.Results[0].Cellar.MachineCores > 0 {
				fmt.Fprintf(&b, "\nCPU time of this process (load generator and cellar server; for SQLite the database engine too) per operation, and CPU cores busy on the whole machine (%d CPUs) during each measurement:\n\n", rep.NumCPU)
				b.WriteString("| op | conc | cellar CPU/op | direct CPU/op | machine busy, cellar | machine busy, direct |\n")
				b.WriteString("|---|--:|--:|--:|--:|--:|\n")
				for _, r := range br.Results {
					fmt.Fprintf(&b, "| %s | %d | %.0f µs | %.0f µs | %.2f | %.2f |\n", r.Op, r.Concurrency,
						r.Cellar.ProcessCPUPerOpUs, r.Direct.ProcessCPUPerOpUs, r.Cellar.MachineCores, r.Direct.MachineCores)
				}
			}
			for _, r := range br.Results {
				for _, side := range []struct {
					name string
					st   Stats
				}{{"cellar", r.Cellar}, {"direct", r.Direct}} {
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
		fmt.Fprintf(&b, "Durable puts (synchronous=FULL) over HTTP at concurrency %d, each mode on a fresh datastore preloaded as above.\n\n", gc.Concurrency)
		if gc.Error != "" {
			fmt.Fprintf(&b, "Failed: %s\n", gc.Error)
		} else {
			b.WriteString("| mode | conc | ops/s | p50 | p99 |\n|---|--:|--:|--:|--:|\n")
			fmt.Fprintf(&b, "| group commit | %d | %s | %s | %s |\n", gc.Concurrency, rate(gc.Group.OpsPerSec), latency(gc.Group.P50Ms), latency(gc.Group.P99Ms))
			fmt.Fprintf(&b, "| one transaction per put | %d | %s | %s | %s |\n", gc.Concurrency, rate(gc.Single.OpsPerSec), latency(gc.Single.P50Ms), latency(gc.Single.P99Ms))
			fmt.Fprintf(&b, "\nGroup commit / one transaction per put: %.1fx\n", gc.Ratio)
			for _, side := range []struct {
				name string
				st   Stats
			}{{"group commit", gc.Group}, {"one transaction per put", gc.Single}} {
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
			all = append(all, r.Cellar, r.Direct)
		}
	}
	if gc := rep.GroupCommit; gc != nil {
		all = append(all, gc.Group, gc.Single)
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
