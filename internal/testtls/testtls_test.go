package testtls

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
)

// The server certificate verifies against Roots for the loopback names,
// and against the system's roots not at all.
func TestCertsVerify(t *testing.T) {
	c := New(t)
	block, _ := pem.Decode(c.CertPEM)
	if block == nil {
		t.Fatal("CertPEM holds no PEM block")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: c.Roots}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: c.Roots}); err == nil {
		t.Error("verified for a name it was not made for")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: x509.NewCertPool()}); err == nil {
		t.Error("verified without the CA")
	}
}
