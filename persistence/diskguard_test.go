package persistence

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandem-im/tandem/internal/fstest"
)

// smallOptions keep the reserve small (8 MiB by the default formula) so a
// small tmpfs can fill.
func smallOptions() BadgerOptions {
	return BadgerOptions{MemTableSize: 1 << 20, NumMemtables: 2, NumLevelZeroTables: 2, NumLevelZeroTablesStall: 3,
		BaseTableSize: 1 << 20, BlockCacheSize: 1 << 20, IndexCacheSize: 1 << 20}
}

func openOn(t *testing.T, dir string, opts BadgerOptions) *Local {
	t.Helper()
	b, err := OpenBadger(dir, opts, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// checkLog reads u's whole log and checks it holds exactly seqs 1..last
// and every seq in acked.
func checkLog(t *testing.T, b *Local, user string, acked map[Seq]bool, last Seq) {
	t.Helper()
	got, err := b.Read(t.Context(), user, 0, int(last)+10)
	if err != nil {
		t.Fatal(err)
	}
	if Seq(len(got)) != last {
		t.Fatalf("%s's log has %d entries, want %d", user, len(got), last)
	}
	for i, e := range got {
		if e.Seq != Seq(i+1) {
			t.Fatalf("%s's entry %d has seq %d: seqs skipped or reused", user, i, e.Seq)
		}
		delete(acked, e.Seq)
	}
	if len(acked) > 0 {
		t.Fatalf("%d acked entries missing from %s's log", len(acked), user)
	}
}

// TestDiskFullRefusesAndRecovers fills the store's tmpfs below the reserve
// with a filler file: appends and activations are refused with
// ErrDiskFull before anything is written, reads go on, and once the filler
// is removed the store takes writes again without a reopen, with the next
// seq.
func TestDiskFullRefusesAndRecovers(t *testing.T) {
	mnt := fstest.Tmpfs(t, 32<<20)
	dir := filepath.Join(mnt, "badger")
	opts := smallOptions()
	reserve := DefaultDiskReserve(opts)
	if reserve != 8<<20 {
		t.Fatalf("DefaultDiskReserve = %d, want 8 MiB", reserve)
	}
	b := openOn(t, dir, opts)
	ctx := t.Context()
	e, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	acked := map[Seq]bool{}
	var last Seq
	appendNext := func() error {
		err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Entries: ents(last+1, 1, make([]byte, 200))})
		if err == nil {
			last++
			acked[last] = true
		}
		return err
	}
	for range 50 {
		if err := appendNext(); err != nil {
			t.Fatal(err)
		}
	}
	if d := b.Disk(); d.Full || d.Reserve != uint64(reserve) || d.Total == 0 {
		t.Fatalf("before filling: %+v", d)
	}
	// More than a memtable: badger rotates to a new memtable file, which
	// the guard allocates after the commit that made it.
	first, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	for range 16 {
		if err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Entries: ents(last+1, 100, make([]byte, 1000))}); err != nil {
			t.Fatal(err)
		}
		for range 100 {
			last++
			acked[last] = true
		}
	}
	if now, _ := filepath.Glob(filepath.Join(dir, "*.mem")); slices.Equal(now, first) {
		t.Fatalf("no new memtable file after 1.6 MB of appends: %v", now)
	}
	checkAllocated(t, dir)

	filler := fstest.Fill(t, mnt, uint64(reserve)/2)
	// The committer checks at most every 5 ms: a few appends may still go.
	var refused error
	for range 100 {
		if refused = appendNext(); refused != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if !errors.Is(refused, ErrDiskFull) {
		t.Fatalf("append below the reserve: %v, want ErrDiskFull", refused)
	}
	for _, want := range []string{dir, "free", "reserve 8.0 MiB"} {
		if !strings.Contains(refused.Error(), want) {
			t.Errorf("refusal %q does not name %q", refused, want)
		}
	}
	for range 20 {
		if err := appendNext(); !errors.Is(err, ErrDiskFull) {
			t.Fatalf("append while full: %v", err)
		}
	}
	if _, _, err := b.Activate(ctx, "w", "o"); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("activation while full: %v", err)
	}
	if err := b.WriteErr(); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("WriteErr while full: %v", err)
	}
	if d := b.Disk(); !d.Full || d.Refused < 22 || d.Free >= d.Reserve {
		t.Fatalf("while full: %+v", d)
	}
	select {
	case <-b.Failed():
		t.Fatal("a full disk failed the store")
	default:
	}
	if got, err := b.Read(ctx, "u", 0, 5000); err != nil || Seq(len(got)) != last {
		t.Fatalf("read while full: %d entries, %v; want %d", len(got), err, last)
	}

	// Freeing a little (still under reserve + 25 %) is not enough.
	if err := os.Truncate(filler, int64(fstest.Free(t, mnt))); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for b.WriteErr() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("still refusing 2 s after the filler was removed: %v (%+v)", b.WriteErr(), b.Disk())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 20 {
		if err := appendNext(); err != nil {
			t.Fatalf("append after recovery: %v", err)
		}
	}
	checkLog(t, b, "u", acked, last)
}

