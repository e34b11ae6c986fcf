package persistence_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tandem-im/tandem/persistence"
)

// damageOpts make a store whose one big entry goes to the value log
// (values of 1 MiB and more do; a commit holds 15% of a memtable).
var damageOpts = persistence.BadgerOptions{MemTableSize: 8 << 20}

// ledger is what a store was acknowledged to hold: user → entries.
type ledger map[string][]persistence.Entry

// buildStore writes 6 users' logs into a new store in dir through
// OpenBadger, each append acknowledged by AppendSync (one with a 1.1 MiB
// entry, which badger keeps in its value log), and closes it: dir holds a
// MANIFEST, one table and a value log. It returns the ledger.
func buildStore(t *testing.T, dir string, closeIt bool) ledger {
	t.Helper()
	b, err := persistence.OpenBadger(dir, damageOpts, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	acked := ledger{}
	for u := range 6 {
		user := fmt.Sprintf("user%d", u)
		ep, last, err := b.Activate(ctx, user, "n1")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			data := []byte(fmt.Sprintf("%s message %d", user, i))
			if u == 3 && i == 19 {
				data = bytes.Repeat([]byte{'v'}, 1100<<10)
			}
			e := persistence.Entry{Seq: last + 1, TimeMS: 1, Data: data}
			if err := b.AppendSync(ctx, persistence.AppendRequest{User: user, Epoch: ep, Entries: []persistence.Entry{e}}); err != nil {
				t.Fatal(err)
			}
			acked[user] = append(acked[user], e)
			last++
		}
	}
	if closeIt {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return acked
}

// checkLedger opens dir and reads back every acknowledged entry.
func checkLedger(t *testing.T, dir string, acked ledger) {
	t.Helper()
	b := openBadger(t, dir, damageOpts)
	for user, want := range acked {
		got, err := b.Read(context.Background(), user, 0, 100)
		if err != nil {
			t.Fatalf("read %s: %v", user, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d entries, %d acknowledged", user, len(got), len(want))
		}
		for i := range want {
			if got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Data, want[i].Data) {
				t.Fatalf("%s entry %d: seq %d (%d bytes), acknowledged seq %d (%d bytes)", user, i, got[i].Seq, len(got[i].Data), want[i].Seq, len(want[i].Data))
			}
		}
	}
}

// copyDir copies the regular files of src into a new dir dst (a backup).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// onlyFile is the one file in dir whose name ends in suffix.
func onlyFile(t *testing.T, dir, suffix string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+suffix))
	if err != nil || len(m) != 1 {
		t.Fatalf("%s files in %s: %v (%v)", suffix, dir, m, err)
	}
	return m[0]
}

func truncateFile(t *testing.T, p string, size int64) {
	t.Helper()
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
}

func size(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// flip inverts n bytes of the file at p from off on.
func flip(t *testing.T, p string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] ^= 0xff
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
}

// DamageCase is one way a store's files are damaged: Damage does it to
// the store in dir and returns the file a refusal must name and a word
// of what it must say.
type damageCase struct {
	name   string
	damage func(t *testing.T, dir string) (file, says string)
}

var damageCases = []damageCase{
	{"value log cut short", func(t *testing.T, dir string) (string, string) {
		p := onlyFile(t, dir, ".vlog")
		truncateFile(t, p, size(t, p)-1000)
		return p, "cut short"
	}},
	{"value log shorter than its header", func(t *testing.T, dir string) (string, string) {
		p := onlyFile(t, dir, ".vlog")
		truncateFile(t, p, 10)
		return p, "cut short"
	}},
	{"value log entry flipped", func(t *testing.T, dir string) (string, string) {
		p := onlyFile(t, dir, ".vlog")
		flip(t, p, size(t, p)/2, 8)
		return p, "checksum"
	}},
	{"table cut short", func(t *testing.T, dir string) (string, string) {
		p := onlyFile(t, dir, ".sst")
		truncateFile(t, p, size(t, p)/2)
		return p, "index cannot be read"
	}},
	{"table block flipped", func(t *testing.T, dir string) (string, string) {
		p := onlyFile(t, dir, ".sst")
		flip(t, p, size(t, p)/3, 8)
		return p, "checksum"
	}},
	{"table index flipped", func(t *testing.T, dir string) (string, string) {
		p := onlyFile(t, dir, ".sst")
		flip(t, p, size(t, p)-40, 8)
		return p, "checksum"
	}},
	{"table footer flipped", func(t *testing.T, dir string) (string, string) {
		p := onlyFile(t, dir, ".sst")
		flip(t, p, size(t, p)-3, 2)
		return p, "index cannot be read"
	}},
	{"MANIFEST cut short", func(t *testing.T, dir string) (string, string) {
		p := filepath.Join(dir, "MANIFEST")
		truncateFile(t, p, size(t, p)-4)
		return p, "cut short"
	}},
	{"MANIFEST missing", func(t *testing.T, dir string) (string, string) {
		p := filepath.Join(dir, "MANIFEST")
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		return p, "is missing"
	}},
	{"table named in the MANIFEST missing", func(t *testing.T, dir string) (string, string) {
		p := onlyFile(t, dir, ".sst")
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		return p, "is missing"
	}},
}

