package clustertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-im/tandem/client"
)

// Keys every harness node uses unless the caller's flags say otherwise.
const (
	AdminKey  = "clustertest-admin-key"
	JWTSecret = "clustertest-jwt-secret-0123456789"
)

// Defaults for zero Config fields.
const (
	DefaultNodes        = 3
	DefaultStartTimeout = 30 * time.Second
	DefaultTermTimeout  = 20 * time.Second
)

// Config describes a multi-process cluster. The zero value is three
// nodes with no extra flags: with --seeds, today's server also needs a
// store for clusters, or --unsafe-multi-node-badger.
type Config struct {
	Nodes int // default 3
	// Flags returns extra command-line flags for node i. They come after
	// the harness's own, so they win (--admin-key, --cluster-key,
	// --log-level …). Nil: none.
	Flags func(i int) []string
	// Env returns extra environment variables ("KEY=value") for node i, on
	// top of this process's environment. Nil: none.
	Env func(i int) []string
	// StartTimeout bounds Start and Restart: every node ready and seeing
	// the others. Default 30 s.
	StartTimeout time.Duration
	// TermTimeout bounds Term before it kills the process. Default 20 s.
	TermTimeout time.Duration
}

// Cluster is a set of tandem node processes started by Start.
type Cluster struct {
	t     testing.TB
	cfg   Config
	bin   binary
	dir   string
	nodes []*Node
	// ClusterKey is the key given to every node (--cluster-key), "" if the
	// binary has no such flag.
	ClusterKey string
}

// Node is one node process of a Cluster. Its addresses and folders stay
// the same across Restart.
type Node struct {
	index   int
	addrs   addrs
	dataDir string
	logPath string

	mu   sync.Mutex
	proc *proc // the latest process, nil before the first start
}

// proc is one run of a node's process.
type proc struct {
	cmd      *exec.Cmd
	logFrom  int64 // offset in the log file where this run starts
	started  time.Time
	done     chan struct{} // closed once the process exited and was reaped
	state    *os.ProcessState
	exitedAt time.Time
}

// Start builds ./cmd/tandem (once per test binary), starts cfg.Nodes
// nodes as processes, and returns when each answers /readyz with 200 and
// sees all cfg.Nodes members. It fails the test otherwise. Every process
// is stopped at cleanup.
func Start(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.Nodes <= 0 {
		cfg.Nodes = DefaultNodes
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.TermTimeout <= 0 {
		cfg.TermTimeout = DefaultTermTimeout
	}
	bin, err := tandemBinary()
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, cfg: cfg, bin: bin, dir: t.TempDir()}
	if bin.flags["cluster-key"] {
		c.ClusterKey = newKey()
	}
	t.Cleanup(c.cleanup)
	for i := range cfg.Nodes {
		a, err := freeAddrs()
		if err != nil {
			t.Fatal(err)
		}
		n := &Node{
			index:   i,
			addrs:   a,
			dataDir: filepath.Join(c.dir, fmt.Sprintf("node%d", i)),
			logPath: filepath.Join(c.dir, fmt.Sprintf("node%d.log", i)),
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := c.spawn(n); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(cfg.StartTimeout)
	for _, n := range c.nodes {
		c.waitReadyOrRetry(n, deadline)
	}
	c.waitMembers(c.running(), deadline)
	return c
}

// newKey returns a random cluster key: base64 of 32 bytes.
func newKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// Len is the number of nodes, running or not.
func (c *Cluster) Len() int { return len(c.nodes) }

// Node returns node i.
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// WSURLs returns the WebSocket URLs of the running nodes, for
// client.Options.URLs.
func (c *Cluster) WSURLs() []string {
	var out []string
	for _, n := range c.nodes {
		if n.Running() {
			out = append(out, n.WSURL())
		}
	}
	return out
}

// Token mints a login token for user through a running node's API.
func (c *Cluster) Token(user string) string {
	c.t.Helper()
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tok, err := client.MintToken(ctx, n.APIURL(), AdminKey, user, time.Hour)
		if err != nil {
			c.t.Fatalf("clustertest: mint a token for %s on node %d: %v", user, n.index, err)
		}
		return tok
	}
	c.t.Fatal("clustertest: no node running to mint a token")
	return ""
}

// args are node n's command line: the harness's flags, then the caller's.
func (c *Cluster) args(n *Node) []string {
	var seeds []string
	for _, o := range c.nodes {
		if o != n {
			seeds = append(seeds, o.addrs.gossip)
		}
	}
	args := []string{
		"--data-dir", n.dataDir,
		"--ws-addr", n.addrs.ws,
		"--api-addr", n.addrs.api,
		"--gossip-addr", n.addrs.gossip,
		"--remote-addr", n.addrs.remote,
		"--admin-key", AdminKey,
		"--jwt-secret", JWTSecret,
		"--log-level", "info", // membership changes are logged at info
	}
	if len(seeds) > 0 {
		args = append(args, "--seeds", strings.Join(seeds, ","))
	}
	if c.ClusterKey != "" {
		args = append(args, "--cluster-key", c.ClusterKey)
	}
	if c.cfg.Flags != nil {
		args = append(args, c.cfg.Flags(n.index)...)
	}
	return args
}

// spawn starts a new process for n, its output appended to n's log.
func (c *Cluster) spawn(n *Node) error {
	if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
		return fmt.Errorf("clustertest: %w", err)
	}
	f, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("clustertest: %w", err)
	}
	defer f.Close() // the child has its own copy
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("clustertest: %w", err)
	}
	args := c.args(n)
	fmt.Fprintf(f, "=== clustertest: node %d: %s %s\n", n.index, c.bin.path, strings.Join(args, " "))
	cmd := exec.Command(c.bin.path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = os.Environ()
	if c.cfg.Env != nil {
		cmd.Env = append(cmd.Env, c.cfg.Env(n.index)...)
	}
	cmd.SysProcAttr = sysProcAttr()
	p := &proc{cmd: cmd, logFrom: st.Size(), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("clustertest: start node %d: %w", n.index, err)
	}
	p.started = time.Now()
	go func() { // owned by the proc: Stop waits for done
		defer close(p.done)
		cmd.Wait() // the exit status is read from ProcessState
		p.state, p.exitedAt = cmd.ProcessState, time.Now()
	}()
	n.mu.Lock()
	n.proc = p
	n.mu.Unlock()
	return nil
}

