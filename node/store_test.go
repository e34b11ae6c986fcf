package node

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// An unreachable PostgreSQL fails the start at once with a message that
// says so (and hides the password), never a half-working node.
func TestStartUnreachablePostgres(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := Config{
		DataDir: t.TempDir(), WSAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", RemoteAddr: "127.0.0.1:0",
		Store: "postgres://tandem:s3cret@" + addr + "/tandem?sslmode=disable&connect_timeout=2",
	}
	start := time.Now()
	n, err := Start(context.Background(), cfg, nil)
	if err == nil {
		n.Stop()
		t.Fatal("a node started on an unreachable PostgreSQL")
	}
	if !strings.Contains(err.Error(), "PostgreSQL") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error %q: want one that names PostgreSQL and hides the password", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the start took %v to fail", d)
	}
	t.Logf("refused in %v: %v", time.Since(start).Round(time.Millisecond), err)
}
