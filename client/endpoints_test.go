package client

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tandem-im/tandem/proto/wire"
)

func TestEndpointsRotation(t *testing.T) {
	now := time.Unix(1000, 0)
	urls := []string{"a", "b", "c"}
	type step struct {
		op   string // pick, again N, away N, at +D
		want int    // pick's result
	}
	for _, tc := range []struct {
		name  string
		start int
		steps []step
	}{
		{"rotates from the start", 1, []step{{"pick", 1}, {"pick", 2}, {"pick", 0}, {"pick", 1}}},
		{"again picks the same", 0, []step{{"pick", 0}, {"again 0", 0}, {"pick", 0}, {"pick", 1}}},
		{"going away is passed over", 0, []step{{"pick", 0}, {"away 0", 0}, {"pick", 1}, {"pick", 2}, {"pick", 1}, {"pick", 2}}},
		{"going away moves next past it", 0, []step{{"away 0", 0}, {"pick", 1}}},
		{"all going away: rotate anyway", 0, []step{{"away 0", 0}, {"away 1", 0}, {"away 2", 0}, {"pick", 0}, {"pick", 1}}},
		{"avoidance expires", 0, []step{{"away 1", 0}, {"pick", 0}, {"pick", 2}, {"at 31s", 0}, {"pick", 0}, {"pick", 1}}},
		{"start beyond the list wraps", 4, []step{{"pick", 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEndpoints(urls, tc.start)
			at := now
			for i, s := range tc.steps {
				var n int
				var d time.Duration
				switch {
				case s.op == "pick":
					if got := e.pick(at); got != s.want {
						t.Fatalf("step %d: pick = %d, want %d", i, got, s.want)
					}
				case scan(s.op, "again %d", &n):
					e.again(n)
				case scan(s.op, "away %d", &n):
					e.goingAway(n, at)
				case scan(s.op, "at %v", &d):
					at = now.Add(d)
				default:
					t.Fatalf("bad step %q", s.op)
				}
			}
		})
	}
}

func scan(s, format string, v any) bool {
	if d, ok := v.(*time.Duration); ok {
		var str string
		if _, err := fmt.Sscanf(s, format, &str); err != nil {
			return false
		}
		x, err := time.ParseDuration(str)
		*d = x
		return err == nil
	}
	_, err := fmt.Sscanf(s, format, v)
	return err == nil
}

func TestStartIndex(t *testing.T) {
	counts := make([]int, 3)
	for i := range 300 {
		o := Options{DeviceID: "phone", Token: fmt.Sprintf("tok-user%d", i)}
		k := startIndex(&o, 3)
		if again := startIndex(&o, 3); again != k {
			t.Fatalf("start index not stable: %d then %d", k, again)
		}
		counts[k]++
	}
	for i, n := range counts {
		if n < 60 {
			t.Fatalf("endpoint %d is the start of %d of 300 devices: %v", i, n, counts)
		}
	}
	if k := startIndex(&Options{DeviceID: "d"}, 1); k != 0 {
		t.Fatalf("one endpoint: start %d", k)
	}
	o := Options{URL: "ws://b/ws", URLs: []string{"ws://a/ws", "ws://b/ws", "ws://a/ws"}}
	if got := o.endpointList(); !slices.Equal(got, []string{"ws://b/ws", "ws://a/ws"}) {
		t.Fatalf("endpointList = %v", got)
	}
	if err := (&Options{URLs: []string{"ws://a/ws", ""}, Token: "t", DeviceID: "d"}).validate(); err == nil {
		t.Fatal("an empty URL in URLs passed validation")
	}
}

// refusedURL returns a loopback URL nobody listens on.
func refusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return "ws://" + ln.Addr().String() + "/ws"
}

// twoEndpoints dials alice's device a1 with both endpoints of srv (one
// added) and returns the client and the index of the endpoint it is on.
func twoEndpoints(t *testing.T, srv *fakeServer, rec *recorder) (*Client, int) {
	t.Helper()
	urls := []string{srv.url, srv.addEndpoint()}
	c := dial(t, srv, "alice", "a1", rec, func(o *Options) {
		o.URL, o.URLs = "", urls
		o.Reconnect = true
	})
	return c, srv.endpointOf(c.URL())
}

