package node

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/cluster"
)

func TestParseFlagsDefaultsAndEnv(t *testing.T) {
	t.Setenv("TANDEM_WS_ADDR", "127.0.0.1:9000")
	t.Setenv("TANDEM_COMPENSATION_DAYS", "3")
	t.Setenv("TANDEM_API_ADDR", "127.0.0.1:9999") // the flag below wins
	t.Setenv("TANDEM_CLUSTER_KEY", testClusterKey)
	c, err := ParseFlags([]string{"--api-addr", "127.0.0.1:9001", "--seeds", "a:1, b:2", "--unsafe-multi-node-badger"})
	if err != nil {
		t.Fatal(err)
	}
	if c.WSAddr != "127.0.0.1:9000" || c.APIAddr != "127.0.0.1:9001" || c.CompensationDays != 3 {
		t.Fatalf("env twins / flag precedence wrong: %+v", c)
	}
	if len(c.Seeds) != 2 || c.Seeds[1] != "b:2" {
		t.Fatalf("seeds = %q", c.Seeds)
	}
	if c.HeartbeatTimeout != 60*time.Second || c.Store != "badger" || c.DataDir != "data" || c.DiskReserve != 0 {
		t.Fatalf("defaults wrong: %+v", c)
	}
	t.Setenv("TANDEM_DISK_RESERVE", "67108864")
	if c, err = ParseFlags(nil); err != nil || c.DiskReserve != 64<<20 || badgerOptions(c).DiskReserve != 64<<20 {
		t.Fatalf("TANDEM_DISK_RESERVE: %d, %v", c.DiskReserve, err)
	}
}

func TestValidateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"multi-node badger", []string{"--seeds", "x:1"}, "unsafe-multi-node-badger"},
		{"seeds without a key", []string{"--seeds", "x:1", "--unsafe-multi-node-badger"}, "--seeds requires --cluster-key"},
		{"key not base64", []string{"--cluster-key", "%%%"}, "--cluster-key: cluster: key 1 is not base64"},
		{"key too short", []string{"--cluster-key", "c2hvcnQ="}, "5 bytes, want 16, 24 or 32"},
		{"key and key file", []string{"--cluster-key", testClusterKey, "--cluster-key-file", "k"}, "give one"},
		{"missing key file", []string{"--cluster-key-file", "/nonexistent/key"}, "--cluster-key-file"},
		{"open remote without a key", []string{"--remote-addr", ":7402"}, `remote address ":7402" is not loopback`},
		{"open gossip without a key", []string{"--gossip-addr", "0.0.0.0:7946"}, "is not loopback"},
		{"gossip profile", []string{"--gossip-profile", "mars"}, "--gossip-profile"},
		{"unspecified advertise", []string{"--cluster-key", testClusterKey, "--advertise-remote", "0.0.0.0"}, "unspecified host"},
		{"pool size", []string{"--store", "postgres://x/y", "--store-pool-size", "-1"}, "--store-pool-size"},
		{"negative shutdown timeout", []string{"--shutdown-timeout", "-1s"}, "--shutdown-timeout"},
		{"unknown store", []string{"--store", "mysql"}, "--store"},
		{"pebble in a cluster", []string{"--store", "pebble", "--seeds", "127.0.0.1:7946"}, "embedded store"},
		{"gc min heap", []string{"--gc-min-heap", "-1"}, "--gc-min-heap"},
		{"sync procs", []string{"--sync-procs", "-2"}, "--sync-procs"},
		{"short secret", []string{"--jwt-secret", "short"}, "16 bytes"},
		{"compensation too long", []string{"--compensation-days", "8"}, "compensation days"},
		{"retention too short", []string{"--retention", "1h"}, "retention"},
		{"log level", []string{"--log-level", "loud"}, "log-level"},
		{"stray argument", []string{"serve"}, "unexpected arguments"},
		{"kick policy", []string{"--kick-policy", "lottery"}, "kick policy"},
		{"class limits syntax", []string{"--class-limits", "web"}, "class-limits"},
		{"class limits class", []string{"--class-limits", "fridge=2"}, "unknown platform class"},
		{"class limits zero", []string{"--class-limits", "web=0"}, "must be 1-1000"},
		{"badger tuning", []string{"--badger-tuning", "fast"}, "--badger-tuning"},
		{"badger check", []string{"--badger-check", "none"}, "--badger-check"},
		{"negative sends in flight", []string{"--max-node-sends", "-1"}, "--max-node-sends"},
		{"negative disk reserve", []string{"--disk-reserve", "-1"}, "--disk-reserve"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFlags(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseFlags(%v) err = %v, want mention of %q", tc.args, err, tc.want)
			}
		})
	}
	t.Setenv("TANDEM_HEARTBEAT_TIMEOUT", "soon")
	if _, err := ParseFlags(nil); err == nil || !strings.Contains(err.Error(), "TANDEM_HEARTBEAT_TIMEOUT") {
		t.Fatalf("a bad environment value must be named: %v", err)
	}
}

