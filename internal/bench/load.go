package bench

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"sync"
	"time"
)

// op performs one operation of a benchmark. Each worker has its own, so an
// op may keep state (a random source, a counter) without locking.
type op func(ctx context.Context) error

// window is how one cell of the matrix is timed.
type window struct {
	conc    int
	warmup  time.Duration
	measure time.Duration
	// profile, if not empty, is a file to write a CPU profile of the whole
	// process (load generator included) to, over warm-up and measurement.
	profile string
	// role labels the workers' goroutines (and those they start) in the
	// profile: pprof's "role" tag tells the load generator's CPU from the
	// server's, which is labeled "server".
	role string
	// dbPIDs, if not nil, lists the database server's processes whose CPU
	// time is sampled with this process's.
	dbPIDs func() []int
}

// run drives conc workers, each calling the op newOp gives it back to back,
// for w.warmup and then w.measure. It counts the operations that complete
// inside the measured window, whenever they started: in a steady state that
// is the completion rate, without the bias of dropping operations that
// straddle an edge. Workers start no operation after the window closes.
func run(parent context.Context, w window, newOp func(worker int) op) (measured, error) {
	if w.profile != "" {
		f, err := os.Create(w.profile)
		if err != nil {
			return measured{}, fmt.Errorf("create CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return measured{}, fmt.Errorf("start CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	type result struct {
		samples  []time.Duration
		errors   int64
		firstErr error
	}
	results := make([]result, w.conc)
	start := time.Now()
	from, to := start.Add(w.warmup), start.Add(w.warmup+w.measure)
	// Operations still running at the end are abandoned after a grace
	// period rather than waited for without bound.
	ctx, cancel := context.WithDeadline(parent, to.Add(30*time.Second))
	defer cancel()
	// CPU use is sampled at the edges of the measured window.
	var cpuFrom, cpuTo cpuSample
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var pids []int
		for _, s := range []struct {
			at  time.Time
			dst *cpuSample
		}{{from, &cpuFrom}, {to, &cpuTo}} {
			select {
			case <-time.After(time.Until(s.at)):
				// The database's processes are listed once, at the start,
				// so that both samples cover the same ones.
				if pids == nil && w.dbPIDs != nil {
					pids = w.dbPIDs()
				}
				*s.dst = sampleCPU(pids)
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range w.conc {
		do := newOp(i)
		r := &results[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w.role != "" {
				pprof.SetGoroutineLabels(pprof.WithLabels(ctx, pprof.Labels("role", w.role)))
			}
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(to) {
					return
				}
				err := do(ctx)
				t1 := time.Now()
				if t1.Before(from) || !t1.Before(to) {
					continue
				}
				if err != nil {
					r.errors++
					if r.firstErr == nil {
						r.firstErr = err
					}
					continue
				}
				r.samples = append(r.samples, t1.Sub(t0))
			}
		}()
	}
	wg.Wait()
	<-sampled
	if err := parent.Err(); err != nil {
		return measured{}, err
	}
	m := measured{window: w.measure}
	for _, r := range results {
		m.samples = append(m.samples, r.samples...)
		m.errors += r.errors
		if m.firstErr == "" && r.firstErr != nil {
			m.firstErr = r.firstErr.Error()
		}
	}
	if cpuTo.machine > 0 {
		m.cpu = true
		m.process = cpuTo.process - cpuFrom.process
		m.db = dbCPU(cpuFrom, cpuTo)
		m.machine = cpuTo.machine - cpuFrom.machine
	}
	return m, nil
}

// measured is what one or more measured windows of one side saw, before
// it is summarized: windows of the same side add up.
type measured struct {
	samples  []time.Duration // latency of each successful operation
	errors   int64
	firstErr string
	window   time.Duration // measured time
	// CPU time used in the windows, if known (cpu): by this process, by
	// the database server's processes, by the whole machine.
	cpu                  bool
	process, db, machine time.Duration
}

// add adds o's windows to m's.
func (m *measured) add(o measured) {
	m.samples = append(m.samples, o.samples...)
	m.errors += o.errors
	if m.firstErr == "" {
		m.firstErr = o.firstErr
	}
	if m.window == 0 {
		m.cpu = o.cpu
	}
	m.cpu = m.cpu && o.cpu
	m.window += o.window
	m.process += o.process
	m.db += o.db
	m.machine += o.machine
}

// stats summarizes m. It sorts m's samples in place.
func (m measured) stats() Stats {
	st := summarize(m.samples, m.errors, m.firstErr, m.window)
	if m.cpu {
		st = st.withCPU(m.process, m.db, m.machine, m.window)
	}
	return st
}