// The node a device is on dies with a send unacked: the device goes on at
// the other endpoint without an error, logs in again with its cursor,
// resends the send once with the same client message ID (one message in
// the peer's log) and delivers every seq once.
func TestFailoverToAnotherEndpoint(t *testing.T) {
	srv := newFakeServer(t)
	ctx := testCtx(t)
	srv.addEntries("alice", 3)
	rec := &recorder{}
	a, on := twoEndpoints(t, srv, rec)
	other := 1 - on
	bobRec := &recorder{}
	b := dial(t, srv, "bob", "b1", bobRec, func(o *Options) { o.URL = srv.eps[other].url })
	if err := a.WaitCursor(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}

	srv.set(func(s *fakeServer) { s.holdAcks = true })
	p := a.SendAsync(text("bob", "one"))
	eventually(t, "the send reaching the server", func() bool { ids, _ := srv.sendsOn("a1"); return len(ids) == 1 })
	if _, err := b.WaitEntry(ctx, byClientMessageID(p.ClientMessageID())); err != nil {
		t.Fatal(err)
	}
	srv.addEntries("alice", 2) // seqs 5, 6 while the ack is lost
	srv.set(func(s *fakeServer) { s.holdAcks = false })
	srv.killEndpoint(on)

	ack, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !ack.GetDuplicate() || ack.GetSeq() != 4 {
		t.Fatalf("ack of the resend = %v, want duplicate, seq 4", ack)
	}
	if err := a.WaitCursor(ctx, 6); err != nil {
		t.Fatal(err)
	}
	if got := a.URL(); got != srv.eps[other].url {
		t.Fatalf("client on %s, want the other endpoint %s", got, srv.eps[other].url)
	}
	srv.push("alice", 4, 5, 6) // pushes the client has seen already
	srv.push("alice", srv.addEntries("alice", 1)...)
	if err := a.WaitCursor(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if got := rec.seqList(); !slices.Equal(got, seqRange(1, 7)) {
		t.Fatalf("OnEntry saw %v, want 1..7 once each", got)
	}

	ids, eps := srv.sendsOn("a1")
	if !slices.Equal(ids, []string{p.ClientMessageID(), p.ClientMessageID()}) || !slices.Equal(eps, []int{on, other}) {
		t.Fatalf("server saw sends %v on endpoints %v, want %s once on %d, once on %d", ids, eps, p.ClientMessageID(), on, other)
	}
	if n := srv.logLen("bob"); n != 1 {
		t.Fatalf("bob's log has %d entries, want 1", n)
	}
	if got := bobRec.seqList(); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("bob saw %v, want [1]", got)
	}
	logins, leps := srv.loginList(), srv.loginEndpoints()
	var aliceLogins []*wire.Login
	var aliceEps []int
	for i, l := range logins {
		if l.GetDeviceId() == "a1" {
			aliceLogins, aliceEps = append(aliceLogins, l), append(aliceEps, leps[i])
		}
	}
	if len(aliceLogins) != 2 || !slices.Equal(aliceEps, []int{on, other}) {
		t.Fatalf("alice logged in on endpoints %v, want [%d %d]", aliceEps, on, other)
	}
	if l := aliceLogins[1]; !l.GetReconnect() || !l.GetHasCursor() || l.GetCursor() != 3 {
		t.Fatalf("reconnect login = %v, want reconnect with cursor 3", l)
	}
	if errs := rec.errList(); len(errs) != 0 {
		t.Fatalf("OnError got %v; a reconnect is not an error", errs)
	}
	evs := rec.events()
	if len(evs) < 2 || evs[0].Kind != ReconnectDropped || evs[0].URL != srv.eps[on].url || evs[0].CloseCode != 0 ||
		evs[len(evs)-1].Kind != Reconnected || evs[len(evs)-1].URL != srv.eps[other].url {
		t.Fatalf("reconnect events %+v, want dropped on %d ... reconnected on %d", evs, on, other)
	}
	st := a.Stats()
	if st.Reconnects != 1 || st.Resent != 1 || st.DuplicateAcks != 1 || st.Duplicates < 3 {
		t.Fatalf("Stats = %+v, want 1 reconnect, 1 resent, 1 duplicate ack, ≥ 3 duplicate entries", st)
	}
}

