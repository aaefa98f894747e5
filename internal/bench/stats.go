package bench

import (
	"math"
	"slices"
	"time"
)

// Stats summarizes one measured run of one operation.
type Stats struct {
	// Ops is the number of operations that succeeded and completed inside
	// the measured window; Errors the number that failed there.
	Ops    int64 `json:"ops"`
	Errors int64 `json:"errors"`
	// FirstError is the first failure's message, if any.
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	// Latency percentiles of the successful operations, in milliseconds.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	// ProcessCores is the CPU time this process (load generator and
	// cellar server together) used per second of the window, and
	// MachineCores the CPU time the whole machine used (database servers
	// and anything else included); both 0 where the system does not say.
	ProcessCores float64 `json:"process_cores,omitempty"`
	MachineCores float64 `json:"machine_cores,omitempty"`
	// ProcessCPUPerOpUs is this process's CPU time per successful
	// operation, in microseconds.
	ProcessCPUPerOpUs float64 `json:"process_cpu_per_op_us,omitempty"`
	// DBCores and DBCPUPerOpUs are the same for the database server's
	// processes, where they run on this machine: PostgreSQL's backends
	// connected to the bench's database (not the shared background
	// processes); the whole MySQL server process (other clients' work
	// included). Zero
	// for SQLite, whose engine runs in this process.
	DBCores      float64 `json:"db_cores,omitempty"`
	DBCPUPerOpUs float64 `json:"db_cpu_per_op_us,omitempty"`
	// MachineCPUPerOpUs is the whole machine's CPU time per successful
	// operation: with every core busy, throughput is its inverse. It
	// includes whatever else the machine was running.
	MachineCPUPerOpUs float64 `json:"machine_cpu_per_op_us,omitempty"`
	// Load1 is the machine's 1-minute load average at the end, where the
	// system reports it: a sign of other work competing for the CPUs.
	Load1 float64 `json:"load_1min,omitempty"`
}

// withCPU adds the CPU time used over a window of d: by this process, by
// the database server and by the whole machine.
func (st Stats) withCPU(proc, db, machine, d time.Duration) Stats {
	if machine == 0 || d <= 0 {
		return st
	}
	st.ProcessCores = proc.Seconds() / d.Seconds()
	st.DBCores = db.Seconds() / d.Seconds()
	st.MachineCores = machine.Seconds() / d.Seconds()
	if st.Ops > 0 {
		st.ProcessCPUPerOpUs = float64(proc.Microseconds()) / float64(st.Ops)
		st.DBCPUPerOpUs = float64(db.Microseconds()) / float64(st.Ops)
		st.MachineCPUPerOpUs = float64(machine.Microseconds()) / float64(st.Ops)
	}
	return st
}

// summarize computes Stats from every successful operation's latency over
// a window of d. It sorts samples in place.
func summarize(samples []time.Duration, errors int64, firstErr string, d time.Duration) Stats {
	slices.Sort(samples)
	st := Stats{Ops: int64(len(samples)), Errors: errors, FirstError: firstErr, Seconds: d.Seconds()}
	if d > 0 {
		st.OpsPerSec = float64(len(samples)) / d.Seconds()
	}
	st.P50Ms = ms(percentile(samples, 0.50))
	st.P99Ms = ms(percentile(samples, 0.99))
	return st
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the q-quantile (0 <= q <= 1) of sorted, interpolating
// linearly between the two closest ranks (Hyndman and Fan's type 7, the
// default of R and NumPy). So the 0.5-quantile is the exact median: the
// middle sample, or the mean of the two middle ones. It returns 0 for no
// samples.
func percentile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	q = max(0, min(1, q))
	h := q * float64(n-1)
	lo := int(math.Floor(h))
	if lo >= n-1 {
		return sorted[n-1]
	}
	frac := h - float64(lo)
	return sorted[lo] + time.Duration(math.Round(frac*float64(sorted[lo+1]-sorted[lo])))
}
