//go:build !race

// These tests start protoactor cluster members (see cluster_test.go): they
// stay out of the race run.

package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStartFailsOnCollision starts a node, then a second one that shares
// one address or the data dir with it: the second start fails at once,
// naming the cause and the address or dir, without a panic.
func TestStartFailsOnCollision(t *testing.T) {
	dir := t.TempDir()
	first, err := startTestNode(t, func(c *Config) { c.DataDir = dir })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		is   error
		want []string
	}{
		{"ws", func(c *Config) { c.WSAddr = first.WSAddr() }, ErrAddrInUse,
			[]string{"WebSockets", first.WSAddr(), "address already in use"}},
		{"gossip", func(c *Config) { c.GossipAddr = first.GossipAddr() }, ErrAddrInUse,
			[]string{"gossip", first.GossipAddr(), "address already in use"}},
		{"data dir", func(c *Config) { c.DataDir = dir }, ErrDataDirLocked,
			[]string{"data dir " + dir, "locked by another tandem process"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Now()
			n, err := startTestNode(t, tc.edit)
			if err == nil {
				t.Fatalf("second node started (ws %s)", n.WSAddr())
			}
			if _, ok := errors.AsType[*StartError](err); !ok {
				t.Errorf("error %T is not a *StartError: %v", err, err)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q does not match %v", err, tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is not one line", err)
			}
			if d := time.Since(t0); d > 3*time.Second {
				t.Errorf("the failed start took %s", d)
			}
		})
	}
	// The same for a pebble store (an in-process lock, held by pebble).
	pdir := t.TempDir()
	pfirst, err := startTestNode(t, func(c *Config) { c.DataDir, c.Store = pdir, "pebble" })
	if err != nil {
		t.Fatal(err)
	}
	if n, err := startTestNode(t, func(c *Config) { c.DataDir, c.Store = pdir, "pebble" }); err == nil {
		t.Fatalf("second pebble node started on %s (ws %s)", pdir, n.WSAddr())
	} else if !errors.Is(err, ErrDataDirLocked) || !strings.Contains(err.Error(), "locked by another tandem process") {
		t.Errorf("second pebble node: %v, want ErrDataDirLocked", err)
	}
	if code, body := readyz(t, pfirst); code != 200 {
		t.Errorf("first pebble node /readyz: %d %s", code, body)
	}
	// The first node is unharmed.
	if code, body := readyz(t, first); code != 200 {
		t.Errorf("first node /readyz: %d %s", code, body)
	}
}

// TestCommandStartFailure runs the built command twice on the same
// addresses and data dir: the second exits non-zero, quickly, with one
// line naming the cause on stderr and no panic or goroutine dump.
func TestCommandStartFailure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/tandem")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "tandem")
	build := exec.Command("go", "build", "-o", bin, "../cmd/tandem")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ws, api, gossip, remote := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	dataDir := filepath.Join(tmp, "data")
	args := func(dir, ws, api, gossip, remote string) []string {
		return []string{"--data-dir", dir, "--ws-addr", ws, "--api-addr", api, "--gossip-addr", gossip, "--remote-addr", remote}
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + tmp} // no TANDEM_* from the caller

	first := exec.Command(bin, args(dataDir, ws, api, gossip, remote)...)
	first.Env = env
	first.Stdout, first.Stderr = io.Discard, io.Discard
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		first.Process.Signal(os.Interrupt) // Wait reports how it ended
		first.Wait()
	})
	waitReady(t, api, 10*time.Second) // the listeners come first: ready means the store is open

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"same addresses", args(filepath.Join(tmp, "other"), ws, api, gossip, remote),
			"tandem: cannot listen for WebSockets on " + ws + ": address already in use"},
		{"same data dir", args(dataDir, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"),
			"tandem: data dir " + dataDir + " is locked by another tandem process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			second := exec.CommandContext(ctx, bin, tc.args...)
			second.Env = env
			var stderr bytes.Buffer
			second.Stderr = &stderr
			err := second.Run()
			if ctx.Err() != nil {
				t.Fatalf("the second start did not end within 10 s; stderr:\n%s", &stderr)
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("second start: %v, want a non-zero exit; stderr:\n%s", err, &stderr)
			}
			out := stderr.String()
			if !strings.Contains(out, tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, out)
			}
			for _, bad := range []string{"panic", "goroutine "} {
				if strings.Contains(out, bad) {
					t.Errorf("stderr has %q:\n%s", bad, out)
				}
			}
		})
	}
}

// freeAddr returns a loopback address no one listens on now (TCP and UDP).
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 10 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close() // free it for the command
		if pc, err := net.ListenPacket("udp", addr); err == nil {
			pc.Close() // free it for the command
			return addr
		}
	}
	t.Fatal("no free TCP and UDP port on loopback")
	return ""
}

// waitReady waits until the server API on addr answers /readyz with 200.
func waitReady(t *testing.T, addr string, limit time.Duration) {
	t.Helper()
	c := http.Client{Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if res, err := c.Get("http://" + addr + "/readyz"); err == nil {
			res.Body.Close() // only the status matters
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s/readyz not ready after %s", addr, limit)
}

// TestClusterErrNamesAddress covers the race a probe cannot close: the
// remote's port taken between the probe and protoactor's listen, which
// protoactor reports as a panic that cluster.Start catches.
func TestClusterErrNamesAddress(t *testing.T) {
	cfg := Config{GossipAddr: "127.0.0.1:7946", RemoteAddr: "127.0.0.1:7402"}
	inUse := func(addr string) error {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return &net.OpError{Op: "listen", Net: "tcp", Addr: a, Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}
	}
	err := clusterErr(cfg, fmt.Errorf("cluster: start member: panic: failed to listen: %w", inUse(cfg.RemoteAddr)))
	if want := "cannot listen for the actor remote on 127.0.0.1:7402: address already in use"; !errors.Is(err, ErrAddrInUse) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "panic") {
		t.Errorf("got %q, want ErrAddrInUse saying %q and no panic", err, want)
	}
	other := errors.New("cluster: waiting for the first topology: context deadline exceeded")
	if err := clusterErr(cfg, other); !errors.Is(err, other) || errors.Is(err, ErrAddrInUse) {
		t.Errorf("got %q, want %q wrapped", err, other)
	}
}
