package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tandem-im/tandem/internal/testtls"
	"github.com/tandem-im/tandem/proto/wire"
)

// dialTLS opens a wss:// connection with a real TLS client.
func dialTLS(srv *Server, tc *tls.Config, protocols ...string) (*client, error) {
	d := ws.Dialer{Protocols: protocols, Timeout: 5 * time.Second, TLSConfig: tc}
	conn, br, hs, err := d.Dial(context.Background(), "wss://"+srv.Addr().String()+"/ws")
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, r: conn, proto: hs.Protocol}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	return c, nil
}

// Over wss://, a session works as over ws://: login, Ping, frames both
// ways (a batch of small ones and one of several TLS records), Logout and
// its close.
func TestTLSSession(t *testing.T) {
	t.Parallel()
	certs := testtls.New(t)
	h := newFakeHandler()
	srv := startServer(t, Config{TLS: certs.Server(), Transport: TransportGoroutine}, h)
	for _, proto := range []string{SubprotocolProto, SubprotocolJSON} {
		t.Run(proto, func(t *testing.T) {
			c, err := dialTLS(srv, certs.Client(), proto)
			if err != nil {
				t.Fatalf("wss dial: %v", err)
			}
			c.t = t
			defer c.conn.Close()
			if st := c.conn.(*tls.Conn).ConnectionState(); !st.HandshakeComplete || st.Version < tls.VersionTLS12 {
				t.Fatalf("TLS state: complete %v, version %x", st.HandshakeComplete, st.Version)
			}
			login := c.login(1, "tess")
			id := sessionOf(t, srv, login.GetLoginOk().GetLoginId())

			c.send(pingFrame(2))
			if f := c.read(); f.GetPong() == nil || f.Id != 2 {
				t.Fatalf("got %v, want Pong 2", f)
			}
			c.send(syncFrame(3))
			h.waitFor(t, "the Sync handed on", func() bool {
				return len(h.frames) > 0 && h.frames[len(h.frames)-1].Id == 3
			})

			small := make([]*wire.Frame, 50)
			for i := range small {
				small[i] = ackFrame(uint64(i + 1))
			}
			big := &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Transient: []*wire.Message{{Content: bytes.Repeat([]byte("x"), 100<<10)}}}}}
			if !srv.Deliver(id, append(small, big)) {
				t.Fatal("Deliver refused")
			}
			for i := range small {
				if f := c.read(); f.GetSendAck().GetSeq() != uint64(i+1) {
					t.Fatalf("frame %d: %v, want SendAck seq %d", i, f, i+1)
				}
			}
			if f := c.read(); len(f.GetPush().GetTransient()) != 1 || len(f.GetPush().GetTransient()[0].GetContent()) != 100<<10 {
				t.Fatalf("the 100 KiB Push did not arrive whole")
			}

			c.send(&wire.Frame{Id: 9, Body: &wire.Frame_Logout{Logout: &wire.Logout{}}})
			code, frames := c.readClose()
			if code != ws.StatusNormalClosure || len(frames) != 1 || frames[0].GetOk() == nil {
				t.Fatalf("logout: close %d after %v, want Ok then 1000", code, frames)
			}
		})
	}
	waitSessions(t, srv, 0)
}

// sessionOf finds the session whose LoginOk carried loginID (the fake
// handler names logins after their session).
func sessionOf(t *testing.T, srv *Server, loginID string) uint64 {
	t.Helper()
	srv.mu.RLock()
	defer srv.mu.RUnlock()
	for id := range srv.sessions {
		if loginID == "login-"+strconv.FormatUint(id, 10) {
			return id
		}
	}
	t.Fatalf("no session for login %q", loginID)
	return 0
}

