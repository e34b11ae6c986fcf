package node

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/gateway"
	"github.com/tandem-im/tandem/internal/testtls"
)

// The client listener's flags (and their environment twins) reach the
// gateway's configuration; unset, they are the gateway's defaults.
func TestGatewayFlags(t *testing.T) {
	certs := testtls.New(t)
	cert, key := certs.WriteFiles(t, t.TempDir())
	t.Setenv("TANDEM_MAX_FRAME_RATE", "-1")
	c, err := ParseFlags([]string{"--ws-transport", "goroutine", "--tls-cert", cert, "--tls-key", key,
		"--write-queue-bytes", "65536", "--max-handshakes", "8", "--frame-timeout", "2s", "--max-session-sends", "7"})
	if err != nil {
		t.Fatal(err)
	}
	tc, err := c.tlsConfig()
	if err != nil || tc == nil || len(tc.Certificates) != 1 || tc.MinVersion < 0x0303 {
		t.Fatalf("TLS config %+v, %v; want the certificate and TLS 1.2 at least", tc, err)
	}
	g := c.gateway(tc)
	if g.Transport != gateway.TransportGoroutine || g.TLS != tc || g.WriteQueueBytes != 64<<10 || g.MaxFrameRate != -1 ||
		g.MaxHandshakes != 8 || g.FrameTimeout != 2*time.Second || g.MaxSessionSends != 7 || g.Addr != c.WSAddr {
		t.Fatalf("gateway config %+v does not carry the flags", g)
	}

	t.Setenv("TANDEM_MAX_FRAME_RATE", "") // restored at cleanup; unset for now
	if err := os.Unsetenv("TANDEM_MAX_FRAME_RATE"); err != nil {
		t.Fatal(err)
	}
	d, err := ParseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	g = d.gateway(nil)
	if g.Transport != "" || g.TLS != nil || g.WriteQueueBytes != gateway.DefaultWriteQueueBytes || g.MaxFrameRate != gateway.DefaultMaxFrameRate ||
		g.MaxHandshakes != gateway.DefaultMaxHandshakes || g.FrameTimeout != gateway.DefaultFrameTimeout {
		t.Fatalf("default gateway config %+v", g)
	}
	if err := g.Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
}

// Bad client listener flags are refused, naming the flag and, for TLS,
// the file at fault; Start refuses them the same way, in one line.
func TestGatewayFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	certs := testtls.New(t)
	cert, key := certs.WriteFiles(t, dir)
	other := testtls.New(t)
	otherKey := filepath.Join(dir, "other.key")
	garbage := filepath.Join(dir, "garbage.pem")
	for f, b := range map[string][]byte{otherKey: other.KeyPEM, garbage: []byte("not PEM at all\n")} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing.crt")

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"cert without key", []string{"--tls-cert", cert}, []string{"--tls-cert and --tls-key: give both or neither"}},
		{"key without cert", []string{"--tls-key", key}, []string{"give both or neither"}},
		{"missing cert file", []string{"--tls-cert", missing, "--tls-key", key}, []string{"--tls-cert", missing, "no such file"}},
		{"missing key file", []string{"--tls-cert", cert, "--tls-key", missing}, []string{"--tls-key", missing}},
		{"cert file not PEM", []string{"--tls-cert", garbage, "--tls-key", key}, []string{"--tls-cert " + garbage, "no PEM certificate"}},
		{"cert and key swapped", []string{"--tls-cert", key, "--tls-key", cert}, []string{"--tls-cert " + key, `"PRIVATE KEY"`}},
		{"key file not PEM", []string{"--tls-cert", cert, "--tls-key", garbage}, []string{"--tls-key " + garbage}},
		{"key of another certificate", []string{"--tls-cert", cert, "--tls-key", otherKey}, []string{"--tls-key " + otherKey, "does not match"}},
		{"unknown transport", []string{"--ws-transport", "kqueue"}, []string{`--ws-transport "kqueue"`}},
		{"epoll with TLS", []string{"--ws-transport", "epoll", "--tls-cert", cert, "--tls-key", key}, []string{"--ws-transport epoll cannot serve TLS"}},
		{"negative write queue bytes", []string{"--write-queue-bytes", "-1"}, []string{"--write-queue-bytes"}},
		{"negative max handshakes", []string{"--max-handshakes", "-1"}, []string{"--max-handshakes"}},
		{"negative frame timeout", []string{"--frame-timeout", "-1s"}, []string{"--frame-timeout"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFlags(tc.args)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("ParseFlags(%v) err = %v, want mention of %q", tc.args, err, w)
				}
			}
		})
	}

	// A certificate outside its validity (the test one lasts an hour).
	if err := checkCertPEM(certs.CertPEM, time.Now().Add(2*time.Hour)); err == nil || !strings.Contains(err.Error(), "not now") {
		t.Errorf("an expired certificate: %v, want it refused", err)
	}
	if err := checkCertPEM(certs.CertPEM, time.Now()); err != nil {
		t.Errorf("a valid certificate: %v", err)
	}

	// Start: a StartError, before anything is opened.
	cfg := Config{DataDir: dir, WSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", RemoteAddr: "127.0.0.1:0",
		TLSCert: garbage, TLSKey: key}
	n, err := Start(context.Background(), cfg, nil)
	if err == nil {
		n.Stop()
		t.Fatal("a node started with a certificate file that holds no certificate")
	}
	if _, ok := errors.AsType[*StartError](err); !ok || !strings.Contains(err.Error(), garbage) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Start: %T %q, want a one-line *StartError naming %s", err, err, garbage)
	}
}
