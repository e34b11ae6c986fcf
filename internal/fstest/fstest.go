// Package fstest gives tests small real file systems to fill: a tmpfs of a
// given size mounted for the test, its free space, and a filler file that
// takes it. Mounting needs root: a test not run as root is skipped (saying
// so); as root a failed mount fails the test. Tests only.
package fstest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs of size bytes on a new directory and unmounts it in
// Cleanup (after the cleanups registered later, such as closing a store
// or stopping a node on it).
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting a tmpfs needs root, and this test is not running as root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tandem-test", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mount a %d-byte tmpfs on %s as root: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Free is the free space on dir's file system, as an unprivileged writer
// sees it.
func Free(t testing.TB, dir string) uint64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// Fill appends to dir/filler until at most leave bytes are free (leave 0:
// until the file system answers ENOSPC) and returns the file's path.
func Fill(t testing.TB, dir string, leave uint64) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		free := Free(t, dir)
		if leave > 0 && free <= leave {
			return p
		}
		n := uint64(len(chunk))
		if leave > 0 {
			n = min(n, free-leave)
		}
		if _, err := f.Write(chunk[:n]); err != nil {
			if leave == 0 && errors.Is(err, unix.ENOSPC) {
				return p
			}
			t.Fatalf("filler: %v", err)
		}
	}
}
