package node

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/api/webhook"
	"github.com/tandem-im/tandem/cluster"
	"github.com/tandem-im/tandem/gateway"
	"github.com/tandem-im/tandem/internal/procs"
	"github.com/tandem-im/tandem/persistence"
)

// Config is one node's configuration. The zero value means defaults, except
// that Validate needs somewhere to keep data.
type Config struct {
	DataDir    string   // badger data and generated secrets; default "data"
	WSAddr     string   // client WebSocket listener; default ":7400"
	ReusePort  bool     // SO_REUSEPORT on WSAddr: the cluster's processes on one host share it
	APIAddr    string   // HTTP server API; default ":7401"
	GossipAddr string   // memberlist bind; default 127.0.0.1:7946, with Seeds :7946
	RemoteAddr string   // actor remote bind; default 127.0.0.1:7402, with Seeds :7402
	Seeds      []string // memberlist seeds (host:port)
	AdminKey   string   // server API key; generated into DataDir if empty
	JWTSecret  string   // HS256 secret (≥ 16 bytes); generated into DataDir if empty
	Store      string   // "badger" (default), "pebble" or a postgres:// URL
	LogLevel   string   // debug, info (default), warn, error
	DebugAddr  string   // Go profiling (net/http/pprof) listener; empty: none. Bind it to loopback.

	// StorePoolSize is the most PostgreSQL connections the node opens
	// (0: DefaultStorePoolSize). Ignored for badger.
	StorePoolSize int
	// BadgerTuning is "throughput" (default: 32 MiB memtables, level 0
	// compacted at 10 tables) or "latency" (8 MiB memtables, level 0 at
	// 20, 4 MiB tables: shorter table syncs ahead of the WAL's, so about
	// half the send→ack p99 below saturation, for a lower peak; see
	// bench/README.md, issue 10). Ignored for PostgreSQL.
	BadgerTuning string
	// DiskReserve is the free space (bytes) the badger store keeps on the
	// data dir's file system: below it sends, logins and API writes are
	// answered UNAVAILABLE ("storage full; retry", retry_after_ms) and
	// /readyz fails, until it is back at the reserve + 25 %. 0: computed
	// from the memtable sizes (persistence.DefaultDiskReserve: 528 MiB
	// for throughput, 232 MiB for latency). Ignored for PostgreSQL.
	DiskReserve int64

	// GCMinHeap is the smallest heap goal the Go collector is given
	// (internal/gctune): while the live heap is small, GOGC is raised so
	// the next collection comes at this heap size at the earliest. 0: off
	// (Go's own GOGC). Set by the tandem command only: it tunes the whole
	// process. See docs/operations.md "Memory".
	GCMinHeap int64

	// SyncProcs is how many Ps (GOMAXPROCS) beyond Go's default the
	// process gets for the goroutines blocked in a store fsync
	// (internal/procs); -1: one with an embedded store, none with
	// PostgreSQL. Ignored if the GOMAXPROCS environment variable is set.
	// Set by the tandem command only: it tunes the whole process. See
	// docs/operations.md "CPU".
	SyncProcs int

	// badger and pebble, if set (tests only), adjust the store options
	// last.
	badger func(*persistence.BadgerOptions)
	pebble func(*persistence.PebbleOptions)
	// BadgerCheck is what the start check reads of each badger table
	// (persistence.CheckBadger): "blocks" (default: every data block's
	// checksum, reading every table once) or "index" (each table's index
	// only: a faster start for a large store, which misses a damaged data
	// block until it is read). Ignored for PostgreSQL.
	BadgerCheck string
	// BadgerRepairTornManifest lets a badger store whose MANIFEST ends in
	// an incomplete record (a crash while badger wrote it) open: the
	// record is cut and tables the MANIFEST does not name are moved into
	// DataDir/badger-quarantine-<time> (persistence.BadgerOptions.
	// RepairTornManifest). For one start after a crash.
	BadgerRepairTornManifest bool

	// Cluster security and addressing (see docs/cluster-security.md).
	ClusterName     string // must match across nodes; default "tandem"
	ClusterKey      string // base64 keys (16/24/32 bytes), comma-separated, primary first; required with Seeds
	ClusterKeyFile  string // file holding ClusterKey's value instead
	AdvertiseGossip string // host:port other nodes use for gossip; default: the bind address, or a private IP for a wildcard bind
	AdvertiseRemote string // host[:port] other nodes dial for the actor remote; default as AdvertiseGossip
	GossipProfile   string // failure detection: lan (default, ~2-3 s) or wan (~30 s)

	WebhookURL    string // app backend endpoint for online/offline/kick events; empty: none
	WebhookSecret string // HMAC-SHA256 key for the X-Tandem-Signature header (required with a URL)

	KickPolicy  string // single, per_class (default) or tag
	ClassLimits string // per_class limits, e.g. "mobile=1,web=4"; unnamed classes keep their defaults

	HeartbeatTimeout time.Duration // default 60 s
	// IdleTimeout: a user actor with no session and nothing in flight is
	// passivated (stopped; activated again by its next message) after this
	// long, ±25 % so that users who went idle together do not stop
	// together. Default actors.DefaultIdleTimeout (2 min).
	IdleTimeout time.Duration

	// Overload bounds (gateway.Config): Sends in flight per session and per
	// node (count and payload bytes); past them Sends are answered
	// RATE_LIMITED with a retry hint. Zero: the gateway's defaults.
	MaxSessionSends  int
	MaxNodeSends     int
	MaxNodeSendBytes int64

	// Client connections (gateway.Config; zero: the gateway's defaults).
	// WSTransport is how the gateway waits for client bytes: "epoll"
	// (Linux, the default there without TLS) or "goroutine".
	WSTransport string
	// TLSCert and TLSKey are PEM files, the certificate chain (leaf
	// first) and its private key: with both, --ws-addr serves wss://
	// (TLS 1.2 at least, on the goroutine transport); with neither, ws://.
	TLSCert, TLSKey string
	// WriteQueueBytes bounds the encoded bytes waiting to be written to
	// one client: past it the session is closed as a slow consumer.
	WriteQueueBytes int64
	// MaxFrameRate is the frames per second one session may send
	// (bursts of a second's worth); past it frames are answered
	// RATE_LIMITED. Negative: no limit.
	MaxFrameRate int
	// MaxHandshakes bounds the connections in their TLS and WebSocket
	// handshake at once; more wait in the listen backlog.
	MaxHandshakes int
	// FrameTimeout bounds how long one WebSocket frame may take to
	// arrive once it has begun.
	FrameTimeout time.Duration

	// ShutdownTimeout bounds Stop: steps still running then are
	// abandoned (logged). Default 5 s.
	ShutdownTimeout  time.Duration
	RecallWindow     time.Duration // senders may recall for this long; 0: no limit
	CompensationDays int           // default 1, max 7
	Retention        time.Duration // default 30 days: older entries are removed (TTL) and never read

	// UnsafeMultiNodeBadger lets a multi-node cluster run on badger: each
	// node's data dies with it. Refused without this flag.
	UnsafeMultiNodeBadger bool

	// Now is the clock of the actors and the store (nil: time.Now). Only
	// tests set it, to age entries past the retention window.
	Now func() time.Time

	// Sessions, if set, is where the actors push and kick instead of the
	// gateway: tools that play the devices themselves, with no WebSocket,
	// set it and log in through Node.Frontend (tandem-bench actors). The
	// gateway still listens, but a WebSocket login then gets no pushes.
	// nil (the server): the gateway's session table.
	Sessions actors.SessionTable

	// NoActivations joins the cluster (Seeds) as a member that hosts no
	// user or group actors: logins through it reach users owned by the
	// other members, and its store is only read (the ack ledger of a load
	// tool that joins from outside, `tandem-bench actors -join`). Not a
	// flag: no deployment runs such a node.
	NoActivations bool
}

