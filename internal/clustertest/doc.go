// Package clustertest starts tandem clusters for tests and benchmarks:
// several nodes, either as separate processes of ./cmd/tandem (Start) or
// in this process (StartInProcess), on free loopback ports, each with its
// own data folder, seeded with each other's gossip addresses, and waits
// until every node is ready and sees every other one.
//
// # Processes
//
// The first Start in a test binary builds ./cmd/tandem once into tmp/ under
// the module root (or uses $TANDEM_TEST_BINARY). Each node's stdout and
// stderr go to a log file in the test's temporary folder; when the test
// has failed, the tails are written to the test log at cleanup. Callers
// add flags (--store postgres://…, --unsafe-multi-node-badger …) and
// environment per node; a flag given by the caller wins over the
// harness's own. If the binary knows --cluster-key, the nodes share a
// generated key unless the caller passes one.
//
// The harness only ever signals the processes it started, by PID, and
// stops every one of them at cleanup.
//
// # Concurrency
//
// A Cluster's methods are meant for the test's goroutine; Node accessors
// may be called from any goroutine. Each process has one goroutine that
// reaps it; Stop (at cleanup) returns after they all exited.
package clustertest