// testClusterKey is base64 of 32 bytes.
const testClusterKey = "dGFuZGVtLXRlc3QtY2x1c3Rlci1rZXktMzItYnl0ZXM="

func TestClusterDefaults(t *testing.T) {
	single := Config{}.withDefaults()
	if single.GossipAddr != "127.0.0.1:7946" || single.RemoteAddr != "127.0.0.1:7402" {
		t.Errorf("a single node binds gossip %s and remote %s, want loopback", single.GossipAddr, single.RemoteAddr)
	}
	multi := Config{Seeds: []string{"10.0.0.2:7946"}}.withDefaults()
	if multi.GossipAddr != ":7946" || multi.RemoteAddr != ":7402" {
		t.Errorf("a clustered node binds gossip %s and remote %s, want every interface", multi.GossipAddr, multi.RemoteAddr)
	}

	file := filepath.Join(t.TempDir(), "cluster-key")
	k2 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 16))
	if err := os.WriteFile(file, []byte(testClusterKey+","+k2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := ParseFlags([]string{"--seeds", "10.0.0.2:7946", "--unsafe-multi-node-badger", "--cluster-key-file", file,
		"--advertise-gossip", "10.0.0.1:7946", "--advertise-remote", "10.0.0.1", "--gossip-profile", "wan", "--cluster-name", "eu"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.clusterKeys()
	if err != nil || len(keys) != 2 || len(keys[0]) != 32 || len(keys[1]) != 16 {
		t.Fatalf("keyring from file: %d keys, %v", len(keys), err)
	}
	o := c.withDefaults().cluster(keys)
	if o.Name != "eu" || o.AdvertiseGossip != "10.0.0.1:7946" || o.AdvertiseRemote != "10.0.0.1" || o.GossipAddr != ":7946" ||
		o.Timings.ProbeInterval != cluster.WANTimings().ProbeInterval {
		t.Errorf("cluster options %+v", o)
	}
}

func TestSecretGeneratedOnceAndKept(t *testing.T) {
	dir := t.TempDir()
	a, err := secret("", dir, "admin-key")
	if err != nil || len(a) < 32 {
		t.Fatalf("generated %q, %v", a, err)
	}
	b, err := secret("", dir, "admin-key")
	if err != nil || b != a {
		t.Fatalf("second start read %q, want the stored %q", b, a)
	}
	if c, _ := secret("given", dir, "admin-key"); c != "given" {
		t.Fatalf("a configured secret must win, got %q", c)
	}
}

// TestReusePortFlag: --reuse-port reaches the config; off by default.
func TestReusePortFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{{nil, false}, {[]string{"--reuse-port"}, true}} {
		cfg, err := ParseFlags(c.args)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.ReusePort != c.want {
			t.Errorf("ParseFlags(%q).ReusePort = %v, want %v", c.args, cfg.ReusePort, c.want)
		}
	}
}

// --sync-procs: by default one P more with an embedded store, none with
// PostgreSQL; a value given is taken as it is.
func TestExtraProcs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{nil, 1},
		{[]string{"--store", "pebble"}, 1},
		{[]string{"--store", "postgres://h/db"}, 0},
		{[]string{"--sync-procs", "0"}, 0},
		{[]string{"--store", "postgres://h/db", "--sync-procs", "2"}, 2},
	} {
		cfg, err := ParseFlags(append(tc.args, "--data-dir", t.TempDir()))
		if err != nil {
			t.Fatalf("ParseFlags(%v): %v", tc.args, err)
		}
		if got := cfg.ExtraProcs(); got != tc.want {
			t.Errorf("%v: ExtraProcs() = %d, want %d", tc.args, got, tc.want)
		}
	}
}
