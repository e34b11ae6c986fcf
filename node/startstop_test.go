//go:build !race

// These tests run the built command (cmd/tandem) as real processes: a
// refused start (exit 3) for each way the data dir can be unusable or its
// store damaged, and a bounded stop (exit 4 naming what was abandoned)
// whatever the store or PostgreSQL is doing. Mounts need root: as root a
// failing mount fails the test; as another user those tests are skipped,
// saying so.

package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-im/tandem/internal/fstest"
	"github.com/tandem-im/tandem/internal/pgtest"
	"github.com/tandem-im/tandem/persistence"
)

const (
	testAdminKey  = "startstop-admin-key-0123456789"
	testJWTSecret = "startstop-jwt-secret-0123456789"
	nobodyUID     = 65534
)

// syncBuf is a bytes.Buffer written by exec's copier and read by the test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// tandemProc is one run of the built command.
type tandemProc struct {
	cmd    *exec.Cmd
	stderr *syncBuf
	api    string
	done   chan struct{}
	err    error // Wait's, once done is closed
}

// run starts the command on dataDir with loopback addresses and fixed
// secrets (nothing needs writing into a refused data dir); as the nobody
// user if asNobody.
func (bin tandemBin) run(t *testing.T, dataDir string, asNobody bool, extra ...string) *tandemProc {
	t.Helper()
	return bin.start(t, asNobody, append([]string{"--admin-key", testAdminKey, "--jwt-secret", testJWTSecret, "--data-dir", dataDir}, extra...)...)
}

// start starts the command with loopback addresses and args.
func (bin tandemBin) start(t *testing.T, asNobody bool, args ...string) *tandemProc {
	t.Helper()
	api := freeAddr(t)
	args = append([]string{"--ws-addr", "127.0.0.1:0", "--api-addr", api, "--gossip-addr", "127.0.0.1:0", "--remote-addr", "127.0.0.1:0"}, args...)
	p := &tandemProc{cmd: exec.Command(string(bin), args...), stderr: &syncBuf{}, api: api, done: make(chan struct{})}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/"} // no TANDEM_* from the caller
	p.cmd.Stdout, p.cmd.Stderr = io.Discard, p.stderr
	if asNobody {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID, Groups: []uint32{}}}
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill() // only the process this test started
			<-p.done
		}
	})
	return p
}

// wait waits up to limit for the process to end and returns its exit code
// (-1 if a signal ended it) and how long it took.
func (p *tandemProc) wait(t *testing.T, limit time.Duration) (code int, sig syscall.Signal, took time.Duration) {
	t.Helper()
	t0 := time.Now()
	select {
	case <-p.done:
	case <-time.After(limit):
		p.cmd.Process.Kill() // only the process this test started
		<-p.done
		t.Fatalf("tandem did not end within %s; stderr:\n%s", limit, p.stderr)
	}
	took = time.Since(t0)
	var exit *exec.ExitError
	if p.err == nil {
		return 0, 0, took
	}
	if !errors.As(p.err, &exit) {
		t.Fatalf("wait: %v", p.err)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1, ws.Signal(), took
	}
	return exit.ExitCode(), 0, took
}

// signal sends sig to the process this test started.
func (p *tandemProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

type tandemBin string

// buildTandem builds cmd/tandem into a directory every user may read (the
// tests run it as nobody too).
func buildTandem(t *testing.T) tandemBin {
	t.Helper()
	dir, err := os.MkdirTemp("", "tandem-startstop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tandem")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/tandem").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return tandemBin(bin)
}

// sharedTemp is a directory every user may enter, removed at the end.
func sharedTemp(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tandem-startstop-data-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// remount runs mount(8) with args on a target already mounted.
func remount(t *testing.T, target string, args ...string) {
	t.Helper()
	if out, err := exec.Command("mount", append(args, target)...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v %s (as root; the test needs it): %v\n%s", args, target, err, out)
	}
}

// requireRoot skips a test that mounts when not root, saying so.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: not root (this test mounts file systems and runs tandem as another user)")
	}
}

// mount runs mount(8) with args and unmounts target at the end; as root a
// failure fails the test.
func mount(t *testing.T, target string, args ...string) {
	t.Helper()
	remount(t, target, args...)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", target).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", target, err, out)
		}
	})
}

