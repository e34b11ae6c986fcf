package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// readyTimeout bounds the wait for a started server to accept
	// connections.
	readyTimeout = 60 * time.Second
	// stopTimeout bounds a fast shutdown before the postmaster is killed.
	stopTimeout = 30 * time.Second
	// superuser is the role initdb creates; trust auth lets it in.
	superuser = "postgres"
	// fallbackOSUser is created when running as root and no postgres OS
	// user exists.
	fallbackOSUser = "tandem-pg"
)

// Server is one running PostgreSQL server (a postmaster this package
// started) and its temporary directory.
type Server struct {
	// Set when started, then read-only.
	port    int
	dir     string // owned by the server's OS user: data/, the socket, postgres.log
	dataDir string
	binDir  string
	cred    *syscall.Credential // nil: the test's own user
	extra   [][2]string         // settings of WithSetting

	// appName is the standby's application_name ("" for a primary) and
	// primary the server it streams from; set by StartStandby.
	appName string
	primary *Server

	mu      sync.Mutex
	cmd     *exec.Cmd     // the running (or last) postmaster
	exited  chan struct{} // closed once cmd has been waited for
	removed bool
}

// Option configures Start.
type Option func(*config)

type config struct {
	settings [][2]string // extra -c name=value
}

// WithSetting adds a server setting (postgres -c name=value), after and
// so overriding pgtest's own.
func WithSetting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, [2]string{name, value}) }
}

// Start starts a new server for t: initdb in a fresh temporary directory,
// then postgres on a free port of 127.0.0.1. It fails t (with the postgres
// log tail) if the server does not come up, and registers a cleanup that
// stops it and removes its directory.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	s, err := start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Port is the TCP port the server listens on at 127.0.0.1.
func (s *Server) Port() int { return s.port }

// Dir is the server's temporary directory (data/, the unix socket,
// postgres.log).
func (s *Server) Dir() string { return s.dir }

// PID is the postmaster's process ID.
func (s *Server) PID() int {
	cmd, _ := s.proc()
	return cmd.Process.Pid
}

// proc returns the current postmaster and its exit signal.
func (s *Server) proc() (*exec.Cmd, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd, s.exited
}

// URL returns a connection URL for database db as the superuser over TCP.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", superuser, s.port, db)
}

// URLs returns one URL naming every server, for database db, with
// target_session_attrs=read-write: a client connects to whichever of them
// is the writable primary (the first that is, in order).
func URLs(db string, servers ...*Server) string {
	hosts := make([]string, len(servers))
	for i, s := range servers {
		hosts[i] = fmt.Sprintf("127.0.0.1:%d", s.port)
	}
	return fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable&target_session_attrs=read-write",
		superuser, strings.Join(hosts, ","), db)
}

// CreateDB creates an empty database (from template0) and returns its URL.
// The database lives as long as the server.
func (s *Server) CreateDB(t testing.TB, name string) string {
	t.Helper()
	if err := s.exec("postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0"); err != nil {
		t.Fatalf("pgtest: create database %q: %v", name, err)
	}
	return s.URL(name)
}

// CreateSchema creates an empty schema in database db and returns a URL
// whose connections use it (search_path=name): unqualified tables are
// created and found there. Much faster than CreateDB (no files copied).
func (s *Server) CreateSchema(t testing.TB, db, name string) string {
	t.Helper()
	if err := s.exec(db, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create schema %q in %q: %v", name, db, err)
	}
	return s.URL(db) + "&search_path=" + name
}

// exec runs sql in database db over a connection of its own.
func (s *Server) exec(db, sql string, args ...any) error {
	return s.withConn(db, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql, args...)
		return err
	})
}

