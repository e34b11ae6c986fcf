//go:build !race

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/internal/fstest"
	"github.com/tandem-im/tandem/proto/wire"
)

// thinVolume is an ext4 file system on a loop device whose sparse image
// lives on a small tmpfs: filling the tmpfs makes the kernel fail the
// file system's write-back with an I/O error while ext4 itself still has
// room — what a thin-provisioned volume running out does.
type thinVolume struct {
	backing, img, dev, mnt string
}

func (v *thinVolume) run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("as root: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// newThinVolume needs root: not root, the test is skipped; root and a
// step fails, the test fails. Cleanup unmounts and detaches everything.
func newThinVolume(t *testing.T, backingSize, fsSize int64) *thinVolume {
	t.Helper()
	v := &thinVolume{backing: fstest.Tmpfs(t, backingSize), mnt: t.TempDir()}
	v.img = filepath.Join(v.backing, "fs.img")
	if err := os.WriteFile(v.img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(v.img, fsSize); err != nil {
		t.Fatal(err)
	}
	v.run(t, "mkfs.ext4", "-q", "-F", v.img)
	out, err := exec.Command("losetup", "--find", "--show", v.img).CombinedOutput()
	if err != nil {
		t.Fatalf("as root: losetup: %v: %s", err, out)
	}
	v.dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { v.run(t, "losetup", "-d", v.dev) })
	v.mount(t)
	t.Cleanup(func() { unix.Unmount(v.mnt, unix.MNT_DETACH) }) // already unmounted, unless the test failed midway
	return v
}

func (v *thinVolume) mount(t *testing.T) {
	t.Helper()
	if err := unix.Mount(v.dev, v.mnt, "ext4", 0, "errors=continue"); err != nil {
		t.Fatalf("mount %s on %s as root: %v", v.dev, v.mnt, err)
	}
}

// exhaust fills the backing tmpfs to ENOSPC and returns the filler's path.
func (v *thinVolume) exhaust(t *testing.T) string {
	t.Helper()
	return fstest.Fill(t, v.backing, 0)
}

// startProcArgs is startProc with more flags and the log outside dir.
func startProcArgs(t *testing.T, bin, dir, logPath string, extra ...string) *procNode {
	t.Helper()
	return launchProc(t, bin, dir, freePort(t), freePort(t), logPath, "/readyz", extra...)
}

// TestStoreFailsWhileServing runs the node binary on a thin volume and
// exhausts it while two users send: the kernel fails the WAL's
// write-back (a real I/O error, not a hook), badger's sync reports it,
// and then no send is acked again: the senders of the failed batch get
// UNAVAILABLE ("storage failed"), the node ends with exit code 5. After
// space is back and the volume checked, a restart on the same data has
// every acked message once, seqs dense, and takes the refused sends as
// new ones (they were never stored).
func TestStoreFailsWhileServing(t *testing.T) {
	storeFailsWhileServing(t, "--badger-tuning", "latency", "--disk-reserve", "1048576")
}

// TestStoreFailsWhileServingPebble: the same on the pebble store, whose
// failed WAL sync reaches the committer through pebble's Fatalf.
func TestStoreFailsWhileServingPebble(t *testing.T) {
	storeFailsWhileServing(t, "--store", "pebble", "--disk-reserve", "1048576")
}

func storeFailsWhileServing(t *testing.T, flags ...string) {
	bin, err := buildServer()
	if err != nil {
		t.Fatal(err)
	}
	v := newThinVolume(t, 48<<20, 256<<20)
	dir := filepath.Join(v.mnt, "data")
	logPath := filepath.Join(t.TempDir(), "node.log")
	p := startProcArgs(t, bin, dir, logPath, flags...)
	ws, api := "ws://"+p.ws+"/ws", "http://"+p.api

	alice := dial(t, ws, api, "alice", "a1", devOpts{platform: "web"})
	bob := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"})
	dial(t, ws, api, "carol", "c1", devOpts{platform: "web"})
	acked := map[string]*wire.SendAck{} // client message ID → ack
	var refused []string
	body := strings.Repeat("x", 8<<10) // every commit writes new WAL pages
	send := func(d *device, cmid string) error {
		ack, err := d.Send(ctxT(t, 10*time.Second), text("carol", cmid, body))
		if err == nil {
			acked[cmid] = ack
		}
		return err
	}
	for i := range 10 {
		for name, d := range map[string]*device{"alice": alice, "bob": bob} {
			if err := send(d, fmt.Sprintf("%s-before-%d", name, i)); err != nil {
				t.Fatal(err)
			}
		}
	}

	filler := v.exhaust(t)
	var failure error
	for i := 0; failure == nil && i < 200; i++ {
		for name, d := range map[string]*device{"alice": alice, "bob": bob} {
			cmid := fmt.Sprintf("%s-during-%d", name, i)
			if err := send(d, cmid); err != nil {
				refused = append(refused, cmid)
				failure = err
				break
			}
		}
	}
	var ce *client.Error
	if !errors.As(failure, &ce) || ce.Code() != wire.CodeUnavailable || !strings.Contains(ce.Wire.GetMessage(), "storage failed") ||
		ce.Wire.GetRetryAfterMs() == 0 {
		t.Fatalf("send when the volume ran out: %v, want UNAVAILABLE \"storage failed ...\" with a retry hint", failure)
	}
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("the node did not end within 15 s of its store failing")
	}
	if ee, ok := errors.AsType[*exec.ExitError](p.exitErr); !ok || ee.ExitCode() != 5 {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("node exit: %v, want exit code 5\n%s", p.exitErr, log)
	}
	t.Logf("%d sends acked, then %v", len(acked), failure)

	// Space back; the volume unmounted, checked and mounted again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(v.mnt, 0); err != nil {
		t.Fatalf("unmount the volume after the node ended: %v", err)
	}
	if out, err := exec.Command("e2fsck", "-f", "-y", v.img).CombinedOutput(); err != nil {
		if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() > 1 { // 1: errors corrected
			t.Fatalf("e2fsck: %v\n%s", err, out)
		}
	}
	v.mount(t)

	p2 := startProcArgs(t, bin, dir, logPath, flags...)
	ws, api = "ws://"+p2.ws+"/ws", "http://"+p2.api
	alice2 := dial(t, ws, api, "alice", "a2", devOpts{platform: "web"})
	bob2 := dial(t, ws, api, "bob", "b2", devOpts{platform: "web"})
	for _, cmid := range refused {
		d := alice2
		if strings.HasPrefix(cmid, "bob") {
			d = bob2
		}
		ack, err := d.Send(ctxT(t, 10*time.Second), text("carol", cmid, body))
		if err != nil || ack.GetDuplicate() {
			t.Fatalf("resend of %s after the restart: %v (duplicate %v): it was never acked, so never stored", cmid, err, ack.GetDuplicate())
		}
		acked[cmid] = ack
	}
	// Fresh devices read the logs back (their catch-up, not the acks).
	carol := dial(t, ws, api, "carol", "c2", devOpts{platform: "web"})
	carol.waitMessages(t, len(acked))
	inCarol := messages(t, "carol", carol.all(), 1)
	inAlice := messages(t, "alice", dial(t, ws, api, "alice", "a3", devOpts{platform: "web"}).all(), 1)
	inBob := messages(t, "bob", dial(t, ws, api, "bob", "b3", devOpts{platform: "web"}).all(), 1)
	for cmid, ack := range acked {
		own := inAlice
		if strings.HasPrefix(cmid, "bob") {
			own = inBob
		}
		if inCarol[ack.GetMessageId()] == nil || own[ack.GetMessageId()] == nil {
			t.Errorf("acked %s (seq %d) lost after the store failed", cmid, ack.GetSeq())
		} else if own[ack.GetMessageId()].GetSeq() != ack.GetSeq() {
			t.Errorf("acked %s at seq %d, in the sender's log at %d", cmid, ack.GetSeq(), own[ack.GetMessageId()].GetSeq())
		}
	}
	if len(inCarol) != len(acked) {
		t.Errorf("carol has %d messages, %d were acked", len(inCarol), len(acked))
	}
	p2.kill()
	<-p2.exited
	if err := unix.Unmount(v.mnt, 0); err != nil {
		t.Errorf("unmount the volume: %v", err)
	}
}