// Defaults.
const (
	DefaultWSAddr     = ":7400"
	DefaultAPIAddr    = ":7401"
	DefaultGossipAddr = "127.0.0.1:7946"
	DefaultRemoteAddr = "127.0.0.1:7402"
	DefaultRetention  = 30 * 24 * time.Hour
)

// With --seeds the gossip and remote defaults listen on every interface
// (advertising a private IP) and cluster traffic is authenticated by the
// cluster key; a single node listens on loopback only.
const (
	DefaultClusterGossipAddr = ":7946"
	DefaultClusterRemoteAddr = ":7402"
)

func (c Config) withDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.DataDir, "data")
	def(&c.WSAddr, DefaultWSAddr)
	def(&c.APIAddr, DefaultAPIAddr)
	if len(c.Seeds) > 0 {
		def(&c.GossipAddr, DefaultClusterGossipAddr)
		def(&c.RemoteAddr, DefaultClusterRemoteAddr)
	}
	def(&c.GossipAddr, DefaultGossipAddr)
	def(&c.RemoteAddr, DefaultRemoteAddr)
	def(&c.GossipProfile, "lan")
	def(&c.Store, "badger")
	def(&c.LogLevel, "info")
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	return c
}

// Validate returns every problem at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Store != "badger" && c.Store != "pebble" && !c.postgres() {
		errs = append(errs, fmt.Errorf("--store %q: use badger, pebble or a postgres:// URL", redactURL(c.Store)))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %s: must not be negative", c.ShutdownTimeout))
	}
	if c.MaxSessionSends < 0 || c.MaxNodeSends < 0 || c.MaxNodeSendBytes < 0 {
		errs = append(errs, errors.New("--max-session-sends, --max-node-sends and --max-node-send-bytes must not be negative"))
	}
	if c.BadgerCheck != "" && c.BadgerCheck != "blocks" && c.BadgerCheck != "index" {
		errs = append(errs, fmt.Errorf("--badger-check %q: use blocks or index", c.BadgerCheck))
	}
	if c.BadgerTuning != "" && c.BadgerTuning != "throughput" && c.BadgerTuning != "latency" {
		errs = append(errs, fmt.Errorf("--badger-tuning %q: use throughput or latency", c.BadgerTuning))
	}
	if c.StorePoolSize < 0 || c.StorePoolSize > 1000 {
		errs = append(errs, fmt.Errorf("--store-pool-size %d: use 1-1000 (0: default %d)", c.StorePoolSize, DefaultStorePoolSize))
	}
	if c.NoActivations && len(c.Seeds) == 0 {
		errs = append(errs, errors.New("NoActivations needs seeds: a member that hosts no actors serves nobody alone"))
	}
	if len(c.Seeds) > 0 && !c.postgres() && !c.UnsafeMultiNodeBadger {
		errs = append(errs, fmt.Errorf("--seeds with --store %s: a multi-node cluster on an embedded store loses a node's data with the node; use PostgreSQL or pass --unsafe-multi-node-badger", c.Store))
	}
	errs = append(errs, c.validateCluster()...)
	errs = append(errs, c.validateGateway()...)
	if c.ReusePort && !reusePortSupported {
		errs = append(errs, errors.New("--reuse-port: SO_REUSEPORT is not available on this system"))
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 16 {
		errs = append(errs, errors.New("--jwt-secret must be at least 16 bytes"))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("--idle-timeout %s: must not be negative", c.IdleTimeout))
	}
	if c.GCMinHeap < 0 {
		errs = append(errs, fmt.Errorf("--gc-min-heap %d: must not be negative (0: off)", c.GCMinHeap))
	}
	if c.SyncProcs < -1 {
		errs = append(errs, fmt.Errorf("--sync-procs %d: use -1 (one with an embedded store), 0 (Go's default) or more", c.SyncProcs))
	}
	if c.DiskReserve < 0 {
		errs = append(errs, fmt.Errorf("--disk-reserve %d: must not be negative (0: computed from the memtable sizes)", c.DiskReserve))
	}
	if c.Retention < 24*time.Hour {
		errs = append(errs, fmt.Errorf("--retention %s: must be at least 24h", c.Retention))
	}
	if c.Retention < time.Duration(max(c.CompensationDays, 1))*24*time.Hour {
		errs = append(errs, errors.New("--retention must cover --compensation-days"))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if _, err := actors.ParseLimits(c.ClassLimits); err != nil {
		errs = append(errs, fmt.Errorf("--class-limits: %w", err))
	}
	if err := (webhook.Config{URL: c.WebhookURL, Secret: c.WebhookSecret}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--webhook-url/--webhook-secret: %w", err))
	}
	if err := c.actors().Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// validateCluster checks the cluster flags (c has its defaults).
func (c Config) validateCluster() []error {
	var errs []error
	keys, err := c.clusterKeys()
	switch {
	case err != nil:
		errs = append(errs, err)
	case len(c.Seeds) > 0 && len(keys) == 0:
		errs = append(errs, errors.New("--seeds requires --cluster-key or --cluster-key-file: without a key anyone who reaches the gossip and remote ports could join or drive the cluster (generate one with: head -c32 /dev/urandom | base64)"))
		return errs
	}
	if c.GossipProfile != "lan" && c.GossipProfile != "wan" {
		errs = append(errs, fmt.Errorf("--gossip-profile %q: use lan or wan", c.GossipProfile))
	}
	if err == nil {
		if err := c.cluster(keys).Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// validateGateway checks the client listener's flags.
func (c Config) validateGateway() []error {
	var errs []error
	switch {
	case (c.TLSCert == "") != (c.TLSKey == ""):
		errs = append(errs, errors.New("--tls-cert and --tls-key: give both or neither"))
	case c.TLSCert != "":
		if _, err := c.tlsConfig(); err != nil {
			errs = append(errs, err)
		}
	}
	switch c.WSTransport {
	case "", gateway.TransportGoroutine:
	case gateway.TransportEpoll:
		if c.TLSCert != "" {
			errs = append(errs, errors.New("--ws-transport epoll cannot serve TLS (--tls-cert): use goroutine or leave it unset, or terminate TLS in a proxy in front"))
		}
	default:
		errs = append(errs, fmt.Errorf("--ws-transport %q: use epoll or goroutine", c.WSTransport))
	}
	if c.WriteQueueBytes < 0 || c.MaxHandshakes < 0 || c.FrameTimeout < 0 {
		errs = append(errs, errors.New("--write-queue-bytes, --max-handshakes and --frame-timeout must not be negative"))
	}
	if c.WSTransport == gateway.TransportEpoll {
		// Only the gateway knows whether epoll exists here.
		if err := (gateway.Config{Transport: c.WSTransport}).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--ws-transport: %w", err))
		}
	}
	return errs
}

// tlsConfig loads --tls-cert and --tls-key into a server TLS config (TLS
// 1.2 at least); nil without them. Its errors name the file at fault.
func (c Config) tlsConfig() (*tls.Config, error) {
	if c.TLSCert == "" && c.TLSKey == "" {
		return nil, nil
	}
	certPEM, err := os.ReadFile(c.TLSCert)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("--tls-key: %w", err)
	}
	if err := checkCertPEM(certPEM, time.Now()); err != nil {
		return nil, fmt.Errorf("--tls-cert %s: %w", c.TLSCert, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("--tls-key %s (for --tls-cert %s): %w", c.TLSKey, c.TLSCert, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// checkCertPEM checks that b holds PEM certificates only, the first (the
// leaf) valid at now.
func checkCertPEM(b []byte, now time.Time) error {
	var n int
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("holds a %q PEM block, want certificates only (is it the key?)", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		if n == 0 && (now.Before(cert.NotBefore) || now.After(cert.NotAfter)) {
			return fmt.Errorf("the certificate is valid from %s to %s, not now", cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339))
		}
		n++
	}
	if n == 0 {
		return errors.New("holds no PEM certificate")
	}
	return nil
}

// gateway is the client listener's configuration, serving TLS with tc if
// it is not nil.
func (c Config) gateway(tc *tls.Config) gateway.Config {
	return gateway.Config{
		Addr:             c.WSAddr,
		HeartbeatTimeout: c.actors().HeartbeatTimeout, // the same value LoginOk.heartbeat_seconds is derived from
		MaxSessionSends:  c.MaxSessionSends,
		MaxNodeSends:     c.MaxNodeSends,
		MaxNodeSendBytes: c.MaxNodeSendBytes,
		Transport:        c.WSTransport,
		TLS:              tc,
		WriteQueueBytes:  c.WriteQueueBytes,
		MaxFrameRate:     c.MaxFrameRate,
		MaxHandshakes:    c.MaxHandshakes,
		FrameTimeout:     c.FrameTimeout,
	}
}

// clusterKeys parses --cluster-key or the file --cluster-key-file names;
// nil without either.
func (c Config) clusterKeys() ([][]byte, error) {
	s := c.ClusterKey
	switch {
	case c.ClusterKey != "" && c.ClusterKeyFile != "":
		return nil, errors.New("--cluster-key and --cluster-key-file: give one")
	case c.ClusterKeyFile != "":
		b, err := os.ReadFile(c.ClusterKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--cluster-key-file: %w", err)
		}
		if s = strings.TrimSpace(string(b)); s == "" {
			return nil, fmt.Errorf("--cluster-key-file %s is empty", c.ClusterKeyFile)
		}
	case s == "":
		return nil, nil
	}
	keys, err := cluster.ParseKeys(s)
	if err != nil {
		return nil, fmt.Errorf("--cluster-key: %w", err)
	}
	return keys, nil
}

// cluster returns the cluster options for c (defaults applied) and keys;
// Start adds the logger and the settings that must agree.
func (c Config) cluster(keys [][]byte) cluster.Options {
	t := cluster.Timings{}
	if c.GossipProfile == "wan" {
		t = cluster.WANTimings()
	}
	return cluster.Options{
		Name:            c.ClusterName,
		RemoteAddr:      c.RemoteAddr,
		AdvertiseRemote: c.AdvertiseRemote,
		GossipAddr:      c.GossipAddr,
		AdvertiseGossip: c.AdvertiseGossip,
		Seeds:           c.Seeds,
		Keys:            keys,
		Timings:         t,
	}
}

func (c Config) actors() actors.Config {
	limits, _ := actors.ParseLimits(c.ClassLimits) // Validate reports the error
	return actors.Config{
		HeartbeatTimeout: c.HeartbeatTimeout,
		IdleTimeout:      c.IdleTimeout,
		CompensationDays: c.CompensationDays,
		RecallWindow:     c.RecallWindow,
		Now:              c.Now,
		Policy:           actors.Policy{Mode: actors.PolicyMode(c.KickPolicy), Limits: limits},
		NoActivations:    c.NoActivations,
	}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// ParseFlags reads flags from args, each with a TANDEM_* environment twin
// (--data-dir ↔ TANDEM_DATA_DIR); a flag given on the command line wins.
func ParseFlags(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("tandem", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage of tandem (each flag has a TANDEM_* environment twin):")
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), "\n"+ExitUsage)
	}
	var seeds string
	fs.StringVar(&c.DataDir, "data-dir", "data", "folder for the embedded store and generated secrets")
	fs.StringVar(&c.WSAddr, "ws-addr", DefaultWSAddr, "client WebSocket listen address (path /ws)")
	fs.BoolVar(&c.ReusePort, "reuse-port", false, "SO_REUSEPORT on --ws-addr: several node processes of one cluster on this host share the address, the kernel spreads new connections among them (Linux, BSD)")
	fs.StringVar(&c.APIAddr, "api-addr", DefaultAPIAddr, "HTTP server API listen address")
	fs.StringVar(&c.GossipAddr, "gossip-addr", "", "memberlist gossip bind address, TCP and UDP (default "+DefaultGossipAddr+"; with --seeds "+DefaultClusterGossipAddr+")")
	fs.StringVar(&c.RemoteAddr, "remote-addr", "", "actor remote bind address (default "+DefaultRemoteAddr+"; with --seeds "+DefaultClusterRemoteAddr+")")
	fs.StringVar(&seeds, "seeds", "", "comma-separated gossip addresses of other nodes (requires --cluster-key)")
	fs.StringVar(&c.ClusterName, "cluster-name", "tandem", "cluster name; nodes with another name are refused")
	fs.StringVar(&c.ClusterKey, "cluster-key", "", "base64 cluster keys of 16, 24 or 32 bytes, comma-separated, primary first (head -c32 /dev/urandom | base64); encrypts gossip and authenticates the actor remote")
	fs.StringVar(&c.ClusterKeyFile, "cluster-key-file", "", "file holding the --cluster-key value")
	fs.StringVar(&c.AdvertiseGossip, "advertise-gossip", "", "gossip host:port other nodes use (default: the bind address, or this host's private IP for a wildcard bind)")
	fs.StringVar(&c.AdvertiseRemote, "advertise-remote", "", "actor remote host[:port] other nodes dial (default: as for --advertise-gossip)")
	fs.StringVar(&c.GossipProfile, "gossip-profile", "lan", "failure detection: lan (a crashed node is noticed in 2-3 s) or wan (about 30 s, for slow links)")
	fs.StringVar(&c.AdminKey, "admin-key", "", "server API admin key (generated into the data dir if empty)")
	fs.StringVar(&c.JWTSecret, "jwt-secret", "", "HS256 secret for login tokens, >= 16 bytes (generated into the data dir if empty)")
	fs.StringVar(&c.Store, "store", "badger", "badger, pebble (embedded, lower send→ack tail: docs/adr/0006-pebble.md), or a postgres:// URL (several hosts with target_session_attrs=read-write for failover)")
	fs.IntVar(&c.StorePoolSize, "store-pool-size", DefaultStorePoolSize, "PostgreSQL connections per node")
	fs.StringVar(&c.BadgerTuning, "badger-tuning", "throughput", "badger store: throughput (higher peak) or latency (smaller memtables: about half the send→ack p99 below saturation)")
	fs.Int64Var(&c.GCMinHeap, "gc-min-heap", DefaultGCMinHeap, "smallest Go heap goal in bytes: while the live heap is small the collector waits until the heap reaches this size (less CPU for GC, at most this much more memory; 0: Go's default pacing)")
	fs.IntVar(&c.SyncProcs, "sync-procs", -1, "Ps (GOMAXPROCS) beyond the CPUs, for the goroutines blocked in a store fsync: -1 one with badger or pebble, none with PostgreSQL; 0 Go's default (a GOMAXPROCS environment variable wins)")
	fs.Int64Var(&c.DiskReserve, "disk-reserve", 0, "badger store: free bytes to keep on the data dir's file system; below them writes are refused with UNAVAILABLE until space is freed (0: computed from the memtable sizes, 528 MiB for throughput)")
	fs.StringVar(&c.BadgerCheck, "badger-check", "blocks", "badger store, at start: verify every table's blocks (blocks) or only each table's index (index: faster for a large store); damaged files refuse the start (exit 3)")
	fs.BoolVar(&c.BadgerRepairTornManifest, "badger-repair-torn-manifest", false, "badger store, once after a crash: accept a MANIFEST whose last record is incomplete (badger cuts it; tables it does not name are moved to <data-dir>/badger-quarantine-*, not deleted)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.DebugAddr, "debug-addr", "", "serve Go profiles (/debug/pprof/) here, e.g. 127.0.0.1:7403; unauthenticated, so bind it to loopback (default: off)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", DefaultShutdownTimeout, "stop within this long after SIGTERM; steps still running are abandoned (acked messages are already durable)")
	fs.IntVar(&c.MaxSessionSends, "max-session-sends", gateway.DefaultMaxSessionSends, "sends one session may have in flight; more are answered RATE_LIMITED")
	fs.IntVar(&c.MaxNodeSends, "max-node-sends", gateway.DefaultMaxNodeSends, "sends the node may have in flight; more are answered RATE_LIMITED (overload is refused, not queued)")
	fs.Int64Var(&c.MaxNodeSendBytes, "max-node-send-bytes", gateway.DefaultMaxNodeSendBytes, "payload bytes of the sends the node may have in flight")
	fs.StringVar(&c.WSTransport, "ws-transport", "", "how the gateway waits for client bytes: epoll (Linux; the default there without TLS: no goroutine per idle connection) or goroutine (any OS; the one TLS uses)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate chain (leaf first) to serve wss:// on --ws-addr, with --tls-key (TLS 1.2+; for very many connections terminate TLS in a proxy instead)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.Int64Var(&c.WriteQueueBytes, "write-queue-bytes", gateway.DefaultWriteQueueBytes, "encoded bytes that may wait to be written to one client; past them it is closed as a slow consumer")
	fs.IntVar(&c.MaxFrameRate, "max-frame-rate", gateway.DefaultMaxFrameRate, "frames per second one session may send, in bursts of a second's worth; more are answered RATE_LIMITED (negative: no limit)")
	fs.IntVar(&c.MaxHandshakes, "max-handshakes", gateway.DefaultMaxHandshakes, "connections in their TLS and WebSocket handshake at once; more wait in the listen backlog")
	fs.DurationVar(&c.FrameTimeout, "frame-timeout", gateway.DefaultFrameTimeout, "how long one WebSocket frame may take to arrive once it has begun; a slower client is closed")
	fs.DurationVar(&c.HeartbeatTimeout, "heartbeat-timeout", actors.DefaultHeartbeatTimeout, "drop a session silent this long")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", actors.DefaultIdleTimeout, "passivate a user actor with no session and nothing in flight after this long (±25 %); its next message activates it again")
	fs.IntVar(&c.CompensationDays, "compensation-days", actors.DefaultCompensationDays, "days of history a device without a cursor gets (1-7)")
	fs.DurationVar(&c.RecallWindow, "recall-window", 0, "how long after sending a sender may recall (0: no limit)")
	fs.DurationVar(&c.Retention, "retention", DefaultRetention, "keep sync-log entries this long")
	fs.StringVar(&c.WebhookURL, "webhook-url", "", "POST online, offline and kick events here (JSON, HMAC-signed)")
	fs.StringVar(&c.WebhookSecret, "webhook-secret", "", "HMAC-SHA256 secret for webhook signatures")
	fs.StringVar(&c.KickPolicy, "kick-policy", "per_class", "single, per_class or tag")
	fs.StringVar(&c.ClassLimits, "class-limits", "", "per_class limits, e.g. mobile=1,pad=1,desktop=1,web=10,miniprogram=1 (these are the defaults)")
	fs.BoolVar(&c.UnsafeMultiNodeBadger, "unsafe-multi-node-badger", false, "allow a multi-node cluster on badger (a node's data is lost with it)")

	set := map[string]bool{}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "TANDEM_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	if seeds != "" {
		for _, s := range strings.Split(seeds, ",") {
			if s = strings.TrimSpace(s); s != "" {
				c.Seeds = append(c.Seeds, s)
			}
		}
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return c, c.Validate()
}

// ExtraProcs is the Ps --sync-procs asks for beyond Go's default, -1
// resolved by the store.
func (c Config) ExtraProcs() int { return procs.Resolve(c.SyncProcs, c.Store) }

// DefaultGCMinHeap is the --gc-min-heap default: 256 MiB.
const DefaultGCMinHeap = 256 << 20

// DefaultStorePoolSize is the PostgreSQL pool per node: the committer's
// connections plus readers (notes/postgres.md: keep it small, 16-32).
const DefaultStorePoolSize = 16

// postgres reports whether the store is a PostgreSQL URL.
func (c Config) postgres() bool {
	return strings.HasPrefix(c.Store, "postgres://") || strings.HasPrefix(c.Store, "postgresql://")
}

// redactURL hides the password of a store URL for messages and logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// DefaultShutdownTimeout bounds a node's stop.
const DefaultShutdownTimeout = 5 * time.Second
