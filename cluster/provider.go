package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/hashicorp/memberlist"
)

// Timings tune failure detection and joining. The zero value means LAN
// defaults: a crashed member is declared dead after about 1.6-2.5 s (at
// most about 3.5 s when no other peer confirms the suspicion), so its
// users are serving again elsewhere within about 3 s, and a member that
// stalls (GC, CPU starvation on a busy 2-core node) for up to about 1.5 s
// refutes the suspicion in time. memberlist's Lifeguard extensions stay on: a
// member that notices it is slow stretches its own probe timeouts (up to
// 8x) instead of accusing healthy peers, and 3 peers probe indirectly
// before anyone is suspected.
type Timings struct {
	ProbeInterval time.Duration // memberlist; default 400 ms
	ProbeTimeout  time.Duration // memberlist; default 300 ms
	// SuspicionMult: a suspect has SuspicionMult probe intervals (scaled
	// by log10 of the cluster size) to refute; default 3. Until
	// SuspicionMult-2 other members confirm, the timeout starts
	// SuspicionMaxMult times longer (default 2) and shrinks as they do.
	SuspicionMult    int
	SuspicionMaxMult int
	GossipInterval   time.Duration // memberlist; default 100 ms
	PushPull         time.Duration // memberlist full state sync; default 15 s
	TCPTimeout       time.Duration // memberlist join/push-pull dial; default 2 s
	JoinRetry        time.Duration // while alone with seeds; default 1 s
	Resync           time.Duration // topology rebuild without events; default 1 s
}

// WANTimings are memberlist's WAN settings, for members that talk across
// data centres or that are too loaded for the LAN defaults: a crash is
// detected in about 30 s.
func WANTimings() Timings {
	return Timings{
		ProbeInterval:    5 * time.Second,
		ProbeTimeout:     3 * time.Second,
		SuspicionMult:    6,
		SuspicionMaxMult: 6,
		GossipInterval:   500 * time.Millisecond,
		PushPull:         60 * time.Second,
		TCPTimeout:       10 * time.Second,
	}
}

func (t Timings) withDefaults() Timings {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.ProbeInterval, 400*time.Millisecond)
	def(&t.ProbeTimeout, 300*time.Millisecond)
	def(&t.GossipInterval, 100*time.Millisecond)
	def(&t.PushPull, 15*time.Second)
	def(&t.TCPTimeout, 2*time.Second)
	def(&t.JoinRetry, time.Second)
	def(&t.Resync, time.Second)
	if t.SuspicionMult <= 0 {
		t.SuspicionMult = 3
	}
	if t.SuspicionMaxMult <= 0 {
		t.SuspicionMaxMult = 2
	}
	return t
}

// ProviderConfig configures a Provider.
type ProviderConfig struct {
	ClusterName   string   // memberlist label: other clusters' packets are dropped
	BindAddr      string   // memberlist host:port; port 0 picks one
	AdvertiseAddr string   // optional host:port others should use
	Seeds         []string // memberlist host:port of members to join
	// Keys encrypt and authenticate gossip (memberlist keyring): the first
	// encrypts, all decrypt. Empty: gossip in the clear (loopback only).
	Keys [][]byte
	// Agree holds settings that must be equal on every member (name →
	// value). Only fingerprints travel; a member with other values is left
	// out of the topology, and one that finds itself outvoted at its first
	// join fails to start.
	Agree   map[string]string
	Timings Timings
	Logger  *slog.Logger
	// OnBlocked, if set, is called once (from the provider's goroutine; it
	// must not block) when another member reports that protoactor blocks
	// this member; see Provider.Blocked.
	OnBlocked func()
}

// Provider is a protoactor ClusterProvider over hashicorp/memberlist. Each
// node's memberlist meta carries its protoactor remote address and kinds;
// one goroutine turns memberlist's view into protoactor's topology.
type Provider struct {
	cfg ProviderConfig
	log *slog.Logger

	// Set by StartMember, then read-only.
	c    *pcluster.Cluster
	ml   *memberlist.Memberlist
	tr   *dialCounter
	base nodeMeta // this node's meta without Blocked

	// Join progress for Ready and Start: written by join and run, read by
	// anyone; it has its own lock.
	state joinState

	meta atomic.Pointer[[]byte] // read by memberlist, replaced by run
	kick chan struct{}          // size 1; memberlist callbacks only signal
	stop chan struct{}
	// Closed by join after its first attempt. run waits for it: before
	// that this node would see itself alone and own every identity.
	joinTried chan struct{}

	runDone  sync.WaitGroup // run
	joinDone sync.WaitGroup // join

	// Only the run goroutine.
	advertised []string            // IDs this node told others it blocks
	known      map[string]struct{} // memberlist node names at the last sync

	blocked      chan struct{}
	blockedOnce  sync.Once
	stopping     atomic.Bool
	shutdownOnce sync.Once
	shutdownErr  error
	stopRunOnce  sync.Once
	left         atomic.Bool // Leave announced the departure
}

