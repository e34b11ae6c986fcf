package gateway

import (
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/tandem-im/tandem/proto/wire"
)

const testHeartbeat = 300 * time.Millisecond

// A logged-in client that sends nothing is kicked as a drop: Kick
// HEARTBEAT_TIMEOUT that may reconnect, then 4014, and Closed once.
func TestHeartbeatTimeout(t *testing.T) {
	t.Parallel()
	for _, proto := range []string{SubprotocolProto, SubprotocolJSON} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			h := newFakeHandler()
			srv := startServer(t, Config{HeartbeatTimeout: testHeartbeat}, h)
			c := dial(t, srv, proto)
			sent := time.Now() // the server's last frame from c comes after
			c.login(1, "hugo")
			id := onlySession(t, srv)

			code, frames := c.readClose()
			silence := time.Since(sent)
			if code != wire.CloseHeartbeatTimeout {
				t.Fatalf("close code %d, want %d", code, wire.CloseHeartbeatTimeout)
			}
			if len(frames) != 1 {
				t.Fatalf("frames before close = %v, want the Kick alone", frames)
			}
			k := frames[0].GetKick()
			if k.GetReason() != wire.Kick_HEARTBEAT_TIMEOUT || k.GetCloseCode() != wire.CloseHeartbeatTimeout || !k.GetMayReconnect() {
				t.Fatalf("got %v, want Kick HEARTBEAT_TIMEOUT, close code %d, may reconnect", frames[0], wire.CloseHeartbeatTimeout)
			}
			if silence < testHeartbeat || silence > 2*time.Second {
				t.Fatalf("kicked after %v of silence, want just over %v", silence, testHeartbeat)
			}
			c.expectEOF()
			waitSessions(t, srv, 0)
			if n := h.closedCount(id); n != 1 {
				t.Fatalf("Closed called %d times, want 1", n)
			}
			st := srv.Stats()
			if st.HeartbeatTimeouts != 1 || st.Closes[wire.CloseHeartbeatTimeout] != 1 || st.LoggedIn != 0 {
				t.Fatalf("stats = %+v, want 1 heartbeat timeout, 1 close %d, none logged in", st, wire.CloseHeartbeatTimeout)
			}
			if n := srv.wheel.len(); n != 0 {
				t.Fatalf("%d sessions left on the wheel", n)
			}
		})
	}
}

// Any frame counts: the wire Ping, or WebSocket pings alone.
func TestHeartbeatKeptAlive(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{HeartbeatTimeout: testHeartbeat}, h)
	app, wsPing := dial(t, srv), dial(t, srv)
	app.login(1, "iris")
	wsPing.login(1, "jo")
	waitSessions(t, srv, 2)
	tk := time.NewTicker(testHeartbeat / 3)
	defer tk.Stop()
	for i := uint64(2); i < 12; i++ { // 1 s: over three timeouts
		<-tk.C
		app.send(pingFrame(i))
		if f := app.read(); f.GetPong() == nil || f.Id != i {
			t.Fatalf("got %v, want Pong %d", f, i)
		}
		wsPing.sendFrame(ws.Header{Fin: true, OpCode: ws.OpPing}, []byte("hb"), false)
		if h, p := wsPing.readRaw(); h.OpCode != ws.OpPong || string(p) != "hb" {
			t.Fatalf("got %v %q, want the pong", h.OpCode, p)
		}
	}
	h.mu.Lock()
	closed := len(h.closed)
	h.mu.Unlock()
	if st := srv.Stats(); st.HeartbeatTimeouts != 0 || closed != 0 || st.Sessions != 2 {
		t.Fatalf("an active session timed out: %+v", st)
	}
	if n := srv.wheel.len(); n != 2 {
		t.Fatalf("%d sessions on the wheel, want 2", n)
	}
}

// Sessions that end on their own are off the wheel: none is expired
// later, and Closed comes once, also when the end and the expiry race.
func TestHeartbeatSessionEndsFirst(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{HeartbeatTimeout: testHeartbeat}, h)
	c := dial(t, srv)
	c.login(1, "jack")
	id := onlySession(t, srv)
	c.conn.Close()
	waitSessions(t, srv, 0)
	if n := srv.wheel.len(); n != 0 {
		t.Fatalf("%d sessions left on the wheel", n)
	}

	// Around the moment they expire, clients close abruptly, send a close
	// frame, or stay silent (and answer the server's close). The server
	// may be closing them already: no client call here may fail the test.
	const n = 12
	var wg sync.WaitGroup
	for i := range n {
		c := dial(t, srv)
		c.login(1, "kate")
		wg.Go(func() {
			time.Sleep(testHeartbeat - 30*time.Millisecond + rand.N(60*time.Millisecond))
			switch i % 3 {
			case 0:
				c.conn.Close()
				return
			case 1:
				f := ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "")))
				_ = ws.WriteFrame(c.conn, f) // fails if the server was first
			}
			for {
				if _, _, err := c.readMsg(); err != nil {
					return // the close (answered), or the server gone
				}
			}
		})
	}
	wg.Wait()
	waitSessions(t, srv, 0)
	if n := srv.wheel.len(); n != 0 {
		t.Fatalf("%d sessions left on the wheel", n)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed[id] != 1 || len(h.closed) != n+1 {
		t.Fatalf("Closed calls %v, want one for each of %d sessions", h.closed, n+1)
	}
	for sid, k := range h.closed {
		if k != 1 {
			t.Fatalf("Closed called %d times for session %d", k, sid)
		}
	}
	st := srv.Stats()
	if st.HeartbeatTimeouts < n/3 || st.HeartbeatTimeouts > n || st.Closes[wire.CloseHeartbeatTimeout] != st.HeartbeatTimeouts {
		t.Fatalf("%d heartbeat timeouts, %d closes %d; want the same, between %d and %d",
			st.HeartbeatTimeouts, st.Closes[wire.CloseHeartbeatTimeout], wire.CloseHeartbeatTimeout, n/3, n)
	}
}

// Before Login, LoginTimeout applies and the wheel is not involved; a
// negative HeartbeatTimeout turns the check off.
func TestHeartbeatOnlyWhenLoggedIn(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Config{HeartbeatTimeout: minHeartbeatTimeout}, newFakeHandler())
	c := dial(t, srv)
	waitSessions(t, srv, 1)
	off := startServer(t, Config{HeartbeatTimeout: -1}, newFakeHandler())
	if off.wheel != nil {
		t.Fatalf("a wheel with heartbeats off")
	}
	c2 := dial(t, off)
	c2.login(1, "lena")

	time.Sleep(3 * minHeartbeatTimeout)
	c.login(1, "lena")
	c2.send(pingFrame(2))
	if f := c2.read(); f.GetPong() == nil {
		t.Fatalf("got %v, want Pong", f)
	}
}

func TestHeartbeatConfig(t *testing.T) {
	t.Parallel()
	if c := (Config{}).withDefaults(); c.HeartbeatTimeout != DefaultHeartbeatTimeout {
		t.Fatalf("default heartbeat timeout %v", c.HeartbeatTimeout)
	}
	for _, d := range []time.Duration{-1, minHeartbeatTimeout, time.Hour} {
		if err := (Config{HeartbeatTimeout: d}).Validate(); err != nil {
			t.Errorf("heartbeat timeout %v: %v", d, err)
		}
	}
	err := Config{HeartbeatTimeout: 60}.Validate() // 60 ns: meant seconds
	if err == nil || !strings.Contains(err.Error(), "heartbeat timeout") {
		t.Fatalf("Validate = %v, want a heartbeat timeout error", err)
	}
}
