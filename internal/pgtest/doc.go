// Package pgtest runs a real PostgreSQL server from Debian's postgresql
// package for tests: the PostgreSQL store's conformance run
// (persistence/postgres) and, later, failover tests.
//
// # Where it sits
//
// Tests only. A test calls Start (a server of its own, stopped and removed
// at the test's cleanup) or Shared (one server per test binary, started on
// first use), then CreateDB or CreateSchema for an empty place to work, and
// hands the returned URL to the code under test. StartStandby adds a
// synchronous streaming standby to a server, Promote turns it into a
// primary, Kill stops a server the hard way (SIGKILL of the postmaster)
// and Restart starts it again on its data, so a test can crash or fail
// over the way notes/postgres.md measured it. URLs names several servers in
// one URL with target_session_attrs=read-write, as a client of such a
// cluster connects.
//
// # Processes and files
//
// The binaries are found under /usr/lib/postgresql/*/bin (the highest
// version; PGTEST_BINDIR overrides). initdb and postgres refuse to run as
// root: when the test runs as root they run as the OS user postgres (Debian's
// postgresql package creates it), or else as a system user tandem-pg created with
// useradd. Each server lives in its own temporary directory, owned by that
// user: the data directory, the unix socket and postgres.log. It listens
// on 127.0.0.1 on a free port with trust authentication for 127.0.0.1 and
// the socket only, fsync=on and synchronous_commit=on. The postmaster is a
// child of the test process (its parent-death signal is SIGKILL, so a test
// binary that dies does not leave it running); pgtest signals only the
// PIDs it started.
//
// # Shared server
//
// Shared starts one server per test binary; stop it when the tests end:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// or, when TestMain does more, call StopShared after m.Run.
//
// # Concurrency
//
// A Server's methods may be called from any goroutine. Start, StartStandby
// and Shared block until the server accepts connections (or fail the test
// with the postgres log tail).
package pgtest