// buildNodeStore writes a few appends into a badger store at
// dataDir/badger (as the node lays it out) and closes it.
func buildNodeStore(t *testing.T, dataDir string) map[string][]persistence.Entry {
	t.Helper()
	dir := filepath.Join(dataDir, "badger")
	b, err := persistence.OpenBadger(dir, persistence.BadgerOptions{MemTableSize: 8 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string][]persistence.Entry{}
	for u := range 3 {
		user := fmt.Sprintf("user%d", u)
		ep, last, err := b.Activate(context.Background(), user, "n1")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			data := []byte(fmt.Sprintf("%s entry %d", user, i))
			if u == 1 && i == 9 {
				data = bytes.Repeat([]byte{'v'}, 1100<<10) // into the value log
			}
			e := persistence.Entry{Seq: last + 1, TimeMS: time.Now().UnixMilli(), Data: data}
			if err := b.AppendSync(context.Background(), persistence.AppendRequest{User: user, Epoch: ep, Entries: []persistence.Entry{e}}); err != nil {
				t.Fatal(err)
			}
			last++
			acked[user] = append(acked[user], e)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return acked
}

// checkNodeStore reads back through a fresh OpenBadger every entry acked.
func checkNodeStore(t *testing.T, dataDir string, acked map[string][]persistence.Entry) {
	t.Helper()
	b, err := persistence.OpenBadger(filepath.Join(dataDir, "badger"), persistence.BadgerOptions{MemTableSize: 8 << 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for user, want := range acked {
		got, err := b.Read(context.Background(), user, 0, 100)
		if err != nil || len(got) != len(want) {
			t.Fatalf("%s: read %d entries (%v), %d acked", user, len(got), err, len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i].Data, want[i].Data) {
				t.Fatalf("%s entry %d differs from the acked one", user, i)
			}
		}
	}
}

// onlyOne is the one file in dir matching pattern.
func onlyOne(t *testing.T, dir, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, pattern))
	if len(m) != 1 {
		t.Fatalf("%s in %s: %v", pattern, dir, m)
	}
	return m[0]
}

// refused runs the command on dataDir and checks it is refused (refusal).
func (bin tandemBin) refused(t *testing.T, dataDir string, asNobody bool, want ...string) {
	t.Helper()
	refusal(t, bin.run(t, dataDir, asNobody), want...)
}

// refusal checks that p exits 3 with one stderr line that says each of
// want, no panic and no goroutine dump.
func refusal(t *testing.T, p *tandemProc, want ...string) {
	t.Helper()
	code, _, _ := p.wait(t, 15*time.Second)
	out := p.stderr.String()
	if code != ExitDataDir {
		t.Fatalf("exit %d, want %d (data dir refused); stderr:\n%s", code, ExitDataDir, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "tandem: ") {
		t.Errorf("the last stderr line is not the refusal: %q", last)
	}
	for _, w := range want {
		if !strings.Contains(last, w) {
			t.Errorf("the refusal does not say %q: %s", w, last)
		}
	}
	for _, bad := range []string{"panic", "goroutine "} {
		if strings.Contains(out, bad) {
			t.Errorf("stderr has %q:\n%s", bad, out)
		}
	}
}

// TestCommandStartStop builds the command once and runs it in each
// situation: refused starts, the zero-byte memtable badger would refuse,
// and bounded stops.
func TestCommandStartStop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/tandem")
	}
	bin := buildTandem(t)

	t.Run("data dir is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "data")
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		bin.refused(t, f, false, f+": is a file, not a directory")
	})

	// Damaged stores: refused before badger opens them (a cut table makes
	// badger panic in a goroutine of its own; a cut MANIFEST makes it
	// delete tables), naming the file and the repair.
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string) (file, says string)
	}{
		{"table cut short", func(t *testing.T, dir string) (string, string) {
			p := onlyOne(t, dir, "*.sst")
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
			return p, "index cannot be read"
		}},
		{"table block flipped", func(t *testing.T, dir string) (string, string) {
			p := onlyOne(t, dir, "*.sst")
			b, _ := os.ReadFile(p)
			for i := len(b) / 3; i < len(b)/3+8; i++ {
				b[i] ^= 0xff
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return p, "checksum"
		}},
		{"value log cut short", func(t *testing.T, dir string) (string, string) {
			p := onlyOne(t, dir, "*.vlog")
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()-100); err != nil {
				t.Fatal(err)
			}
			return p, "cut short"
		}},
		{"MANIFEST cut short", func(t *testing.T, dir string) (string, string) {
			p := filepath.Join(dir, "MANIFEST")
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()-3); err != nil {
				t.Fatal(err)
			}
			return p, "cut short"
		}},
		{"table missing", func(t *testing.T, dir string) (string, string) {
			p := onlyOne(t, dir, "*.sst")
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			return p, "is missing"
		}},
	} {
		t.Run("damaged: "+tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			buildNodeStore(t, dataDir)
			file, says := tc.damage(t, filepath.Join(dataDir, "badger"))
			bin.refused(t, dataDir, false, file, says, "restore the data dir from a backup")
		})
	}

	t.Run("torn MANIFEST repaired on request", func(t *testing.T) {
		// The last record cut: refused, naming the repair flag; with it
		// the node starts, and the table that record named is moved
		// aside whole, not deleted. (This store did not crash: the
		// table's WAL is gone, so its entries are only in the moved
		// table — why the flag is for after a crash only.)
		dataDir := t.TempDir()
		buildNodeStore(t, dataDir)
		dir := filepath.Join(dataDir, "badger")
		tbl := onlyOne(t, dir, "*.sst")
		want, err := os.ReadFile(tbl)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "MANIFEST")
		fi, _ := os.Stat(p)
		if err := os.Truncate(p, fi.Size()-3); err != nil {
			t.Fatal(err)
		}
		bin.refused(t, dataDir, false, p, "last record is incomplete", "--badger-repair-torn-manifest")

		n := bin.run(t, dataDir, false, "--badger-repair-torn-manifest")
		waitReady(t, n.api, 15*time.Second)
		n.signal(t, syscall.SIGTERM)
		if code, _, _ := n.wait(t, 10*time.Second); code != ExitOK {
			t.Fatalf("exit %d; stderr:\n%s", code, n.stderr)
		}
		if out := n.stderr.String(); !strings.Contains(out, "repairing a MANIFEST whose last record is incomplete") {
			t.Errorf("the repair is not logged:\n%s", out)
		}
		moved := onlyOne(t, dataDir, filepath.Join("badger-quarantine-*", filepath.Base(tbl)))
		if got, err := os.ReadFile(moved); err != nil || !bytes.Equal(got, want) {
			t.Errorf("the moved table differs from the original (%v)", err)
		}
	})

	t.Run("zero-byte memtable is repaired", func(t *testing.T) {
		dataDir := t.TempDir()
		acked := buildNodeStore(t, dataDir)
		if err := os.WriteFile(filepath.Join(dataDir, "badger", "00042.mem"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		p := bin.run(t, dataDir, false)
		waitReady(t, p.api, 15*time.Second)
		p.signal(t, syscall.SIGTERM)
		if code, _, _ := p.wait(t, 10*time.Second); code != ExitOK {
			t.Fatalf("exit %d after a clean stop; stderr:\n%s", code, p.stderr)
		}
		// Badger's first open fails on it (and sizes the file); OpenBadger's
		// retry opens.
		if out := p.stderr.String(); !strings.Contains(out, "badger open failed, retrying once") {
			t.Errorf("the retry is not logged:\n%s", out)
		}
		checkNodeStore(t, dataDir, acked)
	})

	t.Run("not writable by this user", func(t *testing.T) {
		requireRoot(t)
		root := sharedTemp(t)
		// The data dir itself: root's, 0700.
		rootsDir := filepath.Join(root, "roots")
		if err := os.Mkdir(rootsDir, 0o700); err != nil {
			t.Fatal(err)
		}
		bin.refused(t, rootsDir, true, rootsDir, fmt.Sprintf("by this process (uid %d)", nobodyUID), "chown")

		// A data dir of nobody's whose store (tandem once run as root) is root's.
		mixed := filepath.Join(root, "mixed")
		buildNodeStore(t, mixed)
		if err := os.Chown(mixed, nobodyUID, nobodyUID); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(mixed, "badger"), 0o755); err != nil {
			t.Fatal(err)
		}
		bin.refused(t, mixed, true, filepath.Join(mixed, "badger"), "by this process")

		// The store dir is nobody's too, one file in it still root's.
		if err := os.Chown(filepath.Join(mixed, "badger"), nobodyUID, nobodyUID); err != nil {
			t.Fatal(err)
		}
		ents, _ := os.ReadDir(filepath.Join(mixed, "badger"))
		for _, e := range ents {
			if e.Name() != "MANIFEST" {
				os.Chown(filepath.Join(mixed, "badger", e.Name()), nobodyUID, nobodyUID)
			}
		}
		bin.refused(t, mixed, true, filepath.Join(mixed, "badger", "MANIFEST"), "cannot be opened for writing", "chown")

		// The generated admin key left root's (0600) in a dir of nobody's.
		keyDir := filepath.Join(root, "key")
		if err := os.Mkdir(keyDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(keyDir, "admin-key"), []byte("k\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(keyDir, nobodyUID, nobodyUID); err != nil {
			t.Fatal(err)
		}
		refusal(t, bin.start(t, true, "--data-dir", keyDir, "--jwt-secret", testJWTSecret),
			filepath.Join(keyDir, "admin-key")+": cannot be read by this process", "chown")
	})

	t.Run("read-only mount", func(t *testing.T) {
		requireRoot(t)
		src := t.TempDir()
		acked := buildNodeStore(t, src)
		ro := t.TempDir()
		mount(t, ro, "--bind", src)
		remount(t, ro, "-o", "remount,bind,ro")
		bin.refused(t, ro, false, ro, "mounted read-only")
		empty := t.TempDir()
		mount(t, empty, "-t", "tmpfs", "-o", "ro,size=1m", "tandem-ro")
		bin.refused(t, empty, false, empty, "mounted read-only")
		checkNodeStore(t, src, acked) // the refusal touched nothing
	})

	t.Run("full file system", func(t *testing.T) {
		requireRoot(t)
		dir := t.TempDir()
		mount(t, dir, "-t", "tmpfs", "-o", "size=1m", "tandem-full")
		fstest.Fill(t, dir, 0)
		bin.refused(t, dir, false, dir, "the file system is full")
	})
}

// sendMessages sends n messages alice → bob through the server API and
// returns the acked message ids.
func sendMessages(t *testing.T, api string, n int, tag string) []string {
	t.Helper()
	var ids []string
	c := http.Client{Timeout: 5 * time.Second}
	for i := range n {
		body := fmt.Sprintf(`{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"content":"aGk=","client_message_id":"%s-%d"}`, tag, i)
		req, _ := http.NewRequest("POST", "http://"+api+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			MessageID string `json:"message_id"`
		}
		err = json.NewDecoder(res.Body).Decode(&out)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 || out.MessageID == "" {
			t.Fatalf("send %d: status %d, %v", i, res.StatusCode, err)
		}
		ids = append(ids, out.MessageID)
	}
	return ids
}

// history returns the ids of bob's messages from alice, through the API.
func history(t *testing.T, api string) []string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+api+"/v1/users/bob/history?conversation_type=direct&conversation_id=alice&limit=100", nil)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		Messages []struct {
			MessageID string `json:"message_id"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != 200 {
		t.Fatalf("history: status %d, %v", res.StatusCode, err)
	}
	var ids []string
	for _, m := range out.Messages {
		ids = append(ids, m.MessageID)
	}
	return ids
}

// checkLedger restarts the node on its store (extra: its flags) and checks
// that bob's history holds every acked message.
func (bin tandemBin) checkLedger(t *testing.T, dataDir string, acked []string, extra ...string) {
	t.Helper()
	p := bin.run(t, dataDir, false, extra...)
	waitReady(t, p.api, 15*time.Second)
	got := history(t, p.api)
	for _, id := range acked {
		if !slices.Contains(got, id) {
			t.Errorf("acked message %s is missing after the restart (history has %d)", id, len(got))
		}
	}
	p.signal(t, syscall.SIGTERM)
	if code, _, _ := p.wait(t, 10*time.Second); code != ExitOK {
		t.Errorf("the checking node exited %d; stderr:\n%s", code, p.stderr)
	}
}

// stopTimeout is the --shutdown-timeout of the stop tests; stopSlack is
// what the whole process may take past it (Run's own margin is 1 s).
const (
	stopTimeout = 2 * time.Second
	stopSlack   = 1500 * time.Millisecond
)

// stopBounded sends SIGTERM and checks the process ends within the
// shutdown timeout and the slack, with one of codes; it returns the code.
func (p *tandemProc) stopBounded(t *testing.T, codes ...int) int {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	code, sig, took := p.wait(t, stopTimeout+10*time.Second)
	out := p.stderr.String()
	if sig != 0 {
		t.Fatalf("ended by signal %v after %s; stderr:\n%s", sig, took, out)
	}
	if took > stopTimeout+stopSlack {
		t.Errorf("the stop took %s, more than --shutdown-timeout %s + %s", took, stopTimeout, stopSlack)
	}
	if !slices.Contains(codes, code) {
		t.Fatalf("exit %d after %s, want one of %v; stderr:\n%s", code, took, codes, out)
	}
	if code == ExitAbandoned {
		if !strings.Contains(out, "abandoned=") {
			t.Errorf("exit 4 without naming what was abandoned; stderr:\n%s", out)
		}
		if !strings.Contains(out, "acknowledged messages were durable before their acks") && !strings.Contains(out, "nothing was acknowledged yet") {
			t.Errorf("exit 4 without saying what became of acked messages; stderr:\n%s", out)
		}
	}
	what := ""
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "abandoned="); i >= 0 {
			what = " " + l[i:]
		}
	}
	t.Logf("exit %d after %s%s", code, took, what)
	return code
}

// TestCommandStop stops the command while its store cannot finish: the
// process ends within --shutdown-timeout and a margin, exit 4 naming what
// was abandoned, and every acked message is read back by a restarted node
// wherever the data still exists. A second signal ends it at once.
func TestCommandStop(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/tandem")
	}
	bin := buildTandem(t)
	timeout := "--shutdown-timeout=" + stopTimeout.String()

	t.Run("data dir removed", func(t *testing.T) {
		dataDir := t.TempDir()
		p := bin.run(t, dataDir, false, timeout)
		waitReady(t, p.api, 15*time.Second)
		sendMessages(t, p.api, 5, "rm")
		if err := os.RemoveAll(dataDir); err != nil {
			t.Fatal(err)
		}
		p.stopBounded(t, ExitAbandoned)
		if out := p.stderr.String(); !strings.Contains(out, `shutdown step abandoned: the deadline passed" step="store close"`) {
			t.Errorf("the store close is not named as abandoned:\n%s", out)
		}
		// The data is gone with the dir: there is nothing to read back.
	})

	t.Run("data dir moved away", func(t *testing.T) {
		// As a removed dir for badger (each new file fails), but the
		// data is still there to read back.
		dataDir := filepath.Join(t.TempDir(), "data")
		p := bin.run(t, dataDir, false, timeout)
		waitReady(t, p.api, 15*time.Second)
		acked := sendMessages(t, p.api, 10, "mv")
		if err := os.Rename(dataDir, dataDir+".away"); err != nil {
			t.Fatal(err)
		}
		p.stopBounded(t, ExitAbandoned)
		if err := os.Rename(dataDir+".away", dataDir); err != nil {
			t.Fatal(err)
		}
		bin.checkLedger(t, dataDir, acked)
	})

	t.Run("second signal", func(t *testing.T) {
		dataDir := filepath.Join(t.TempDir(), "data")
		p := bin.run(t, dataDir, false, "--shutdown-timeout=10s")
		waitReady(t, p.api, 15*time.Second)
		acked := sendMessages(t, p.api, 10, "sig")
		if err := os.Rename(dataDir, dataDir+".away"); err != nil {
			t.Fatal(err)
		}
		p.signal(t, syscall.SIGTERM)
		time.Sleep(500 * time.Millisecond)
		select {
		case <-p.done:
			t.Fatalf("the first SIGTERM ended the process while its store close hangs; stderr:\n%s", p.stderr)
		default:
		}
		p.signal(t, syscall.SIGTERM)
		code, sig, took := p.wait(t, 5*time.Second)
		if sig != syscall.SIGTERM || took > time.Second {
			t.Fatalf("after the second SIGTERM: exit %d, signal %v, after %s; want killed by SIGTERM at once; stderr:\n%s", code, sig, took, p.stderr)
		}
		if err := os.Rename(dataDir+".away", dataDir); err != nil {
			t.Fatal(err)
		}
		bin.checkLedger(t, dataDir, acked)
	})

	t.Run("disk full", func(t *testing.T) {
		requireRoot(t)
		dataDir := t.TempDir()
		mount(t, dataDir, "-t", "tmpfs", "-o", "size=96m", "tandem-full")
		// The default disk reserve (528 MiB) is more than the file
		// system: the node would refuse writes from the start.
		p := bin.run(t, dataDir, false, timeout, "--disk-reserve=16777216")
		waitReady(t, p.api, 15*time.Second)
		acked := sendMessages(t, p.api, 10, "full")
		fstest.Fill(t, dataDir, 0)
		// The close's memtable flush would fault on the full tmpfs
		// (SIGBUS in badger's mmapped table): it is skipped and named.
		p.stopBounded(t, ExitAbandoned)
		if out := p.stderr.String(); !strings.Contains(out, "store close (no room to flush)") {
			t.Errorf("the skipped close is not named:\n%s", out)
		}
		if err := os.Remove(filepath.Join(dataDir, "filler")); err != nil {
			t.Fatal(err)
		}
		bin.checkLedger(t, dataDir, acked, "--disk-reserve=16777216")
	})

	t.Run("start hung", func(t *testing.T) {
		// A read that never returns during the start (a hung network
		// file system; here a FIFO where the generated admin key is
		// read): SIGTERM still ends the process in bounded time.
		dataDir := t.TempDir()
		if err := syscall.Mkfifo(filepath.Join(dataDir, "admin-key"), 0o600); err != nil {
			t.Fatal(err)
		}
		p := bin.start(t, false, "--data-dir", dataDir, "--jwt-secret", testJWTSecret, timeout)
		time.Sleep(time.Second)
		select {
		case <-p.done:
			t.Fatalf("the start did not hang; stderr:\n%s", p.stderr)
		default:
		}
		p.stopBounded(t, ExitAbandoned)
		if out := p.stderr.String(); !strings.Contains(out, "the start did not end") {
			t.Errorf("the abandoned start is not named:\n%s", out)
		}
	})

	// One PostgreSQL for both: the first kills and restarts it.
	pg := pgtest.Start(t)
	t.Run("PostgreSQL unreachable", func(t *testing.T) {
		url := pg.CreateDB(t, "startstop")
		dataDir := t.TempDir()
		p := bin.run(t, dataDir, false, timeout, "--store", url)
		waitReady(t, p.api, 15*time.Second)
		acked := sendMessages(t, p.api, 10, "pg")
		pg.Kill() // the postmaster this test started
		p.stopBounded(t, ExitOK, ExitAbandoned)
		pg.Restart(t)
		bin.checkLedger(t, dataDir, acked, "--store", url)
	})

	t.Run("PostgreSQL hung", func(t *testing.T) {
		// Every PostgreSQL process stopped (SIGSTOP): connections stay
		// open and nothing answers, as across a partition; one send is
		// in flight when SIGTERM comes.
		if !pg.Running() {
			t.Fatal("the PostgreSQL the test before restarted is not running")
		}
		url := pg.CreateDB(t, "startstop_hung")
		dataDir := t.TempDir()
		p := bin.run(t, dataDir, false, timeout, "--store", url)
		waitReady(t, p.api, 15*time.Second)
		acked := sendMessages(t, p.api, 10, "pghung")
		procs := processTree(t, pg.PID())
		for _, pid := range procs {
			syscall.Kill(pid, syscall.SIGSTOP) // PostgreSQL's processes, which this test started
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				for _, pid := range procs {
					syscall.Kill(pid, syscall.SIGCONT)
				}
			}
		}
		t.Cleanup(resume)
		inflight := make(chan string, 1)
		go func() { inflight <- trySend(p.api, "pghung-inflight") }()
		time.Sleep(300 * time.Millisecond)
		p.stopBounded(t, ExitOK, ExitAbandoned)
		resume()
		if id := <-inflight; id != "" {
			acked = append(acked, id) // acked after all: it must be there too
		}
		bin.checkLedger(t, dataDir, acked, "--store", url)
	})
}