// A node that drains closes its sessions with 4015 (with or without a
// Kick first): the client moves to another endpoint, does not tell OnKick,
// and keeps away from the draining one while another is available. 4017
// (session lost) logs in again on the same node.
func TestReconnectByCloseCode(t *testing.T) {
	type outcome int
	const (
		moves outcome = iota
		stays
	)
	for _, tc := range []struct {
		name string
		code int
		kick bool
		want outcome
	}{
		{"4015 close frame only", wire.CloseShutdown, false, moves},
		{"4015 shutdown kick", wire.CloseShutdown, true, moves},
		{"4017 session lost", wire.CloseSessionLost, true, stays},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFakeServer(t)
			rec := &recorder{}
			a, on := twoEndpoints(t, srv, rec)
			ctx := testCtx(t)
			if err := a.WaitCaughtUp(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.kick {
				srv.kickEndpoint(on, &wire.Kick{Reason: wire.Kick_SHUTDOWN, CloseCode: uint32(tc.code), MayReconnect: true})
			} else {
				srv.live("alice")[0].closeWith(ws.StatusCode(tc.code))
			}
			eventually(t, "the reconnect", func() bool { return a.Stats().Reconnects == 1 && a.Connected() })
			want := on
			if tc.want == moves {
				want = 1 - on
			}
			if got := srv.endpointOf(a.URL()); got != want {
				t.Fatalf("reconnected to endpoint %d, want %d (was on %d)", got, want, on)
			}
			if _, kicks, _ := rec.counts(); kicks != 0 {
				t.Fatalf("OnKick called %d times for a kick that allows reconnecting", kicks)
			}
			if ev := rec.events()[0]; ev.Kind != ReconnectDropped || ev.CloseCode != tc.code || (ev.Kick != nil) != tc.kick {
				t.Fatalf("first event %+v, want dropped with close code %d", ev, tc.code)
			}
			if len(rec.errList()) != 0 {
				t.Fatalf("OnError got %v", rec.errList())
			}
			if tc.want == stays {
				return
			}
			// A plain drop on the new node would rotate back to the
			// draining one; the client stays away from it.
			srv.live("alice")[0].drop()
			eventually(t, "the second reconnect", func() bool { return a.Stats().Reconnects == 2 && a.Connected() })
			if got := srv.endpointOf(a.URL()); got != want {
				t.Fatalf("after a drop: on endpoint %d, want %d (the other one is draining)", got, want)
			}
			if eps := srv.loginEndpoints(); !slices.Equal(eps, []int{on, want, want}) {
				t.Fatalf("logins on endpoints %v, want [%d %d %d]", eps, on, want, want)
			}
		})
	}
}

// A refused dial moves on to the next endpoint, at the first login and at
// a reconnect; a device with every endpoint refused gets every error.
func TestDialRefusedTriesNextEndpoint(t *testing.T) {
	t.Run("first login", func(t *testing.T) {
		srv := newFakeServer(t)
		rec := &recorder{}
		dead := refusedURL(t)
		o := Options{Token: "tok-alice", DeviceID: "a1"}
		urls := make([]string, 2)
		start := startIndex(&o, 2)
		urls[start], urls[1-start] = dead, srv.url
		c := dial(t, srv, "alice", "a1", rec, func(o *Options) { o.URL, o.URLs = "", urls })
		if c.URL() != srv.url {
			t.Fatalf("client on %s, want %s", c.URL(), srv.url)
		}
		evs := rec.events()
		if len(evs) != 1 || evs[0].Kind != ReconnectFailed || evs[0].URL != dead || evs[0].Err == nil {
			t.Fatalf("events %+v, want one failed attempt on %s", evs, dead)
		}
	})
	t.Run("reconnect", func(t *testing.T) {
		srv := newFakeServer(t)
		rec := &recorder{}
		urls := []string{srv.url, srv.addEndpoint(), srv.addEndpoint()}
		c := dial(t, srv, "alice", "a1", rec, func(o *Options) { o.URL, o.URLs, o.Reconnect = "", urls, true })
		on := srv.endpointOf(c.URL())
		next, last := (on+1)%3, (on+2)%3
		srv.killEndpoint(next)
		srv.killEndpoint(on)
		eventually(t, "the reconnect", func() bool { return c.Stats().Reconnects == 1 && c.Connected() })
		if got := srv.endpointOf(c.URL()); got != last {
			t.Fatalf("on endpoint %d, want %d", got, last)
		}
		var kinds []ReconnectKind
		var at []string
		for _, ev := range rec.events() {
			kinds, at = append(kinds, ev.Kind), append(at, ev.URL)
		}
		if !slices.Equal(kinds, []ReconnectKind{ReconnectDropped, ReconnectFailed, Reconnected}) ||
			!slices.Equal(at, []string{urls[on], urls[next], urls[last]}) {
			t.Fatalf("events %v at %v, want dropped %d, failed %d, reconnected %d", kinds, at, on, next, last)
		}
		if len(rec.errList()) != 0 {
			t.Fatalf("OnError got %v", rec.errList())
		}
	})
	t.Run("all refused", func(t *testing.T) {
		a, b := refusedURL(t), refusedURL(t)
		_, err := Dial(testCtx(t), Options{URLs: []string{a, b}, Token: "tok-alice", DeviceID: "a1"})
		var ne *net.OpError
		if err == nil || !errors.As(err, &ne) {
			t.Fatalf("Dial with every endpoint refused: %v", err)
		}
		for _, u := range []string{a, b} {
			if !strings.Contains(err.Error(), u) {
				t.Fatalf("error %q does not name %s", err, u)
			}
		}
	})
}