// withConn calls fn with a connection of its own to database db, for at
// most 30 seconds.
func (s *Server) withConn(db string, fn func(context.Context, *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return fn(ctx, conn)
}

// Stop shuts the server down the way pg_ctl stop -m fast does (SIGINT to
// the postmaster: clients are disconnected, everything committed is
// flushed) and waits for it to exit; after stopTimeout it is killed. A
// stopped server stays stopped; Stop is idempotent.
func (s *Server) Stop() { s.signal(syscall.SIGINT) }

// Kill ends the postmaster with SIGKILL, as a crash or kill -9 would, and
// waits for it to exit. Its backends notice the postmaster is gone and
// exit on their own. Nothing is flushed beyond what was committed.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Restart starts a stopped or killed server again on its data directory
// and port (crash recovery runs after a Kill) and waits until it accepts
// connections; it fails t if it does not. The backends of a killed
// postmaster may take a moment to exit: starting is retried meanwhile.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if s.Running() {
		t.Fatalf("pgtest: restart of the server on port %d, which is running", s.port)
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		err := s.launchOn(s.port, s.extra)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Running reports whether the postmaster has not exited.
func (s *Server) Running() bool {
	cmd, exited := s.proc()
	if cmd == nil {
		return false // never started
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

func (s *Server) signal(sig syscall.Signal) {
	if !s.Running() {
		return
	}
	cmd, exited := s.proc()
	// Signal the PID this package started, never anything by name.
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		_ = cmd.Process.Kill() // the wait below decides; Kill's error says no more
	}
	select {
	case <-exited:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill() // a server that ignores SIGINT is killed; waiting again below
		<-exited
	}
}

// Close stops the server (fast shutdown) and removes its directory. Start
// and StartStandby register it as the test's cleanup.
func (s *Server) Close() {
	if s.primary != nil {
		s.primary.dropSyncStandby(s.appName)
	}
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.removed {
		s.removed = true
		_ = os.RemoveAll(s.dir) // a temporary directory; nothing to report to
	}
}

// LogTail returns the last lines of the server's log.
func (s *Server) LogTail() string { return logTail(filepath.Join(s.dir, "postgres.log")) }

func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// start runs initdb and starts a primary.
func start(cfg config) (*Server, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := runAsCredential()
	if err != nil {
		return nil, err
	}
	dir, err := makeDir(cred)
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, dataDir: filepath.Join(dir, "data"), binDir: binDir, cred: cred}
	fail := func(err error) (*Server, error) {
		_ = os.RemoveAll(dir) // best effort: the start failed already
		return nil, err
	}
	out, err := s.run("initdb", "-D", s.dataDir, "-U", superuser, "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	if err != nil {
		return fail(fmt.Errorf("pgtest: initdb in %s: %w\n%s", s.dataDir, err, commandOutput(out)))
	}
	if err := s.writeHBA(); err != nil {
		return fail(err)
	}
	if err := s.launch(cfg.settings); err != nil {
		return fail(err)
	}
	return s, nil
}

// findBinDir returns PGTEST_BINDIR or the bin directory of the highest
// PostgreSQL version under /usr/lib/postgresql.
func findBinDir() (string, error) {
	if d := os.Getenv("PGTEST_BINDIR"); d != "" {
		return d, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres") // the pattern is valid
	best, bestVer := "", -1.0
	for _, p := range found {
		ver, err := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
		if err == nil && ver > bestVer {
			best, bestVer = filepath.Dir(p), ver
		}
	}
	if best == "" {
		return "", errors.New("pgtest: no PostgreSQL server under /usr/lib/postgresql/*/bin: install Debian's postgresql package (scripts/deps.sh) or set PGTEST_BINDIR")
	}
	return best, nil
}

var userMu sync.Mutex

// runAsCredential returns the credential initdb and postgres run with:
// nil unless the test runs as root, then the postgres OS user, or
// tandem-pg (created if missing).
func runAsCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	userMu.Lock()
	defer userMu.Unlock()
	for _, name := range []string{"postgres", fallbackOSUser} {
		if c, ok := lookupCredential(name); ok {
			return c, nil
		}
	}
	out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", fallbackOSUser).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root and no unprivileged postgres user; useradd %s: %w\n%s", fallbackOSUser, err, out)
	}
	if c, ok := lookupCredential(fallbackOSUser); ok {
		return c, nil
	}
	return nil, fmt.Errorf("pgtest: user %s not found after useradd", fallbackOSUser)
}

func lookupCredential(name string) (*syscall.Credential, bool) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, false
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		return nil, false
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, true
}

