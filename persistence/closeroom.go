package persistence

import (
	"errors"
	"fmt"
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
// counted as the blocks those files have allocated, plus a quarter for
// the tables' index and bloom filters and a MiB for the MANIFEST and the
// rest.
func flushNeed(dir string) int64 {
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem")) // only a bad pattern errs
	need := int64(1 << 20)
	for _, m := range mems {
		var st unix.Stat_t
		if unix.Stat(m, &st) == nil {
			need += st.Blocks * 512 * 5 / 4
		}
	}
	return need
}