// TestDiskFullNoSIGBUS lets a filler grow to ENOSPC next to a store that
// is appending: the case of issue 13, where badger's next WAL write into
// its sparse, mmapped memtable file faulted (SIGBUS) and killed the node.
// The memtable file is allocated whole, so the WAL writes land in blocks
// the file system already gave; the guard refuses the appends with
// ErrDiskFull; after the filler is removed the store goes on; a reopen
// finds every acked entry, seqs consecutive. The appends are paced to stay
// inside one memtable: a flush or compaction that runs while a foreign
// writer takes the last byte can still fault (badger writes tables the
// same way); see docs/operations.md.
func TestDiskFullNoSIGBUS(t *testing.T) {
	mnt := fstest.Tmpfs(t, 64<<20)
	dir := filepath.Join(mnt, "badger")
	opts := smallOptions()
	opts.MemTableSize = 4 << 20
	b := openOn(t, dir, opts)
	ctx := t.Context()
	checkAllocated(t, dir)
	const users = 4
	type ledger struct {
		epoch    Epoch
		last     Seq
		acked    map[Seq]bool
		other    []error
		fullSeen bool
	}
	ls := make([]*ledger, users)
	for i := range ls {
		e, _, err := b.Activate(ctx, fmt.Sprint("u", i), "o")
		if err != nil {
			t.Fatal(err)
		}
		ls[i] = &ledger{epoch: e, acked: map[Seq]bool{}}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, l := range ls {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
				err := b.AppendSync(ctx, AppendRequest{User: fmt.Sprint("u", i), Epoch: l.epoch, Entries: ents(l.last+1, 1, make([]byte, 300))})
				switch {
				case err == nil:
					l.last++
					l.acked[l.last] = true
				case errors.Is(err, ErrDiskFull):
					l.fullSeen = true
				default:
					l.other = append(l.other, err)
					return
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	filler := fstest.Fill(t, mnt, 0) // to ENOSPC
	time.Sleep(500 * time.Millisecond)
	full := b.Disk()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for b.WriteErr() != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // appends go on after recovery
	close(stop)
	wg.Wait()
	if !full.Full || full.Free != 0 {
		t.Errorf("with the file system at ENOSPC: %+v, want full with 0 free", full)
	}
	if err := b.WriteErr(); err != nil {
		t.Fatalf("still refusing 2 s after the filler was removed: %v", err)
	}
	for i, l := range ls {
		if len(l.other) > 0 {
			t.Fatalf("u%d: append failed with something other than ErrDiskFull: %v", i, l.other)
		}
		if !l.fullSeen {
			t.Errorf("u%d never saw ErrDiskFull", i)
		}
		if l.last < 10 {
			t.Fatalf("u%d: %d appends acked", i, l.last)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openOn(t, dir, opts)
	for i, l := range ls {
		checkLog(t, b, fmt.Sprint("u", i), l.acked, l.last)
	}
}

// checkAllocated checks that the newest memtable file in dir has all its
// blocks (the guard's fallocate), so badger's WAL writes into it cannot
// fault.
func checkAllocated(t *testing.T, dir string) {
	t.Helper()
	ms, err := filepath.Glob(filepath.Join(dir, "*.mem"))
	if err != nil || len(ms) == 0 {
		t.Fatalf("no memtable file in %s (%v)", dir, err)
	}
	slices.Sort(ms)
	var st unix.Stat_t
	if err := unix.Stat(ms[len(ms)-1], &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < st.Size {
		t.Fatalf("%s: %d of %d bytes allocated", ms[len(ms)-1], st.Blocks*512, st.Size)
	}
}
