package persistence

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Why a guard: badger (v4, through ristretto's z.OpenMmapFile) creates its
// memtable WALs (NNNNN.mem, 2 × MemTableSize), tables and value log by
// ftruncate — sparse — then mmap and memcpy. A store into a page the file
// system cannot back is not an ENOSPC but a SIGBUS, and the process dies
// (issue 13). So the store stops writing while there is still room for
// everything badger may write after the last commit; on a tmpfs it also
// allocates each new memtable file as soon as it appears, so the WAL
// writes into it cannot fault (not on ext4 or xfs: newDiskGuard says why).

var (
	// ErrDiskFull: free space on the data dir's file system is below the
	// reserve; the write was refused before anything of it was written.
	// Retry later: the store takes writes again once space is freed.
	ErrDiskFull = errors.New("persistence: disk full")
	// ErrStoreFailed: a commit (a write or its fsync) failed earlier; the
	// store takes no more writes, because what the failed sync left on
	// disk is unknown (PostgreSQL's "fsyncgate"). Reopen the store (restart
	// the node) to continue from what is durable.
	ErrStoreFailed = errors.New("persistence: store failed")
)

const (
	// guardMinInterval is how often the committer may statfs before a
	// commit at most; the ticker checks every guardTick in between.
	guardMinInterval = 5 * time.Millisecond
	guardTick        = 250 * time.Millisecond
)

// DefaultDiskReserve is the reserve for o (with its defaults): what badger
// may still write after the store stops taking writes, so that it never
// stores into a page the file system cannot back:
//
//	2 × MemTableSize                   the next memtable file, allocated whole
//	+ NumMemtables × MemTableSize      flushing the full memtables to level 0
//	+ NumLevelZeroTables × MemTableSize a level-0 compaction's new tables,
//	                                   written before the old ones are deleted
//	+ 2 × BaseTableSize                the level-1 tables such a compaction
//	                                   rewrites with them
//
// 528 MiB with the defaults (32 MiB memtables), 232 MiB with
// --badger-tuning latency.
func DefaultDiskReserve(o BadgerOptions) int64 {
	o.DiskReserve = 0
	return o.withDefaults().DiskReserve
}

// defaultDiskReserve is DefaultDiskReserve of o with its other defaults set.
func (o BadgerOptions) defaultDiskReserve() int64 {
	return (2+int64(o.NumMemtables)+int64(o.NumLevelZeroTables))*o.MemTableSize + 2*o.BaseTableSize
}

// DiskStatus is the guard's view of the data dir's file system.
type DiskStatus struct {
	Dir         string
	Free, Total uint64 // bytes; Free as an unprivileged writer sees it
	Reserve     uint64
	Full        bool   // writes are refused with ErrDiskFull
	Refused     uint64 // appends and activations refused because full, since open
}

// diskGuard watches the free space of the store's file system. check may
// run on any goroutine; the memtable fields are the committer's.
type diskGuard struct {
	// Set at open, then read-only.
	dir      string
	reserve  uint64
	resume   uint64 // free space at which a full store takes writes again
	log      *slog.Logger
	memBytes int64 // size badger gives a memtable file

	mu        sync.Mutex // one statfs at a time
	lastCheck atomic.Int64
	free      atomic.Uint64
	total     atomic.Uint64
	full      atomic.Bool
	refused   atomic.Uint64

	// Only the committer (and open).
	memFid   int  // newest memtable file known; -1: none
	noFalloc bool // memtable files are not allocated: not a tmpfs, or fallocate failed
}

func newDiskGuard(dir string, reserve int64, memTableSize int64, log *slog.Logger) (*diskGuard, error) {
	g := &diskGuard{dir: dir, reserve: uint64(reserve), log: log, memBytes: 2 * memTableSize, memFid: -1}
	g.resume = g.reserve + g.reserve/4
	if err := g.check(time.Now()); err != nil {
		return nil, err
	}
	// Memtable files are allocated whole only on a tmpfs, where fallocate
	// gives real zeroed pages. On ext4 and xfs it gives unwritten extents,
	// which badger's first write into each block converts: a metadata
	// change whose loss the file system may not report to that write's
	// fdatasync. Seen here (TestStoreFailsWhileServing: ext4 on a thin
	// volume that ran out): an append acked after a successful msync was
	// gone after the restart, because its blocks were still unwritten
	// extents, read as zeros. Without the allocation the same fault failed
	// the msync, as it must. There the reserve alone keeps badger's mmapped
	// writes off a full disk (a foreign writer that takes the last bytes
	// can still cost a SIGBUS: docs/operations.md).
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		g.noFalloc = true
	}
	return g, nil
}

// check reads the file system's free space and updates the state: full
// below the reserve, not full again at reserve + 25 % (hysteresis, so a
// store at the edge does not flap).
func (g *diskGuard) check(now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lastCheck.Store(now.UnixNano())
	var st unix.Statfs_t
	if err := unix.Statfs(g.dir, &st); err != nil {
		return fmt.Errorf("persistence: statfs %s: %w", g.dir, err)
	}
	free := st.Bavail * uint64(st.Bsize)
	g.free.Store(free)
	g.total.Store(st.Blocks * uint64(st.Bsize))
	switch {
	case !g.full.Load() && free < g.reserve:
		g.full.Store(true)
		g.log.Error("disk full: refusing writes", "dir", g.dir, "free", free, "reserve", g.reserve)
	case g.full.Load() && free >= g.resume:
		g.full.Store(false)
		g.log.Warn("disk space recovered: taking writes again", "dir", g.dir, "free", free, "resume_at", g.resume)
	}
	return nil
}

