package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
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
		// The mix and the groups.
		{[]string{"-users", "100", "-msg-rate", "1", "-group-share", "0.5", "-group-size", "101"}, "-group-size 101 is more than the 100 -users"},
		{[]string{"-users", "20000", "-msg-rate", "1", "-group-share", "0.5", "-group-size", "10001"}, "at most 10000 members"},
		{[]string{"-msg-rate", "1", "-group-share", "0.5", "-group-size", "0"}, "at least 1 member"},
		{[]string{"-msg-rate", "1", "-group-share", "1.5"}, "-group-share 1.5: a share is between 0 and 1"},
		{[]string{"-msg-rate", "1", "-read-share", "-0.1"}, "-read-share -0.1: a share"},
		{[]string{"-msg-rate", "1", "-read-share", "0.7", "-recall-share", "0.4"}, "-read-share 0.7 + -recall-share 0.4 + -logout-share 0 is more than 1"},
		{[]string{"-msg-rate", "1", "-read-share", "0.5", "-logout-share", "0.6"}, "-read-share 0.5 + -recall-share 0 + -logout-share 0.6 is more than 1"},
		{[]string{"-msg-rate", "1", "-logout-share", "1.5"}, "-logout-share 1.5: a share is between 0 and 1"},
		{[]string{"-logout-share", "0.2"}, "give -msg-rate too"},
		{[]string{"-msg-rate", "1", "-read-share", "0.5", "-recall-share", "0.5"}, "no action is a send"},
		{[]string{"-group-share", "0.2"}, "give -msg-rate too"},
		{[]string{"-users", "1000", "-msg-rate", "1", "-group-share", "0.2", "-groups", "3", "-group-size", "10,200"}, "-groups 3 of -group-size 10,200 hold 220 of the 1000 users"},
		{[]string{"-groups", "-1"}, "-groups -1 must not be negative"},
		// The passivation wave.
		{[]string{"-users", "100", "-passivate", "100", "-login-rate", "10"}, "-passivate 100: between 1 and -users − 1 (99)"},
		{[]string{"-users", "100", "-passivate", "50"}, "-passivate needs -login-rate"},
		{[]string{"-users", "100", "-passivate", "50", "-login-rate", "1", "-msg-rate", "1"}, "leave -msg-rate out"},
		{[]string{"-users", "100", "-passivate", "50", "-login-rate", "100", "-idle-timeout", "10s"}, "the 50 new users' logins take 0.5 s at -login-rate 100, but the passivations go on until 12.5 s"},
		{[]string{"-idle-timeout", "-1s"}, "-idle-timeout -1s must not be negative"},
		// Activations only.
		{[]string{"-scenario", "activation-storm", "-msg-rate", "1"}, "-activate-only activates users and nothing else"},
		{[]string{"-activate-only", "-devices", "2"}, "-activate-only activates users and nothing else"},
	} {
		cfg, err := parseActorsFlags(tc.args)
		if err == nil {
			err = cfg.Validate(16 << 30)
		}
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
	if c, err := parseActorsFlags([]string{"-scenario", "login-storm"}); err != nil || c.Users != 100_000 || c.MsgRate != 0 {
		t.Errorf("login-storm: %+v %v", c, err)
	}
	// A flag given as 0 overrides the scenario's value.
	if c, err := parseActorsFlags([]string{"-scenario", "steady-chat", "-ramp", "0"}); err != nil || c.Ramp != 0 || c.MsgRate != 0.2 {
		t.Errorf("steady-chat -ramp 0: %+v %v", c, err)
	}
	if c.platformOf(1, 0) != "linux" || c.platformOf(1, 1) != "android" {
		t.Errorf("platforms of user 1: %s, %s", c.platformOf(1, 0), c.platformOf(1, 1))
	}
	c, err = parseActorsFlags([]string{"-scenario", "big-group-burst"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Users != 20_000 || c.Groups != 20 || !slices.Equal(c.GroupSizes, []int{2000}) || c.GroupShare != 1 || c.Drain != 3*time.Minute {
		t.Errorf("big-group-burst: %+v", c)
	}
	for _, sc := range actorsScenarios {
		args := []string{"-scenario", sc.Name}
		if why, ok := scenarioNeedsJoin[sc.Name]; ok {
			c, err := parseActorsFlags(args)
			if err == nil {
				err = c.Validate(16 << 30)
			}
			if err == nil || !strings.Contains(err.Error(), why) {
				t.Errorf("scenario %s without -join: %v, want %q", sc.Name, err, why)
			}
			args = append(args, "-join", "127.0.0.1:1", "-cluster-key", "x", "-jwt-secret", "0123456789abcdef", "-store", "postgres://x")
		}
		c, err := parseActorsFlags(args)
		if err == nil {
			err = c.Validate(16 << 30)
		}
		if err != nil {
			t.Errorf("scenario %s: %v", sc.Name, err)
		}
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

// fakeLogs is a store of logs and conversation states for the ledger
// check (conversation states under the user's name + "/convs").
type fakeLogs map[string][]persistence.Entry

func (f fakeLogs) ReadConvs(_ context.Context, user string) ([]persistence.Conv, error) {
	var out []persistence.Conv
	for _, e := range f[user+"/convs"] {
		var cs actorpb.ConvState
		if err := proto.Unmarshal(e.Data, &cs); err != nil {
			return nil, err
		}
		out = append(out, persistence.Conv{Key: convKeyOf(cs.GetConversation()), Data: e.Data})
	}
	return out, nil
}

func (f fakeLogs) ReadLog(_ context.Context, user string, after uint64, limit int) ([]persistence.Entry, error) {
	var out []persistence.Entry
	for _, e := range f[user] {
		if uint64(e.Seq) > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

// ReadEpoch: this test store activates nobody.
func (f fakeLogs) ReadEpoch(context.Context, string) (uint64, error) { return 0, nil }

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
	r := newActorsRun(ActorsConfig{Users: 2, Devices: 2}.withDefaults(), nil)
	r.activated[1] = true
	r.loginsOK[2], r.loginsOK[3] = 1, 1 // u1's d0 and d1 logged in once
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

// TestActorsGroupDefaults: with -group-share and no -groups, just enough
// groups to hold every user; the layout packs them around the users.
func TestActorsGroupDefaults(t *testing.T) {
	c := ActorsConfig{Users: 1000, MsgRate: 1, GroupShare: 0.2, GroupSizes: []int{10, 200}}.withDefaults()
	if c.Groups != 10 { // 5 × 10 + 5 × 200 = 1050 ≥ 1000 > 9 groups' 850
		t.Errorf("%d groups, want 10", c.Groups)
	}
	if err := c.Validate(0); err != nil {
		t.Error(err)
	}
	l := newGroupLayout(c.Users, c.Groups, c.GroupSizes)
	if l.memberships() != 1050 {
		t.Errorf("%d memberships, want 1050", l.memberships())
	}
	for u := range c.Users {
		if len(l.ofUser[u]) == 0 {
			t.Fatalf("user %d is in no group", u)
		}
		for _, g := range l.ofUser[u] {
			if !l.isMember(int(g), u) {
				t.Fatalf("user %d listed in group %d but not a member", u, g)
			}
		}
	}
	// The last group wraps around: users 0-49 are in group 0 and group 9.
	if m := l.members(9); len(m) != 200 || m[0] != "u850" || m[199] != "u49" || !l.isMember(9, 49) || l.isMember(9, 50) {
		t.Errorf("group 9: %d members, %s … %s", len(m), m[0], m[len(m)-1])
	}
	if len(l.ofUser[0]) != 2 || len(l.ofUser[50]) != 1 {
		t.Errorf("user 0 in %v, user 50 in %v", l.ofUser[0], l.ofUser[50])
	}
}

// TestActorsScenarioFile: a file's keys are flag names, the command line
// overrides the file, the file overrides its named scenario; unknown keys
// and values of the wrong kind are refused by name before anything runs.
func TestActorsScenarioFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"scenario": "mixed-chat", "users": 2000, "group-size": [10, 200], "read-share": 0.25, "duration": "12s", "no-verify": true}`)
	c, err := parseActorsFlags([]string{"-scenario-file", good, "-users", "3000"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Users != 3000 || c.Scenario != "mixed-chat" || !slices.Equal(c.GroupSizes, []int{10, 200}) || c.ReadShare != 0.25 ||
		c.Duration != 12*time.Second || !c.NoVerify || c.RecallShare != 0.02 || c.MsgRate != 0.1 {
		t.Errorf("from the file, mixed-chat and -users 3000: %+v", c)
	}
	if err := c.Validate(16 << 30); err != nil {
		t.Error(err)
	}
	// A scenario named on the command line: the file still overrides it.
	if c, err := parseActorsFlags([]string{"-scenario-file", write("s.json", `{"users": 50}`), "-scenario", "steady-chat"}); err != nil || c.Users != 50 || c.MsgRate != 0.2 {
		t.Errorf("file over -scenario: %+v %v", c, err)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"users": 10, "grop-size": 5}`, `unknown key "grop-size"`},
		{`{"scenario-file": "x.json"}`, `unknown key "scenario-file"`},
		{`{"users": "many"}`, `key "users"`},
		{`{"users": {"n": 5}}`, `key "users"`},
		{`{"group-size": [[1]]}`, `key "group-size"`},
		{`[1, 2]`, "want one JSON object"},
		{`{"users": 5} {"users": 6}`, "more than one JSON value"},
		{`{"scenario": "stampede"}`, `-scenario "stampede"`},
	} {
		path := write("bad.json", tc.body)
		_, err := parseActorsFlags([]string{"-scenario-file", path})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.body, err, tc.want)
		}
		data := t.TempDir()
		if code := actorsMain(context.Background(), []string{"-scenario-file", path, "-data-dir", data}, &strings.Builder{}); code != 2 {
			t.Errorf("%s: exit status %d, want 2", tc.body, code)
		}
		if ents, _ := os.ReadDir(data); len(ents) > 0 {
			t.Errorf("%s: something started", tc.body)
		}
	}
	if _, err := parseActorsFlags([]string{"-scenario-file", filepath.Join(dir, "none.json")}); err == nil {
		t.Error("a missing scenario file: no error")
	}
}

