package gateway

import (
	"net"
	"testing"
	"time"
)

// With MaxHandshakes connections in their handshake, the server accepts
// no more: a third client waits in the listen backlog until one of the
// two silent ones is dropped at HandshakeTimeout, and is upgraded then.
func TestMaxHandshakes(t *testing.T) {
	t.Parallel()
	const timeout = 1500 * time.Millisecond // room for a loaded machine's stalls
	srv := startServer(t, Config{MaxHandshakes: 2, HandshakeTimeout: timeout}, newFakeHandler())

	silentAt := time.Now()
	for range 2 {
		nc, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
	}
	waitStat(t, "the two silent connections accepted", func() bool { return srv.Stats().Accepted == 2 })

	type dialed struct {
		c   *client
		err error
		at  time.Time
	}
	third := make(chan dialed, 1)
	go func() {
		c, err := tryDial(srv, "/ws") // its timeout, 5 s, outlasts the wait
		third <- dialed{c, err, time.Now()}
	}()

	// Well before the silent ones time out, the third is not even accepted.
	time.Sleep(timeout / 5)
	select {
	case d := <-third:
		t.Fatalf("third client upgraded after %v with both slots taken (err %v)", d.at.Sub(silentAt), d.err)
	default:
	}
	if st := srv.Stats(); st.Accepted != 2 || st.Upgraded != 0 || st.Handshakes != 2 {
		t.Fatalf("with both slots taken: accepted %d, upgraded %d, in handshake %d; want 2, 0, 2", st.Accepted, st.Upgraded, st.Handshakes)
	}

	d := <-third
	if d.err != nil {
		t.Fatalf("third client: %v", d.err)
	}
	t.Cleanup(func() { d.c.conn.Close() })
	if waited := d.at.Sub(silentAt); waited < timeout {
		t.Fatalf("third client upgraded %v after the silent ones connected, before their handshake timeout %v", waited, timeout)
	}
	waitStat(t, "the third upgrade counted", func() bool { return srv.Stats().Upgraded == 1 })
	waitStat(t, "every handshake over", func() bool { return srv.Stats().Handshakes == 0 })
	if st := srv.Stats(); st.HandshakeFailures < 1 {
		t.Fatalf("handshake failures %d, want the silent connections' timeouts counted", st.HandshakeFailures)
	}
}

// waitStat waits up to 5 s for cond.
func waitStat(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