var _ pcluster.ClusterProvider = (*Provider)(nil)

// NewProvider returns a provider to pass to protoactor's cluster.Configure.
func NewProvider(cfg ProviderConfig) *Provider {
	cfg.Timings = cfg.Timings.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Agree = fingerprints(cfg.ClusterName, cfg.Agree)
	return &Provider{
		cfg:       cfg,
		log:       cfg.Logger,
		kick:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		joinTried: make(chan struct{}),
		blocked:   make(chan struct{}),
		known:     map[string]struct{}{},
	}
}

// nodeMeta is the memberlist node meta: JSON, at most 512 bytes.
type nodeMeta struct {
	ID      string   `json:"id"`
	Host    string   `json:"host"` // protoactor remote address
	Port    int      `json:"port"`
	Kinds   []string `json:"kinds"`
	Blocked []string `json:"blocked,omitempty"` // alive members protoactor blocks here
	// Fingerprints of the settings that must agree (ProviderConfig.Agree).
	Agree map[string]string `json:"agree,omitempty"`
}

// encodeMeta marshals m, dropping Blocked entries from the end until it
// fits in limit bytes; it fails if even the bare meta does not fit.
func encodeMeta(m nodeMeta, limit int) ([]byte, error) {
	for {
		b, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("cluster: encode node meta: %w", err)
		}
		if len(b) <= limit {
			return b, nil
		}
		if len(m.Blocked) == 0 {
			return nil, fmt.Errorf("cluster: node meta is %d bytes, limit %d (too many kinds?)", len(b), limit)
		}
		m.Blocked = m.Blocked[:len(m.Blocked)-1]
	}
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("cluster: decode node meta: %w", err)
	}
	if m.ID == "" || m.Host == "" || m.Port <= 0 || m.Port > 65535 {
		return m, fmt.Errorf("cluster: incomplete node meta %q", b)
	}
	return m, nil
}