// makeDir creates the server's temporary directory, owned by cred's user.
// It must be reachable by that user: under TMPDIR if every directory above
// it lets others through, else under /tmp.
func makeDir(cred *syscall.Credential) (string, error) {
	base := os.TempDir()
	if cred != nil && !traversable(base) {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return "", fmt.Errorf("pgtest: temporary directory: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(dir) // failing already
			return "", fmt.Errorf("pgtest: chown %s to uid %d: %w", dir, cred.Uid, err)
		}
	}
	return dir, nil
}

func traversable(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == "/" {
			return true
		}
	}
}

// command returns a command of binDir running as the server's user in its
// directory.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.binDir, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + s.dir, "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// run runs a PostgreSQL program to completion and returns its output.
func (s *Server) run(name string, args ...string) ([]byte, error) {
	return s.command(name, args...).CombinedOutput()
}

// writeHBA replaces initdb's pg_hba.conf: trust for the socket and
// 127.0.0.1 only, replication included.
func (s *Server) writeHBA() error {
	const hba = `# pgtest: trust on the unix socket and 127.0.0.1 only.
local all         all              trust
local replication all              trust
host  all         all 127.0.0.1/32 trust
host  replication all 127.0.0.1/32 trust
`
	path := filepath.Join(s.dataDir, "pg_hba.conf")
	if err := os.WriteFile(path, []byte(hba), 0o600); err != nil {
		return fmt.Errorf("pgtest: write %s: %w", path, err)
	}
	if s.cred != nil {
		if err := os.Chown(path, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: chown %s: %w", path, err)
		}
	}
	return nil
}

// launch starts the postmaster on a free port and waits until it accepts
// connections. A port taken between choosing and binding is retried.
func (s *Server) launch(extra [][2]string) error {
	s.extra = extra
	var err error
	for range 5 {
		var port int
		if port, err = freePort(); err != nil {
			return err
		}
		err = s.launchOn(port, extra)
		if err == nil || !strings.Contains(err.Error(), "could not bind") && !strings.Contains(err.Error(), "could not create any TCP/IP sockets") {
			return err
		}
	}
	return err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	return port, nil
}

func (s *Server) launchOn(port int, extra [][2]string) error {
	logPath := filepath.Join(s.dir, "postgres.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: open %s: %w", logPath, err)
	}
	defer logFile.Close() // the child has its own descriptor

	settings := [][2]string{
		{"listen_addresses", "127.0.0.1"},
		{"port", strconv.Itoa(port)},
		{"unix_socket_directories", s.dir},
		{"fsync", "on"},
		{"synchronous_commit", "on"},
		{"max_connections", "300"},
		{"shared_buffers", "64MB"},
		{"logging_collector", "off"},
		{"log_min_messages", "warning"},
	}
	if s.appName != "" {
		settings = append(settings,
			[2]string{"primary_conninfo", fmt.Sprintf("host=127.0.0.1 port=%d user=%s application_name=%s", s.primary.port, superuser, s.appName)},
			[2]string{"hot_standby", "on"})
	}
	settings = append(settings, extra...)
	args := []string{"-D", s.dataDir}
	for _, kv := range settings {
		args = append(args, "-c", kv[0]+"="+kv[1])
	}
	cmd := s.command("postgres", args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status of a stopped or killed server says nothing useful
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	if s.port != port {
		s.port = port // only while starting: Restart keeps the port
	}

	if err := s.waitReady(); err != nil {
		s.Kill()
		return fmt.Errorf("pgtest: postgres in %s on port %d: %w\npostgres log:\n%s", s.dataDir, port, err, logTail(logPath))
	}
	return nil
}

// waitReady polls until the server answers a query over TCP.
func (s *Server) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		if !s.Running() {
			return errors.New("exited during startup")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			_ = conn.Close(ctx) // probing only
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready within %v: %w", readyTimeout, last)
}

// commandOutput formats a failed command's output for an error.
func commandOutput(out []byte) string {
	out = bytes.TrimSpace(out)
	if len(out) == 0 {
		return "(no output)"
	}
	return string(out)
}
