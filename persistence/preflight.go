package persistence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
	"golang.org/x/sys/unix"
)

// Start refusals: a data dir the process cannot use, and a store whose
// files are damaged. Their *DirError names the path, what is wrong and
// what to do; errors.Is matches these.
var (
	ErrUnusable = errors.New("persistence: data dir unusable")
	ErrDamaged  = errors.New("persistence: store damaged")
)

// RepairHint is what a damaged-store refusal tells the operator to do.
const RepairHint = "stop here: restore the data dir from a backup (docs/operations.md, \"Damaged data dir\"); do not delete files to make it start"

// DirError is a start refusal in one line: the path, the problem and the fix.
type DirError struct {
	Path    string
	Problem string
	Fix     string
	is      error // ErrUnusable or ErrDamaged
	Err     error // the system's or badger's error, if any
}

func (e *DirError) Error() string {
	msg := e.Path + ": " + e.Problem
	if e.Err != nil {
		msg += ": " + oneLine(e.Err.Error())
	}
	if e.Fix != "" {
		msg += "; " + e.Fix
	}
	return msg
}
func (e *DirError) Is(target error) bool { return target == e.is }
func (e *DirError) Unwrap() error        { return e.Err }

// oneLine joins badger's multi-line error texts.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func unusable(path, problem, fix string, err error) *DirError {
	return &DirError{Path: path, Problem: problem, Fix: fix, is: ErrUnusable, Err: err}
}

// Unusable is the refusal of path, which cannot be used as problem says
// because of the system error err (the cause and its fix are named:
// another user's, a read-only mount, a full disk).
func Unusable(path, problem string, err error) error { return ioRefusal(path, problem, err) }

func damaged(path, problem string, err error) *DirError {
	return &DirError{Path: path, Problem: problem, Fix: RepairHint, is: ErrDamaged, Err: err}
}

// CheckDir makes sure dir is a directory this process can write to
// (created, 0700, if missing), by a real probe: a temporary file is
// created, written, fsynced and removed. With mmap, the probe file is also
// mapped shared and writable, written through the mapping and msynced, as
// badger does with its memtables and tables. Every refusal is a *DirError
// matching ErrUnusable.
func CheckDir(dir string, mmap bool) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && !fi.IsDir():
		return unusable(dir, "is a file, not a directory", "give --data-dir a directory (it is created if missing)", nil)
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return ioRefusal(dir, "cannot be created", err)
		}
	case err != nil:
		return ioRefusal(dir, "cannot be examined", err)
	}
	f, err := os.CreateTemp(dir, ".tandem-probe-*")
	if err != nil {
		return ioRefusal(dir, "is not writable", err)
	}
	defer os.Remove(f.Name()) // best effort; a leftover probe file is harmless
	defer f.Close()           // the probe's own errors are reported below
	if _, err := f.Write(make([]byte, 4096)); err != nil {
		return ioRefusal(dir, "is not writable (write failed)", err)
	}
	if err := f.Sync(); err != nil {
		return ioRefusal(dir, "is not writable (fsync failed)", err)
	}
	if mmap {
		if err := mmapProbe(f); err != nil {
			return unusable(dir, "is on a file system that cannot hold memory-mapped files, which badger needs",
				"put the data dir on a local file system (ext4, xfs, tmpfs)", err)
		}
	}
	if err := f.Close(); err != nil {
		return ioRefusal(dir, "is not writable (close failed)", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		return ioRefusal(dir, "does not let files be removed", err)
	}
	return nil
}

// mmapProbeSize is the probe mapping: a few pages.
const mmapProbeSize = 64 << 10

