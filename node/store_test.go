package node

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tandem-im/tandem/persistence"
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

// TestBadgerTuningLatency: the latency preset opens a working store with
// the smaller memtables; the default keeps the store's own defaults.
func TestBadgerTuningLatency(t *testing.T) {
	if o := badgerOptions(Config{}); o.MemTableSize != 0 || o.NumLevelZeroTables != 0 {
		t.Fatalf("default tuning changed the store's defaults: %+v", o)
	}
	cfg := Config{DataDir: t.TempDir(), BadgerTuning: "latency"}.withDefaults()
	o := badgerOptions(cfg)
	if o.MemTableSize != 8<<20 || o.NumLevelZeroTables != 20 || o.BaseTableSize != 4<<20 {
		t.Fatalf("latency preset: %+v", o)
	}
	s, _, _, err := openStore(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, _, err := s.Activate(context.Background(), "u", "o")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	s.Append(persistence.AppendRequest{User: "u", Epoch: e,
		Entries: []persistence.Entry{{Seq: 1, TimeMS: time.Now().UnixMilli(), Data: []byte("x")}}}, func(err error) { done <- err })
	if err := <-done; err != nil {
		t.Fatalf("append with the latency preset: %v", err)
	}
}
