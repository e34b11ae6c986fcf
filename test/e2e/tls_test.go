//go:build !race

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/client"
	"github.com/tandem-im/tandem/internal/testtls"
	"github.com/tandem-im/tandem/node"
	"github.com/tandem-im/tandem/proto/wire"
)

// TestTLS starts a real node with --tls-cert/--tls-key made from a
// throwaway CA: Go clients that trust the CA log in over wss:// and
// exchange a message; a client that does not trust it fails its
// handshake, and a plain ws:// client is refused with 400; both are
// counted in the node's metrics.
func TestTLS(t *testing.T) {
	certs := testtls.New(t)
	dir := t.TempDir()
	cert, key := certs.WriteFiles(t, t.TempDir())
	n := startNodeWith(t, dir, func(c *node.Config) { c.TLSCert, c.TLSKey = cert, key })
	wss := "wss://" + n.WSAddr() + "/ws"

	dialTLS := func(user, device string, tc *tls.Config) (*client.Client, error) {
		return client.Dial(ctxT(t, 15*time.Second), client.Options{
			URL: wss, TLSConfig: tc, Token: token(t, n.apiURL(), user), DeviceID: device, Platform: "ios",
		})
	}
	alice, err := dialTLS("alice", "phone", certs.Client())
	if err != nil {
		t.Fatalf("alice over wss://: %v", err)
	}
	defer alice.Close()
	bob, err := dialTLS("bob", "phone", certs.Client())
	if err != nil {
		t.Fatalf("bob over wss://: %v", err)
	}
	defer bob.Close()
	if err := bob.WaitCaughtUp(ctxT(t, 15*time.Second)); err != nil {
		t.Fatal(err)
	}
	ack, err := alice.Send(ctxT(t, 15*time.Second), text("bob", "tls-1", "over wss"))
	if err != nil {
		t.Fatalf("send over wss://: %v", err)
	}
	e, err := bob.WaitEntry(ctxT(t, 15*time.Second), func(e *wire.Entry) bool {
		return e.GetMessage().GetMessageId() == ack.GetMessageId()
	})
	if err != nil {
		t.Fatalf("bob waiting for alice's message: %v", err)
	}
	if string(e.GetMessage().GetContent()) != "over wss" || e.GetMessage().GetSender() != "alice" {
		t.Fatalf("bob got %v", e)
	}

	// A client that does not trust the certificate: the system's roots,
	// then another CA.
	for i, tc := range []*tls.Config{nil, testtls.New(t).Client()} {
		c, err := dialTLS("carol", "phone"+strconv.Itoa(i), tc)
		if err == nil {
			c.Close()
			t.Fatalf("untrusting client %d logged in", i)
		}
		if !errors.As(err, new(*tls.CertificateVerificationError)) {
			t.Fatalf("untrusting client %d: %v, want a certificate verification error", i, err)
		}
	}
	// A plain ws:// client on the TLS port.
	nc, _, _, err := ws.Dialer{Protocols: []string{"tandem.v1"}, Timeout: 5 * time.Second}.Dial(context.Background(), "ws://"+n.WSAddr()+"/ws")
	if err == nil {
		nc.Close()
		t.Fatal("a plain ws:// client was upgraded on the TLS port")
	}
	if se, ok := errors.AsType[ws.StatusError](err); !ok || se != 400 {
		t.Fatalf("plain ws:// client: %v, want HTTP 400", err)
	}
	waitMetric(t, n, "tandem_gateway_handshake_failures_total", 3)
}

// TestFrameRate runs a node with --max-frame-rate 10: a client that floods
// it gets RATE_LIMITED for what is over the rate, the rest answered, and
// its connection serves on; the refusals show in the metrics.
func TestFrameRate(t *testing.T) {
	const rate = 10
	n := startNodeWith(t, t.TempDir(), func(c *node.Config) { c.MaxFrameRate = rate })
	c := rawDial(t, n.wsURL())
	start := time.Now()
	if f := c.login(token(t, n.apiURL(), "dora"), "phone", 1); f.GetLoginOk() == nil {
		t.Fatalf("login: %v", f)
	}
	const flood = 40
	var buf bytes.Buffer
	for i := range uint64(flood) {
		b, err := proto.Marshal(&wire.Frame{Id: 100 + i, Body: &wire.Frame_Sync{Sync: &wire.SyncRequest{Limit: 1}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := wsutil.WriteClientMessage(&buf, ws.OpBinary, b); err != nil {
			t.Fatal(err)
		}
	}
	c.writeRaw(buf.Bytes()) // one write: the gateway reads the flood at once

	var pages, limited int
	var wait uint32
	for pages+limited < flood {
		f, code := c.readReply()
		switch {
		case f == nil:
			t.Fatalf("closed with %d after %d pages and %d refusals", code, pages, limited)
		case f.GetSyncPage() != nil:
			pages++
		case f.GetError().GetName() == "RATE_LIMITED":
			limited++
			if wait = f.GetError().GetRetryAfterMs(); wait < 1 || wait > 1000/rate || !f.GetError().GetTemporary() {
				t.Fatalf("RATE_LIMITED %v: want temporary, retry_after_ms 1-%d", f.GetError(), 1000/rate)
			}
		default:
			t.Fatalf("unexpected reply %v", f)
		}
	}
	// Login took a token; a few more refill while the flood is read.
	if most := rate - 1 + int(time.Since(start)/(time.Second/rate)) + 1; pages < rate-1 || pages > most {
		t.Fatalf("%d of %d flood frames answered at %d/s, want %d to %d", pages, flood, rate, rate-1, most)
	}
	time.Sleep(time.Duration(wait) * time.Millisecond)
	c.ping(500)
	waitMetric(t, n, "tandem_gateway_frames_rate_limited_total", limited)
}

// writeRaw writes bytes as they are.
func (c *rawConn) writeRaw(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// waitMetric waits until the node's /metrics shows name at want.
func waitMetric(t *testing.T, n *testNode, name string, want int) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + name + ` (\d+)$`)
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for {
		resp, err := http.Get(n.apiURL() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if m := re.FindSubmatch(body); m != nil {
			if last = string(m[1]); last == fmt.Sprint(want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q, want %d", name, last, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
