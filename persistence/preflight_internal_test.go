package persistence

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMmapProbeRefuses runs the mmap probe against a file the kernel will
// not map shared and writable. No file system here refuses shared
// writable mappings outright (a FUSE mount in direct-I/O mode would; none
// is mounted), so the refusal comes from a write-only descriptor: the real
// mmap(2) fails with EACCES, and the probe reports it.
func TestMmapProbeRefuses(t *testing.T) {
	p := filepath.Join(t.TempDir(), "probe")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = mmapProbe(f)
	if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), "mmap shared+writable") {
		t.Fatalf("mmapProbe on a write-only file = %v, want an mmap EACCES", err)
	}
	// The same file opened read-write maps.
	g, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := mmapProbe(g); err != nil {
		t.Fatalf("mmapProbe on a read-write file: %v", err)
	}
}

// TestIORefusalNamesCause: the system errors a data dir check meets are
// told apart, each with its fix.
func TestIORefusalNamesCause(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&os.PathError{Op: "open", Path: "d/x", Err: syscall.EROFS}, "mounted read-only"},
		{&os.PathError{Op: "open", Path: "d/x", Err: syscall.EACCES}, "by this process (uid"},
		{&os.PathError{Op: "write", Path: "d/x", Err: syscall.ENOSPC}, "the file system is full"},
	} {
		err := ioRefusal("d", "is not writable", tc.err)
		if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.err) {
			t.Errorf("ioRefusal(%v) = %q, want ErrUnusable saying %q", tc.err, err, tc.want)
		}
	}
}
