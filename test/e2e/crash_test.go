//go:build !race

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
)

// buildServer builds cmd/tandem once per test binary.
var buildServer = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "tandem-e2e-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "tandem")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/tandem-im/tandem/cmd/tandem").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// procNode is a node running as a separate process.
type procNode struct {
	cmd           *exec.Cmd
	dir, ws, api  string
	logPath       string
	exited        chan struct{}
	exitErr       error
	bin           string
	gossip, remot string
}

func startProc(t *testing.T, bin, dir, ws, api string) *procNode {
	t.Helper()
	return launchProc(t, bin, dir, ws, api, filepath.Join(dir, "node.log"), "/healthz")
}

// launchProc starts the node binary on dir with the given listen
// addresses and extra flags, its output appended to logPath, and returns
// once GET ready answers 200 (it fails the test if the process exits
// first or 30 s pass). The process is killed at cleanup.
func launchProc(t *testing.T, bin, dir, ws, api, logPath, ready string, extra ...string) *procNode {
	t.Helper()
	p := &procNode{bin: bin, dir: dir, ws: ws, api: api, logPath: logPath, exited: make(chan struct{})}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--data-dir", dir, "--ws-addr", ws, "--api-addr", api,
		"--gossip-addr", "127.0.0.1:0", "--remote-addr", "127.0.0.1:0",
		"--admin-key", adminKey, "--jwt-secret", jwtSecret, "--log-level", "warn"}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exitErr = p.cmd.Wait(); logf.Close(); close(p.exited) }()
	t.Cleanup(func() { p.kill() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + api + ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case <-p.exited:
			log, _ := os.ReadFile(p.logPath)
			t.Fatalf("node exited during start: %v\n%s", p.exitErr, log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not answering %s with 200 within 30 s", ready)
		}
	}
}