// TestActorsListScenarios: -list-scenarios prints every ready-made
// scenario with its flags and runs nothing.
func TestActorsListScenarios(t *testing.T) {
	var out strings.Builder
	if code := actorsMain(context.Background(), []string{"-list-scenarios"}, &out); code != 0 {
		t.Errorf("exit status %d", code)
	}
	for _, want := range []string{"login-storm", "steady-chat", "mixed-chat", "big-group-burst", "-group-size 2000 -group-share 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("%q missing from:\n%s", want, out.String())
		}
	}
}

// TestActorsLedgerGroupsMissing: the group, recall and mark-read checks
// can fail. Group g0 is u0, u1, u2. G1 is in every member's log; G2 is
// missing from u2's; G3 is twice in u0's; D1 (u0 → u1) was recalled, acked,
// but u0's own copy is not erased; G4 was recalled, acked: u1 has only the
// recall (it beat the delivery: fine) and u2 has an erased copy but no
// RecallEvent. u1's read of d:u0 is durable; u2's read of g:g0 is in its
// log but not its stored state; u0's read of g:g0 is nowhere. G5 and one
// read were never acked: not looked for.
func TestActorsLedgerGroupsMissing(t *testing.T) {
	msg := func(id, sender string, recalled bool) *wire.Entry {
		return &wire.Entry{Kind: &wire.Entry_Message{Message: &wire.Message{MessageId: id, Sender: sender, Recalled: recalled}}}
	}
	recall := func(id string) *wire.Entry {
		return &wire.Entry{Kind: &wire.Entry_Recall{Recall: &wire.RecallEvent{MessageId: id}}}
	}
	group := &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g0"}
	read := func(c *wire.Conversation, upTo uint64) *wire.Entry {
		return &wire.Entry{Kind: &wire.Entry_Read{Read: &wire.ReadEvent{Conversation: c, UpToSeq: upTo}}}
	}
	conv := func(t *testing.T, logs fakeLogs, user string, c *wire.Conversation, readSeq uint64) {
		b, err := proto.Marshal(&actorpb.ConvState{Conversation: c, ReadSeq: readSeq})
		if err != nil {
			t.Fatal(err)
		}
		logs[user+"/convs"] = append(logs[user+"/convs"], persistence.Entry{Data: b})
	}
	logs := fakeLogs{}
	for _, u := range []string{"u0", "u1", "u2"} {
		logs.add(t, u, msg("G1", "u0", false))
	}
	logs.add(t, "u0", msg("G2", "u1", false))
	logs.add(t, "u1", msg("G2", "u1", false))
	for _, u := range []string{"u0", "u0", "u1", "u2"} {
		logs.add(t, u, msg("G3", "u2", false))
	}
	logs.add(t, "u0", msg("D1", "u0", false)) // not erased
	logs.add(t, "u0", recall("D1"))
	logs.add(t, "u1", msg("D1", "u0", true))
	logs.add(t, "u1", recall("D1"))
	logs.add(t, "u0", msg("G4", "u0", true))
	logs.add(t, "u0", recall("G4"))
	logs.add(t, "u1", recall("G4"))
	logs.add(t, "u2", msg("G4", "u0", true))
	direct := &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "u0"}
	logs.add(t, "u1", read(direct, 5))
	conv(t, logs, "u1", direct, 5)
	logs.add(t, "u2", read(group, 7))
	conv(t, logs, "u2", group, 3)

	r := newActorsRun(ActorsConfig{Users: 3, MsgRate: 1, GroupShare: 1, GroupSizes: []int{3}}.withDefaults(), nil)
	if r.cfg.Groups != 1 {
		t.Fatalf("%d groups", r.cfg.Groups)
	}
	r.ledger = []ledgerEntry{
		{sender: 0, recipient: 0, group: true, acked: true, msgID: "G1"},
		{sender: 1, recipient: 0, group: true, acked: true, msgID: "G2"},
		{sender: 2, recipient: 0, group: true, acked: true, msgID: "G3"},
		{sender: 0, recipient: 1, acked: true, recalled: true, msgID: "D1"},
		{sender: 0, recipient: 0, group: true, acked: true, recalled: true, msgID: "G4"},
		{sender: 1, recipient: 0, group: true, failed: true},
	}
	r.recalls = []opEntry{{user: 0, target: 3, acked: true}, {user: 0, target: 4, acked: true}}
	r.reads = []opEntry{
		{user: 1, target: 0, upTo: 5, acked: true},
		{user: 2, target: 0, group: true, upTo: 7, acked: true},
		{user: 0, target: 0, group: true, upTo: 4, acked: true},
		{user: 1, target: 0, upTo: 99},
	}
	lc := r.verify(context.Background(), logs)
	want := LedgerCheck{Messages: 13, MessagesMissing: 1, MessagesDuplicated: 1, GroupMessages: 4, Recalls: 5, RecallsMissing: 2, Reads: 3, ReadsMissing: 2}
	got := *lc
	got.Examples, got.Seconds = nil, 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ledger check\n%+v, want\n%+v", got, want)
	}
	ex := strings.Join(lc.Examples, "\n")
	for _, s := range []string{
		"message G2 from u1 (seq 0 in the sender's log), acked: not in u2's log",
		"message G3 from u2: 2 times in u0's log",
		"recall of D1 by u0, acked: u0's copy is not erased",
		"recall of G4 by u0, acked: no RecallEvent in u2's log",
		"u2's conversation g:g0 up to seq 7, acked: its stored state reads seq 3",
		"u0's conversation g:g0 up to seq 4, acked: its log's ReadEvents reach seq 0",
	} {
		if !strings.Contains(ex, s) {
			t.Errorf("examples %q: want %q", ex, s)
		}
	}
	res := &ActorsResult{Ledger: lc}
	res.Problems = r.soundness(res)
	if res.problems() != 4 {
		t.Errorf("problems %q: want missing, duplicated, recalls and reads", res.Problems)
	}
	if code := finishRun(slog.New(slog.DiscardHandler), &strings.Builder{}, "actors", res, "", nil); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
}

