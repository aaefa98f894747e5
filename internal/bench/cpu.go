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

// cpuSample is CPU time consumed so far: by this process, and by the whole
// machine (every CPU's non-idle time). Both are zero where /proc is
// missing.
type cpuSample struct {
	process, machine time.Duration
}

func sampleCPU() cpuSample {
	var s cpuSample
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		// The fields after the command name, which may hold spaces, start
		// with the state; utime and stime are the 12th and 13th of them.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				s.process = ticks(f[11]) + ticks(f[12])
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

func ticks(s string) time.Duration {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	return time.Duration(n) * time.Second / userHZ
}
