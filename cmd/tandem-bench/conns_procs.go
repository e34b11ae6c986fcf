package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The processes of `tandem-bench conns`: tandem nodes (the real binary,
// one single-node cluster each, or one cluster sharing a WebSocket port)
// and client workers (this binary again).

// buildTandem builds ./cmd/tandem into dir (the go command must be on the
// PATH and the working directory inside the module).
func buildTandem(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "tandem")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/tandem-im/tandem/cmd/tandem")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build cmd/tandem: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// nodeProc is one tandem node process.
type nodeProc struct {
	index             int
	dir, logPath      string
	ws, api, debugURL string // ws://…/ws, http://…, http://… (the debug listener)
	gossip            string // host:port
	cmd               *exec.Cmd
	done              chan struct{} // closed when the process exited
	waitErr           error         // set before done is closed
}

// freePorts asks the kernel for n free loopback ports (listening on all
// of them at once, then closing: a small race with other programs, which
// a failed node start reports).
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// sharedCluster is what the nodes of a -reuse-port run share: the
// WebSocket port, the cluster's key and JWT secret, and the first node's
// gossip address (the others' seed; set once it runs).
type sharedCluster struct {
	ws   int
	key  string // --cluster-key
	jwt  string // --jwt-secret
	seed string
}

func newSharedCluster() (*sharedCluster, error) {
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 32+24)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("generate the cluster key: %w", err)
	}
	return &sharedCluster{ws: ports[0], key: base64.StdEncoding.EncodeToString(b[:32]), jwt: hex.EncodeToString(b[32:])}, nil
}

// startNode starts node i of the run in its own data dir under parent
// and waits until its API answers /readyz. With sp (a -reuse-port run)
// it listens on the shared WebSocket port and, after the first, joins the
// first node's cluster.
func startNode(ctx context.Context, cfg ConnsConfig, bin, parent, adminKey string, i int, sp *sharedCluster) (*nodeProc, error) {
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	if sp != nil {
		ports[0] = sp.ws
	}
	addr := func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }
	n := &nodeProc{
		index:    i,
		dir:      filepath.Join(parent, fmt.Sprintf("node%d", i)),
		ws:       "ws://" + addr(ports[0]) + "/ws",
		api:      "http://" + addr(ports[1]),
		debugURL: "http://" + addr(ports[4]),
		gossip:   addr(ports[2]),
		done:     make(chan struct{}),
	}
	n.logPath = n.dir + ".log"
	logf, err := os.Create(n.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	args := []string{
		"--data-dir", n.dir,
		"--ws-addr", addr(ports[0]), "--api-addr", addr(ports[1]),
		"--gossip-addr", addr(ports[2]), "--remote-addr", addr(ports[3]),
		"--debug-addr", addr(ports[4]),
		"--admin-key", adminKey,
		"--heartbeat-timeout", cfg.Heartbeat.String(),
		"--log-level", "warn",
	}
	if sp != nil {
		args = append(args, "--reuse-port", "--unsafe-multi-node-badger", "--cluster-key", sp.key, "--jwt-secret", sp.jwt)
		if i > 0 {
			args = append(args, "--seeds", sp.seed)
		}
	}
	args = append(args, cfg.NodeFlags...)
	n.cmd = exec.Command(bin, args...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	dieWithParent(n.cmd)
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start node %d: %w", i, err)
	}
	go func() {
		n.waitErr = n.cmd.Wait()
		close(n.done)
	}()
	if err := n.waitReady(ctx, time.Minute); err != nil {
		n.stop(5 * time.Second)
		return nil, fmt.Errorf("node %d (%s): %w%s", i, n.logPath, err, logTail(n.logPath))
	}
	return n, nil
}

func (n *nodeProc) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		select {
		case <-n.done:
			return fmt.Errorf("exited at start: %v", n.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.api+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits up to grace, then kills. It reports how
// the process ended (nil for a clean exit).
func (n *nodeProc) stop(grace time.Duration) error {
	select {
	case <-n.done:
		return n.waitErr
	default:
	}
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("node %d: SIGTERM: %w", n.index, err)
	}
	select {
	case <-n.done:
		return n.waitErr
	case <-time.After(grace):
		if err := n.cmd.Process.Kill(); err != nil {
			return fmt.Errorf("node %d: kill: %w", n.index, err)
		}
		<-n.done
		return fmt.Errorf("node %d did not stop within %s: killed", n.index, grace)
	}
}

func (n *nodeProc) pid() int { return n.cmd.Process.Pid }

// logTail is the end of a node's log, for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "; log ends:\n" + strings.TrimSpace(string(b))
}

// newAdminKey is a random admin key shared by the run's nodes.
func newAdminKey() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate an admin key: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// workerProc is one client worker process (conns_worker.go).
type workerProc struct {
	index int
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *json.Decoder
}

// startWorker re-executes this binary as client worker i and sends it its
// setup.
func startWorker(setup workerSetup) (*workerProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find this binary to start a client worker: %w", err)
	}
	w := &workerProc{index: setup.Index, cmd: exec.Command(exe)}
	w.cmd.Env = append(os.Environ(), connsWorkerEnv+"=1")
	w.cmd.Stderr = os.Stderr
	dieWithParent(w.cmd)
	if w.in, err = w.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	w.out = json.NewDecoder(bufio.NewReader(stdout))
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start client worker %d: %w", setup.Index, err)
	}
	b, err := json.Marshal(setup)
	if err != nil {
		return nil, err
	}
	if _, err := w.in.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("client worker %d: send the setup: %w", setup.Index, err)
	}
	var r workerReply
	if err := w.out.Decode(&r); err != nil || r.Op != "ready" {
		return nil, errors.Join(fmt.Errorf("client worker %d did not start: %v %+v", setup.Index, err, r), w.kill())
	}
	return w, nil
}

// call sends one command and waits for its reply.
func (w *workerProc) call(cmd workerCommand) (workerReply, error) {
	b, err := json.Marshal(cmd)
	if err != nil {
		return workerReply{}, err
	}
	if _, err := w.in.Write(append(b, '\n')); err != nil {
		return workerReply{}, fmt.Errorf("client worker %d: send %s: %w", w.index, cmd.Op, err)
	}
	var r workerReply
	if err := w.out.Decode(&r); err != nil {
		return workerReply{}, fmt.Errorf("client worker %d: reply to %s: %w", w.index, cmd.Op, err)
	}
	if r.Err != "" {
		return r, fmt.Errorf("client worker %d: %s: %s", w.index, cmd.Op, r.Err)
	}
	return r, nil
}

// stop asks the worker to close its connections and exit, then waits.
func (w *workerProc) stop() error {
	_, err := w.call(workerCommand{Op: "stop"})
	w.in.Close()
	waitErr := w.cmd.Wait()
	return errors.Join(err, waitErr)
}

// kill ends the worker at once (an interrupted or failed run).
func (w *workerProc) kill() error {
	w.in.Close()
	if err := w.cmd.Process.Kill(); err != nil {
		return fmt.Errorf("kill client worker %d: %w", w.index, err)
	}
	if err := w.cmd.Wait(); err != nil && !strings.Contains(err.Error(), "killed") {
		return fmt.Errorf("client worker %d: %w", w.index, err)
	}
	return nil
}

// killWorkers kills every worker process (a run that failed or was
// interrupted), logging what could not be killed.
func killWorkers(ws []*workerProc, log *slog.Logger) {
	for _, w := range ws {
		if err := w.kill(); err != nil {
			log.Warn("killing a client worker", "err", err)
		}
	}
}