// mmapProbe allocates a few pages of f, maps it shared and writable, writes
// through the mapping, msyncs it and unmaps it: what badger does with its
// memtable (WAL) files.
func mmapProbe(f *os.File) error {
	// Allocated, not truncated: a write into a sparse page of a full
	// file system would fault (SIGBUS) instead of failing.
	if err := unix.Fallocate(int(f.Fd()), 0, 0, mmapProbeSize); err != nil {
		return fmt.Errorf("fallocate: %w", err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, mmapProbeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap shared+writable: %w", err)
	}
	for i := 0; i < len(b); i += 4096 {
		b[i] = 0x5a
	}
	serr := unix.Msync(b, unix.MS_SYNC)
	uerr := unix.Munmap(b)
	if serr != nil {
		return fmt.Errorf("msync: %w", serr)
	}
	if uerr != nil {
		return fmt.Errorf("munmap: %w", uerr)
	}
	return nil
}

// ioRefusal says why dir cannot be used, naming the usual causes.
func ioRefusal(path, problem string, err error) *DirError {
	switch {
	case errors.Is(err, syscall.EROFS):
		return unusable(path, problem+": the file system is mounted read-only", "remount it read-write or choose another --data-dir", err)
	case errors.Is(err, os.ErrPermission):
		return unusable(path, fmt.Sprintf("%s by this process (uid %d)", problem, os.Geteuid()),
			"give it to the user tandem runs as (chown -R) or choose another --data-dir", err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return unusable(path, problem+": the file system is full", "free space or choose another --data-dir", err)
	case errors.Is(err, syscall.ENOTDIR):
		return unusable(path, problem+": a part of the path is a file", "give --data-dir a directory path", err)
	}
	return unusable(path, problem, "choose another --data-dir", err)
}

// checkFilesWritable opens every regular file in dir for writing, as
// badger will: a file left by another user (tandem once run as root)
// is refused here, naming it, not deep inside badger.
func checkFilesWritable(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ioRefusal(dir, "cannot be listed", err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return ioRefusal(p, "cannot be opened for writing", err)
		}
		f.Close() // opened only to see that it can be
	}
	return nil
}

// CheckBadger examines the badger files in dir before badger opens them,
// read-only, and refuses (a *DirError matching ErrDamaged) what badger
// would either panic on in one of its own goroutines (a truncated table,
// a damaged table footer) or silently drop (a MANIFEST cut short or
// missing: badger starts from what it can read and deletes the tables it
// no longer names). It checks:
//   - the MANIFEST replays to its last byte, and every table it names exists;
//   - every table opens (its index and checksums), and with blocks every
//     data block's checksum is verified too (reads every table once);
//   - every value log file holds whole entries, with valid checksums if
//     blocks.
//
// Zero-byte memtables (#2207) and a memtable (WAL) whose tail is cut are
// left to OpenBadger and badger, which repair them. With acceptTorn a
// MANIFEST whose last record is incomplete (a crash while badger wrote
// it) is accepted and reported in the result.
func CheckBadger(dir string, blocks, acceptTorn bool) (CheckResult, error) {
	var res CheckResult
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return res, nil // a new store
	}
	if err != nil {
		return res, ioRefusal(dir, "cannot be listed", err)
	}
	onDisk := map[uint64]string{}
	var vlogs []string
	hasManifest := false
	for _, e := range ents {
		name := e.Name()
		switch {
		case name == "MANIFEST":
			hasManifest = true
		case strings.HasSuffix(name, ".sst"):
			if id, ok := table.ParseFileID(name); ok {
				onDisk[id] = name
			}
		case strings.HasSuffix(name, ".vlog"):
			vlogs = append(vlogs, name)
		}
	}
	if !hasManifest {
		if len(onDisk) > 0 || len(vlogs) > 0 {
			return res, damaged(filepath.Join(dir, "MANIFEST"),
				fmt.Sprintf("is missing while %d table and %d value log files exist (badger would start empty and delete the tables)", len(onDisk), len(vlogs)), nil)
		}
		return res, nil // a new store (or only memtables: badger replays them)
	}
	mf, torn, err := readManifest(dir, acceptTorn)
	if err != nil {
		return res, err
	}
	res.TornManifest = torn
	ids := make([]uint64, 0, len(mf.Tables))
	for id := range mf.Tables {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		name := table.IDToFilename(id)
		if _, ok := onDisk[id]; !ok {
			return res, damaged(filepath.Join(dir, name), "is missing: the MANIFEST names it (level "+fmt.Sprint(mf.Tables[id].Level)+")", nil)
		}
		if err := checkTable(filepath.Join(dir, name), mf.Tables[id].Compression, blocks); err != nil {
			return res, err
		}
	}
	for id, name := range onDisk {
		if _, ok := mf.Tables[id]; !ok {
			res.Orphans = append(res.Orphans, name)
		}
	}
	slices.Sort(res.Orphans)
	slices.Sort(vlogs)
	for _, name := range vlogs {
		if err := checkVlog(filepath.Join(dir, name), blocks); err != nil {
			return res, err
		}
	}
	return res, nil
}