func (p *procNode) kill() {
	select {
	case <-p.exited:
	default:
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
}

type ledgerRow struct {
	From, To, ClientMsgID, MessageID string
	Seq                              uint64
}

// TestCrashKill9: the node as a separate process is killed with SIGKILL
// while clients send. Every message acked before the kill (the ack ledger,
// written by this test as acks arrive) must be, after a restart, in the
// sender's log at its acked seq and in the recipient's log — read back by
// fresh devices through catch-up, not through acks — with no seq hole and
// no duplicate.
func TestCrashKill9(t *testing.T) { crashKill9(t) }

// TestCrashKill9Pebble: the same on the pebble store.
func TestCrashKill9Pebble(t *testing.T) { crashKill9(t, "--store", "pebble") }

func crashKill9(t *testing.T, flags ...string) {
	if testing.Short() {
		t.Skip("process-level crash test")
	}
	bin, err := buildServer()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ws, api := freePort(t), freePort(t)
	start := func() *procNode {
		return launchProc(t, bin, dir, ws, api, filepath.Join(dir, "node.log"), "/healthz", flags...)
	}
	p := start()
	wsURL, apiURL := "ws://"+ws+"/ws", "http://"+api

	const pairs, window = 4, 16
	ledgerPath := filepath.Join(dir, "ledger.jsonl")
	lf, err := os.Create(ledgerPath)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ledger []ledgerRow
	lw := bufio.NewWriter(lf)
	record := func(r ledgerRow) {
		mu.Lock()
		defer mu.Unlock()
		ledger = append(ledger, r)
		b, _ := json.Marshal(r)
		lw.Write(append(b, '\n'))
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range pairs {
		from, to := fmt.Sprintf("sender%d", i), fmt.Sprintf("receiver%d", i)
		c, err := client.Dial(ctxT(t, 10*time.Second), client.Options{
			URL: wsURL, Token: token(t, apiURL, from), DeviceID: "d", Platform: "linux", KeepEntries: -1,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Go(func() {
			sem := make(chan struct{}, window)
			for n := 0; ctx.Err() == nil; n++ {
				sem <- struct{}{}
				cmid := fmt.Sprintf("%s-%d", from, n)
				pend := c.SendAsync(text(to, cmid, "crash test "+cmid))
				go func() {
					defer func() { <-sem }()
					select {
					case <-pend.Done():
					case <-ctx.Done():
						return
					}
					if ack, err := pend.Result(); err == nil {
						record(ledgerRow{From: from, To: to, ClientMsgID: cmid, MessageID: ack.GetMessageId(), Seq: ack.GetSeq()})
					}
				}()
			}
		})
	}
	// Let acks accumulate, then kill mid-stream.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(ledger)
		mu.Unlock()
		if n >= 400 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	// Acks that arrived before the kill are in the ledger; nothing can
	// arrive after it. Stop the senders.
	mu.Lock()
	acked := append([]ledgerRow(nil), ledger...)
	lw.Flush()
	lf.Close()
	mu.Unlock()
	cancel()
	wg.Wait()
	if len(acked) < 50 {
		t.Fatalf("only %d acks before the kill; the test needs traffic to mean anything", len(acked))
	}
	t.Logf("%d messages acked before kill -9 (ledger %s)", len(acked), ledgerPath)

	start()

	// Recipients first: their senders' actors are not touched by any
	// device, so the recipients depend on the node re-driving the senders'
	// pending fan-outs by itself.
	byFrom := map[string][]ledgerRow{}
	byTo := map[string][]ledgerRow{}
	for _, r := range acked {
		byFrom[r.From] = append(byFrom[r.From], r)
		byTo[r.To] = append(byTo[r.To], r)
	}
	for to, rows := range byTo {
		audit := dial(t, wsURL, apiURL, to, "audit", devOpts{hasCursor: true, cursor: 0})
		missing := func() int {
			have := map[string]bool{}
			for _, e := range audit.all() {
				have[e.GetMessage().GetMessageId()] = true
			}
			n := 0
			for _, r := range rows {
				if !have[r.MessageID] {
					n++
				}
			}
			return n
		}
		waitFor(t, 20*time.Second, func() bool { return missing() == 0 }, func() string {
			return fmt.Sprintf("%s lacks %d of the %d acked messages to it (has %d entries)", to, missing(), len(rows), len(audit.all()))
		})
		got := messages(t, to, audit.all(), 1)
		for _, r := range rows {
			e := got[r.MessageID]
			if e == nil {
				t.Fatalf("%s lacks acked message %s (%s)", to, r.MessageID, r.ClientMsgID)
			}
			if e.GetMessage().GetSender() != r.From || e.GetMessage().GetClientMessageId() != r.ClientMsgID {
				t.Fatalf("%s: message %s = %v, want from %s cmid %s", to, r.MessageID, e.GetMessage(), r.From, r.ClientMsgID)
			}
		}
	}
	for from, rows := range byFrom {
		audit := dial(t, wsURL, apiURL, from, "audit", devOpts{hasCursor: true, cursor: 0})
		var maxSeq uint64
		for _, r := range rows {
			maxSeq = max(maxSeq, r.Seq)
		}
		audit.waitSeq(t, maxSeq)
		got := messages(t, from, audit.all(), 1)
		for _, r := range rows {
			e := got[r.MessageID]
			if e == nil || e.GetSeq() != r.Seq {
				t.Fatalf("%s: acked message %s (seq %d) is %v after the crash", from, r.MessageID, r.Seq, e)
			}
		}
	}

	// A resend of an acked message after the crash is still a duplicate.
	r := acked[0]
	c := dial(t, wsURL, apiURL, r.From, "d", devOpts{platform: "linux", hasCursor: true, cursor: 0})
	ack, err := c.Send(ctxT(t, 10*time.Second), text(r.To, r.ClientMsgID, "again"))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.GetDuplicate() || ack.GetMessageId() != r.MessageID || ack.GetSeq() != r.Seq {
		t.Fatalf("resend after crash = %v, want duplicate of %+v", ack, r)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
