package client

import (
	"crypto/tls"
	"errors"
	"testing"

	"github.com/tandem-im/tandem/internal/testtls"
)

// With Options.TLSConfig trusting the server's CA, the client logs in,
// sends and receives over wss://, and reconnects over wss:// after a
// drop; without it, the dial fails on the certificate.
func TestDialTLS(t *testing.T) {
	srv := newFakeServer(t)
	certs := testtls.New(t)
	url := srv.addTLSEndpoint(certs.Server())
	ctx := testCtx(t)

	a := dial(t, srv, "alice", "a1", nil, func(o *Options) {
		o.URL, o.TLSConfig, o.Reconnect = url, certs.Client(), true
	})
	b := dial(t, srv, "bob", "b1", nil, func(o *Options) { o.URL, o.TLSConfig = url, certs.Client() })
	if err := b.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	m := text("bob", "over tls")
	ack, err := a.Send(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	e, err := b.WaitEntry(ctx, byClientMessageID(m.GetClientMessageId()))
	if err != nil {
		t.Fatal(err)
	}
	if e.GetMessage().GetMessageId() != ack.GetMessageId() || string(e.GetMessage().GetContent()) != "over tls" {
		t.Fatalf("bob got %v", e)
	}
	for _, ss := range srv.live("alice") {
		if _, ok := ss.nc.(*tls.Conn); !ok {
			t.Fatalf("alice's session is on a %T, want *tls.Conn", ss.nc)
		}
	}

	// A drop: the reconnect dials wss:// with the same config.
	srv.live("alice")[0].drop()
	eventually(t, "the reconnect", func() bool { return a.Stats().Reconnects == 1 && a.Connected() })
	if _, err := a.Send(ctx, text("bob", "again")); err != nil {
		t.Fatalf("send after the reconnect: %v", err)
	}

	// No TLSConfig: the system's roots do not know the test CA.
	_, err = Dial(ctx, Options{URL: url, Token: "tok-carol", DeviceID: "c1"})
	if !errors.As(err, new(*tls.CertificateVerificationError)) {
		t.Fatalf("dial without the CA: %v, want a certificate verification error", err)
	}
}
