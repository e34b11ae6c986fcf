package persistence_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/persistence"
)

// pebbleWith50 makes a closed pebble store in a new dir whose user "u"
// has 50 acked entries, flushed into a table, and returns the dir and the
// MANIFEST's path.
func pebbleWith50(t *testing.T) (dir, manifest string) {
	t.Helper()
	dir = t.TempDir()
	b, err := persistence.OpenPebble(dir, persistence.PebbleOptions{}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ep, _, err := b.Activate(ctx, "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	for seq := persistence.Seq(1); seq <= 50; seq++ {
		if err := b.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: ep,
			Entries: []persistence.Entry{{Seq: seq, TimeMS: time.Now().UnixMilli(), Data: []byte("x")}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Compact(); err != nil { // a table, named by the MANIFEST
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	manifests, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatal("no MANIFEST")
	}
	return dir, manifests[len(manifests)-1]
}

// TestPebbleDamagedManifest: a pebble store whose MANIFEST has a flipped
// byte inside a record refuses to open with a *DirError matching
// ErrDamaged that names the dir (the node exits 3 on it), and its files
// are left as they were. A MANIFEST cut short is what a crash while
// pebble writes it leaves: pebble drops the incomplete record, and the
// store then opens with every acked entry.
func TestPebbleDamagedManifest(t *testing.T) {
	t.Run("flipped", func(t *testing.T) {
		dir, m := pebbleWith50(t)
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/3] ^= 0xFF
		if err := os.WriteFile(m, b, 0o644); err != nil {
			t.Fatal(err)
		}
		before := dirFiles(t, dir)
		s, err := persistence.OpenPebble(dir, persistence.PebbleOptions{}, testLogger())
		if err == nil {
			es, rerr := s.Read(t.Context(), "u", 0, 100)
			s.Close()
			t.Fatalf("a pebble store with a damaged MANIFEST opened: %d of 50 entries, %v; files before %v, after %v", len(es), rerr, before, dirFiles(t, dir))
		}
		if _, ok := errors.AsType[*persistence.DirError](err); !ok || !errors.Is(err, persistence.ErrDamaged) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("error %T %q: want a *DirError matching ErrDamaged naming %s", err, err, dir)
		}
		t.Logf("refused: %v", err)
		if after := dirFiles(t, dir); strings.Join(after, ",") != strings.Join(before, ",") {
			t.Fatalf("files changed by the refused open:\n%v\n%v", before, after)
		}
	})
	t.Run("cut", func(t *testing.T) {
		dir, m := pebbleWith50(t)
		info, err := os.Stat(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(m, info.Size()-3); err != nil {
			t.Fatal(err)
		}
		s, err := persistence.OpenPebble(dir, persistence.PebbleOptions{}, testLogger())
		if err != nil {
			if !errors.Is(err, persistence.ErrDamaged) {
				t.Fatalf("cut MANIFEST: %v, want an open or ErrDamaged", err)
			}
			return
		}
		defer s.Close()
		es, err := s.Read(t.Context(), "u", 0, 100)
		if err != nil || len(es) != 50 {
			t.Fatalf("after a cut MANIFEST: %d of 50 acked entries, %v", len(es), err)
		}
	})
}

func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s:%d:%v", e.Name(), info.Size(), info.ModTime()))
	}
	return out
}