// TestOpenRefusesDamage builds a real store, damages one file each way,
// and opens it: OpenBadger refuses, before badger runs (so no panic and
// nothing deleted), with a *DirError matching ErrDamaged in one line that
// names the file and says to restore from a backup. The documented
// repair, restoring the data dir from a backup, gives back every
// acknowledged entry.
func TestOpenRefusesDamage(t *testing.T) {
	backup := t.TempDir()
	acked := buildStore(t, backup, true)
	for _, tc := range damageCases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "badger")
			copyDir(t, backup, dir)
			file, says := tc.damage(t, dir)
			before, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			b, err := persistence.OpenBadger(dir, damageOpts, testLogger())
			if err == nil {
				b.Close()
				t.Fatal("OpenBadger opened the damaged store")
			}
			var de *persistence.DirError
			if !errors.As(err, &de) || !errors.Is(err, persistence.ErrDamaged) {
				t.Fatalf("error %T %q is not a *DirError matching ErrDamaged", err, err)
			}
			msg := err.Error()
			for _, w := range []string{file, says, "restore the data dir from a backup"} {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not say %q: %s", w, msg)
				}
			}
			if strings.Contains(msg, "\n") || strings.Contains(msg, "goroutine") {
				t.Errorf("error is not one plain line: %q", msg)
			}
			after, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(before) {
				t.Errorf("the refused open changed the dir: %d files before, %d after", len(before), len(after))
			}
			// The repair: the data dir restored from the backup.
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			copyDir(t, backup, dir)
			checkLedger(t, dir, acked)
		})
	}
}