// CheckResult is what CheckBadger found that badger's open will act on.
type CheckResult struct {
	// Orphans are the tables on disk the MANIFEST does not name: left by
	// a flush or compaction a crash interrupted. Badger deletes them.
	Orphans []string
	// TornManifest is the size of the MANIFEST's incomplete last record,
	// which badger cuts (0: none; only with acceptTorn).
	TornManifest int64
}

// TornManifestHint is the fix a refusal for a MANIFEST with an incomplete
// last record gives.
const TornManifestHint = "if the node crashed (power loss, kill -9) while badger wrote it, start once with --badger-repair-torn-manifest " +
	"(badger cuts the record; tables the MANIFEST does not name are moved aside, not deleted, and the write-ahead log is replayed); " +
	"otherwise restore the data dir from a backup (docs/operations.md, \"Damaged data dir\")"

// readManifest replays dir/MANIFEST read-only, as badger will, and refuses
// one that does not replay to its last byte (unless acceptTorn): badger
// would cut it there and delete every table the lost part named. Badger's
// replay stops without an error only at an incomplete last record; a
// whole record with a bad checksum is an error. It returns the size of
// the incomplete record accepted.
func readManifest(dir string, acceptTorn bool) (badger.Manifest, int64, error) {
	p := filepath.Join(dir, "MANIFEST")
	f, err := os.Open(p)
	if err != nil {
		return badger.Manifest{}, 0, ioRefusal(p, "cannot be opened", err)
	}
	defer f.Close() // read-only
	fi, err := f.Stat()
	if err != nil {
		return badger.Manifest{}, 0, ioRefusal(p, "cannot be examined", err)
	}
	bopts := badger.DefaultOptions(dir)
	mf, end, err := badger.ReplayManifestFile(f, bopts.ExternalMagicVersion, bopts)
	if err != nil {
		return badger.Manifest{}, 0, damaged(p, "cannot be read", err)
	}
	if end != fi.Size() && !acceptTorn {
		e := damaged(p, fmt.Sprintf("is cut short or damaged: its last record is incomplete, only its first %d of %d bytes are whole records (badger would cut it there and delete the tables the rest names)", end, fi.Size()), nil)
		e.Fix = TornManifestHint
		return badger.Manifest{}, 0, e
	}
	return mf, fi.Size() - end, nil
}

// quarantine moves the named files of dir into a new directory beside it,
// dir + "-quarantine-" + a timestamp, and returns that directory.
func quarantine(dir string, names []string) (string, error) {
	q := fmt.Sprintf("%s-quarantine-%s", dir, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Mkdir(q, 0o700); err != nil {
		return "", ioRefusal(q, "cannot be created", err)
	}
	for _, n := range names {
		if err := os.Rename(filepath.Join(dir, n), filepath.Join(q, n)); err != nil {
			return q, ioRefusal(filepath.Join(dir, n), "cannot be moved to "+q, err)
		}
	}
	if err := z.SyncDir(dir); err != nil {
		return q, ioRefusal(dir, "cannot be synced", err)
	}
	return q, z.SyncDir(filepath.Dir(dir))
}

// checkTable opens the table at p read-only as badger will, here in a
// goroutine whose panics are caught: badger panics (in its own goroutine,
// so the process dies) on a table whose end is cut or whose footer is
// damaged. With blocks every block's checksum is verified too.
func checkTable(p string, c options.CompressionType, blocks bool) (err error) {
	mf, err := z.OpenMmapFile(p, os.O_RDONLY, 0)
	if err != nil {
		return ioRefusal(p, "cannot be opened", err)
	}
	defer mf.Close(-1) // read-only mapping: nothing to sync
	defer func() {
		if r := recover(); r != nil {
			err = damaged(p, "is damaged: its index cannot be read (the file is cut short or its footer is corrupt)",
				fmt.Errorf("badger: %s", firstLine(fmt.Sprint(r))))
		}
	}()
	mode := options.NoVerification
	if blocks {
		mode = options.OnTableRead
	}
	opts := table.Options{ReadOnly: true, ChkMode: mode, Compression: c, BlockSize: 4 << 10}
	if _, err := table.OpenTable(mf, opts); err != nil {
		return damaged(p, "is damaged", err)
	}
	// Not DecrRef: at zero references badger's table deletes its file.
	return nil
}

// firstLine is a panic's text without badger's debugging dump.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "==") {
			return l
		}
	}
	return strings.TrimSpace(s)
}

