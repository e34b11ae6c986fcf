package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pcluster "github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/hashicorp/memberlist"
)

// MaxMessageSize is the largest gRPC message (one remote batch) a member
// accepts. gRPC's default of 4 MiB silently dropped large batches.
const MaxMessageSize = 64 << 20

// Options configure a member. The zero value means defaults: a single
// member on loopback.
type Options struct {
	// Name is the cluster name; default "tandem". Members of differently
	// named clusters drop each other's gossip (memberlist label) and refuse
	// each other's remote connections (it is part of the derived CA).
	Name string
	// RemoteAddr is where protoactor's remote listens, host:port; default
	// 127.0.0.1:7402; port 0 picks one. An empty or unspecified host
	// listens on every interface and advertises AdvertiseRemote, else this
	// host's first private IPv4 address.
	RemoteAddr      string
	AdvertiseRemote string // optional host[:port] other members dial; a wildcard bind without it uses AdvertiseGossip's host
	// GossipAddr is memberlist's bind host:port (TCP and UDP); default
	// 127.0.0.1:7946; port 0 picks one. Advertised like RemoteAddr.
	GossipAddr      string
	AdvertiseGossip string // optional host:port others use (port 0: the bound one); a wildcard bind without it uses AdvertiseRemote's host
	Seeds           []string
	// Keys are the cluster keys, primary first (ParseKeys): they encrypt
	// and authenticate gossip, and the remote runs over mutual TLS with
	// certificates derived from them. Required with Seeds; without keys
	// both listeners must be on loopback.
	Keys [][]byte
	// Agree holds settings that must be equal on every member (name →
	// value, e.g. "--jwt-secret" → the secret); only fingerprints travel.
	// Members that differ are left out of each other's topology, and a new
	// member outvoted at its first join fails to start (ErrMismatch).
	Agree          map[string]string
	RequestTimeout time.Duration // default for Request and lookups; default 2 s
	// HeartbeatExpiration is how long protoactor's gossip may miss a
	// member's heartbeat before blocking it for good; keep it well above
	// memberlist's detection time. Default 60 s.
	HeartbeatExpiration time.Duration
	Timings             Timings      // membership; zero means LAN defaults
	Lookup              LookupConfig // activation timeouts; Logger is ignored
	Logger              *slog.Logger
	// OnBlocked is called once if the cluster cuts this member off (see
	// Member.Blocked). It must not block.
	OnBlocked func()
}

