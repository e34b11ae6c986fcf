package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// What `tandem-bench conns` reads from Linux's /proc and from a node's
// /metrics (a process's own memory: internal/procmem).

// kernelMemory is the machine's kernel memory that grows with sockets.
// Machine-wide: on loopback it counts both ends of every connection, and
// whatever else runs on the machine.
type kernelMemory struct {
	TCPInUse   int64            `json:"tcp_inuse"`          // /proc/net/sockstat "TCP: inuse"
	TCPMem     int64            `json:"tcp_mem"`            // "TCP: mem" pages × page size: socket buffers
	SocketSlab int64            `json:"socket_slab"`        // slab pages of socketSlabCaches (/proc/slabinfo)
	Slab       int64            `json:"slab"`               // /proc/meminfo Slab: every slab cache
	SlabCaches map[string]int64 `json:"socket_slab_caches"` // by cache
}

// socketSlabCaches are the slab caches one TCP socket held by a process
// takes objects from: the socket (TCP), its inode (sock_inode_cache) and
// dentry, the open file (filp), the LSM blobs of the inode and the file,
// and the epoll registration (eventpoll_epi; Go's netpoller registers
// every socket).
var socketSlabCaches = []string{"TCP", "sock_inode_cache", "dentry", "filp", "lsm_inode_cache", "lsm_file_cache", "eventpoll_epi"}

func readKernelMemory() (kernelMemory, error) {
	var k kernelMemory
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return k, err
	}
	if k.TCPInUse, k.TCPMem, err = parseSockstat(b); err != nil {
		return k, err
	}
	k.TCPMem *= int64(os.Getpagesize())
	f, err := os.Open("/proc/slabinfo")
	if err != nil {
		return k, err
	}
	defer f.Close()
	if k.SlabCaches, err = parseSlabinfo(f, socketSlabCaches, int64(os.Getpagesize())); err != nil {
		return k, err
	}
	for _, v := range k.SlabCaches {
		k.SocketSlab += v
	}
	if b, err = os.ReadFile("/proc/meminfo"); err != nil {
		return k, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "Slab:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return k, fmt.Errorf("/proc/meminfo Slab: %w", err)
			}
			k.Slab = kb << 10
		}
	}
	return k, nil
}

// parseSockstat reads the "TCP:" line's inuse and mem (pages).
func parseSockstat(b []byte) (inuse, memPages int64, err error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		got := 0
		for i := 1; i+1 < len(f); i += 2 {
			var p *int64
			switch f[i] {
			case "inuse":
				p = &inuse
			case "mem":
				p = &memPages
			default:
				continue
			}
			if *p, err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return 0, 0, fmt.Errorf("/proc/net/sockstat %s: %w", f[i], err)
			}
			got++
		}
		if got != 2 {
			return 0, 0, fmt.Errorf("/proc/net/sockstat: TCP line %q", line)
		}
		return inuse, memPages, nil
	}
	return 0, 0, fmt.Errorf("/proc/net/sockstat: no TCP line")
}

// parseSlabinfo returns the bytes of the slab pages of the named caches
// (num_slabs × pagesperslab × page size): what the cache holds from the
// page allocator, used objects or not. A cache the kernel does not have
// counts 0 (kernels merge some caches into others).
func parseSlabinfo(r io.Reader, names []string, pageSize int64) (map[string]int64, error) {
	out := make(map[string]int64, len(names))
	for _, n := range names {
		out[n] = 0
	}
	sc := bufio.NewScanner(r)
	header := false
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte("slabinfo - version")) {
			header = true
			continue
		}
		if bytes.HasPrefix(line, []byte("#")) {
			continue
		}
		// name active num objsize objperslab pagesperslab : tunables l b s : slabdata active_slabs num_slabs shared
		f := strings.Fields(string(line))
		if len(f) < 16 || f[6] != ":" || f[12] != "slabdata" {
			return nil, fmt.Errorf("/proc/slabinfo: unexpected line %q", line)
		}
		if _, want := out[f[0]]; !want {
			continue
		}
		pps, err1 := strconv.ParseInt(f[5], 10, 64)
		slabs, err2 := strconv.ParseInt(f[14], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("/proc/slabinfo: line %q", line)
		}
		out[f[0]] += slabs * pps * pageSize
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !header {
		return nil, fmt.Errorf("/proc/slabinfo: no version line")
	}
	return out, nil
}

// parseMetrics sums a Prometheus text exposition's samples by metric name
// (over their labels), for the names asked.
func parseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	out := make(map[string]float64, len(names))
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		if !want[name] {
			continue
		}
		rest := line[len(name):]
		if strings.HasPrefix(rest, "{") {
			i := strings.LastIndexByte(rest, '}')
			if i < 0 {
				return nil, fmt.Errorf("metrics: line %q", line)
			}
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: line %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: line %q: %w", line, err)
		}
		out[name] += v
	}
	return out, sc.Err()
}
