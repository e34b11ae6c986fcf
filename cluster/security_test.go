//go:build !race

package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/remote"
	"github.com/hashicorp/memberlist"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// startWith starts a member with edited options; cleanup stops it.
func startWith(t *testing.T, reg *registry, edit func(*Options)) *Member {
	t.Helper()
	m, err := tryStartMember(reg, edit)
	if err != nil {
		t.Fatalf("start member: %v", err)
	}
	cleanupMember(t, reg, m)
	return m
}

// stopAll stops ms gracefully, in parallel (cleanup would stop them one
// by one).
func stopAll(t *testing.T, ms ...*Member) {
	t.Helper()
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() {
			if err := m.Stop(true); err != nil {
				t.Errorf("stop %s: %v", m.Address(), err)
			}
		})
	}
	wg.Wait()
}

// crossRequest asks, from m, for an identity that other owns, and checks
// that other's activation answered: the request crossed the remote.
func crossRequest(t *testing.T, m, other *Member, prefix string) {
	t.Helper()
	for i := 0; ; i++ {
		id := fmt.Sprint(prefix, "-", i)
		if m.Owner(id, echoKind) != other.Address() {
			continue
		}
		addr, err := ask(m, id, 3*time.Second)
		if err != nil || addr != other.Address() {
			t.Fatalf("%s from %s: answered by %q, %v; want %s", id, m.Address(), addr, err, other.Address())
		}
		return
	}
}

// TestRefusedMembersChangeNothing: members with another cluster key,
// another cluster name or another JWT secret fail to start, saying why,
// and the cluster neither lists them nor places anything on them.
func TestRefusedMembersChangeNothing(t *testing.T) {
	reg := newRegistry()
	agree := map[string]string{"--jwt-secret": "the-cluster-secret"}
	a := startWith(t, reg, func(o *Options) { o.Agree = agree })
	b := startWith(t, reg, func(o *Options) { o.Agree = agree; o.Seeds = []string{a.GossipAddress()} })
	ms := []*Member{a, b}
	waitMembers(t, ms, 2)
	for _, m := range ms {
		if err := m.Ready(); err != nil {
			t.Fatalf("%s not ready: %v", m.Address(), err)
		}
	}
	all := ids("refuse", 100)
	before := askAll(t, ms, all)

	// Sample a's topology while strangers knock: it must never grow.
	var maxSeen atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if n := int64(len(a.lookup.view().addrs)); n > maxSeen.Load() {
				maxSeen.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})

	for _, tc := range []struct {
		name string
		edit func(*Options)
		want error
		hint string
	}{
		{"wrong key", func(o *Options) { o.Keys = [][]byte{key(9)} }, ErrRefused, "cluster key or cluster name"},
		{"wrong cluster name", func(o *Options) { o.Name = "elsewhere" }, ErrRefused, "cluster key or cluster name"},
		{"wrong JWT secret", func(o *Options) { o.Agree = map[string]string{"--jwt-secret": "another-secret"} }, ErrMismatch, "--jwt-secret differs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			begin := time.Now()
			m, err := tryStartMember(reg, func(o *Options) {
				o.Agree = agree
				o.Seeds = []string{b.GossipAddress()}
				tc.edit(o)
			})
			if err == nil {
				m.Stop(false)
				t.Fatal("started")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.hint) {
				t.Fatalf("start: %v; want %v mentioning %q", err, tc.want, tc.hint)
			}
			t.Logf("refused after %v: %v", time.Since(begin).Round(time.Millisecond), err)
		})
	}
	close(stop)
	wg.Wait()
	if n := maxSeen.Load(); n != 2 {
		t.Errorf("a's topology had %d members while strangers knocked, want 2", n)
	}
	waitFor(t, 5*time.Second, "memberlist back to 2", func() bool {
		return a.provider.ml.NumMembers() == 2 && b.provider.ml.NumMembers() == 2
	})
	after := askAll(t, ms, all)
	_, total, doubles := reg.snapshot()
	for _, id := range all {
		if after[id] != before[id] || total[id] != 1 {
			t.Errorf("%s: answered by %s, before by %s; activated %d times", id, after[id], before[id], total[id])
		}
	}
	if len(doubles) > 0 {
		t.Errorf("double activations: %v", doubles)
	}
	for _, m := range ms {
		if err := m.Ready(); err != nil {
			t.Errorf("%s no longer ready: %v", m.Address(), err)
		}
	}
	stopAll(t, ms...)
}