// Validate reports everything wrong with o at once.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	for _, a := range []struct{ what, addr string }{
		{"remote address", o.RemoteAddr}, {"gossip address", o.GossipAddr}, {"gossip advertise address", o.AdvertiseGossip},
	} {
		if a.addr == "" {
			continue
		}
		if _, _, err := splitPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("cluster: %s %q: %w", a.what, a.addr, err))
		}
	}
	for _, a := range []struct{ what, addr string }{
		{"remote advertise address", o.AdvertiseRemote}, {"gossip advertise address", o.AdvertiseGossip},
	} {
		host := a.addr
		if h, _, err := splitPort(a.addr); err == nil {
			host = h
		}
		if a.addr != "" && (host == "" || net.ParseIP(host).IsUnspecified()) {
			errs = append(errs, fmt.Errorf("cluster: %s %q: other members cannot dial an unspecified host", a.what, a.addr))
		}
	}
	for _, s := range o.Seeds {
		if s == "" {
			errs = append(errs, errors.New("cluster: empty seed address"))
		}
	}
	for i, k := range o.Keys {
		if err := validKey(k); err != nil {
			errs = append(errs, fmt.Errorf("cluster: key %d: %w", i+1, err))
		}
	}
	if len(o.Keys) == 0 {
		if len(o.Seeds) > 0 {
			errs = append(errs, errors.New("cluster: seeds given without a cluster key: gossip and the actor remote would accept anyone who reaches them"))
		}
		for _, a := range []struct{ what, addr string }{{"remote address", o.RemoteAddr}, {"gossip address", o.GossipAddr}} {
			if h, _, err := splitPort(a.addr); err == nil && !isLoopback(h) {
				errs = append(errs, fmt.Errorf("cluster: %s %q is not loopback: without a cluster key anyone who reaches it could join or drive this node", a.what, a.addr))
			}
		}
	}
	if len(o.Name) > memberlist.LabelMaxSize {
		errs = append(errs, fmt.Errorf("cluster: name is %d bytes, at most %d", len(o.Name), memberlist.LabelMaxSize))
	}
	if o.RequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("cluster: negative request timeout %v", o.RequestTimeout))
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "tandem"
	}
	if o.RemoteAddr == "" {
		o.RemoteAddr = "127.0.0.1:7402"
	}
	if o.GossipAddr == "" {
		o.GossipAddr = "127.0.0.1:7946"
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 2 * time.Second
	}
	if o.HeartbeatExpiration <= 0 {
		o.HeartbeatExpiration = 60 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Member is one running protoactor cluster member with our provider and
// lookup. Its methods may be called concurrently.
type Member struct {
	log      *slog.Logger
	sys      *actor.ActorSystem
	c        *pcluster.Cluster
	provider *Provider
	lookup   *Lookup
	timeout  time.Duration

	stopOnce sync.Once
	stopErr  error
}

// Start builds a cluster member on sys with kinds and starts it: remoting
// listens, memberlist joins the seeds (in the background until one
// answers), and Start returns once this member is in its own topology, or
// with an error when ctx ends first. It takes about a second (protoactor
// sleeps). sys should use LoggerFactory; one member per actor system. If
// Start fails, sys has been shut down.
func Start(ctx context.Context, sys *actor.ActorSystem, opts Options, kinds ...*pcluster.Kind) (*Member, error) {
	if sys == nil {
		return nil, errors.New("cluster: nil actor system")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	// A wildcard bind without its own advertise address borrows the
	// other listener's advertised host before guessing a private IP.
	advRemote, advGossip := opts.AdvertiseRemote, opts.AdvertiseGossip
	if advRemote == "" && wildcard(opts.RemoteAddr) {
		advRemote = hostOf(advGossip)
	}
	if advGossip == "" && wildcard(opts.GossipAddr) && hostOf(advRemote) != "" {
		advGossip = net.JoinHostPort(hostOf(advRemote), "0")
	}
	host, port, advertised, err := remoteEndpoint(opts.RemoteAddr, advRemote)
	if err != nil {
		return nil, err
	}
	gossipAdvertised, err := gossipEndpoint(opts.GossipAddr, advGossip)
	if err != nil {
		return nil, err
	}
	if err := checkAdvertised(opts.Seeds, cmp.Or(advertised, net.JoinHostPort(host, strconv.Itoa(port))), cmp.Or(gossipAdvertised, opts.GossipAddr)); err != nil {
		return nil, err
	}
	serverOpts, dialOpts, err := remoteOptions(opts.Keys, opts.Name, sys.ID)
	if err != nil {
		return nil, err
	}
	rc := remote.Configure(host, port, remote.WithServerOptions(serverOpts...), remote.WithDialOptions(dialOpts...),
		remote.WithEndpointWriterQueueSize(endpointQueueSize))
	if advertised != "" {
		rc.AdvertisedHost = advertised
	}
	provider := NewProvider(ProviderConfig{
		ClusterName:   opts.Name,
		BindAddr:      opts.GossipAddr,
		AdvertiseAddr: gossipAdvertised,
		Seeds:         opts.Seeds,
		Keys:          opts.Keys,
		Agree:         opts.Agree,
		Timings:       opts.Timings,
		Logger:        opts.Logger,
		OnBlocked:     opts.OnBlocked,
	})
	lc := opts.Lookup
	lc.Logger = opts.Logger
	lookup := NewLookup(lc)
	cfg := pcluster.Configure(opts.Name, provider, lookup, rc,
		pcluster.WithKinds(kinds...),
		pcluster.WithRequestTimeout(opts.RequestTimeout),
		pcluster.WithHeartbeatExpiration(opts.HeartbeatExpiration),
		pcluster.WithClusterContextProducer(func(c *pcluster.Cluster) pcluster.Context {
			return &requestContext{c: c, l: lookup}
		}),
	)
	m := &Member{log: opts.Logger, sys: sys, provider: provider, lookup: lookup, timeout: opts.RequestTimeout}
	if err := catch(func() { m.c = pcluster.New(sys, cfg) }); err != nil {
		return nil, fmt.Errorf("cluster: create member: %w", err)
	}
	if err := catch(m.c.StartMember); err != nil {
		m.abort()
		return nil, fmt.Errorf("cluster: start member: %w", err)
	}
	select {
	case <-lookup.Ready():
	case <-ctx.Done():
		if err := m.Stop(false); err != nil {
			m.log.Warn("cluster start abandoned: stop", "err", err)
		}
		return nil, fmt.Errorf("cluster: waiting for the first topology: %w", ctx.Err())
	}
	if err := provider.startErr(); err != nil {
		// Leave first (an outvoted member did join memberlist), then stop
		// like a crash: nobody placed anything here.
		if serr := provider.Shutdown(true); serr != nil {
			m.log.Warn("cluster start refused: leave", "err", serr)
		}
		if serr := m.Stop(false); serr != nil {
			m.log.Warn("cluster start refused: stop", "err", serr)
		}
		return nil, err
	}
	m.log.Info("cluster member started", "remote_advertised", m.Address(), "remote_bind", net.JoinHostPort(host, strconv.Itoa(port)),
		"gossip_advertised", provider.GossipAddr(), "gossip_bind", opts.GossipAddr,
		"id", sys.ID, "cluster", opts.Name, "seeds", opts.Seeds, "authenticated", len(opts.Keys) > 0, "ready", m.Ready())
	return m, nil
}

// abort undoes a StartMember that panicked half-way.
func (m *Member) abort() {
	if err := m.provider.Shutdown(false); err != nil {
		m.log.Warn("cluster start aborted: provider shutdown", "err", err)
	}
	m.lookup.Shutdown()
	if err := catch(m.sys.Shutdown); err != nil {
		m.log.Warn("cluster start aborted: actor system shutdown", "err", err)
	}
	if m.c.Remote != nil {
		// Panics if remoting never got as far as its gRPC server.
		if err := catch(func() { m.c.Remote.Shutdown(false) }); err != nil {
			m.log.Debug("cluster start aborted: remoting shutdown", "err", err)
		}
	}
}

// catch runs f and turns a panic into an error: protoactor reports
// listen and provider failures by panicking.
func catch(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = fmt.Errorf("panic: %w", e)
			} else {
				err = fmt.Errorf("panic: %v", r)
			}
		}
	}()
	f()
	return nil
}

