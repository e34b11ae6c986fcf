package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPU of other processes and of the whole machine, from Linux's /proc:
// sampled at the start and at the end of the measured window.

// userHZ is the unit of the CPU times in /proc (USER_HZ, 100 on every
// Linux architecture Go supports).
const userHZ = 100

// watchedPID is a process (-cpu-pids label=pid) whose CPU, with its
// descendants', is reported, e.g. a node or the PostgreSQL postmaster.
type watchedPID struct {
	Label string
	PID   int
}

// cpuSample is one reading: machine busy and idle time, and each watched
// process tree's CPU time.
type cpuSample struct {
	at         time.Time
	busy, idle time.Duration
	trees      []time.Duration // by index in Config.CPUPIDs; -1: gone
	err        error           // /proc unreadable: nothing above is set
}

// sampleCPU reads /proc/stat and the watched process trees.
func sampleCPU(watched []watchedPID) cpuSample {
	s := cpuSample{at: time.Now()}
	if s.busy, s.idle, s.err = machineCPU(); s.err != nil {
		return s
	}
	if len(watched) == 0 {
		return s
	}
	procs, err := processes()
	if err != nil {
		s.err = err
		return s
	}
	for _, w := range watched {
		s.trees = append(s.trees, procs.treeCPU(w.PID))
	}
	return s
}

// machineCPU is the "cpu" line of /proc/stat: busy (user, nice, system,
// irq, softirq, steal) and idle (idle, iowait) time over all CPUs.
func machineCPU() (busy, idle time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var v [8]int64
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	user, nice, system, idl, iowait, irq, softirq, steal := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
	return ticks(user + nice + system + irq + softirq + steal), ticks(idl + iowait), nil
}

func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }

// procTable is every process's parent and CPU time (user + system).
type procTable map[int]struct {
	ppid int
	cpu  time.Duration
}

func processes() (procTable, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil, err
	}
	if len(dirs) == 0 {
		return nil, errors.New("/proc: no processes listed")
	}
	t := make(procTable, len(dirs))
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		ppid, cpu, ok := parseProcStat(b)
		if ok {
			t[pid] = struct {
				ppid int
				cpu  time.Duration
			}{ppid, cpu}
		}
	}
	return t, nil
}

// parseProcStat reads the parent and utime+stime of /proc/<pid>/stat.
// The command name (field 2) may hold spaces and parentheses: the fields
// after it start after its last ')'.
func parseProcStat(b []byte) (ppid int, cpu time.Duration, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, false
	}
	pp, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, false
	}
	return pp, ticks(ut + st), true
}

// treeCPU sums the CPU time of pid and its descendants; -1 if pid is gone.
func (t procTable) treeCPU(pid int) time.Duration {
	if _, ok := t[pid]; !ok {
		return -1
	}
	children := make(map[int][]int, len(t))
	for p, e := range t {
		children[e.ppid] = append(children[e.ppid], p)
	}
	var sum time.Duration
	stack := []int{pid}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		sum += t[p].cpu
		stack = append(stack, children[p]...)
	}
	return sum
}

// cpuBetween fills the machine-wide and watched figures of c from two
// samples. A process tree counts the CPU of its members alive at the end
// minus that at the start: a member that exited in between is missed,
// one that started counts whole.
func cpuBetween(c *CPU, watched []watchedPID, s0, s1 cpuSample) error {
	if err := errors.Join(s0.err, s1.err); err != nil {
		return fmt.Errorf("sample the CPU: %w", err)
	}
	wall := s1.at.Sub(s0.at).Seconds()
	if wall <= 0 {
		return nil
	}
	c.MachineBusyCores = (s1.busy - s0.busy).Seconds() / wall
	others := c.MachineBusyCores - c.ProcessCores
	var gone []string
	for i, w := range watched {
		if s0.trees[i] < 0 || s1.trees[i] < 0 {
			gone = append(gone, fmt.Sprintf("%s (pid %d)", w.Label, w.PID))
			continue
		}
		cores := (s1.trees[i] - s0.trees[i]).Seconds() / wall
		c.Watched = append(c.Watched, WatchedCPU{Label: w.Label, PID: w.PID, Cores: cores})
		others -= cores
	}
	c.OtherCores = max(others, 0)
	if len(gone) > 0 {
		return fmt.Errorf("not running at the start or end of the window: %s", strings.Join(gone, ", "))
	}
	return nil
}
