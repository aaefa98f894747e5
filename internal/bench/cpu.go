package bench

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of Linux's /proc CPU times. It is 100 on every
// architecture Go supports.
const userHZ = 100

// cpuSample is CPU time consumed so far: by this process, by each of the
// database server's processes sampled, and by the whole machine (every
// CPU's non-idle time). All are zero where /proc is missing.
type cpuSample struct {
	process, machine time.Duration
	db               map[int]time.Duration // by pid
}

// sampleCPU samples this process, the machine, and the processes dbPIDs
// names.
func sampleCPU(dbPIDs []int) cpuSample {
	var s cpuSample
	s.process, _ = procCPU("self")
	if len(dbPIDs) > 0 {
		s.db = make(map[int]time.Duration, len(dbPIDs))
		for _, pid := range dbPIDs {
			if d, ok := procCPU(strconv.Itoa(pid)); ok {
				s.db[pid] = d
			}
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		// cpu user nice system idle iowait irq softirq steal ...
		if len(f) > 8 && f[0] == "cpu" {
			for i, v := range f[1:9] {
				if i == 3 || i == 4 { // idle, iowait
					continue
				}
				s.machine += ticks(v)
			}
		}
	}
	return s
}

// procCPU returns the user and system CPU time of the process pid ("self"
// for this one) so far.
func procCPU(pid string) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	// The fields after the command name, which may hold spaces, start
	// with the state; utime and stime are the 12th and 13th of them.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) <= 12 {
		return 0, false
	}
	return ticks(f[11]) + ticks(f[12]), true
}

// dbCPU returns the CPU time the database processes sampled in both from
// and to used between them.
func dbCPU(from, to cpuSample) time.Duration {
	var d time.Duration
	for pid, t := range to.db {
		if f, ok := from.db[pid]; ok && t >= f {
			d += t - f
		}
	}
	return d
}

// processesNamed returns the pids of this machine's processes whose
// command name is one of names.
func processesNamed(names ...string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && contains(names, strings.TrimSpace(string(comm))) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func ticks(s string) time.Duration {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	return time.Duration(n) * time.Second / userHZ
}