// TestOpenIndexOnlyCheck: with IndexOnlyCheck a flipped data block is not
// read at open (the faster start misses it), a flipped index still is.
func TestOpenIndexOnlyCheck(t *testing.T) {
	backup := t.TempDir()
	buildStore(t, backup, true)
	opts := damageOpts
	opts.IndexOnlyCheck = true

	dir := filepath.Join(t.TempDir(), "block")
	copyDir(t, backup, dir)
	p := onlyFile(t, dir, ".sst")
	flip(t, p, size(t, p)/3, 8)
	b, err := persistence.OpenBadger(dir, opts, testLogger())
	if err != nil {
		t.Fatalf("index-only check refused a store whose index is whole: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	dir = filepath.Join(t.TempDir(), "index")
	copyDir(t, backup, dir)
	p = onlyFile(t, dir, ".sst")
	flip(t, p, size(t, p)-40, 8)
	if _, err := persistence.OpenBadger(dir, opts, testLogger()); !errors.Is(err, persistence.ErrDamaged) {
		t.Fatalf("index-only check: %v, want ErrDamaged", err)
	}
}

// TestOpenAfterTornWALTail: a store left without Close (a crash: its
// memtable, the write-ahead log, not flushed) whose WAL's last bytes are
// cut — a torn last write. Badger truncates the tail on open; every
// append before the damaged one survives and the store opens.
func TestOpenAfterTornWALTail(t *testing.T) {
	if dir := os.Getenv("PERSISTENCE_TORN_CHILD_DIR"); dir != "" {
		buildStore(t, dir, false)
		os.Exit(0) // no Close: the memtable stays in the WAL only
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenAfterTornWALTail$")
	cmd.Env = append(os.Environ(), "PERSISTENCE_TORN_CHILD_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	// The ledger: the child's appends, rebuilt the same way.
	acked := buildStore(t, t.TempDir(), true)

	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	var wal string
	var end int64
	for _, m := range mems { // the WAL with data: the one whose last nonzero byte is furthest
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		if e := int64(len(bytes.TrimRight(b, "\x00"))); e > end {
			wal, end = m, e
		}
	}
	if wal == "" {
		t.Fatalf("no memtable with data in %s: %v", dir, mems)
	}
	// Cut the last 10 bytes of the data: the last append's transaction
	// end marker.
	truncateFile(t, wal, end-10)

	b := openBadger(t, dir, damageOpts)
	lost := 0
	for user, want := range acked {
		got, err := b.Read(context.Background(), user, 0, 100)
		if err != nil {
			t.Fatalf("read %s: %v", user, err)
		}
		for i := range got {
			if got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Data, want[i].Data) {
				t.Fatalf("%s entry %d differs from the acknowledged one", user, i)
			}
		}
		lost += len(want) - len(got)
		if user != "user5" && len(got) != len(want) {
			t.Errorf("%s: %d of %d entries, before the damage point", user, len(got), len(want))
		}
	}
	if lost != 1 {
		t.Errorf("%d entries lost, want exactly the torn last one", lost)
	}
}

// TestCheckDir: a path that is a file is refused; a dir is created and
// probed.
func TestCheckDir(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := persistence.CheckDir(file, true)
	if !errors.Is(err, persistence.ErrUnusable) || !strings.Contains(err.Error(), file+": is a file, not a directory") {
		t.Errorf("CheckDir(file) = %v", err)
	}
	dir := filepath.Join(t.TempDir(), "a", "b")
	if err := persistence.CheckDir(dir, true); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("CheckDir left %v (%v)", ents, err)
	}
}

// TestOpenLogsOrphanTables: a table the MANIFEST does not name (what a
// flush or compaction interrupted by a crash leaves) is logged by name
// before badger deletes it, and the store opens with its ledger.
func TestOpenLogsOrphanTables(t *testing.T) {
	dir := t.TempDir()
	acked := buildStore(t, dir, true)
	b, err := os.ReadFile(onlyFile(t, dir, ".sst"))
	if err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(dir, "000099.sst")
	if err := os.WriteFile(orphan, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	s, err := persistence.OpenBadger(dir, damageOpts, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); !strings.Contains(out, "MANIFEST does not name") || !strings.Contains(out, "000099.sst") {
		t.Errorf("the orphan table is not logged by name:\n%s", out)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("badger kept the orphan table: %v", err)
	}
	checkLedger(t, dir, acked)
}

// syncBuffer is a bytes.Buffer safe for badger's goroutines to log into.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestOpenLockedSkipsCheck: a store another opener holds is not examined
// (its files change under the check) — the second open reports the lock,
// not "damage" in files the first one is writing. Here the holder's
// MANIFEST is cut under it: a check would call it damaged.
func TestOpenLockedSkipsCheck(t *testing.T) {
	dir := t.TempDir()
	buildStore(t, dir, true)
	openBadger(t, dir, damageOpts) // holds the lock until the test ends
	p := filepath.Join(dir, "MANIFEST")
	truncateFile(t, p, size(t, p)-3)
	b, err := persistence.OpenBadger(dir, damageOpts, testLogger())
	if err == nil {
		b.Close()
		t.Fatal("a second OpenBadger opened a locked store")
	}
	if errors.Is(err, persistence.ErrDamaged) || !strings.Contains(err.Error(), "Cannot acquire directory lock") {
		t.Fatalf("second open: %v, want badger's lock error", err)
	}
}

// TestRepairTornManifest: a crash while badger appends to its MANIFEST
// leaves an incomplete last record. Here a store left without Close (its
// appends only in the write-ahead log), a table file its MANIFEST does
// not name (the flush that record was to register) and a torn record at
// the MANIFEST's end. OpenBadger refuses it, naming the repair; with
// RepairTornManifest it opens with every acked entry (replayed from the
// WAL) and the unnamed table moved aside, not deleted.
func TestRepairTornManifest(t *testing.T) {
	if dir := os.Getenv("PERSISTENCE_TORNMF_CHILD_DIR"); dir != "" {
		buildStore(t, dir, false)
		os.Exit(0) // no Close: a crash
	}
	parent := t.TempDir()
	dir := filepath.Join(parent, "badger")
	cmd := exec.Command(os.Args[0], "-test.run=^TestRepairTornManifest$")
	cmd.Env = append(os.Environ(), "PERSISTENCE_TORNMF_CHILD_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	other := t.TempDir()
	acked := buildStore(t, other, true) // the same appends: the ledger, and a table to copy
	tbl, err := os.ReadFile(onlyFile(t, other, ".sst"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "000099.sst"), tbl, 0o600); err != nil {
		t.Fatal(err)
	}
	mf, err := os.OpenFile(filepath.Join(dir, "MANIFEST"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A record header (length 10, a checksum) and 4 of its 10 bytes.
	if _, err := mf.Write([]byte{0, 0, 0, 10, 1, 2, 3, 4, 8, 1, 16, 99}); err != nil {
		t.Fatal(err)
	}
	mf.Close()

	_, err = persistence.OpenBadger(dir, damageOpts, testLogger())
	if !errors.Is(err, persistence.ErrDamaged) || !strings.Contains(err.Error(), "last record is incomplete") || !strings.Contains(err.Error(), "--badger-repair-torn-manifest") {
		t.Fatalf("open of a torn MANIFEST: %v, want ErrDamaged naming the repair", err)
	}

	opts := damageOpts
	opts.RepairTornManifest = true
	var logs syncBuffer
	b, err := persistence.OpenBadger(dir, opts, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("repairing open: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); !strings.Contains(out, "repairing a MANIFEST") || !strings.Contains(out, "000099.sst") {
		t.Errorf("the repair is not logged with what it moved:\n%s", out)
	}
	moved, _ := filepath.Glob(filepath.Join(parent, "badger-quarantine-*", "000099.sst"))
	if len(moved) != 1 {
		t.Errorf("the unnamed table was not moved aside: %v", moved)
	}
	checkLedger(t, dir, acked)
}