// remoteEndpoint works out where remoting listens and what it advertises
// ("" lets protoactor advertise the bound address, which is right for a
// specific host even with port 0). An unspecified host (":7402",
// "0.0.0.0:0") cannot be advertised: without AdvertiseRemote the first
// private IPv4 address is, and with port 0 a free port is picked first
// (racy, so only for tests).
func remoteEndpoint(listen, advertise string) (host string, port int, advertised string, err error) {
	host, port, err = splitPort(listen)
	if err != nil {
		return "", 0, "", fmt.Errorf("cluster: remote address %q: %w", listen, err)
	}
	advHost, advPort := advertise, 0
	if h, p, err := splitPort(advertise); err == nil {
		advHost, advPort = h, p
	}
	unspecified := host == "" || net.ParseIP(host).IsUnspecified()
	if advHost == "" && !unspecified {
		return host, port, "", nil
	}
	if advHost == "" {
		advHost = privateIP()
	}
	if port == 0 && advPort == 0 {
		if port, err = freePort(host); err != nil {
			return "", 0, "", err
		}
	}
	if advPort == 0 {
		advPort = port
	}
	return host, port, net.JoinHostPort(advHost, strconv.Itoa(advPort)), nil
}

func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("cluster: pick a remote port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// gossipEndpoint returns what memberlist advertises for bind: advertise
// if given, else nothing for a specific host (memberlist advertises the
// bound address), else this host's private IP with the bound port.
func gossipEndpoint(bind, advertise string) (string, error) {
	if advertise != "" {
		return advertise, nil
	}
	host, _, err := splitPort(bind)
	if err != nil {
		return "", fmt.Errorf("cluster: gossip address %q: %w", bind, err)
	}
	if host != "" && !net.ParseIP(host).IsUnspecified() {
		return "", nil
	}
	return net.JoinHostPort(privateIP(), "0"), nil // port 0: the bound one
}

// wildcard reports whether the listen address addr binds every interface.
func wildcard(addr string) bool {
	host, _, err := splitPort(addr)
	return err == nil && (host == "" || net.ParseIP(host).IsUnspecified())
}

// hostOf returns the host of host[:port] ("" for "").
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// checkAdvertised refuses to advertise a loopback address when a seed is
// on another host: peers there would dial themselves.
func checkAdvertised(seeds []string, advertised ...string) error {
	remoteSeed := ""
	for _, s := range seeds {
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			host = s
		}
		if !isLoopback(host) {
			remoteSeed = s
			break
		}
	}
	if remoteSeed == "" {
		return nil
	}
	for _, a := range advertised {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		if isLoopback(host) {
			return fmt.Errorf("cluster: this node would advertise %s, a loopback address, to peers such as seed %s: bind to a routable address or set the advertise addresses", a, remoteSeed)
		}
	}
	return nil
}