// Clients that cannot complete the TLS handshake are refused and each is
// counted as a handshake failure: one that does not trust the
// certificate, a plain ws:// client (it gets a 400 that says to use
// wss://), garbage, and one that says nothing (dropped at
// HandshakeTimeout). The server goes on serving.
func TestTLSHandshakeFailures(t *testing.T) {
	t.Parallel()
	certs := testtls.New(t)
	// Long enough for a TLS handshake under the race detector on a busy
	// machine, short enough to wait out once.
	const timeout = 1500 * time.Millisecond
	srv := startServer(t, Config{TLS: certs.Server(), Transport: TransportGoroutine, HandshakeTimeout: timeout}, newFakeHandler())
	failures := func(n uint64) {
		t.Helper()
		waitStat(t, "handshake failures counted", func() bool { return srv.Stats().HandshakeFailures == n })
	}

	// Not trusting the certificate: the client fails verification.
	if c, err := dialTLS(srv, &tls.Config{RootCAs: testtls.New(t).Roots}); err == nil {
		c.conn.Close()
		t.Fatal("a client trusting another CA completed the handshake")
	} else if !errors.As(err, new(*tls.CertificateVerificationError)) {
		t.Fatalf("untrusted dial: %v, want a certificate verification error", err)
	}
	failures(1)

	// A plain WebSocket client on the TLS port.
	if c, err := tryDial(srv, "/ws"); err == nil {
		c.conn.Close()
		t.Fatal("a plain ws:// client was upgraded on the TLS port")
	} else if se, ok := errors.AsType[ws.StatusError](err); !ok || se != 400 {
		t.Fatalf("plain dial: %v, want HTTP status 400", err)
	}
	failures(2)
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := io.WriteString(nc, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, err := io.ReadAll(nc)
	if err != nil || !strings.HasPrefix(string(answer), "HTTP/1.1 400 ") || !strings.Contains(string(answer), "wss://") {
		t.Fatalf("plain HTTP on the TLS port: %q, %v; want a 400 that says wss://", answer, err)
	}
	failures(3)

	// Garbage: the handshake fails and the connection ends.
	gc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	if _, err := gc.Write(bytes.Repeat([]byte{0x16, 0xff, 0x00}, 100)); err != nil {
		t.Fatal(err)
	}
	gc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, gc); err != nil {
		t.Fatalf("garbage: the server did not hang up: %v", err)
	}
	failures(4)

	// Silence: the TLS handshake is bounded by HandshakeTimeout.
	sc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	start := time.Now()
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, sc); err != nil {
		t.Fatalf("silent client: the server did not hang up: %v", err)
	}
	if d := time.Since(start); d < timeout/2 || d > timeout+4*time.Second {
		t.Fatalf("silent client dropped after %v, want about %v", d, timeout)
	}
	failures(5)

	// Meanwhile the server serves a client that trusts it.
	c, err := dialTLS(srv, certs.Client())
	if err != nil {
		t.Fatalf("trusted client after the failures: %v", err)
	}
	c.t = t
	defer c.conn.Close()
	c.login(1, "uma")
	if st := srv.Stats(); st.Upgraded != 1 || st.HandshakeFailures != 5 {
		t.Fatalf("upgraded %d, handshake failures %d; want 1, 5", st.Upgraded, st.HandshakeFailures)
	}
}

// Shutdown reaches wss:// sessions too: Kick{SHUTDOWN} and 4015.
func TestTLSShutdown(t *testing.T) {
	t.Parallel()
	certs := testtls.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := newFakeHandler()
	srv := New(Config{TLS: certs.Server(), Transport: TransportGoroutine}, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	waitServing(t, srv)
	c, err := dialTLS(srv, certs.Client())
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	defer c.conn.Close()
	c.login(1, "vic")
	cancel()
	code, frames := c.readClose()
	if code != wire.CloseShutdown || len(frames) != 1 || frames[0].GetKick().GetReason() != wire.Kick_SHUTDOWN {
		t.Fatalf("close %d after %v, want Kick SHUTDOWN then %d", code, frames, wire.CloseShutdown)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestTLSConfigRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no certificate", Config{TLS: &tls.Config{}}, "no certificate"},
		{"epoll", Config{TLS: testtls.New(t).Server(), Transport: TransportEpoll}, "cannot serve TLS"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want mention of %q", tc.name, err, tc.want)
		}
	}
	if c := (Config{TLS: testtls.New(t).Server()}).withDefaults(); c.Transport != TransportGoroutine {
		t.Errorf("with TLS the default transport is %q, want %q", c.Transport, TransportGoroutine)
	}
}