// maybeCheck checks unless a check ran less than guardMinInterval ago. A
// failing statfs keeps the previous state (and is logged).
func (g *diskGuard) maybeCheck(now time.Time) {
	if now.UnixNano()-g.lastCheck.Load() < int64(guardMinInterval) {
		return
	}
	if err := g.check(now); err != nil {
		g.log.Warn("disk guard", "err", err)
	}
}

// err is ErrDiskFull, naming the numbers, while full; else nil.
func (g *diskGuard) err() error {
	if !g.full.Load() {
		return nil
	}
	return fmt.Errorf("%w: %s free on %s, reserve %s", ErrDiskFull, fmtBytes(g.free.Load()), g.dir, fmtBytes(g.reserve))
}

func (g *diskGuard) status() DiskStatus {
	return DiskStatus{Dir: g.dir, Free: g.free.Load(), Total: g.total.Load(), Reserve: g.reserve,
		Full: g.full.Load(), Refused: g.refused.Load()}
}

// allocateMemtables allocates the blocks of every memtable file newer than
// the last one seen (badger names them NNNNN.mem from a counter that only
// grows, memtable.go mtFilePath): one stat per commit when none is new.
// Badger writes the first batch into a new file before this sees it; from
// then on its WAL writes cannot fault. An ENOSPC trips the guard at once.
func (g *diskGuard) allocateMemtables() {
	if g.memFid < 0 || g.noFalloc {
		return
	}
	for {
		next := g.memFid + 1
		if err := g.allocate(memFilePath(g.dir, next)); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return
			}
			if errors.Is(err, unix.ENOSPC) {
				g.log.Error("allocating a memtable file: no space", "dir", g.dir, "err", err)
				g.full.Store(true)
				g.free.Store(0)
			} else {
				g.log.Warn("allocating a memtable file failed; no longer allocating them", "err", err)
				g.noFalloc = true
			}
		}
		g.memFid = next
	}
}

func (g *diskGuard) allocate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("persistence: stat %s: %w", path, err)
	}
	// Mode 0 allocates the holes and keeps the contents (and the size).
	if err := unix.Fallocate(int(f.Fd()), 0, 0, info.Size()); err != nil {
		return fmt.Errorf("persistence: fallocate %s (%d bytes): %w", path, info.Size(), err)
	}
	return nil
}

// findMemtables sets memFid to the newest memtable file in the dir (the
// one badger writes) and allocates it. Called at open.
func (g *diskGuard) findMemtables() error {
	ents, err := os.ReadDir(g.dir)
	if err != nil {
		return fmt.Errorf("persistence: list %s: %w", g.dir, err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".mem")
		if !ok {
			continue
		}
		if fid, err := strconv.Atoi(name); err == nil && fid > g.memFid {
			g.memFid = fid
		}
	}
	if g.memFid < 0 || g.noFalloc {
		return nil
	}
	if err := g.allocate(memFilePath(g.dir, g.memFid)); err != nil {
		if errors.Is(err, unix.ENOSPC) {
			g.full.Store(true)
			return nil
		}
		g.log.Warn("allocating the memtable file failed; not allocating them", "err", err)
		g.noFalloc = true
	}
	return nil
}

func memFilePath(dir string, fid int) string {
	return filepath.Join(dir, fmt.Sprintf("%05d.mem", fid))
}

// fmtBytes formats n in MiB with one decimal ("3.1 MiB"), or bytes below
// a MiB.
func fmtBytes(n uint64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// guardLoop checks the free space every guardTick, so a full store
// notices freed space without a write, and /metrics and readiness stay
// current while nothing is written.
func (b *Local) guardLoop() {
	t := time.NewTicker(guardTick)
	defer t.Stop()
	for {
		select {
		case <-b.stopGuard:
			return
		case now := <-t.C:
			b.guard.maybeCheck(now)
		}
	}
}

// Disk returns the guard's view of the data dir's file system.
func (b *Local) Disk() DiskStatus { return b.guard.status() }

// WriteErr returns why the store refuses writes now (an ErrStoreFailed
// or ErrDiskFull error), or nil if it takes them. Cheap: callers ask it
// before doing work that would end in a write.
func (b *Local) WriteErr() error {
	if err := b.Err(); err != nil {
		return err
	}
	return b.guard.err()
}

// Failed is closed when a commit fails: from then on every write fails
// with ErrStoreFailed (Err says why). The store's owner should stop and
// reopen it, which replays what is durable.
func (b *Local) Failed() <-chan struct{} { return b.failed }

// Err is the ErrStoreFailed error once a commit has failed, else nil.
func (b *Local) Err() error {
	if p := b.failErr.Load(); p != nil {
		return *p
	}
	return nil
}

// fail puts the store into the failed state (the first cause wins). Only
// the committer calls it.
func (b *Local) fail(cause error) {
	if b.failErr.Load() != nil {
		return
	}
	err := fmt.Errorf("%w: %w", ErrStoreFailed, cause)
	b.failErr.Store(&err)
	close(b.failed)
}