// privateIP returns this host's first private IPv4 address, else its first
// non-loopback one, else 127.0.0.1.
func privateIP() string {
	addrs, _ := net.InterfaceAddrs() // on error: no addresses, fall back
	var fallback string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.To4() == nil || n.IP.IsLoopback() {
			continue
		}
		if n.IP.IsPrivate() {
			return n.IP.String()
		}
		if fallback == "" {
			fallback = n.IP.String()
		}
	}
	if fallback != "" {
		return fallback
	}
	return "127.0.0.1"
}

// Cluster returns protoactor's cluster.
func (m *Member) Cluster() *pcluster.Cluster { return m.c }

// Address returns the advertised protoactor remote address.
func (m *Member) Address() string { return m.sys.Address() }

// GossipAddress returns the memberlist address to give others as a seed.
func (m *Member) GossipAddress() string { return m.provider.GossipAddr() }

// ID returns the member ID (the actor system ID; new in every process).
func (m *Member) ID() string { return m.sys.ID }

// Ready returns nil when this member is part of the cluster it was
// configured for, else why not (wrapping ErrNotJoined, ErrRefused,
// ErrMismatch, ErrBlocked or ErrStopped). A member without seeds is ready;
// one with seeds becomes ready once it has had a compatible peer in its
// topology, and stays ready when its peers die afterwards (it is then the
// cluster). Never blocks; may be called concurrently.
func (m *Member) Ready() error { return m.provider.Ready() }

// Blocked is closed when the cluster has cut this member off for good
// (protoactor blocks a member it once saw leave, e.g. after a false
// failure detection). The process should stop the member and exit; a
// restarted process gets a new ID and rejoins.
func (m *Member) Blocked() <-chan struct{} { return m.provider.Blocked() }

// Owner returns the remote address of the member that owns identity of
// kind in this member's current view ("" if none supports kind).
func (m *Member) Owner(identity, kind string) string { return m.lookup.Owner(identity, kind) }

