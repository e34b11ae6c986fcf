package cluster

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestParseKeys(t *testing.T) {
	k16 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 16))
	k24 := base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 24))
	k32 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{3}, 32))
	keys, err := ParseKeys(" " + k32 + ", " + k16 + "\n" + k24 + "," + k32 + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 || len(keys[0]) != 32 || len(keys[1]) != 16 || len(keys[2]) != 24 {
		t.Fatalf("keys %d, want primary 32 then 16, 24 bytes (duplicate dropped)", len(keys))
	}
	for _, tc := range []struct{ in, want string }{
		{"", "no key"},
		{" , ", "no key"},
		{"not-base64!", "key 1 is not base64"},
		{k32 + "," + base64.StdEncoding.EncodeToString([]byte("short")), "key 2: 5 bytes, want 16, 24 or 32"},
	} {
		if _, err := ParseKeys(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKeys(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
	if KeyID(key(1)) == KeyID(key(2)) || len(KeyID(key(1))) != 8 {
		t.Errorf("key IDs %s %s", KeyID(key(1)), KeyID(key(2)))
	}
}

// handshake runs a TLS 1.3 connection over loopback TCP from client to
// server and one byte back, and returns what either end saw wrong (with
// TLS 1.3 a refused client certificate shows on the client's first read).
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			serr <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		s := tls.Server(c, server)
		if err = s.Handshake(); err == nil {
			_, err = s.Write([]byte{1})
		}
		serr <- err
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	c := tls.Client(nc, client)
	if err = c.Handshake(); err == nil {
		_, err = io.ReadFull(c, make([]byte, 1))
	}
	nc.Close()
	return errors.Join(err, <-serr)
}

func mustTLS(t *testing.T, name string, keys ...[]byte) *remoteTLS {
	t.Helper()
	r, err := newRemoteTLS(keys, name, "member-"+name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRemoteMutualTLS(t *testing.T) {
	k1, k2 := key(1), key(2)
	for _, tc := range []struct {
		name           string
		server, client [][]byte
		serverName     string
		ok             bool
	}{
		{"same key", [][]byte{k1}, [][]byte{k1}, "", true},
		{"wrong key", [][]byte{k1}, [][]byte{k2}, "", false},
		{"other cluster name", [][]byte{k1}, [][]byte{k1}, "other", false},
		// Rotation, step by step: add k2 everywhere, make it primary
		// everywhere, drop k1. Neighbouring steps talk both ways.
		{"rotation 1: k1 / k1,k2", [][]byte{k1}, [][]byte{k1, k2}, "", true},
		{"rotation 1: k1,k2 / k1", [][]byte{k1, k2}, [][]byte{k1}, "", true},
		{"rotation 2: k1,k2 / k2,k1", [][]byte{k1, k2}, [][]byte{k2, k1}, "", true},
		{"rotation 2: k2,k1 / k1,k2", [][]byte{k2, k1}, [][]byte{k1, k2}, "", true},
		{"rotation 3: k2,k1 / k2", [][]byte{k2, k1}, [][]byte{k2}, "", true},
		{"rotation 3: k2 / k2,k1", [][]byte{k2}, [][]byte{k2, k1}, "", true},
		// Skipping a step does not work: the k1-only end cannot verify a
		// leaf signed with k2.
		{"skipped step: k1 / k2,k1", [][]byte{k1}, [][]byte{k2, k1}, "", false},
		{"skipped step: k2,k1 / k1", [][]byte{k2, k1}, [][]byte{k1}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustTLS(t, "tandem", tc.server...)
			c := mustTLS(t, cmpOr(tc.serverName, "tandem"), tc.client...)
			err := handshake(t, s.serverConfig(), c.clientConfig())
			if tc.ok && err != nil {
				t.Fatalf("handshake failed: %v", err)
			}
			if !tc.ok && err == nil {
				t.Fatal("handshake succeeded, want refused")
			}
			t.Logf("handshake: %v", err)
		})
	}

	s := mustTLS(t, "tandem", k1)
	t.Run("client without certificate", func(t *testing.T) {
		cfg := s.clientConfig()
		cfg.GetClientCertificate = nil
		if err := handshake(t, s.serverConfig(), cfg); err == nil {
			t.Fatal("a client without a certificate was accepted")
		}
	})
	t.Run("server outside the cluster", func(t *testing.T) {
		other := mustTLS(t, "tandem", k2).serverConfig()
		other.ClientAuth = tls.NoClientCert
		if err := handshake(t, other, s.clientConfig()); err == nil {
			t.Fatal("the client accepted a server whose certificate is not from a cluster key")
		}
	})
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestRemoteCADeterministic(t *testing.T) {
	a, err := deriveCA(key(1), "tandem")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := deriveCA(key(1), "tandem")
	c, _ := deriveCA(key(1), "other")
	if !bytes.Equal(a.cert.Raw, b.cert.Raw) {
		t.Error("the same key and name gave two CAs")
	}
	if bytes.Equal(a.cert.RawSubjectPublicKeyInfo, c.cert.RawSubjectPublicKeyInfo) {
		t.Error("another cluster name gave the same CA key")
	}
}

func TestRemoteLeafRenewed(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	r := mustTLS(t, "tandem", key(1))
	r.now = func() time.Time { return now }
	r.leaf = nil
	first, err := r.certificate()
	if err != nil {
		t.Fatal(err)
	}
	if first.Leaf.NotAfter.Sub(now) != leafLifetime || now.Sub(first.Leaf.NotBefore) != leafBackdate {
		t.Fatalf("leaf valid %v to %v", first.Leaf.NotBefore, first.Leaf.NotAfter)
	}
	now = now.Add(leafLifetime/2 - time.Minute)
	if again, _ := r.certificate(); again != first {
		t.Fatal("leaf replaced before half its lifetime")
	}
	now = now.Add(2 * time.Minute)
	renewed, err := r.certificate()
	if err != nil || renewed == first || !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Fatalf("leaf not renewed past half its lifetime: %v", err)
	}
}

func TestOptionsValidateSecurity(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string // "" = valid
	}{
		{"single node defaults", Options{}, ""},
		{"seeds need a key", Options{Seeds: []string{"10.0.0.2:7946"}}, "seeds given without a cluster key"},
		{"open remote needs a key", Options{RemoteAddr: ":7402"}, `remote address ":7402" is not loopback`},
		{"open gossip needs a key", Options{GossipAddr: "0.0.0.0:7946"}, `gossip address "0.0.0.0:7946" is not loopback`},
		{"keyed cluster", Options{RemoteAddr: ":7402", GossipAddr: ":7946", Seeds: []string{"10.0.0.2:7946"}, Keys: [][]byte{key(1)}}, ""},
		{"short key", Options{Keys: [][]byte{[]byte("short")}}, "key 1: 5 bytes"},
		{"unspecified advertise", Options{Keys: [][]byte{key(1)}, AdvertiseRemote: "0.0.0.0:7402"}, "cannot dial an unspecified host"},
		{"long name", Options{Name: strings.Repeat("x", 300)}, "at most 255"},
	} {
		err := tc.o.Validate()
		if tc.want == "" && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	d := Options{}.withDefaults()
	if d.RemoteAddr != "127.0.0.1:7402" || d.GossipAddr != "127.0.0.1:7946" {
		t.Errorf("defaults bind %s and %s, want loopback", d.RemoteAddr, d.GossipAddr)
	}
}

func TestCheckAdvertised(t *testing.T) {
	if err := checkAdvertised([]string{"127.0.0.1:7946"}, "127.0.0.1:7402"); err != nil {
		t.Errorf("all on loopback: %v", err)
	}
	if err := checkAdvertised([]string{"10.0.0.2:7946"}, "10.0.0.1:7402", "10.0.0.1:7946"); err != nil {
		t.Errorf("routable: %v", err)
	}
	if err := checkAdvertised([]string{"node2:7946"}, "10.0.0.1:7402", "127.0.0.1:7946"); err == nil || !strings.Contains(err.Error(), "127.0.0.1:7946") {
		t.Errorf("loopback advertised to another host: %v", err)
	}
	if a, err := gossipEndpoint(":7946", ""); err != nil || strings.HasPrefix(a, "0.0.0.0") || strings.HasPrefix(a, ":") {
		t.Errorf("wildcard gossip bind advertises %q, %v", a, err)
	}
	if a, _ := gossipEndpoint("10.0.0.1:7946", ""); a != "" {
		t.Errorf("specific gossip bind advertises %q, want the bound address", a)
	}
}

func TestFingerprintsDiffer(t *testing.T) {
	a := fingerprints("tandem", map[string]string{"--jwt-secret": "one"})
	b := fingerprints("tandem", map[string]string{"--jwt-secret": "two"})
	if d := differing(a, a); len(d) != 0 {
		t.Errorf("same settings differ: %v", d)
	}
	if d := differing(a, b); len(d) != 1 || d[0] != "--jwt-secret" {
		t.Errorf("differing = %v", d)
	}
	if d := differing(a, nil); len(d) != 1 {
		t.Errorf("a member without the setting: %v", d)
	}
	if strings.Contains(a["--jwt-secret"], "one") || len(a["--jwt-secret"]) != 16 {
		t.Errorf("fingerprint %q", a["--jwt-secret"])
	}
}
