package main

import (
	"os"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A command name with a space and a parenthesis.
	line := "4242 (post gres) x) S 4200 4200 4200 0 -1 4194560 100 0 0 0 250 75 3 1 20 0 1 0 100 1000 10\n"
	ppid, cpu, ok := parseProcStat([]byte(line))
	if !ok || ppid != 4200 || cpu != 3250*time.Millisecond {
		t.Errorf("parseProcStat = %d, %v, %v; want 4200, 3.25s, true", ppid, cpu, ok)
	}
	if _, _, ok := parseProcStat([]byte("4242 (short) S 1")); ok {
		t.Error("a truncated line parsed")
	}
}

func TestTreeCPU(t *testing.T) {
	pt := procTable{
		1:  {0, time.Second},
		10: {1, 2 * time.Second},
		11: {10, 3 * time.Second},
		12: {10, 4 * time.Second},
		20: {1, 100 * time.Second},
	}
	if got := pt.treeCPU(10); got != 9*time.Second {
		t.Errorf("treeCPU(10) = %v, want 9s", got)
	}
	if got := pt.treeCPU(99); got != -1 {
		t.Errorf("treeCPU of a missing pid = %v, want -1", got)
	}
}

func TestSampleSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	s := sampleCPU([]watchedPID{{"self", os.Getpid()}})
	if s.err != nil || s.busy <= 0 || len(s.trees) != 1 || s.trees[0] < 0 {
		t.Errorf("sample %+v", s)
	}
}
