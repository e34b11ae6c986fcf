package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Why a member is not part of the cluster. Member.Ready and Start wrap
// them with the details.
var (
	// ErrRefused: a seed accepted the TCP connection but refused the gossip
	// handshake, so it runs with another cluster key or cluster name.
	ErrRefused = errors.New("cluster: refused by the cluster")
	// ErrMismatch: the peers run with other values of settings that must
	// agree across the cluster (Options.Agree).
	ErrMismatch = errors.New("cluster: settings differ from the cluster's")
	// ErrNotJoined: seeds are configured but no peer has been seen yet.
	ErrNotJoined = errors.New("cluster: not joined")
	// ErrBlocked: the cluster cut this member off; it must restart.
	ErrBlocked = errors.New("cluster: blocked by the cluster; restart this node")
)

// startRefusals is how many join attempts in a row a seed must refuse
// before Start gives up (one refusal might be a peer in trouble).
const startRefusals = 3

// fingerprint is the public digest of a setting that must agree across
// members, carried in the node meta: 8 bytes of a domain-separated
// SHA-256, so peers can compare values without learning them. Gossip is
// encrypted whenever peers exist, so only members see it.
func fingerprint(clusterName, setting, value string) string {
	sum := sha256.Sum256([]byte("tandem setting v1\x00" + clusterName + "\x00" + setting + "\x00" + value))
	return hex.EncodeToString(sum[:8])
}

func fingerprints(clusterName string, settings map[string]string) map[string]string {
	if len(settings) == 0 {
		return nil
	}
	out := make(map[string]string, len(settings))
	for k, v := range settings {
		out[k] = fingerprint(clusterName, k, v)
	}
	return out
}

// differing names the settings whose fingerprints differ between ours and
// theirs, sorted.
func differing(ours, theirs map[string]string) []string {
	var out []string
	for k, v := range ours {
		if theirs[k] != v {
			out = append(out, k)
		}
	}
	for k := range theirs {
		if _, ok := ours[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// joinState is what the provider knows about joining, for Member.Ready and
// Start. Written by the join and run goroutines, read by anyone.
type joinState struct {
	mu        sync.Mutex
	started   time.Time
	needPeers bool              // seeds other than this node are configured
	joined    bool              // a compatible peer was in the topology since start
	last      error             // why the last join attempt left this node alone
	strangers map[string]string // memberlist node → why it is left out of the topology
	fatal     error             // why Start must fail
}

func (s *joinState) update(f func(*joinState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// ready returns nil when this member is where it should be: alone without
// seeds, or joined to compatible peers at least once since start (a
// survivor whose peers died stays ready: it is the cluster).
func (s *joinState) ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fatal != nil {
		return s.fatal
	}
	if !s.needPeers || s.joined {
		return nil
	}
	since := time.Since(s.started).Round(time.Second)
	if len(s.strangers) > 0 {
		return fmt.Errorf("%w: only incompatible peers found in %v: %s", ErrMismatch, since, strings.Join(slices.Sorted(maps.Values(s.strangers)), "; "))
	}
	if s.last != nil {
		return fmt.Errorf("%w (joining for %v)", s.last, since)
	}
	return fmt.Errorf("%w yet (joining for %v)", ErrNotJoined, since)
}

// dialCounter is memberlist's network transport counting the TCP dials
// that connected: a join that fails after one was refused by a peer that
// answered (other key, other cluster name), one that fails without one
// found nobody.
type dialCounter struct {
	*memberlist.NetTransport
	connected atomic.Int64
}

var _ memberlist.NodeAwareTransport = (*dialCounter)(nil)

func (d *dialCounter) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := d.NetTransport.DialAddressTimeout(a, timeout)
	if err == nil {
		d.connected.Add(1)
	}
	return c, err
}

func (d *dialCounter) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := d.NetTransport.DialTimeout(addr, timeout)
	if err == nil {
		d.connected.Add(1)
	}
	return c, err
}

// newTransport binds memberlist's transport for mc (retrying a dynamic
// port, as memberlist itself does) and sets mc's ports to the bound one
// where mc asked for port 0.
func newTransport(mc *memberlist.Config) (*dialCounter, error) {
	nc := &memberlist.NetTransportConfig{BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger}
	tries := 1
	if mc.BindPort == 0 {
		tries = 10 // TCP and UDP must get the same free port
	}
	var (
		nt  *memberlist.NetTransport
		err error
	)
	for range tries {
		if nt, err = memberlist.NewNetTransport(nc); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: bind gossip on %s: %w", net.JoinHostPort(mc.BindAddr, fmt.Sprint(mc.BindPort)), err)
	}
	if mc.BindPort == 0 {
		mc.BindPort = nt.GetAutoBindPort()
	}
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = mc.BindPort
	}
	d := &dialCounter{NetTransport: nt}
	mc.Transport = d
	return d, nil
}
