//go:build !race

package e2e

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tandem-im/tandem/proto/wire"
)

// loginAs logs a raw connection in and drains its catch-up pages.
func (c *rawConn) loginAs(l *wire.Login, id uint64) *wire.Frame {
	c.t.Helper()
	c.write(&wire.Frame{Id: id, Body: &wire.Frame_Login{Login: l}})
	f, code := c.read()
	if f == nil {
		c.t.Fatalf("login %s: closed with %d", l.GetDeviceId(), code)
	}
	if f.GetLoginOk() == nil {
		return f
	}
	for {
		p, code := c.read()
		if p == nil {
			c.t.Fatalf("catch-up of %s: closed with %d", l.GetDeviceId(), code)
		}
		if p.GetSyncPage() != nil && !p.GetSyncPage().GetHasMore() {
			return f
		}
	}
}

// TestKickOverWebSockets: a second mobile login kicks the first; the kicked
// device gets the kick frame (new device's platform and ext), then close
// 4010; its automatic reconnect is refused; the survivor keeps working.
func TestKickOverWebSockets(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	bob := dial(t, ws, api, "bob", "b1", devOpts{platform: "web"})
	laptop := dial(t, ws, api, "alice", "a-laptop", devOpts{platform: "macos"})

	old := rawDial(t, ws)
	if f := old.loginAs(&wire.Login{Token: token(t, api, "alice"), DeviceId: "a-iphone", Platform: "ios", HasCursor: true}, 1); f.GetLoginOk() == nil {
		t.Fatalf("first phone: %v", f)
	}
	newer := dial(t, ws, api, "alice", "a-pixel", devOpts{platform: "android"})
	_ = newer

	f, code := old.readReply()
	k := f.GetKick()
	if k == nil || k.GetReason() != wire.Kick_LOGIN_CONFLICT || k.GetNewDevicePlatform() != "android" || k.GetCloseCode() != wire.CloseLoginConflict || k.GetMayReconnect() {
		t.Fatalf("kicked device got %v (close %d), want Kick LOGIN_CONFLICT from android, close code 4010, no reconnect", f, code)
	}
	if f, code := old.read(); f != nil || code != wire.CloseLoginConflict {
		t.Fatalf("after the kick frame: %v, close %d; want close 4010", f, code)
	}

	// Its automatic reconnect is refused: the slot belongs to a newer login.
	again := rawDial(t, ws)
	if f := again.loginAs(&wire.Login{Token: token(t, api, "alice"), DeviceId: "a-iphone", Platform: "ios", HasCursor: true, Reconnect: true}, 1); f.GetError().GetName() != "LOGIN_CONFLICT" {
		t.Fatalf("automatic reconnect after being replaced: %v, want LOGIN_CONFLICT", f)
	}
	if _, code := again.read(); code != wire.CloseAuthFailed {
		t.Fatalf("refused reconnect closed with %d", code)
	}

	// The survivors keep working: the new phone sends, the laptop gets the
	// carbon, bob gets the message.
	ack, err := newer.Send(ctxT(t, 10*time.Second), text("bob", "after-kick", "still here"))
	if err != nil {
		t.Fatal(err)
	}
	bob.waitMessages(t, 1)
	laptop.waitSeq(t, ack.GetSeq())
	if m := bob.msgs()[0].GetMessage(); m.GetSenderDevice() != "a-pixel" {
		t.Fatalf("bob got %v", m)
	}

	// The new phone lists alice's live devices: the laptop and itself.
	rep, err := newer.Request(ctxT(t, 5*time.Second), &wire.Frame{Body: &wire.Frame_ListDevices{ListDevices: &wire.ListDevices{}}})
	if err != nil {
		t.Fatal(err)
	}
	var devs []string
	for _, d := range rep.GetDeviceList().GetDevices() {
		devs = append(devs, d.GetDeviceId()+"/"+d.GetPlatform())
		if d.GetLoginId() == "" || d.GetSinceMs() == 0 {
			t.Fatalf("device entry lacks login id or since: %v", d)
		}
	}
	if fmt.Sprint(devs) != "[a-laptop/macos a-pixel/android]" {
		t.Fatalf("ListDevices = %v", devs)
	}
}