// waitReadyOrRetry waits for n's /readyz; if the process exited because a
// port was taken meanwhile, it picks new ports and starts it once more.
func (c *Cluster) waitReadyOrRetry(n *Node, deadline time.Time) {
	c.t.Helper()
	err := c.waitReady(n, deadline)
	if err == nil {
		return
	}
	if !errors.Is(err, errExited) || !strings.Contains(n.logSince(), "address already in use") {
		c.fail("%v", err)
	}
	a, aerr := freeAddrs()
	if aerr != nil {
		c.fail("%v", aerr)
	}
	n.mu.Lock()
	n.addrs = a
	n.mu.Unlock()
	c.t.Logf("clustertest: node %d: a port was taken; starting again on new ports", n.index)
	if err := c.spawn(n); err != nil {
		c.fail("%v", err)
	}
	if err := c.waitReady(n, deadline); err != nil {
		c.fail("%v", err)
	}
}

var errExited = errors.New("process exited")

// waitReady polls n's /readyz until it answers 200, the process exits, or
// deadline passes.
func (c *Cluster) waitReady(n *Node, deadline time.Time) error {
	p := n.current()
	hc := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-p.done:
			return fmt.Errorf("clustertest: node %d: %w before it was ready (%s)", n.index, errExited, p.state)
		default:
		}
		resp, err := hc.Get(n.APIURL() + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clustertest: node %d not ready within the start timeout (last: %v)", n.index, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitMembers waits until every running node sees exactly want members
// (itself included), or fails the test after the start timeout.
func (c *Cluster) WaitMembers(want int) {
	c.t.Helper()
	c.waitMembers(want, time.Now().Add(c.cfg.StartTimeout))
}

func (c *Cluster) waitMembers(want int, deadline time.Time) {
	c.t.Helper()
	if len(c.nodes) == 1 && want == 1 {
		return
	}
	for {
		var behind []string
		for _, n := range c.nodes {
			if !n.Running() {
				continue
			}
			if got := n.Members(); got != want {
				behind = append(behind, fmt.Sprintf("node %d sees %d", n.index, got))
			}
		}
		if len(behind) == 0 {
			return
		}
		if time.Now().After(deadline) {
			c.fail("clustertest: waiting for %d members: %s", want, strings.Join(behind, ", "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running counts the nodes whose process is up.
func (c *Cluster) running() int {
	k := 0
	for _, n := range c.nodes {
		if n.Running() {
			k++
		}
	}
	return k
}

// Kill ends node i's process with SIGKILL and waits until it is gone.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	n := c.nodes[i]
	p := n.current()
	if p == nil || p.exited() {
		c.t.Fatalf("clustertest: Kill(%d): not running", i)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !p.exited() {
		c.t.Fatalf("clustertest: kill node %d (pid %d): %v", i, p.cmd.Process.Pid, err)
	}
	<-p.done
}

// Term sends node i SIGTERM and waits for it to exit: it returns the exit
// code and how long the node took. If it outlives the term timeout, the
// test fails, the process is killed, and the code is -1.
func (c *Cluster) Term(i int) (code int, took time.Duration) {
	c.t.Helper()
	n := c.nodes[i]
	p := n.current()
	if p == nil || p.exited() {
		c.t.Fatalf("clustertest: Term(%d): not running", i)
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.exited() {
		c.t.Fatalf("clustertest: terminate node %d (pid %d): %v", i, p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
		return p.state.ExitCode(), p.exitedAt.Sub(start)
	case <-time.After(c.cfg.TermTimeout):
		c.t.Errorf("clustertest: node %d still running %s after SIGTERM; killing it", i, c.cfg.TermTimeout)
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return -1, time.Since(start)
	}
}

// Restart starts node i again on the same ports and data folder (after
// Term if it is still running) and waits until it is ready and every
// running node sees all running ones.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	n := c.nodes[i]
	if n.Running() {
		c.Term(i)
	}
	if err := c.spawn(n); err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(c.cfg.StartTimeout)
	if err := c.waitReady(n, deadline); err != nil {
		c.fail("%v", err)
	}
	c.waitMembers(c.running(), deadline)
}

// Stop kills every node process still running and waits for them. It runs
// at cleanup; calling it earlier is fine.
func (c *Cluster) Stop() {
	for _, n := range c.nodes {
		p := n.current()
		if p == nil {
			continue
		}
		if !p.exited() {
			p.cmd.Process.Signal(syscall.SIGKILL) // only our own child, by PID
		}
		<-p.done
	}
}

func (c *Cluster) cleanup() {
	c.Stop()
	if c.t.Failed() {
		c.dumpLogs()
	}
}

// fail writes the nodes' log tails and fails the test now.
func (c *Cluster) fail(format string, args ...any) {
	c.t.Helper()
	c.dumpLogs()
	c.t.Fatalf(format, args...)
}

var dumped sync.Map // *Cluster → true once its logs were written

func (c *Cluster) dumpLogs() {
	if _, done := dumped.LoadOrStore(c, true); done {
		return
	}
	for _, n := range c.nodes {
		c.t.Logf("clustertest: node %d log (%s), last lines:\n%s", n.index, n.logPath, tail(n.logPath, 40))
	}
}

// tail returns the last lines of the file at path.
func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	b = bytes.TrimRight(b, "\n")
	at := len(b)
	for range lines {
		i := bytes.LastIndexByte(b[:at], '\n')
		if i < 0 {
			return string(b)
		}
		at = i
	}
	return string(b[at+1:])
}

// ---------------------------------------------------------------- Node

func (n *Node) current() *proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

func (n *Node) addr() addrs {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrs
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Index is the node's position in the cluster.
func (n *Node) Index() int { return n.index }

// WSURL is the node's client WebSocket URL.
func (n *Node) WSURL() string { return "ws://" + n.addr().ws + "/ws" }

// APIURL is the node's server API base URL.
func (n *Node) APIURL() string { return "http://" + n.addr().api }

// GossipAddr is the node's memberlist address.
func (n *Node) GossipAddr() string { return n.addr().gossip }

// DataDir is the node's data folder.
func (n *Node) DataDir() string { return n.dataDir }

// LogPath is the file the node's stdout and stderr go to, every run
// appended.
func (n *Node) LogPath() string { return n.logPath }

// PID is the latest process's ID (0 before the first start).
func (n *Node) PID() int {
	if p := n.current(); p != nil {
		return p.cmd.Process.Pid
	}
	return 0
}

// Running reports whether the node's process is up.
func (n *Node) Running() bool {
	p := n.current()
	return p != nil && !p.exited()
}

// logSince returns what the latest run wrote to the log.
func (n *Node) logSince() string {
	p := n.current()
	b, err := os.ReadFile(n.logPath)
	if err != nil || p == nil || p.logFrom > int64(len(b)) {
		return ""
	}
	return string(b[p.logFrom:])
}

var (
	membersMetric = regexp.MustCompile(`(?m)^tandem_cluster_members(?:\{[^}]*\})? ([0-9.e+]+)$`)
	membersLog    = regexp.MustCompile(`msg="cluster membership changed".* members=([0-9]+)`)
)

// Members is how many cluster members the node sees, itself included: the
// tandem_cluster_members metric if the node exports it, else the latest
// "cluster membership changed" line its current run logged (1 if none:
// alone). -1 if the node is not running.
func (n *Node) Members() int {
	if !n.Running() {
		return -1
	}
	hc := &http.Client{Timeout: time.Second}
	if resp, err := hc.Get(n.APIURL() + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body) // a short read only makes the match fail
		resp.Body.Close()
		if m := membersMetric.FindSubmatch(b); m != nil {
			if v, err := strconv.ParseFloat(string(m[1]), 64); err == nil {
				return int(v)
			}
		}
	}
	ms := membersLog.FindAllStringSubmatch(n.logSince(), -1)
	if len(ms) == 0 {
		return 1
	}
	k, _ := strconv.Atoi(ms[len(ms)-1][1]) // the pattern admits digits only
	return k
}
