package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/tandem-im/tandem/persistence"
)

// Start failures a second node on the same machine runs into. Start's
// errors wrap them (errors.Is); their text names the address or the dir.
var (
	ErrAddrInUse     = errors.New("node: address already in use")
	ErrDataDirLocked = errors.New("node: data dir locked")
)

// StartError is what Start (and Run) return when the node could not start:
// nothing is left running. Its text is the cause, one line.
type StartError struct{ Err error }

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// causeError is a start failure told in one line: msg, which names the
// address or dir, replaces the library's text; it matches the sentinel is
// and unwraps to the library's error.
type causeError struct {
	msg string
	is  error
	err error
}

func (e *causeError) Error() string        { return e.msg }
func (e *causeError) Is(target error) bool { return target == e.is }
func (e *causeError) Unwrap() error        { return e.err }

// listenErr names what could not listen on addr; an address in use
// becomes an ErrAddrInUse.
func listenErr(what, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		msg := fmt.Sprintf("cannot listen for %s on %s: address already in use (is another tandem running?)", what, addr)
		return &causeError{msg: msg, is: ErrAddrInUse, err: err}
	}
	return fmt.Errorf("cannot listen for %s on %s: %w", what, addr, err)
}

// listen binds a TCP listener for what on addr; with reusePort it sets
// SO_REUSEPORT first, so that other processes that set it too may hold
// the same address and the kernel spreads new connections among them.
func listen(what, addr string, reusePort bool) (net.Listener, error) {
	var lc net.ListenConfig
	if reusePort {
		lc.Control = setReusePort
		what += " (with SO_REUSEPORT)"
	}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, listenErr(what, addr, err)
	}
	return ln, nil
}

// probe checks that the cluster's addresses are free before anything is
// opened: memberlist binds gossip on TCP and UDP, protoactor's remote on
// TCP (and panics when it cannot). A port 0 is always free. The check is
// racy by nature; it only makes the common failure fast and precise.
func probe(cfg Config) error {
	for _, p := range []struct {
		what, addr string
		udp        bool
	}{
		{"gossip (memberlist)", cfg.GossipAddr, true},
		{"the actor remote", cfg.RemoteAddr, false},
	} {
		if _, port, err := net.SplitHostPort(p.addr); err != nil || port == "0" {
			continue // cluster.Start reports a malformed address
		}
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			return listenErr(p.what, p.addr, err)
		}
		ln.Close() // only a probe; its error means nothing here
		if !p.udp {
			continue
		}
		pc, err := net.ListenPacket("udp", p.addr)
		if err != nil {
			return listenErr(p.what+" over UDP", p.addr, err)
		}
		pc.Close() // only a probe
	}
	return nil
}

// storeErr translates the embedded store's directory lock failure into
// ErrDataDirLocked.
func storeErr(dir string, err error) error {
	if errors.Is(err, persistence.ErrLocked) {
		msg := fmt.Sprintf("data dir %s is locked by another tandem process (the store's LOCK file; stop it or choose --data-dir)", dir)
		return &causeError{msg: msg, is: ErrDataDirLocked, err: err}
	}
	return err
}

// clusterErr names the address when the cluster member lost the race for
// a port probe found free (protoactor's remote reports it as a panic).
func clusterErr(cfg Config, err error) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("start cluster member: %w", err)
	}
	switch {
	case strings.Contains(err.Error(), cfg.RemoteAddr):
		return listenErr("the actor remote", cfg.RemoteAddr, err)
	case strings.Contains(err.Error(), cfg.GossipAddr):
		return listenErr("gossip (memberlist)", cfg.GossipAddr, err)
	}
	return fmt.Errorf("start cluster member: %w", err)
}