// TestUnreachableSeedsNotReady: a member whose seeds never answer runs
// alone but is not ready, and says why.
func TestUnreachableSeedsNotReady(t *testing.T) {
	dead, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	reg := newRegistry()
	m := startWith(t, reg, func(o *Options) { o.Seeds = []string{fmt.Sprint("127.0.0.1:", dead)} })
	err = m.Ready()
	if !errors.Is(err, ErrNotJoined) || !strings.Contains(err.Error(), "no seed reachable") {
		t.Fatalf("Ready = %v, want not joined: no seed reachable", err)
	}
	t.Logf("Ready: %v", err)

	// A peer started later with it as seed: both become ready.
	p := startMember(t, reg, m.GossipAddress())
	waitFor(t, 5*time.Second, "the lone member to become ready", func() bool { return m.Ready() == nil })
	if err := p.Ready(); err != nil {
		t.Fatalf("peer not ready: %v", err)
	}
	stopAll(t, m, p)
}

// TestRemoteMutualTLSAndRotation: requests cross members over mutual TLS
// at every step of a key rotation (add k2, make it primary, drop k1).
func TestRemoteMutualTLSAndRotation(t *testing.T) {
	k1, k2 := testKey, key(2)
	reg := newRegistry()
	begin := time.Now()
	a := startWith(t, reg, func(o *Options) { o.Keys = [][]byte{k1} })
	b := startWith(t, reg, func(o *Options) { o.Keys = [][]byte{k1, k2}; o.Seeds = []string{a.GossipAddress()} })
	waitMembers(t, []*Member{a, b}, 2)
	crossRequest(t, a, b, "step1")
	crossRequest(t, b, a, "step1")

	if err := a.Stop(true); err != nil {
		t.Fatal(err)
	}
	c := startWith(t, reg, func(o *Options) { o.Keys = [][]byte{k2, k1}; o.Seeds = []string{b.GossipAddress()} })
	waitMembers(t, []*Member{b, c}, 2)
	crossRequest(t, b, c, "step2")
	crossRequest(t, c, b, "step2")

	if err := b.Stop(true); err != nil {
		t.Fatal(err)
	}
	d := startWith(t, reg, func(o *Options) { o.Keys = [][]byte{k2}; o.Seeds = []string{c.GossipAddress()} })
	waitMembers(t, []*Member{c, d}, 2)
	crossRequest(t, c, d, "step3")
	crossRequest(t, d, c, "step3")
	t.Logf("rotation through 4 members took %v", time.Since(begin).Round(time.Millisecond))
	stopAll(t, c, d)
}

// TestRemoteRefusesStrangers: the actor remote refuses plaintext gRPC,
// TLS without a client certificate and certificates from another key; a
// client with the cluster's key material gets through (the probe works).
// Gossip without the key cannot join either.
func TestRemoteRefusesStrangers(t *testing.T) {
	reg := newRegistry()
	m := startMember(t, reg)
	ours := mustTLS(t, "tandem", testKey)
	noCert := ours.clientConfig()
	noCert.GetClientCertificate = nil
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
		ok    bool
	}{
		{"plaintext", insecure.NewCredentials(), false},
		{"TLS without a client certificate", credentials.NewTLS(noCert), false},
		{"certificate from another key", credentials.NewTLS(mustTLS(t, "tandem", key(7)).clientConfig()), false},
		{"certificate from the cluster key", credentials.NewTLS(ours.clientConfig()), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := connectRemote(m.Address(), tc.creds)
			if tc.ok != (err == nil) {
				t.Fatalf("connect: %v, want ok=%v", err, tc.ok)
			}
			t.Logf("connect: %v", err)
		})
	}

	t.Run("gossip without the key", func(t *testing.T) {
		mc := memberlist.DefaultLocalConfig()
		mc.Name, mc.BindAddr, mc.BindPort, mc.Label = "stranger", "127.0.0.1", 0, "tandem"
		mc.Logger = newMemberlistLogger(testLogger())
		ml, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		defer ml.Shutdown()
		if n, err := ml.Join([]string{m.GossipAddress()}); err == nil || n != 0 {
			t.Fatalf("joined %d without the key, err %v", n, err)
		}
		if n := m.provider.ml.NumMembers(); n != 1 {
			t.Fatalf("member sees %d memberlist nodes", n)
		}
	})
}

// connectRemote opens protoactor's remoting stream to addr and completes
// its connect exchange.
func connectRemote(addr string, creds credentials.TransportCredentials) error {
	conn, err := grpc.Dial(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	stream, err := remote.NewRemotingClient(conn).Receive(ctx)
	if err != nil {
		return err
	}
	err = stream.Send(&remote.RemoteMessage{MessageType: &remote.RemoteMessage_ConnectRequest{
		ConnectRequest: &remote.ConnectRequest{ConnectionType: &remote.ConnectRequest_ServerConnection{
			ServerConnection: &remote.ServerConnection{SystemId: "probe", Address: "127.0.0.1:1"},
		}},
	}})
	if err != nil {
		return err
	}
	msg, err := stream.Recv()
	if err != nil {
		return err
	}
	if msg.GetConnectResponse() == nil {
		return fmt.Errorf("answer %T", msg.MessageType)
	}
	return nil
}