// TestLoginRace: 50 web logins of one user race; the end state obeys the
// policy (web limit 10: exactly 10 live), every kicked session got its kick
// frame and close, and no kicked session receives pushes afterwards.
func TestLoginRace(t *testing.T) {
	n := startNode(t, t.TempDir())
	wsURL, api := n.wsURL(), n.apiURL()
	tok := token(t, api, "carol")
	const logins = 50

	type result struct {
		frames []*wire.Frame
		close  ws.StatusCode
	}
	results := make([]result, logins)
	var answered atomic.Int32 // connections that got their first frame
	var wg sync.WaitGroup
	start := make(chan struct{})
	conns := make([]*rawConn, logins)
	for i := range logins {
		conns[i] = rawDial(t, wsURL)
	}
	for i := range logins {
		wg.Go(func() {
			c := conns[i]
			<-start
			c.write(&wire.Frame{Id: 1, Body: &wire.Frame_Login{Login: &wire.Login{Token: tok, DeviceId: fmt.Sprintf("tab%02d", i), Platform: "web", HasCursor: true}}})
			// Read everything until the server closes or goes quiet.
			for {
				c.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
				f, code := readOrQuiet(c)
				if f == nil {
					results[i].close = code
					return
				}
				if len(results[i].frames) == 0 {
					answered.Add(1)
				}
				results[i].frames = append(results[i].frames, f)
			}
		})
	}
	close(start)

	// Once every login was answered and the policy left 10 sessions, a
	// message to carol must reach exactly the live tabs.
	waitFor(t, 20*time.Second, func() bool {
		if answered.Load() != logins {
			return false
		}
		_, m := apiDo(t, "GET", api+"/v1/users/carol/devices", "")
		devs, _ := m["devices"].([]any)
		return len(devs) == 10
	}, func() string { return fmt.Sprintf("%d of %d logins answered", answered.Load(), logins) })
	time.Sleep(200 * time.Millisecond) // the survivors' catch-up pages
	dave := dial(t, wsURL, api, "dave", "d1", devOpts{})
	if _, err := dave.Send(ctxT(t, 10*time.Second), text("carol", "to-carol", "who is still here?")); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	live, kicked := 0, 0
	for i, r := range results {
		if len(r.frames) == 0 {
			t.Fatalf("tab%02d: no frame at all (close %d)", i, r.close)
		}
		// A login kicked while its own LoginOk was on the way may see only
		// the kick: the gateway sends the kick instead of the stale LoginOk.
		if r.frames[0].GetLoginOk() == nil && r.frames[0].GetKick() == nil {
			t.Fatalf("tab%02d: first frame %v", i, r.frames[0])
		}
		kickAt := -1
		for j, f := range r.frames {
			if f.GetKick() != nil {
				kickAt = j
			}
		}
		gotPush := false
		for j, f := range r.frames {
			for _, e := range append(f.GetPush().GetEntries(), f.GetSyncPage().GetEntries()...) {
				if e.GetMessage().GetClientMessageId() == "to-carol" {
					gotPush = true
					if kickAt >= 0 && j > kickAt {
						t.Fatalf("tab%02d got a push after its kick frame", i)
					}
				}
			}
		}
		if kickAt >= 0 {
			kicked++
			if r.close != wire.CloseLoginConflict || kickAt != len(r.frames)-1 {
				t.Fatalf("tab%02d: kick frame at %d of %d, close %d; want the kick last, then close 4010", i, kickAt, len(r.frames), r.close)
			}
			if gotPush {
				t.Fatalf("tab%02d was kicked but also got the message sent after the race settled", i)
			}
		} else {
			live++
			if !gotPush {
				t.Fatalf("tab%02d is live but did not get the message", i)
			}
		}
	}
	if live != 10 || kicked != logins-10 {
		t.Fatalf("%d live, %d kicked; want 10 live (web limit) and %d kicked", live, kicked, logins-10)
	}
}

// readOrQuiet reads one frame; nil with code 0 when the connection went
// quiet (read deadline) or failed, or nil with the close code.
func readOrQuiet(c *rawConn) (*wire.Frame, ws.StatusCode) {
	f, code, err := c.next()
	if err != nil {
		return nil, 0
	}
	return f, code
}
