package cluster

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Cluster keys authenticate everything between members. One secret, given
// to every node, does two jobs:
//
//   - memberlist encrypts and authenticates gossip with it (AES-GCM, the
//     cluster name as associated data);
//   - the actor remote (gRPC) runs over mutual TLS with certificates derived
//     from it: each key yields a deterministic ed25519 CA (HKDF over the key
//     and the cluster name), every member issues itself a short-lived leaf
//     signed by the CA of its primary key, and both ends require the other's
//     leaf to chain to the CA of one of their keys.
//
// The first key is the primary: it encrypts gossip and signs this member's
// leaf. Every key is accepted for decryption and verification, which is
// what makes rotation possible (see docs/cluster-security.md).

// remoteServerName is the name in every member's leaf certificate and the
// name clients verify: the CA, not the address, says who is a member.
const remoteServerName = "remote.tandem.cluster"

// Leaf certificates live leafLifetime and are replaced once less than half
// of it remains; leafBackdate absorbs clock skew between members.
const (
	leafLifetime = 48 * time.Hour
	leafBackdate = time.Hour
)

// ParseKeys parses cluster keys: base64 (standard alphabet, padding
// optional) of 16, 24 or 32 random bytes, separated by commas or
// whitespace, the primary first. Duplicates are dropped.
func ParseKeys(s string) ([][]byte, error) {
	var keys [][]byte
	var errs []error
	for i, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' || r == ' ' || r == '\t' }) {
		k, err := base64.StdEncoding.DecodeString(f)
		if err != nil {
			k, err = base64.RawStdEncoding.DecodeString(f)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster: key %d is not base64", i+1))
			continue
		}
		if err := validKey(k); err != nil {
			errs = append(errs, fmt.Errorf("cluster: key %d: %w", i+1, err))
			continue
		}
		if !slices.ContainsFunc(keys, func(o []byte) bool { return string(o) == string(k) }) {
			keys = append(keys, k)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("cluster: no key given")
	}
	return keys, nil
}

func validKey(k []byte) error {
	switch len(k) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("%d bytes, want 16, 24 or 32 (e.g. head -c32 /dev/urandom | base64)", len(k))
}

// KeyID returns a short, public name of key for logs: the first 4 bytes of
// its SHA-256, in hex. It says which key is in use without revealing it.
func KeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("tandem cluster key id\x00"), key...))
	return hex.EncodeToString(sum[:4])
}

// remoteCA is the certificate authority one cluster key yields.
type remoteCA struct {
	cert *x509.Certificate
	key  ed25519.PrivateKey
}

// deriveCA derives the CA of key for the cluster called name. It is the
// same on every member: the key pair comes from HKDF, and ed25519
// signatures are deterministic.
func deriveCA(key []byte, name string) (remoteCA, error) {
	seed, err := hkdf.Key(sha256.New, key, nil, "tandem remote CA v1\x00"+name, ed25519.SeedSize)
	if err != nil {
		return remoteCA{}, fmt.Errorf("cluster: derive remote CA: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	ski := sha256.Sum256(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).SetBytes(ski[:8]),
		Subject:               pkix.Name{Organization: []string{"tandem"}, CommonName: "tandem cluster CA " + hex.EncodeToString(ski[:4])},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski[:20],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return remoteCA{}, fmt.Errorf("cluster: create remote CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return remoteCA{}, fmt.Errorf("cluster: parse remote CA: %w", err)
	}
	return remoteCA{cert: cert, key: priv}, nil
}

// issue returns a fresh leaf certificate for this member, valid from
// now-leafBackdate for leafLifetime, for both ends of a TLS connection.
func (ca remoteCA) issue(now time.Time, member string) (*tls.Certificate, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cluster: generate remote key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("cluster: certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"tandem"}, CommonName: member},
		DNSNames:     []string{remoteServerName},
		NotBefore:    now.Add(-leafBackdate),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("cluster: issue remote certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("cluster: parse remote certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, nil
}

// remoteTLS holds the TLS material of one member: the CAs of all its keys
// (accepted) and a leaf from the primary's CA (presented), renewed before
// it expires. Its methods may be called concurrently.
type remoteTLS struct {
	signer remoteCA
	pool   *x509.CertPool
	member string
	now    func() time.Time

	mu   sync.Mutex
	leaf *tls.Certificate
}

// newRemoteTLS derives the CAs of keys (primary first) for the cluster
// called name and issues the first leaf; member names it in the leaf.
func newRemoteTLS(keys [][]byte, name, member string) (*remoteTLS, error) {
	if len(keys) == 0 {
		return nil, errors.New("cluster: no cluster key for the remote")
	}
	pool := x509.NewCertPool()
	var signer remoteCA
	for i, k := range keys {
		ca, err := deriveCA(k, name)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			signer = ca
		}
		pool.AddCert(ca.cert)
	}
	t := &remoteTLS{signer: signer, pool: pool, member: member, now: time.Now}
	if _, err := t.certificate(); err != nil {
		return nil, err
	}
	return t, nil
}

// certificate returns the current leaf, issuing a new one when less than
// half of its lifetime remains.
func (t *remoteTLS) certificate() (*tls.Certificate, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if t.leaf != nil && t.leaf.Leaf.NotAfter.Sub(now) > leafLifetime/2 {
		return t.leaf, nil
	}
	leaf, err := t.signer.issue(now, t.member)
	if err != nil {
		if t.leaf != nil && now.Before(t.leaf.Leaf.NotAfter) {
			return t.leaf, nil // keep the still valid one; try again next handshake
		}
		return nil, err
	}
	t.leaf = leaf
	return leaf, nil
}

func (t *remoteTLS) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      t.pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return t.certificate() },
	}
}

func (t *remoteTLS) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              t.pool,
		ServerName:           remoteServerName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return t.certificate() },
	}
}

// remoteOptions returns the gRPC server and dial options of the actor
// remote: mutual TLS when keys are given, plaintext otherwise (then the
// remote must listen on loopback; Options.Validate enforces it).
func remoteOptions(keys [][]byte, name, member string) ([]grpc.ServerOption, []grpc.DialOption, error) {
	server := []grpc.ServerOption{grpc.MaxRecvMsgSize(MaxMessageSize)}
	if len(keys) == 0 {
		return server, []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	t, err := newRemoteTLS(keys, name, member)
	if err != nil {
		return nil, nil, err
	}
	server = append(server, grpc.Creds(credentials.NewTLS(t.serverConfig())))
	return server, []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(t.clientConfig()))}, nil
}

// isLoopback reports whether host (an IP literal or "localhost") only
// reaches this machine. An empty or unspecified host listens everywhere.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
