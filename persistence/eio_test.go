package persistence

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandem-im/tandem/internal/fstest"
)

// loopExt4 makes an ext4 file system of size bytes in a sparse image file
// in dir, attaches it to a loop device and mounts it (errors=continue);
// Cleanup unmounts it and detaches the device. Root only: the caller's
// fstest.Tmpfs has skipped otherwise, and a failing step fails the test.
func loopExt4(t *testing.T, size int64, dir string) string {
	t.Helper()
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("as root: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	img := filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	run("mkfs.ext4", "-q", "-F", img)
	dev := run("losetup", "--find", "--show", img)
	t.Cleanup(func() { run("losetup", "-d", dev) })
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext4", 0, "errors=continue"); err != nil {
		t.Fatalf("mount %s on %s as root: %v", dev, mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

// TestSyncErrorFailsStore produces a real write-back error: the store is
// on ext4 on a loop device whose sparse image lives on a small tmpfs, and
// that tmpfs is filled (a thin-provisioned volume running out). ext4
// still has room, so the disk guard sees nothing; the kernel fails the
// WAL's write-back and badger's msync reports it. The store must fail
// that append and every later one with ErrStoreFailed — also after the
// space underneath is back, never retrying into an ack — refuse reads
// (badger shows the failed batch in its memtable), and Close in bounded
// time.
//
// It runs in a child process: once the store failed, badger's own
// goroutines retry the memtable flush forever (Close gives up on them
// after failedCloseWait, by design), which the package's goroutine check
// would count, and whether ext4 keeps taking writes after the error
// (errors=continue) or aborts its journal and turns read-only depends on
// what was in flight.
func TestSyncErrorFailsStore(t *testing.T) {
	if os.Getenv(eioChildEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSyncErrorFailsStore$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), eioChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestSyncErrorFailsStore")) {
			t.Fatalf("child: %v\n%s", err, out)
		}
		for _, l := range bytes.Split(out, []byte("\n")) {
			if bytes.Contains(l, []byte("eio_test.go")) {
				t.Log(string(bytes.TrimSpace(l)))
			}
		}
		return
	}
	backing := fstest.Tmpfs(t, 40<<20)
	mnt := loopExt4(t, 64<<20, backing)
	b, err := OpenBadger(filepath.Join(mnt, "badger"), smallOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			b.Close()
		}
	})
	ctx := t.Context()
	e, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	var last Seq
	appendNext := func() error {
		err := b.AppendSync(ctx, AppendRequest{User: "u", Epoch: e, Entries: ents(last+1, 1, make([]byte, 20000))})
		if err == nil {
			last++
		}
		return err
	}
	for range 10 {
		if err := appendNext(); err != nil {
			t.Fatal(err)
		}
	}
	filler := fstest.Fill(t, backing, 0)
	var first error
	for range 50 {
		if first = appendNext(); first != nil {
			break
		}
	}
	if !errors.Is(first, ErrStoreFailed) {
		t.Fatalf("append after the volume underneath ran out: %v, want ErrStoreFailed", first)
	}
	t.Logf("%d appends acked; the failed sync: %v", last, first)
	select {
	case <-b.Failed():
	default:
		t.Fatal("Failed not closed")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := appendNext(); !errors.Is(err, ErrStoreFailed) {
			t.Fatalf("append after the failed sync, space back underneath: %v, want ErrStoreFailed", err)
		}
	}
	if st := b.Stats(); st.CommitFailures != 1 {
		t.Fatalf("%d commits failed: a failed commit must not be retried", st.CommitFailures)
	}
	// Badger has the failed batch in its memtable: readable, never acked,
	// maybe not on disk. A failed store serves no reads.
	if got, err := b.Read(ctx, "u", 0, 100); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("read after the failure: %d entries, %v; want ErrStoreFailed", len(got), err)
	}
	start := time.Now()
	err = b.Close()
	closed = true
	if d := time.Since(start); d > failedCloseWait+2*time.Second {
		t.Fatalf("Close of the failed store took %v", d)
	}
	t.Logf("close: %v", err)
}

// eioChildEnv marks the child process of TestSyncErrorFailsStore.
const eioChildEnv = "PERSISTENCE_EIO_CHILD"
