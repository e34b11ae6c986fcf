package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/hashicorp/memberlist"
)

// Timings tune failure detection and joining. The zero value means LAN
// defaults that detect a crashed member in about a second.
type Timings struct {
	ProbeInterval  time.Duration // memberlist; default 250 ms
	ProbeTimeout   time.Duration // memberlist; default 200 ms
	SuspicionMult  int           // memberlist; default 2 (suspect for 2 probe intervals)
	GossipInterval time.Duration // memberlist; default 100 ms
	PushPull       time.Duration // memberlist full state sync; default 15 s
	TCPTimeout     time.Duration // memberlist join/push-pull dial; default 2 s
	JoinRetry      time.Duration // while alone with seeds; default 1 s
	Resync         time.Duration // topology rebuild without events; default 1 s
}

func (t Timings) withDefaults() Timings {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.ProbeInterval, 250*time.Millisecond)
	def(&t.ProbeTimeout, 200*time.Millisecond)
	def(&t.GossipInterval, 100*time.Millisecond)
	def(&t.PushPull, 15*time.Second)
	def(&t.TCPTimeout, 2*time.Second)
	def(&t.JoinRetry, time.Second)
	def(&t.Resync, time.Second)
	if t.SuspicionMult <= 0 {
		t.SuspicionMult = 2
	}
	return t
}

// ProviderConfig configures a Provider.
type ProviderConfig struct {
	ClusterName   string   // memberlist label: other clusters' packets are dropped
	BindAddr      string   // memberlist host:port; port 0 picks one
	AdvertiseAddr string   // optional host:port others should use
	Seeds         []string // memberlist host:port of members to join
	Timings       Timings
	Logger        *slog.Logger
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
	base nodeMeta // this node's meta without Blocked

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
}

var _ pcluster.ClusterProvider = (*Provider)(nil)

// NewProvider returns a provider to pass to protoactor's cluster.Configure.
func NewProvider(cfg ProviderConfig) *Provider {
	cfg.Timings = cfg.Timings.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
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
	p.base = nodeMeta{ID: c.ActorSystem.ID, Host: host, Port: port, Kinds: kinds}
	meta, err := encodeMeta(p.base, memberlist.MetaMaxSize)
	if err != nil {
		return err
	}
	p.meta.Store(&meta)

	mc, err := p.memberlistConfig(c.ActorSystem.ID)
	if err != nil {
		return err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: start memberlist on %s: %w", p.cfg.BindAddr, err)
	}
	p.ml = ml
	p.log.Info("memberlist started", "gossip_addr", p.GossipAddr(), "remote_addr", c.ActorSystem.Address(), "id", c.ActorSystem.ID)

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
		mc.AdvertiseAddr, mc.AdvertisePort = ahost, aport
	}
	mc.ProbeInterval = t.ProbeInterval
	mc.ProbeTimeout = t.ProbeTimeout
	mc.SuspicionMult = t.SuspicionMult
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

// beginStop marks the member as stopping: a block seen from now on is
// the expected result of leaving, not a reason to restart.
func (p *Provider) beginStop() { p.stopping.Store(true) }

// Shutdown stops the goroutines and memberlist; graceful first announces
// the leave (ml.Leave, up to 2 s) so peers drop this member at once
// instead of detecting a failure (an unheard leave is only logged). Safe
// to call more than once.
func (p *Provider) Shutdown(graceful bool) error {
	p.shutdownOnce.Do(func() {
		p.beginStop()
		close(p.stop)
		p.runDone.Wait()
		if p.ml == nil {
			return
		}
		if graceful {
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
	if len(seeds) == 0 {
		return
	}
	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-timer.C:
		}
		if p.ml.NumMembers() <= 1 {
			n, err := p.ml.Join(seeds)
			switch {
			case p.ml.NumMembers() > 1:
				p.log.Info("joined cluster", "seeds_contacted", n, "members", p.ml.NumMembers(), "failed_attempts", failures)
				failures = 0
			case err == nil:
				// A seed answered but we are still alone: it was this node
				// under another name, or a node as alone as we are.
				p.log.Debug("seeds answered but no peers yet", "seeds", seeds)
			case failures == 0:
				p.log.Warn("no seed answered; retrying in the background", "seeds", seeds, "err", err)
				failures++
			default:
				failures++
			}
		}
		attempted()
		timer.Reset(p.cfg.Timings.JoinRetry)
	}
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
func (p *Provider) sync() {
	nodes := p.ml.Members()
	members := make([]*pcluster.Member, 0, len(nodes))
	known := make(map[string]struct{}, len(nodes))
	blockedBy := ""
	for _, n := range nodes {
		known[n.Name] = struct{}{}
		m, err := decodeMeta(n.Meta)
		if err != nil {
			if _, seen := p.known[n.Name]; !seen {
				p.log.Warn("ignoring memberlist node", "node", n.Name, "addr", n.Address(), "err", err)
			}
			continue
		}
		members = append(members, &pcluster.Member{Id: m.ID, Host: m.Host, Port: int32(m.Port), Kinds: m.Kinds})
		if m.ID != p.base.ID && slices.Contains(m.Blocked, p.base.ID) {
			blockedBy = m.ID
		}
	}
	p.logChanges(known)
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
