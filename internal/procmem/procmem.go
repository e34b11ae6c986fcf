// Package procmem reads a process's resident memory from Linux's
// /proc/PID/status: what the benchmarks report as RSS, split into
// anonymous and file-backed pages.
package procmem

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Memory is a process's resident memory (/proc/PID/status), in bytes.
type Memory struct {
	RSS     int64 `json:"rss"`      // VmRSS
	RSSAnon int64 `json:"rss_anon"` // RssAnon: heap, stacks, runtime (no file-backed pages)
	RSSFile int64 `json:"rss_file"` // RssFile: the binary's pages, mapped files
}

// Read reads process pid's resident memory.
func Read(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	return Parse(b)
}

// Parse reads the VmRSS, RssAnon and RssFile lines ("kB") of a status file.
func Parse(b []byte) (Memory, error) {
	var m Memory
	want := map[string]*int64{"VmRSS:": &m.RSS, "RssAnon:": &m.RSSAnon, "RssFile:": &m.RSSFile}
	found := 0
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "kB" {
			continue
		}
		if p, ok := want[f[0]]; ok {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return Memory{}, fmt.Errorf("/proc status %s: %w", f[0], err)
			}
			*p = kb << 10
			found++
		}
	}
	if found != len(want) {
		return Memory{}, fmt.Errorf("/proc status: found %d of VmRSS, RssAnon, RssFile", found)
	}
	return m, nil
}
