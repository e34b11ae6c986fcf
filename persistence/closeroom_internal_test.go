package persistence

import (
	"os"
	"path/filepath"
	"testing"
)

// TestWALUsed: the used part of a memtable WAL file is up to its last
// non-zero byte, whatever its size says (the disk guard allocates it
// whole), across the 1 MiB pieces it is read in.
func TestWALUsed(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		size, last int64 // last: offset of the last non-zero byte, -1 none
	}{
		{0, -1},
		{3 << 20, -1},
		{3 << 20, 0},
		{3 << 20, 20},
		{3 << 20, 1<<20 - 1},
		{3 << 20, 1 << 20},
		{3<<20 + 5, 2<<20 + 7},
		{3 << 20, 3<<20 - 1},
	} {
		p := filepath.Join(dir, "00001.mem")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(tc.size); err != nil {
			t.Fatal(err)
		}
		if tc.last >= 0 {
			if _, err := f.WriteAt([]byte{7}, tc.last); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		if got, want := walUsed(p), tc.last+1; got != want {
			t.Errorf("size %d, last non-zero byte at %d: used %d, want %d", tc.size, tc.last, got, want)
		}
	}
	if got := walUsed(filepath.Join(dir, "gone.mem")); got != 0 {
		t.Errorf("a missing file: %d", got)
	}
}