// TestActorsLedgerLogoutsAndTwice: the ledger counts device events per
// login and logout, and finds a message stored twice under two message
// IDs. u1's d0 logged in twice and out once, but its log shows one
// LOGGED_IN and no LOGGED_OUT; message 0 (content 0) is in u1's log under
// its acked ID and under another.
func TestActorsLedgerLogoutsAndTwice(t *testing.T) {
	logs := fakeLogs{}
	content := make([]byte, 8) // ledger index 0
	logs.add(t, "u1", &wire.Entry{Kind: &wire.Entry_Device{Device: &wire.DeviceEvent{Kind: wire.DeviceEvent_LOGGED_IN, Device: &wire.DeviceInfo{DeviceId: "d0"}}}})
	logs.add(t, "u1", &wire.Entry{Kind: &wire.Entry_Message{Message: &wire.Message{MessageId: "A", Sender: "u0", Content: content}}})
	logs.add(t, "u1", &wire.Entry{Kind: &wire.Entry_Message{Message: &wire.Message{MessageId: "A2", Sender: "u0", Content: content}}})
	r := newActorsRun(ActorsConfig{Users: 2, Devices: 1}.withDefaults(), nil)
	r.loginsOK[1], r.logoutsOK[1] = 2, 1
	r.ledger = []ledgerEntry{{sender: 0, recipient: 1, acked: true, seq: 1, msgID: "A"}}
	lc := r.verify(context.Background(), logs)
	if lc.Messages != 1 || lc.MessagesDuplicated != 1 || lc.Logins != 2 || lc.LoginsMissing != 1 || lc.Logouts != 1 || lc.LogoutsMissing != 1 {
		t.Errorf("ledger check %+v: want the copy stored twice, 1 of 2 logins and 1 of 1 logout missing", lc)
	}
	ex := strings.Join(lc.Examples, "\n")
	for _, want := range []string{"stored 2 times in u1's log, under different message IDs", "u1's device d0: no LOGGED_IN event in its log for 1 of its 2 logins", "no LOGGED_OUT event in its log for 1 of its 1 logouts"} {
		if !strings.Contains(ex, want) {
			t.Errorf("examples %q: want %q", ex, want)
		}
	}
}

// TestActorsReconnectFlag: re-logging kicked devices is on unless
// -reconnect=false (or "reconnect": false in a scenario file).
func TestActorsReconnectFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		off  bool
	}{{nil, false}, {[]string{"-reconnect=false"}, true}, {[]string{"-reconnect"}, false}} {
		c, err := parseActorsFlags(tc.args)
		if err != nil || c.NoReconnect != tc.off {
			t.Errorf("%q: NoReconnect %v, %v; want %v", tc.args, c.NoReconnect, err, tc.off)
		}
	}
	file := filepath.Join(t.TempDir(), "s.json")
	if err := os.WriteFile(file, []byte(`{"reconnect": false, "logout-share": 0.1, "msg-rate": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := parseActorsFlags([]string{"-scenario-file", file})
	if err != nil || !c.NoReconnect || c.LogoutShare != 0.1 {
		t.Errorf("scenario file: %+v, %v", c, err)
	}
}
