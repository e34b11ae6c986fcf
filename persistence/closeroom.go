package persistence

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrNotClosed: Close left badger open because the file system has no
// room for its closing memtable flushes (flushRoom).
var ErrNotClosed = errors.New("persistence: badger not closed")

// flushRoom refuses a badger close on a file system with less than need
// bytes free. Badger's close flushes the memtables into new tables it
// writes through memory mappings of sparse files: on a full file system
// that write faults (SIGBUS) and the process dies mid-close. Skipping the
// close loses nothing committed: it is in the write-ahead log (.mem
// files), which the next open replays.
func flushRoom(dir string, need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil // cannot tell: let badger try
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free >= need {
		return nil
	}
	return fmt.Errorf("%w: %s has %d bytes free and flushing the memtables may write up to %d (badger would fault writing its memory-mapped tables); everything committed is in the write-ahead log, which the next start replays",
		ErrNotClosed, dir, free, need)
}

// flushNeed estimates what badger's close writes into new tables: the
// memtables' contents, which their write-ahead log files (*.mem) hold,
// plus a quarter for the tables' index and bloom filters and a MiB for
// the MANIFEST and the rest. A file's content is what badger wrote of it:
// the disk guard allocates each memtable file whole (2 × MemTableSize of
// zeros), so neither its size nor its blocks say how full it is.
func flushNeed(dir string) int64 {
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem")) // only a bad pattern errs
	need := int64(1 << 20)
	for _, m := range mems {
		need += walUsed(m) * 5 / 4
	}
	return need
}

// walUsed is how much of the memtable WAL file at path badger wrote: up to
// its last non-zero byte (badger appends from the start; the rest of the
// file is zeros, whether a hole or allocated). Read backwards in 1 MiB
// pieces from the end, so a full file costs one piece and an empty one a
// read of zeros (from the page cache, or nothing for a hole). A file it
// cannot read counts whole.
func walUsed(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0 // gone: nothing to flush
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	size := st.Size()
	buf := make([]byte, 1<<20)
	for end := size; end > 0; {
		start := max(end-int64(len(buf)), 0)
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && n < int(end-start) {
			return size
		}
		for i := n - 1; i >= 0; i-- {
			if buf[i] != 0 {
				return start + int64(i) + 1
			}
		}
		end = start
	}
	return 0
}
