package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/node"
)

// ActorsTarget is where `tandem-bench actors` sends its load: an
// in-process node (the default), or, with Join, a running cluster that the
// tool joins as a member hosting no user or group actors
// (node.Config.NoActivations), so every login and message is served by the
// cluster's own nodes and the load comes from outside their processes.
// The tool's member runs only the gateway side: the virtual devices'
// sessions, which the users' actors on the nodes push to over the actor
// remote, as they push to any node's gateway. The ack ledger reads the
// recipients' logs straight from the cluster's store (PostgreSQL), a path
// apart from the actors that acked.
type ActorsTarget struct {
	Join           []string      // gossip addresses of cluster nodes; none: an in-process node
	ClusterName    string        // as the nodes' --cluster-name
	ClusterKey     string        `json:"-"` // as the nodes' --cluster-key (secret: not in the JSON report)
	ClusterKeyFile string        // as the nodes' --cluster-key-file
	JWTSecret      string        `json:"-"` // as the nodes' --jwt-secret: tokens the tool mints must verify there
	Store          string        `json:"-"` // the cluster's postgres:// URL, read for the ledger (may hold a password)
	Bind           string        // host the tool's member binds and advertises (default 127.0.0.1)
	GossipProfile  string        // the tool's member's failure detection, as the nodes' --gossip-profile ("": lan)
	JoinTimeout    time.Duration // how long to wait for the cluster before refusing the run (default 30 s)
	UserPrefix     string        // virtual user IDs are UserPrefix + n (default "u" in process; "bench-<random>-" with Join)
}

func (t *ActorsTarget) addFlags(fs *flag.FlagSet) {
	fs.Func("join", "comma-separated gossip addresses of a running cluster's nodes: join it as a member that hosts no actors and load its nodes (default: an in-process node)", func(s string) error {
		t.Join = splitList(s)
		return nil
	})
	fs.StringVar(&t.ClusterName, "cluster-name", "tandem", "with -join: the cluster's --cluster-name")
	fs.StringVar(&t.ClusterKey, "cluster-key", "", "with -join: the cluster's --cluster-key")
	fs.StringVar(&t.ClusterKeyFile, "cluster-key-file", "", "with -join: a file holding the cluster's --cluster-key")
	fs.StringVar(&t.JWTSecret, "jwt-secret", "", "with -join: the cluster's --jwt-secret (the tool mints the virtual users' tokens)")
	fs.StringVar(&t.Store, "store", "", "with -join: the cluster's postgres:// store URL, read for the ack ledger; without: the in-process node's store, badger (default) or pebble")
	fs.StringVar(&t.Bind, "bind", "127.0.0.1", "with -join: the address the tool's member listens on and the nodes dial back (gossip and actor remote, ports chosen freely)")
	fs.StringVar(&t.GossipProfile, "gossip-profile", "", "with -join: the tool's member's failure detection, lan (default) or wan, as the nodes' --gossip-profile")
	fs.DurationVar(&t.JoinTimeout, "join-timeout", defaultJoinTimeout, "with -join: how long to wait for a node that hosts users before refusing the run")
	fs.StringVar(&t.UserPrefix, "user-prefix", "", `virtual user IDs are this plus a number (default "u"; with -join "bench-<random>-", so runs never meet real users or each other)`)
}