// vlogHeaderSize is badger's value log file header: a key id (8 bytes)
// and a base IV (12 bytes).
const vlogHeaderSize = 20

// checkVlog walks the value log file at p entry by entry, as badger
// writes them (header: meta, user meta, uvarint key length, value length,
// expiry; then key, value, CRC-32C of all that, big-endian), and refuses
// a file that ends inside an entry or (with sums) holds an entry whose
// checksum does not match. Zeros after the last entry are badger's preallocation.
func checkVlog(p string, sums bool) error {
	f, err := os.Open(p)
	if err != nil {
		return ioRefusal(p, "cannot be opened", err)
	}
	defer f.Close() // read-only
	fi, err := f.Stat()
	if err != nil {
		return ioRefusal(p, "cannot be examined", err)
	}
	if fi.Size() < vlogHeaderSize {
		return damaged(p, fmt.Sprintf("is cut short: %d bytes, shorter than its %d-byte header", fi.Size(), vlogHeaderSize), nil)
	}
	// Mapped, not read: after a crash the file keeps badger's sparse
	// preallocation (2 GiB), of which only the entries are read.
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return ioRefusal(p, "cannot be mapped", err)
	}
	defer unix.Munmap(b) // read-only mapping
	for off := vlogHeaderSize; off < len(b); {
		n, klen, vlen, ok := vlogHeader(b[off:])
		if !ok {
			return damaged(p, fmt.Sprintf("is cut short or damaged: the entry at offset %d has no whole header (file size %d)", off, len(b)), nil)
		}
		if klen == 0 && vlen == 0 {
			if zeroFrom(f, b, off) {
				return nil // preallocated space after the last entry
			}
			return damaged(p, fmt.Sprintf("is damaged: an empty entry at offset %d is followed by data", off), nil)
		}
		end := off + n + klen + vlen + crc32.Size
		if klen == 0 || end > len(b) {
			return damaged(p, fmt.Sprintf("is cut short or damaged: the entry at offset %d runs past the end of the file (size %d)", off, len(b)), nil)
		}
		if !sums {
			off = end
			continue
		}
		sum := crc32.Checksum(b[off:end-crc32.Size], castagnoli)
		if sum != binary.BigEndian.Uint32(b[end-crc32.Size:end]) {
			return damaged(p, fmt.Sprintf("is damaged: the entry at offset %d fails its checksum", off), nil)
		}
		off = end
	}
	return nil
}

// zeroFrom reports whether b, the mapping of f, holds only zeros from off
// on, reading only the parts of a sparse file that hold data.
func zeroFrom(f *os.File, b []byte, off int) bool {
	fd := int(f.Fd())
	for pos := int64(off); pos < int64(len(b)); {
		d, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return true // only holes from pos on
		}
		if err != nil { // no SEEK_DATA here: read it all
			return allZero(b[pos:])
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil || h > int64(len(b)) {
			h = int64(len(b))
		}
		if d < pos {
			d = pos
		}
		if !allZero(b[d:h]) {
			return false
		}
		pos = h
	}
	return true
}

// vlogHeader decodes an entry header: its length and the key and value
// lengths.
func vlogHeader(b []byte) (n, klen, vlen int, ok bool) {
	if len(b) < 2 {
		return 0, 0, 0, false
	}
	n = 2
	var vals [3]uint64
	for i := range vals {
		v, m := binary.Uvarint(b[n:])
		if m <= 0 {
			return 0, 0, 0, false
		}
		vals[i], n = v, n+m
	}
	if vals[0] > 1<<32 || vals[1] > 1<<32 {
		return 0, 0, 0, false
	}
	return n, int(vals[0]), int(vals[1]), true
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