// Members returns the remote addresses of the members in this member's
// current view, itself included, sorted. It never blocks.
func (m *Member) Members() []string { return m.lookup.Members() }

// PID returns the PID of the activation of identity, activating it on its
// owner if needed; cached PIDs return without blocking. Bounded by ctx, or
// by the request timeout if ctx has no deadline.
func (m *Member) PID(ctx context.Context, identity, kind string) (*actor.PID, error) {
	ctx, cancel := m.withTimeout(ctx)
	defer cancel()
	return m.lookup.resolve(ctx, pcluster.NewClusterIdentity(identity, kind))
}

// Send delivers msg to identity without waiting for an answer; it blocks
// only while the identity's PID is looked up (not at all when cached). A
// message sent to an activation that has just passivated is lost: use
// Request when delivery matters.
func (m *Member) Send(ctx context.Context, identity, kind string, msg any) error {
	pid, err := m.PID(ctx, identity, kind)
	if err != nil {
		return err
	}
	m.sys.Root.Send(pid, msg)
	return nil
}

// Request sends msg to identity and waits for the answer, retrying on
// timeouts and dead letters until ctx's deadline (or the request timeout
// if ctx has none). msg and the answer must be registered proto messages
// when the activation may be remote. A cancelled ctx is noticed between
// attempts.
func (m *Member) Request(ctx context.Context, identity, kind string, msg any) (any, error) {
	ctx, cancel := m.withTimeout(ctx)
	defer cancel()
	return m.lookup.request(ctx, m.sys.Root, pcluster.NewClusterIdentity(identity, kind), msg)
}

func (m *Member) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, m.timeout)
}

// Leave announces this member's departure to its peers (they stop
// routing to it within a gossip round) without stopping anything here;
// call it first in a graceful shutdown, then drain, then Stop(true).
func (m *Member) Leave() { m.provider.Leave(time.Second) }

// Stop stops the member and its actor system (do not use sys afterwards).
// Graceful stops local activations, then leaves memberlist so peers
// re-place this member's identities at once, then stops remoting; it
// takes over 2 s (protoactor sleeps). Not graceful behaves like a crash: no
// leave and no goodbye gossip; peers notice by probing (about a second).
// Safe to call more than once; later calls return the first result.
func (m *Member) Stop(graceful bool) error {
	m.stopOnce.Do(func() {
		start := time.Now()
		m.provider.beginStop()
		var errs []error
		if graceful {
			// Stop local activations before leaving, so that no peer
			// activates one of them while it still runs here. Until the
			// leave lands, peers' requests and probes get dead letters and
			// retry.
			m.lookup.Shutdown()
			if err := catch(func() { m.c.Shutdown(true) }); err != nil {
				errs = append(errs, fmt.Errorf("cluster: shutdown: %w", err))
			}
			errs = append(errs, m.provider.Shutdown(true)) // already done; returns its error
		} else {
			errs = append(errs, m.provider.Shutdown(false))
			m.lookup.Shutdown()
			if err := catch(func() { m.sys.Shutdown(); m.c.Remote.Shutdown(false) }); err != nil {
				errs = append(errs, fmt.Errorf("cluster: stop remoting: %w", err))
			}
		}
		m.stopErr = errors.Join(errs...)
		m.log.Info("cluster member stopped", "remote_addr", m.Address(), "graceful", graceful,
			"took", time.Since(start), "err", m.stopErr)
	})
	return m.stopErr
}

// endpointQueueSize is the first size of the queue of messages waiting
// for the connection to one other member. protoactor's default, 1,000,000
// slots of interface values, is 16 MB of pointers per member allocated
// when the first message goes there, and scanned by every GC for as long
// as the process lives (46 MB of a 52 MB live heap on an idle member of a
// 4-node cluster). The queue doubles when full, so a burst still fits.
const endpointQueueSize = 1024
