//go:build !race

package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// TestCursorAheadAfterRestore: the store is restored from a backup taken
// before the device's newest entries. The device's cursor is now beyond
// the log; its login says so (cursor_ahead, the real last_seq) and brings
// the compensation window, instead of a silent "nothing new" — and new
// entries, which reuse the lost seqs, reach it.
func TestCursorAheadAfterRestore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node")
	backup := filepath.Join(t.TempDir(), "backup")

	n := startNode(t, dir)
	alice := dial(t, n.wsURL(), n.apiURL(), "alice", "a1", devOpts{})
	bob := dial(t, n.wsURL(), n.apiURL(), "bob", "b1", devOpts{})
	for i := range 3 {
		if _, err := alice.Send(ctxT(t, 10*time.Second), text("bob", fmt.Sprintf("before-%d", i), "kept")); err != nil {
			t.Fatal(err)
		}
	}
	bob.waitMessages(t, 3)
	bob.Close()
	alice.Close()
	n.Stop()
	if out, err := exec.Command("cp", "-a", dir, backup).CombinedOutput(); err != nil {
		t.Fatalf("backup: %v: %s", err, out)
	}

	n = startNode(t, dir)
	alice = dial(t, n.wsURL(), n.apiURL(), "alice", "a1", devOpts{})
	bob = dial(t, n.wsURL(), n.apiURL(), "bob", "b1", devOpts{})
	for i := range 5 {
		if _, err := alice.Send(ctxT(t, 10*time.Second), text("bob", fmt.Sprintf("after-%d", i), "lost")); err != nil {
			t.Fatal(err)
		}
	}
	bob.waitMessages(t, 5)
	cursor := bob.Cursor()
	bob.Close()
	alice.Close()
	n.Stop()

	// Restore: the data dir goes back to the backup.
	if out, err := exec.Command("sh", "-c", fmt.Sprintf("rm -rf %q && cp -a %q %q", dir, backup, dir)).CombinedOutput(); err != nil {
		t.Fatalf("restore: %v: %s", err, out)
	}
	n = startNode(t, dir)

	c := rawDial(t, n.wsURL())
	f := c.loginAs(&wire.Login{Token: token(t, n.apiURL(), "bob"), DeviceId: "b1", Platform: "ios", HasCursor: true, Cursor: cursor}, 1)
	ok := f.GetLoginOk()
	if ok == nil {
		t.Fatalf("login answered %v", f)
	}
	if !ok.GetCursorAhead() || ok.GetLastSeq() >= cursor {
		t.Fatalf("cursor %d after a restore: LoginOk %v; want cursor_ahead and last_seq below the cursor", cursor, ok)
	}
	if ok.GetCompensationFromSeq() == 0 || ok.GetCompensationFromSeq() > ok.GetLastSeq() {
		t.Fatalf("LoginOk %v: want the compensation window within the log", ok)
	}

	// A device whose cursor is the log's end is not told anything.
	c2 := rawDial(t, n.wsURL())
	f = c2.loginAs(&wire.Login{Token: token(t, n.apiURL(), "bob"), DeviceId: "b2", Platform: "web", HasCursor: true, Cursor: ok.GetLastSeq()}, 1)
	if f.GetLoginOk() == nil || f.GetLoginOk().GetCursorAhead() {
		t.Fatalf("cursor at the log's end: %v", f)
	}

	// The client library: the stale device resets and converges on the
	// restored log plus what comes next.
	bob = dial(t, n.wsURL(), n.apiURL(), "bob", "b3", devOpts{hasCursor: true, cursor: cursor})
	if _, err := dial(t, n.wsURL(), n.apiURL(), "alice", "a1", devOpts{}).Send(ctxT(t, 10*time.Second), text("bob", "after-restore", "new")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got []string
		for _, e := range bob.msgs() {
			got = append(got, string(e.GetMessage().GetContent()))
		}
		if len(got) > 0 && got[len(got)-1] == "new" {
			for _, g := range got {
				if g == "lost" {
					t.Fatalf("bob delivered a message the restored store does not have: %v", got)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob (cursor %d before the restore) never got the new message: %s", cursor, fmtEntries(bob.all()))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