// processTree is pid and its descendants, read from /proc.
func processTree(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	parent := map[int]int{}
	for _, e := range ents {
		var p int
		if _, err := fmt.Sscanf(e.Name(), "%d", &p); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces, so after ")".
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		var pp int
		if len(f) > 1 {
			fmt.Sscanf(f[1], "%d", &pp)
		}
		parent[p] = pp
	}
	tree := []int{pid}
	for changed := true; changed; {
		changed = false
		for p, pp := range parent {
			if slices.Contains(tree, pp) && !slices.Contains(tree, p) {
				tree, changed = append(tree, p), true
			}
		}
	}
	return tree
}

// trySend sends one message and returns its id if it was acked, "" if not.
func trySend(api, cid string) string {
	c := http.Client{Timeout: 20 * time.Second}
	body := fmt.Sprintf(`{"from":"alice","conversation":{"type":"direct","id":"bob"},"type":1,"content":"aGk=","client_message_id":"%s"}`, cid)
	req, _ := http.NewRequest("POST", "http://"+api+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	res, err := c.Do(req)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	var out struct {
		MessageID string `json:"message_id"`
	}
	if res.StatusCode != 200 || json.NewDecoder(res.Body).Decode(&out) != nil {
		return ""
	}
	return out.MessageID
}
