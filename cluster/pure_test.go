package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hashicorp/memberlist"
)

func TestMemberlistLogLevels(t *testing.T) {
	var buf bytes.Buffer
	l := newMemberlistLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for _, line := range []string{
		"[DEBUG] memberlist: Stream connection from=127.0.0.1:1",
		"[INFO] memberlist: Suspect n1 has failed",
		"[WARN] memberlist: Was able to connect to n2 over TCP",
		"[ERR] memberlist: Failed to send ping",
		"no prefix at all",
	} {
		l.Println(line)
	}
	got := buf.String()
	for _, want := range []string{
		`level=DEBUG msg="Stream connection from=127.0.0.1:1" lib=memberlist`,
		`level=INFO msg="Suspect n1 has failed"`,
		`level=WARN msg="Was able to connect to n2 over TCP"`,
		`level=WARN msg="Failed to send ping"`,
		`level=INFO msg="no prefix at all"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %s\n%s", want, got)
		}
	}
}

func TestMemberlistLogFiltered(t *testing.T) {
	var buf bytes.Buffer
	l := newMemberlistLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	l.Println("[DEBUG] memberlist: noise")
	l.Println("[INFO] memberlist: noise")
	if buf.Len() != 0 {
		t.Errorf("below-level lines logged: %s", buf.String())
	}
}

func TestLoggerFactoryLowersInfo(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sys := actor.NewActorSystem(actor.WithLoggerFactory(LoggerFactory(base)))
	buf.Reset() // "actor system started" went to Debug: dropped
	l := sys.Logger()
	l.Info("routine")
	l.Warn("trouble", "k", 1)
	got := buf.String()
	if strings.Contains(got, "routine") {
		t.Errorf("protoactor Info passed at Info level: %s", got)
	}
	if !strings.Contains(got, "level=WARN msg=trouble lib=protoactor system="+sys.ID+" k=1") {
		t.Errorf("warning missing or unlabelled: %s", got)
	}
	if !l.Enabled(context.Background(), slog.LevelWarn) || l.Enabled(context.Background(), slog.LevelInfo) {
		t.Error("Enabled does not follow the lowered level")
	}
}

func TestMetaRoundTripAndLimit(t *testing.T) {
	m := nodeMeta{ID: "aBcD1234", Host: "10.1.2.3", Port: 7402, Kinds: []string{"group", "prototopic", "user"}}
	b, err := encodeMeta(m, memberlist.MetaMaxSize)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeMeta(b)
	if err != nil || got.ID != m.ID || got.Host != m.Host || got.Port != m.Port || len(got.Kinds) != 3 {
		t.Fatalf("round trip: %+v, %v", got, err)
	}

	// Blocked IDs are dropped until the meta fits.
	for i := range 40 {
		m.Blocked = append(m.Blocked, fmt.Sprintf("blocked-member-%02d-xxxxxxxx", i))
	}
	b, err = encodeMeta(m, memberlist.MetaMaxSize)
	if err != nil || len(b) > memberlist.MetaMaxSize {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
	if err := json.Unmarshal(b, &got); err != nil || len(got.Blocked) == 0 || got.Blocked[0] != m.Blocked[0] {
		t.Fatalf("trimmed meta %s: %v", b, err)
	}

	m.Blocked = nil
	m.Kinds = []string{strings.Repeat("k", 600)}
	if _, err := encodeMeta(m, memberlist.MetaMaxSize); err == nil {
		t.Error("oversized kinds accepted")
	}
	for _, bad := range []string{`{}`, `{"id":"x","host":"h","port":0}`, `not json`} {
		if _, err := decodeMeta([]byte(bad)); err == nil {
			t.Errorf("decodeMeta(%s) accepted", bad)
		}
	}
}

func TestRemoteEndpoint(t *testing.T) {
	host, port, adv, err := remoteEndpoint("127.0.0.1:0", "")
	if err != nil || host != "127.0.0.1" || port != 0 || adv != "" {
		t.Errorf("specific host: %q %d %q %v; protoactor advertises the bound address itself", host, port, adv, err)
	}
	host, port, adv, err = remoteEndpoint("127.0.0.1:7402", "10.0.0.5")
	if err != nil || port != 7402 || adv != "10.0.0.5:7402" {
		t.Errorf("advertise host only: %q %d %q %v", host, port, adv, err)
	}
	_, _, adv, err = remoteEndpoint("0.0.0.0:7402", "lb.example:9000")
	if err != nil || adv != "lb.example:9000" {
		t.Errorf("advertise host:port: %q %v", adv, err)
	}
	host, port, adv, err = remoteEndpoint(":0", "")
	if err != nil || host != "" || port == 0 {
		t.Fatalf("unspecified, port 0: %q %d %q %v", host, port, adv, err)
	}
	ah, ap, err := net.SplitHostPort(adv)
	if err != nil || ap != fmt.Sprint(port) || net.ParseIP(ah).IsUnspecified() {
		t.Errorf("unspecified host advertised as %q (port %d)", adv, port)
	}
	if _, _, _, err := remoteEndpoint("nope", ""); err == nil {
		t.Error("bad address accepted")
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{}).Validate(); err != nil {
		t.Errorf("zero options: %v", err)
	}
	err := Options{RemoteAddr: "x", GossipAddr: "y:z", Seeds: []string{""}, RequestTimeout: -time.Second}.Validate()
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"remote address", "gossip address", "empty seed", "negative request timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestBackoff(t *testing.T) {
	for a := range 20 {
		d := backoff(a)
		if d < time.Millisecond || d > 100*time.Millisecond {
			t.Fatalf("backoff(%d) = %v", a, d)
		}
	}
	if backoff(0) > 2*time.Millisecond {
		t.Errorf("first retry waits %v", backoff(0))
	}
}
