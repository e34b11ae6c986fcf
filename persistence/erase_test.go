package persistence_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandem-im/tandem/persistence"
)

// TestRewriteGoneFromFilesAfterCompaction: the bytes a rewrite replaced
// (recalled content) leave the data files once badger compacts the tables
// that held them.
func TestRewriteGoneFromFilesAfterCompaction(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("zq-recalled-content-" + time.Now().Format(time.RFC3339Nano))
	ctx := context.Background()
	open := func() *persistence.Local {
		// Level 0 compacts at 3 tables here: Compact (badger's Flatten)
		// leaves a level 0 below its threshold alone when no other level
		// has tables, and this test makes only six.
		b, err := persistence.OpenBadger(dir, persistence.BadgerOptions{NumLevelZeroTables: 3, NumLevelZeroTablesStall: 8}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := open()
	e, _, err := b.Activate(ctx, "u", "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e, Entries: []persistence.Entry{{Seq: 1, TimeMS: 1, Data: secret}}}); err != nil {
		t.Fatal(err)
	}
	// Close: the entry reaches an L0 table.
	b.Close()
	b = open()
	e, _, _ = b.Activate(ctx, "u", "t")
	if err := b.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e, Rewrites: []persistence.Entry{{Seq: 1, TimeMS: 1, Data: []byte("erased")}}}); err != nil {
		t.Fatal(err)
	}
	b.Close()
	// More tables so the level compacts (as a running node's would).
	for range 4 {
		b = open()
		e, last, _ := b.Activate(ctx, "u", "t")
		if err := b.AppendSync(ctx, persistence.AppendRequest{User: "u", Epoch: e, Entries: []persistence.Entry{{Seq: last + 1, TimeMS: 2, Data: []byte("filler")}}}); err != nil {
			t.Fatal(err)
		}
		b.Close()
	}
	b = open()
	if err := b.Compact(); err != nil {
		t.Fatal(err)
	}
	got, _ := b.Read(ctx, "u", 0, 1)
	if len(got) != 1 || string(got[0].Data) != "erased" {
		t.Fatalf("read %+v", got)
	}
	b.Close()
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(data, secret) {
			t.Errorf("%s still holds the rewritten bytes", filepath.Base(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
