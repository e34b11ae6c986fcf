package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/wire"
)

// TestActorsRefused: scenarios the kick policy cannot hold and impossible
// numbers are refused with their reason, with exit status 2 and before
// anything starts (the data dir stays empty).
func TestActorsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-devices", "2", "-platforms", "android,ios"}, "kick policy allows 1"},
		{[]string{"-devices", "2", "-platforms", "android,ios,linux"}, "user 0 would log in 2 mobile devices (android, ios)"},
		{[]string{"-devices", "11", "-platforms", "web"}, "allows 10"},
		{[]string{"-platforms", "toaster"}, `"toaster" unknown`},
		{[]string{"-users", "-5"}, "must be positive"},
		{[]string{"-concurrency", "-1"}, "must be positive"},
		{[]string{"-msg-rate", "1", "-users", "1"}, "at least 2 users"},
		{[]string{"-msg-rate", "-1"}, "must not be negative"},
		{[]string{"-scenario", "stampede"}, `-scenario "stampede"`},
		{[]string{"-users", "100000000", "-msg-rate", "10", "-duration", "1h"}, "fit the ack ledger"},
		{[]string{"-users", "2000000000", "-devices", "2"}, "more than this tool counts"},
	} {
		cfg, err := parseActorsFlags(tc.args)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		err = cfg.Validate(16 << 30)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
		dir := t.TempDir()
		if code := actorsMain(context.Background(), append(tc.args, "-data-dir", dir), &strings.Builder{}); code != 2 {
			t.Errorf("%v: exit status %d, want 2", tc.args, code)
		}
		if ents, err := os.ReadDir(dir); err != nil || len(ents) > 0 {
			t.Errorf("%v: the data dir has %d entries (%v): something started", tc.args, len(ents), err)
		}
	}
	if _, err := parseActorsFlags([]string{"-bogus"}); err == nil || errors.Is(err, flag.ErrHelp) {
		t.Errorf("an unknown flag: %v", err)
	}
	if code := actorsMain(context.Background(), []string{"-bogus"}, &strings.Builder{}); code != 2 {
		t.Errorf("an unknown flag: exit status %d, want 2", code)
	}
}

func TestActorsScenarioFlags(t *testing.T) {
	cfg, err := parseActorsFlags([]string{"-scenario", "steady-chat", "-users", "500", "-platforms", " android, linux "})
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.withDefaults()
	if c.Users != 500 || c.MsgRate != 0.2 || c.Duration != 30*time.Second || c.Devices != 1 || strings.Join(c.Platforms, ",") != "android,linux" {
		t.Errorf("steady-chat with -users 500: %+v", c)
	}
	if err := c.Validate(0); err != nil {
		t.Error(err)
	}
	if c := (ActorsConfig{Scenario: "login-storm"}).withDefaults(); c.Users != 100_000 || c.MsgRate != 0 {
		t.Errorf("login-storm: %+v", c)
	}
	if c.platformOf(1, 0) != "linux" || c.platformOf(1, 1) != "android" {
		t.Errorf("platforms of user 1: %s, %s", c.platformOf(1, 0), c.platformOf(1, 1))
	}
}

func TestRampSchedule(t *testing.T) {
	if rampSchedule(5, 0, time.Second) != 0 {
		t.Error("no rate: not at once")
	}
	// 100/s rising over 2 s: 100 events in the ramp, then 10 ms apart.
	if got := rampSchedule(100, 100, 2*time.Second); got != 2*time.Second {
		t.Errorf("event 100 at %v, want 2s", got)
	}
	if got := rampSchedule(150, 100, 2*time.Second); got != 2500*time.Millisecond {
		t.Errorf("event 150 at %v, want 2.5s", got)
	}
	if got := rampSchedule(25, 100, 2*time.Second); got != time.Second {
		t.Errorf("event 25 at %v, want 1s (a quarter of the ramp's events by its middle)", got)
	}
	prev := time.Duration(-1)
	for i := range 400 {
		at := rampSchedule(i, 100, 2*time.Second)
		if at < prev {
			t.Fatalf("event %d at %v before event %d at %v", i, at, i-1, prev)
		}
		prev = at
	}
}

// fakeLogs is a store of logs for the ledger check.
type fakeLogs map[string][]persistence.Entry

func (f fakeLogs) ReadLog(_ context.Context, user string, after uint64, limit int) ([]persistence.Entry, error) {
	var out []persistence.Entry
	for _, e := range f[user] {
		if uint64(e.Seq) > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f fakeLogs) add(t *testing.T, user string, e *wire.Entry) {
	e.Seq = uint64(len(f[user]) + 1)
	b, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	f[user] = append(f[user], persistence.Entry{Seq: persistence.Seq(e.Seq), Data: b})
}

// TestActorsLedgerMissing: the ledger check can fail. User u1's log holds
// message A from u0 and its device d0's login; the ledger also has
// message B acked for u1 (not in its log), message C whose log entry
// names another sender, and a login of d1 with no device event: all three
// are reported missing, and the run is not sound.
func TestActorsLedgerMissing(t *testing.T) {
	logs := fakeLogs{}
	logs.add(t, "u1", &wire.Entry{Kind: &wire.Entry_Device{Device: &wire.DeviceEvent{Kind: wire.DeviceEvent_LOGGED_IN, Device: &wire.DeviceInfo{DeviceId: "d0"}}}})
	logs.add(t, "u1", &wire.Entry{Kind: &wire.Entry_Message{Message: &wire.Message{MessageId: "A", Sender: "u0"}}})
	logs.add(t, "u1", &wire.Entry{Kind: &wire.Entry_Message{Message: &wire.Message{MessageId: "C", Sender: "u1"}}})
	r := &actorsRun{cfg: ActorsConfig{Users: 2, Devices: 2}.withDefaults()}
	r.online = make([]atomic.Uint32, 4)
	r.activated = make([]atomic.Bool, 2)
	r.activated[1].Store(true)
	r.online[2].Store(devOnline) // u1's d0
	r.online[3].Store(devOnline) // u1's d1
	r.ledger = []ledgerEntry{
		{sender: 0, recipient: 1, acked: true, seq: 1, msgID: "A"},
		{sender: 0, recipient: 1, acked: true, seq: 2, msgID: "B"},
		{sender: 0, recipient: 1, acked: true, seq: 3, msgID: "C"},
		{sender: 0, recipient: 1, failed: true}, // never acked: not looked for
	}
	lc := r.verify(context.Background(), logs)
	if lc.Messages != 3 || lc.MessagesMissing != 2 || lc.Logins != 2 || lc.LoginsMissing != 1 || lc.ReadErrors != 0 {
		t.Errorf("ledger check %+v: want 2 of 3 messages and 1 of 2 logins missing", lc)
	}
	ex := strings.Join(lc.Examples, "\n")
	for _, want := range []string{"message B from u0 (seq 2", "message C from u0", "u1's device d1: no LOGGED_IN"} {
		if !strings.Contains(ex, want) {
			t.Errorf("examples %q: want %q", ex, want)
		}
	}
	res := &ActorsResult{Ledger: lc}
	res.Problems = r.soundness(res)
	if res.problems() != 2 {
		t.Errorf("problems %q: want the missing messages and logins", res.Problems)
	}
	if code := finishRun(slog.New(slog.DiscardHandler), &strings.Builder{}, "actors", res, "", nil); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
}
