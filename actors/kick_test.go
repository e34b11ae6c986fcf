package actors

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// TestKickScripts runs the login/kick traces in testdata/kick against the
// pure state. Commands:
//
//	policy <mode> [class=n,...]
//	login <device> <platform> [tag=T] [ext=E] [no_kick] [reconnect]
//	close <device>
//	expect ok | conflict | kicked <device...> | replaced <device...> | live <device...>
func TestKickScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/kick/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no kick scripts: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runKickScript(t, f) })
	}
}

func runKickScript(t *testing.T, path string) {
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()

	var st *userState
	keyOf := map[string]sessionKey{} // device → its live session
	devOf := map[uint64]string{}     // session number → device
	var nextSID uint64
	var lastReply *wire.Frame
	var lastKicks []*effKick
	var lastExt, lastPlatform string

	sc := bufio.NewScanner(fh)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("%s:%d %q: "+format, append([]any{path, line, text}, args...)...)
		}
		switch f[0] {
		case "policy":
			p := Policy{Mode: PolicyMode(f[1])}
			if len(f) > 2 {
				if p.Limits, err = ParseLimits(f[2]); err != nil {
					fail("%v", err)
				}
			}
			if err := p.Validate(); err != nil {
				fail("%v", err)
			}
			st = newUserState("u", testConfig(Config{Policy: p}), &fakeLog{}, NewMessageID)
			st.activated(1, 0, 0, nil, t0)
		case "login":
			l := &wire.Login{DeviceId: f[1], Platform: f[2]}
			for _, opt := range f[3:] {
				switch {
				case opt == "no_kick":
					l.NoKick = true
				case opt == "reconnect":
					l.Reconnect = true
				case strings.HasPrefix(opt, "tag="):
					l.Tag = opt[4:]
				case strings.HasPrefix(opt, "ext="):
					l.LoginExt = opt[4:]
				default:
					fail("unknown login option %q", opt)
				}
			}
			nextSID++
			key := sk(nextSID)
			devOf[nextSID] = l.DeviceId
			reply, effs := st.login(key, &actorpb.LoginRequest{Login: l}, t0, 1, 1)
			lastReply, lastKicks, lastExt, lastPlatform = reply, nil, l.LoginExt, l.Platform
			for _, e := range effs {
				if k, ok := e.(effKick); ok {
					lastKicks = append(lastKicks, &k)
				}
			}
			if reply.GetLoginOk() != nil {
				for dev, k := range keyOf {
					if st.sessions.get(k) == nil {
						delete(keyOf, dev)
					}
				}
				keyOf[l.DeviceId] = key
				st.catchupPage(key, nil, pageLimit)
			}
		case "close":
			k, ok := keyOf[f[1]]
			if !ok {
				fail("no live session for %s", f[1])
			}
			st.closed(k, false, t0)
			delete(keyOf, f[1])
		case "expect":
			switch f[1] {
			case "ok":
				if lastReply.GetLoginOk() == nil || len(lastKicks) != 0 {
					fail("last login: reply %v, %d kicks; want ok without kicks", lastReply, len(lastKicks))
				}
			case "conflict":
				if lastReply.GetError().GetName() != "LOGIN_CONFLICT" || len(lastKicks) != 0 {
					fail("last login: reply %v, %d kicks; want LOGIN_CONFLICT and no kick", lastReply, len(lastKicks))
				}
			case "kicked", "replaced":
				if lastReply.GetLoginOk() == nil {
					fail("last login failed: %v", lastReply)
				}
				var got []string
				for _, k := range lastKicks {
					if k.kick.GetReason() != wire.Kick_LOGIN_CONFLICT || k.kick.GetCloseCode() != wire.CloseLoginConflict ||
						k.kick.GetNewDevicePlatform() != lastPlatform || k.kick.GetNewDeviceLoginExt() != lastExt || k.kick.GetMayReconnect() {
						fail("kick frame %v: want LOGIN_CONFLICT, close %d, the new device's platform %q and ext %q, no reconnect",
							k.kick, wire.CloseLoginConflict, lastPlatform, lastExt)
					}
					got = append(got, devOf[k.key.sid])
				}
				slices.Sort(got)
				if want := f[2:]; !slices.Equal(got, want) {
					fail("kicked %v, want %v", got, want)
				}
			case "live":
				var got []string
				for _, s := range st.sessions {
					got = append(got, s.info().GetDeviceId())
				}
				slices.Sort(got)
				if want := f[2:]; !slices.Equal(got, want) {
					fail("live %v, want %v", got, want)
				}
			default:
				fail("unknown expectation")
			}
		default:
			fail("unknown command")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestPolicyChangeKicksExcess(t *testing.T) {
	h := newHarness(t, "u")
	for i, d := range []struct{ dev, platform, tag string }{
		{"t1", "web", ""}, {"t2", "web", "office"}, {"t3", "web", ""}, {"phone", "ios", "office"}, {"t4", "web", ""},
	} {
		_, effs := h.st.login(sk(uint64(i+1)), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: d.dev, Platform: d.platform, Tag: d.tag}}, t0, 1, 1)
		h.completeAppends(effs)
	}
	kickedBy := func(effs []effect) []string {
		var out []string
		for _, e := range effs {
			if k, ok := e.(effKick); ok {
				if k.kick.GetReason() != wire.Kick_POLICY || k.kick.GetCloseCode() != wire.CloseKickedByPolicy {
					t.Fatalf("policy kick frame %v", k.kick)
				}
				out = append(out, fmt.Sprint(k.key.sid))
			}
		}
		return out
	}
	// web limit 2: the two oldest web tabs (sessions 1 and 2) go.
	if got := kickedBy(h.st.applyPolicy(Policy{Mode: PolicyPerClass, Limits: map[Class]int{ClassWeb: 2}}, t0)); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("per_class web=2 kicked sessions %v, want [1 2]", got)
	}
	// A policy the sessions already obey kicks nobody.
	if got := kickedBy(h.st.applyPolicy(Policy{Mode: PolicyTag}, t0)); len(got) != 0 {
		t.Fatalf("tag policy kicked %v (only one office session is left)", got)
	}
	// single: only the newest stays.
	if got := kickedBy(h.st.applyPolicy(Policy{Mode: PolicySingle}, t0)); fmt.Sprint(got) != "[3 4]" {
		t.Fatalf("single kicked %v, want [3 4]", got)
	}
	if len(h.st.sessions) != 1 || h.st.sessions.get(sk(5)) == nil {
		t.Fatal("single must leave the newest session")
	}
	// And later logins follow the new policy.
	_, effs := h.st.login(sk(9), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: "x", Platform: "web"}}, t0, 1, 1)
	if len(effs) == 0 || h.st.sessions.get(sk(5)) != nil {
		t.Fatal("a login under single must kick the other session")
	}
}
