package perf

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ServerCPU is the CPU time, user and system, that the local processes
// serving a target used while its load was measured, and what that comes
// to per request. On a machine whose speed drifts, or whose cores the load
// generator shares, the cost of a request moves far less than throughput.
type ServerCPU struct {
	// Processes are the processes named in Target.PIDs, in that order.
	Processes []ProcessCPU `json:"processes"`
	// Seconds is their sum, and PerRequestUs that per request, in
	// microseconds.
	Seconds      float64 `json:"cpu_s"`
	PerRequestUs float64 `json:"per_request_us"`
}

// ProcessCPU is the CPU time of one process, over all its threads.
type ProcessCPU struct {
	PID          int     `json:"pid"`
	Seconds      float64 `json:"cpu_s"`
	PerRequestUs float64 `json:"per_request_us"`
}

// userHZ is the unit of the times in /proc/<pid>/stat: 100 ticks a second
// on every Linux system.
const userHZ = 100

// processCPU returns the CPU time, user and system, that process pid has
// used so far.
func processCPU(pid int) (time.Duration, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	d, err := parseStatCPU(stat)
	if err != nil {
		return 0, fmt.Errorf("CPU time of process %d: /proc/%d/stat: %w", pid, pid, err)
	}
	return d, nil
}

// parseStatCPU returns utime + stime from the contents of /proc/<pid>/stat.
func parseStatCPU(stat []byte) (time.Duration, error) {
	// The command name, in parentheses, may itself hold spaces and
	// parentheses: fields are counted from after its last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %q", stat)
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var ticks uint64
	for _, s := range f[11:13] {
		n, err := strconv.ParseUint(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time field %q: %v", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// sampleCPU returns the CPU time each of pids has used so far.
func sampleCPU(pids []int) ([]time.Duration, error) {
	times := make([]time.Duration, len(pids))
	for i, pid := range pids {
		var err error
		if times[i], err = processCPU(pid); err != nil {
			return nil, err
		}
	}
	return times, nil
}

// newServerCPU returns what pids used between the samples before and
// after, over requests requests.
func newServerCPU(pids []int, before, after []time.Duration, requests int64) *ServerCPU {
	c := &ServerCPU{Processes: make([]ProcessCPU, len(pids))}
	for i, pid := range pids {
		c.Processes[i] = ProcessCPU{PID: pid, Seconds: (after[i] - before[i]).Seconds()}
	}
	c.perRequest(requests)
	return c
}

// perRequest sets the sum and the costs per request from the processes'
// times.
func (c *ServerCPU) perRequest(requests int64) {
	c.Seconds = 0
	for i := range c.Processes {
		p := &c.Processes[i]
		c.Seconds += p.Seconds
		p.PerRequestUs = perRequestUs(p.Seconds, requests)
	}
	c.PerRequestUs = perRequestUs(c.Seconds, requests)
}

func perRequestUs(seconds float64, requests int64) float64 {
	if requests <= 0 {
		return 0
	}
	return seconds * 1e6 / float64(requests)
}

// add folds o, the same processes over another round, into c.
func (c *ServerCPU) add(o *ServerCPU, requests int64) {
	for i := range c.Processes {
		if i < len(o.Processes) {
			c.Processes[i].Seconds += o.Processes[i].Seconds
		}
	}
	c.perRequest(requests)
}