// StartMember creates the memberlist (bound, not yet joined) and starts
// the goroutines that join the seeds and feed protoactor's topology.
func (p *Provider) StartMember(c *pcluster.Cluster) error {
	host, portStr, err := net.SplitHostPort(c.ActorSystem.Address())
	if err != nil {
		return fmt.Errorf("cluster: remote address %q: %w", c.ActorSystem.Address(), err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("cluster: remote port %q: %w", portStr, err)
	}
	kinds := c.GetClusterKinds()
	slices.Sort(kinds)
	p.c = c
	p.base = nodeMeta{ID: c.ActorSystem.ID, Host: host, Port: port, Kinds: kinds, Agree: p.cfg.Agree}
	meta, err := encodeMeta(p.base, memberlist.MetaMaxSize)
	if err != nil {
		return err
	}
	p.meta.Store(&meta)
	p.state.update(func(s *joinState) { s.started = time.Now() })

	mc, err := p.memberlistConfig(c.ActorSystem.ID)
	if err != nil {
		return err
	}
	if p.tr, err = newTransport(mc); err != nil {
		return err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		if serr := p.tr.Shutdown(); serr != nil {
			p.log.Debug("gossip transport shutdown", "err", serr)
		}
		return fmt.Errorf("cluster: start memberlist on %s: %w", p.cfg.BindAddr, err)
	}
	p.ml = ml
	keyIDs := make([]string, len(p.cfg.Keys))
	for i, k := range p.cfg.Keys {
		keyIDs[i] = KeyID(k)
	}
	p.log.Info("memberlist started", "gossip_bind", net.JoinHostPort(mc.BindAddr, strconv.Itoa(mc.BindPort)),
		"gossip_advertised", p.GossipAddr(), "remote_advertised", c.ActorSystem.Address(), "id", c.ActorSystem.ID,
		"encrypted", len(p.cfg.Keys) > 0, "key_ids", keyIDs)

	p.runDone.Go(p.run)
	p.joinDone.Go(p.join)
	return nil
}

func (p *Provider) memberlistConfig(name string) (*memberlist.Config, error) {
	t := p.cfg.Timings
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.Label = p.cfg.ClusterName
	host, port, err := splitPort(p.cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip bind address: %w", err)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = host, port, port
	if p.cfg.AdvertiseAddr != "" {
		ahost, aport, err := splitPort(p.cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster: gossip advertise address: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ahost, aport // port 0: the bound one
	}
	if len(p.cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(p.cfg.Keys[1:], p.cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("cluster: gossip keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.ProbeInterval = t.ProbeInterval
	mc.ProbeTimeout = t.ProbeTimeout
	mc.SuspicionMult = t.SuspicionMult
	mc.SuspicionMaxTimeoutMult = t.SuspicionMaxMult
	mc.GossipInterval = t.GossipInterval
	mc.PushPullInterval = t.PushPull
	mc.TCPTimeout = t.TCPTimeout
	mc.Delegate = delegate{p}
	mc.Events = delegate{p}
	mc.Logger = newMemberlistLogger(p.log)
	return mc, nil
}

// splitPort splits host:port; the host may be empty.
func splitPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, port, nil
}

// StartClient is not supported: every tandem node is a full member.
func (p *Provider) StartClient(*pcluster.Cluster) error {
	return errors.New("cluster: client members are not supported")
}

// GossipAddr returns the memberlist address others can join (bound port
// filled in). Valid after StartMember.
func (p *Provider) GossipAddr() string { return p.ml.LocalNode().Address() }

// Blocked is closed when another member reports that protoactor blocks
// this member: protoactor never lets a member it saw leave back in (it
// filters the member ID out of every later topology), so a member that
// was declared dead and came back is cut off for good and must restart
// (a new process has a new ID).
func (p *Provider) Blocked() <-chan struct{} { return p.blocked }

// Ready returns nil when this member is part of the cluster it was
// configured for (see Member.Ready), else why not.
func (p *Provider) Ready() error {
	select {
	case <-p.blocked:
		return ErrBlocked
	default:
	}
	if p.stopping.Load() {
		return ErrStopped
	}
	return p.state.ready()
}

// startErr returns why Start must fail, if it must. Valid once the first
// join attempt is over (joinTried).
func (p *Provider) startErr() error {
	p.state.mu.Lock()
	defer p.state.mu.Unlock()
	return p.state.fatal
}

// beginStop marks the member as stopping: a block seen from now on is
// the expected result of leaving, not a reason to restart.
func (p *Provider) beginStop() { p.stopping.Store(true) }

// stopRun stops the topology goroutine (once): this member's own view
// stays as it was.
func (p *Provider) stopRun() {
	p.stopRunOnce.Do(func() {
		p.beginStop()
		close(p.stop)
		p.runDone.Wait()
	})
}

// Leave announces that this member is going away, before it stops: peers
// drop it from their topology at once and route its identities to their
// new owners, while this member's own view stays frozen (its topology
// goroutine stops) so its local work drains against the old view. Shutdown
// then skips the announcement. A leave nobody heard is not an error: peers
// detect the failure instead.
func (p *Provider) Leave(timeout time.Duration) {
	p.stopRun()
	if p.ml == nil || p.left.Swap(true) {
		return
	}
	if err := p.ml.Leave(timeout); err != nil {
		p.log.Warn("leave not acknowledged; peers will detect the failure", "err", err)
	}
}

// Shutdown stops the goroutines and memberlist; graceful first announces
// the leave (ml.Leave, up to 2 s) so peers drop this member at once
// instead of detecting a failure (an unheard leave is only logged). Safe
// to call more than once.
func (p *Provider) Shutdown(graceful bool) error {
	p.shutdownOnce.Do(func() {
		p.stopRun()
		if p.ml == nil {
			return
		}
		if graceful && !p.left.Load() {
			// A leave nobody heard (peers stopping at the same time, or a
			// partition) is not an error: peers then detect the failure.
			if err := p.ml.Leave(2 * time.Second); err != nil {
				p.log.Warn("leave not acknowledged; peers will detect the failure", "err", err)
			}
		}
		if err := p.ml.Shutdown(); err != nil {
			p.shutdownErr = fmt.Errorf("cluster: shut memberlist down: %w", err)
		}
		p.joinDone.Wait()
	})
	return p.shutdownErr
}

// join joins the seeds, and again whenever this node is alone, so a
// member whose seeds were not up yet (or that outlived all its peers)
// finds the cluster when they come back. No seeds: a cluster of one.
//
// It classifies each failed attempt for Ready: no seed reachable, or a
// seed that accepted the connection and then refused the handshake (other
// cluster key or cluster name). The first attempt ends Start's wait, except
// that refusals are retried startRefusals times and then fail Start, as
// does being outvoted on Agree at the first join.
func (p *Provider) join() {
	var once sync.Once
	attempted := func() { once.Do(func() { close(p.joinTried) }) }
	defer attempted()
	self := p.GossipAddr()
	var seeds []string
	for _, s := range p.cfg.Seeds {
		if s != self && s != p.cfg.BindAddr {
			seeds = append(seeds, s)
		}
	}
	p.state.update(func(s *joinState) { s.needPeers = len(seeds) > 0 })
	if len(seeds) == 0 {
		return
	}
	var (
		failures, refusals int
		lastKind           error
		tried              bool
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-timer.C:
		}
		if p.ml.NumMembers() <= 1 {
			dials := p.tr.connected.Load()
			n, err := p.ml.Join(seeds)
			var why error
			switch {
			case p.ml.NumMembers() > 1:
				p.log.Info("joined cluster", "seeds_contacted", n, "members", p.ml.NumMembers(), "failed_attempts", failures)
				failures, refusals = 0, 0
				if !tried {
					if err := p.checkPeers(); err != nil {
						p.state.update(func(s *joinState) { s.fatal = err })
					}
				}
			case err == nil:
				// A seed answered but we are still alone: it was this node
				// under another name, or a node as alone as we are.
				why = errors.New("seeds answered but no other member is up yet")
				p.log.Debug("seeds answered but no peers yet", "seeds", seeds)
			case p.tr.connected.Load() > dials:
				refusals++
				failures++
				why = fmt.Errorf("%w: a seed accepted the connection but refused the gossip handshake, so it runs with another cluster key or cluster name (or it is not a tandem gossip port); seeds %v: %s", ErrRefused, seeds, oneLine(err))
			default:
				refusals = 0
				failures++
				why = fmt.Errorf("%w: no seed reachable (seeds %v): %s", ErrNotJoined, seeds, oneLine(err))
			}
			if k := kindOf(why); k != lastKind && k != errAlone && k != nil {
				// Log each new kind of failure once; Ready keeps the latest.
				p.log.Warn("not joined; retrying in the background", "seeds", seeds, "reason", why)
				lastKind = k
			} else if k == nil {
				lastKind = nil
			}
			p.state.update(func(s *joinState) { s.last = why })
		}
		if !tried && (refusals == 0 || refusals >= startRefusals) {
			tried = true
			if refusals > 0 {
				p.state.update(func(s *joinState) { s.fatal = s.last })
			}
			attempted()
		}
		timer.Reset(p.cfg.Timings.JoinRetry)
	}
}

// kindOf returns the sentinel err wraps (nil for nil or others).
func kindOf(err error) error {
	for _, k := range []error{ErrRefused, ErrNotJoined} {
		if errors.Is(err, k) {
			return k
		}
	}
	if err != nil {
		return errAlone
	}
	return nil
}

var errAlone = errors.New("cluster: alone")

// checkPeers runs right after this member's first join: it refuses to
// start when at least as many peers disagree with its Agree settings as
// agree (it is the odd one out; the peers ignore it anyway).
func (p *Provider) checkPeers() error {
	var agree int
	var disagree []string
	diff := map[string]bool{}
	for _, n := range p.ml.Members() {
		m, err := decodeMeta(n.Meta)
		if err != nil || m.ID == p.base.ID {
			continue
		}
		if d := differing(p.base.Agree, m.Agree); len(d) > 0 {
			disagree = append(disagree, net.JoinHostPort(m.Host, strconv.Itoa(m.Port)))
			for _, s := range d {
				diff[s] = true
			}
			continue
		}
		agree++
	}
	if len(disagree) == 0 || agree > len(disagree) {
		return nil
	}
	return fmt.Errorf("%w: this node's %s differs from that of members %s (%d agree with this node): give every node the same value",
		ErrMismatch, strings.Join(slices.Sorted(maps.Keys(diff)), ", "), strings.Join(disagree, ", "), agree)
}

// oneLine flattens memberlist's multi-line join errors ("2 errors
// occurred:\n\t* failed to join …") for a log line or an HTTP answer.
func oneLine(err error) string {
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "* "))
		if l != "" && !strings.HasSuffix(l, " occurred:") {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// run rebuilds protoactor's topology from memberlist on every kick and
// every Resync (protoactor's block list changes without memberlist events).
func (p *Provider) run() {
	select {
	case <-p.stop:
		return
	case <-p.joinTried:
	}
	tick := time.NewTicker(p.cfg.Timings.Resync)
	defer tick.Stop()
	for {
		p.sync()
		select {
		case <-p.stop:
			return
		case <-p.kick:
		case <-tick.C:
		}
	}
}

// sync hands protoactor the full member set, publishes which alive
// members protoactor blocks here, and checks whether anyone blocks us.
// Members whose Agree fingerprints differ from ours are left out.
func (p *Provider) sync() {
	nodes := p.ml.Members()
	members := make([]*pcluster.Member, 0, len(nodes))
	known := make(map[string]struct{}, len(nodes))
	strangers := map[string]string{}
	blockedBy := ""
	for _, n := range nodes {
		known[n.Name] = struct{}{}
		_, seen := p.known[n.Name]
		m, err := decodeMeta(n.Meta)
		if err != nil {
			if !seen {
				p.log.Warn("ignoring memberlist node", "node", n.Name, "addr", n.Address(), "err", err)
			}
			continue
		}
		if d := differing(p.base.Agree, m.Agree); len(d) > 0 {
			why := fmt.Sprintf("member %s at %s has a different %s", m.ID, net.JoinHostPort(m.Host, strconv.Itoa(m.Port)), strings.Join(d, ", "))
			strangers[n.Name] = why
			if !seen {
				p.log.Error("leaving an incompatible member out of the cluster", "node", n.Name, "gossip_addr", n.Address(), "reason", why)
			}
			continue
		}
		members = append(members, &pcluster.Member{Id: m.ID, Host: m.Host, Port: int32(m.Port), Kinds: m.Kinds})
		if m.ID != p.base.ID && slices.Contains(m.Blocked, p.base.ID) {
			blockedBy = m.ID
		}
	}
	p.logChanges(known)
	p.state.update(func(s *joinState) {
		s.strangers = strangers
		if len(members) > 1 {
			s.joined = true
		}
	})
	p.c.MemberList.UpdateClusterTopology(members)
	p.advertiseBlocked(members)
	if blockedBy != "" && !p.stopping.Load() {
		p.blockedOnce.Do(func() {
			p.log.Error("this member is blocked by the cluster and must restart", "blocked_by", blockedBy, "id", p.base.ID)
			close(p.blocked)
			if p.cfg.OnBlocked != nil {
				p.cfg.OnBlocked()
			}
		})
	}
}

func (p *Provider) logChanges(known map[string]struct{}) {
	var joined, left []string
	for n := range known {
		if _, ok := p.known[n]; !ok {
			joined = append(joined, n)
		}
	}
	for n := range p.known {
		if _, ok := known[n]; !ok {
			left = append(left, n)
		}
	}
	p.known = known
	if len(joined)+len(left) > 0 {
		p.log.Info("cluster membership changed", "members", len(known), "joined", joined, "left", left)
	}
}

// advertiseBlocked puts the IDs of members that memberlist sees alive but
// protoactor blocks into this node's meta, so they learn they are cut off.
func (p *Provider) advertiseBlocked(members []*pcluster.Member) {
	bl := p.c.Remote.BlockList()
	var ids []string
	for _, m := range members {
		if m.Id != p.base.ID && bl.IsBlocked(m.Id) {
			ids = append(ids, m.Id)
		}
	}
	slices.Sort(ids)
	if slices.Equal(ids, p.advertised) {
		return
	}
	p.advertised = ids
	m := p.base
	m.Blocked = ids
	meta, err := encodeMeta(m, memberlist.MetaMaxSize)
	if err != nil {
		p.log.Warn("cannot advertise blocked members", "err", err)
		return
	}
	p.meta.Store(&meta)
	if err := p.ml.UpdateNode(time.Second); err != nil {
		p.log.Warn("cannot advertise blocked members", "blocked", ids, "err", err)
	}
}

// delegate implements memberlist's Delegate and EventDelegate. memberlist
// calls it from its own goroutines: it only reads the meta and kicks.
type delegate struct{ p *Provider }

func (d delegate) NodeMeta(limit int) []byte {
	b := *d.p.meta.Load()
	if len(b) > limit {
		return nil // encodeMeta enforced MetaMaxSize; a smaller limit is not used by memberlist
	}
	return b
}

func (d delegate) NotifyMsg([]byte)                           {}
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d delegate) LocalState(join bool) []byte                { return nil }
func (d delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(*memberlist.Node)   { d.kick() }
func (d delegate) NotifyLeave(*memberlist.Node)  { d.kick() }
func (d delegate) NotifyUpdate(*memberlist.Node) { d.kick() }

func (d delegate) kick() {
	select {
	case d.p.kick <- struct{}{}:
	default:
	}
}