// validate reports every problem of the target at once.
func (t ActorsTarget) validate() []error {
	if len(t.Join) == 0 {
		var errs []error
		if t.ClusterKey != "" || t.ClusterKeyFile != "" || t.JWTSecret != "" {
			errs = append(errs, errors.New("-cluster-key, -cluster-key-file and -jwt-secret go with -join (the in-process node makes its own)"))
		}
		if t.GossipProfile != "" {
			errs = append(errs, errors.New("-gossip-profile goes with -join (the in-process node is alone)"))
		}
		if t.Store != "" && t.Store != "badger" && t.Store != "pebble" {
			errs = append(errs, fmt.Errorf("-store %q without -join: the in-process node's store, badger (default) or pebble", t.Store))
		}
		return errs
	}
	var errs []error
	for _, a := range t.Join {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("-join %q: want host:port of a node's --gossip-addr", a))
		}
	}
	if t.ClusterKey == "" && t.ClusterKeyFile == "" {
		errs = append(errs, errors.New("-join needs the cluster's key: -cluster-key or -cluster-key-file"))
	}
	if t.JWTSecret == "" {
		errs = append(errs, errors.New("-join needs the cluster's -jwt-secret: the nodes refuse a member whose secret differs, and verify the tokens the tool mints with it"))
	}
	if !strings.HasPrefix(t.Store, "postgres://") && !strings.HasPrefix(t.Store, "postgresql://") {
		errs = append(errs, errors.New("-join needs -store postgres://… (the cluster's store, read for the ack ledger; a badger cluster's logs cannot be read from outside its nodes)"))
	}
	if t.GossipProfile != "" && t.GossipProfile != "lan" && t.GossipProfile != "wan" {
		errs = append(errs, fmt.Errorf("-gossip-profile %q: use lan or wan, as the nodes' --gossip-profile", t.GossipProfile))
	}
	if t.JoinTimeout < 0 {
		errs = append(errs, errors.New("-join-timeout must not be negative"))
	}
	if net.ParseIP(t.Bind) == nil {
		errs = append(errs, fmt.Errorf("-bind %q: want an IP address", t.Bind))
	}
	return errs
}

// withDefaults fills the user prefix: a fresh one per joined run.
func (t ActorsTarget) withDefaults() ActorsTarget {
	if t.UserPrefix != "" {
		return t
	}
	if len(t.Join) == 0 {
		t.UserPrefix = "u"
		return t
	}
	b := make([]byte, 4)
	rand.Read(b) // never fails (crypto/rand)
	t.UserPrefix = "bench-" + hex.EncodeToString(b) + "-"
	return t
}

// nodeConfig is the node the run starts: the in-process node, or the
// tool's member of the joined cluster. dir holds its generated secrets
// (and, in process, its badger store).
func (t ActorsTarget) nodeConfig(dir, adminKey, logLevel string, sessions actors.SessionTable) node.Config {
	c := node.Config{
		DataDir: dir, WSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", RemoteAddr: "127.0.0.1:0",
		AdminKey: adminKey, LogLevel: logLevel,
		Sessions: sessions, // the virtual devices
	}
	if len(t.Join) == 0 {
		c.Store = t.Store // "" is the node's default
		return c
	}
	c.Seeds = t.Join
	c.ClusterName, c.ClusterKey, c.ClusterKeyFile = t.ClusterName, t.ClusterKey, t.ClusterKeyFile
	c.JWTSecret = t.JWTSecret
	c.Store = t.Store
	c.StorePoolSize = 4 // reads for the ledger only
	c.GossipAddr = net.JoinHostPort(t.Bind, "0")
	c.RemoteAddr = net.JoinHostPort(t.Bind, "0")
	c.GossipProfile = t.GossipProfile // node.Config.Validate refuses an unknown one
	c.NoActivations = true
	return c
}

// describe names the target in the summary's first line.
func (t ActorsTarget) describe() string {
	if len(t.Join) == 0 {
		return fmt.Sprintf("in-process node (%s, fsync on)", cmp.Or(t.Store, "badger"))
	}
	return fmt.Sprintf("the cluster at %s (PostgreSQL; this tool's member hosts no actors), users %q…", strings.Join(t.Join, ","), t.UserPrefix)
}

// defaultJoinTimeout bounds how long a joining run waits for the cluster.
const defaultJoinTimeout = 30 * time.Second

// waitJoined returns once the tool's member has joined the cluster and
// sees a node that hosts users, or why not after t.JoinTimeout: the load must
// not start against nobody (every login would fail).
func waitJoined(ctx context.Context, n *node.Node, t ActorsTarget) error {
	wait := cmp.Or(t.JoinTimeout, defaultJoinTimeout)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := n.Member().Ready()
		if err == nil && n.Member().Owner("probe", actors.UserKind) != "" {
			return nil
		}
		if err == nil {
			err = errors.New("joined, but no member hosts users")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no tandem node answered at %s within %v: %w", strings.Join(t.Join, ","), wait, err)
		case <-tick.C:
		}
	}
}
