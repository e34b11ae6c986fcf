//go:build linux

package gateway

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"

	"github.com/tandem-im/tandem/proto/wire"
)

// fdInode is the inode of the file fd refers to, or an error if fd is not
// open.
func fdInode(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// An fdRef never lets a syscall reach a descriptor number after its close,
// even while other goroutines open descriptors that reuse the number, and
// closes it exactly once, after the last reference is given back.
func TestFDRefLifetime(t *testing.T) {
	for round := range 50 {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(p[1])
		ino, err := fdInode(p[0])
		if err != nil {
			t.Fatal(err)
		}
		r := &fdRef{fd: int32(p[0])}

		stop := make(chan struct{})
		var wg sync.WaitGroup
		var used atomic.Int64
		for range 4 { // the read side, the writer, closeWrite...
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if !r.acquire() {
						if !r.closed() {
							t.Error("acquire failed on a descriptor that is not closing")
						}
						continue
					}
					got, err := fdInode(r.int())
					if err != nil || got != ino {
						t.Errorf("round %d: a referenced descriptor is %d, %v; want the pipe's inode %d", round, got, err, ino)
					}
					used.Add(1)
					r.release()
				}
			})
		}
		wg.Go(func() { // the next accepts, reusing numbers
			for {
				select {
				case <-stop:
					return
				default:
				}
				fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
				if err == nil {
					unix.Close(fd)
				}
			}
		})
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		if !r.close() {
			t.Fatal("first close reported the descriptor closing already")
		}
		if r.close() {
			t.Fatal("second close reported it did the close")
		}
		if r.acquire() {
			t.Fatal("acquire succeeded after close")
		}
		close(stop)
		wg.Wait()
		// Every reference is back: the pipe's read end is closed (the number
		// may hold something else by now, never the pipe).
		if got, err := fdInode(p[0]); err == nil && got == ino {
			t.Fatalf("round %d: the descriptor is still open after close and the last release", round)
		}
	}
}

// openFDs is the number of descriptors the test process has open.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// waitFDs waits until the process has want descriptors open again.
func waitFDs(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := openFDs(t)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open, want %d (a leak, or one closed twice)", n, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialSmallWindow dials srv with a small receive buffer, so that the
// server's writes soon find the socket full (EAGAIN).
func dialSmallWindow(t *testing.T, srv *Server) *client {
	t.Helper()
	d := ws.Dialer{Timeout: 5 * time.Second, NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	conn, br, _, err := d.Dial(context.Background(), "ws://"+srv.Addr().String()+"/ws")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &client{t: t, conn: conn, r: conn}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	t.Cleanup(func() { conn.Close() })
	return c
}

func pushOf(n int, b byte) *wire.Frame {
	content := make([]byte, n)
	for i := range content {
		content[i] = b
	}
	return &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Transient: []*wire.Message{{Content: content}}}}}
}

// A client that stops reading for a while fills its socket: the writer
// meets EAGAIN, waits for writability (EPOLLOUT on the epoll transport)
// and, once the client reads again, writes everything, in order, then
// the kick and its close code.
func TestWriterWaitsForSlowReader(t *testing.T) {
	for _, tr := range testTransports() {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			h := newFakeHandler()
			srv := startServer(t, Config{Transport: tr, WriteQueueBytes: 8 << 20}, h)
			c := dialSmallWindow(t, srv)
			c.login(1, "walt")
			id := onlySession(t, srv)
			const n, size = 192, 32 << 10 // 6 MiB: more than the socket takes (4 MiB at most)
			for i := range n {
				if !srv.Deliver(id, []*wire.Frame{pushOf(size, byte(i))}) {
					t.Fatalf("push %d refused", i)
				}
			}
			if !srv.Kick(id, &wire.Kick{Reason: wire.Kick_ADMIN}) {
				t.Fatal("kick refused")
			}
			time.Sleep(300 * time.Millisecond) // the writer is stuck by now
			if st := srv.Stats(); st.WriteErrors != 0 || st.Sessions != 1 {
				t.Fatalf("while the client does not read: %d write errors, %d sessions; want 0 and 1", st.WriteErrors, st.Sessions)
			}
			code, frames := c.readClose()
			if code != wire.CloseKickedByAdmin {
				t.Fatalf("close code %d, want %d", code, wire.CloseKickedByAdmin)
			}
			if len(frames) != n+1 {
				t.Fatalf("%d frames before the close, want %d pushes and the kick", len(frames), n)
			}
			for i, f := range frames[:n] {
				got := f.GetPush().GetTransient()
				if len(got) != 1 || len(got[0].Content) != size || got[0].Content[0] != byte(i) || got[0].Content[size-1] != byte(i) {
					t.Fatalf("frame %d is not push %d", i, i)
				}
			}
			if frames[n].GetKick().GetReason() != wire.Kick_ADMIN {
				t.Fatalf("last frame %v, want the kick", frames[n])
			}
			waitSessions(t, srv, 0)
		})
	}
}

// Clients that never read: one overflows its queue and is closed as a
// slow consumer within CloseTimeout, one stalls a write past WriteTimeout
// and is dropped. Both end (Closed once each) and leave no descriptor
// open. Not parallel: it counts the process's descriptors.
func TestEpollStuckWritersLeakNoFD(t *testing.T) {
	h := newFakeHandler()
	// The write timeout must outlast the gap between the two Delivers to
	// olga below even on a loaded machine under -race: if her first batch
	// timed out before the second Deliver, that one would find her session
	// closing, not overflowing (seen once at 1.5 s with the whole suite and
	// two other test runs on the 2 cores: 0 slow consumers, 2 write errors).
	const writeTimeout, closeTimeout = 3 * time.Second, 300 * time.Millisecond
	srv := startServer(t, Config{Transport: TransportEpoll, WriteTimeout: writeTimeout,
		CloseTimeout: closeTimeout, WriteQueueBytes: 8 << 20}, h)
	before := openFDs(t)

	overflow := dialSmallWindow(t, srv)
	overflow.login(1, "olga")
	oid := onlySession(t, srv)
	fill := make([]*wire.Frame, 96) // 6 MiB: within the bound, beyond what the socket takes (4 MiB at most)
	for i := range fill {
		fill[i] = pushOf(64<<10, 'o')
	}
	if !srv.Deliver(oid, fill) {
		t.Fatal("push refused below the bound")
	}
	if srv.Deliver(oid, append(fill, fill[:48]...)) { // 9 MiB in one call: over the bound whatever was written
		t.Fatal("pushes over the bound accepted")
	}
	stall := dialSmallWindow(t, srv)
	sid := sessionOf(t, srv, stall.login(1, "stan").GetLoginOk().GetLoginId())
	if !srv.Deliver(sid, fill) {
		t.Fatal("push refused below the bound")
	}
	start := time.Now()
	waitSessions(t, srv, 0)
	if d, most := time.Since(start), 2*(writeTimeout+closeTimeout)+2*time.Second; d > most {
		t.Fatalf("the stuck sessions lasted %v, want about the write and close timeouts (at most %v)", d, most)
	}
	st := srv.Stats()
	// stan's stalled write always fails by its timeout; olga's batch in
	// progress (and the close frame behind it) ends at her close deadline,
	// counted as a write error only if the writer gets there before the
	// session's own end does.
	if st.SlowConsumers != 1 || st.WriteErrors < 1 || st.WriteErrors > 2 {
		t.Fatalf("%d slow consumers, %d write errors; want 1, and 1 or 2", st.SlowConsumers, st.WriteErrors)
	}
	for _, id := range []uint64{oid, sid} {
		if n := h.closedCount(id); n != 1 {
			t.Fatalf("Closed called %d times for session %d, want 1", n, id)
		}
	}
	overflow.conn.Close()
	stall.conn.Close()
	waitFDs(t, before)
}

// Sessions that end every way at once — the peer resets, the server
// kicks, the heartbeat times out, a write fails — while the read side
// reads and the writers write, all end once, and every descriptor is
// closed, once (the race detector watches the rest). Not parallel: it
// counts the process's descriptors.
func TestEpollConcurrentEndsLeakNoFD(t *testing.T) {
	h := newFakeHandler()
	srv := startServer(t, Config{Transport: TransportEpoll, HeartbeatTimeout: time.Second,
		WriteTimeout: 200 * time.Millisecond, CloseTimeout: 200 * time.Millisecond}, h)
	before := openFDs(t)

	const n = 48
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var c *client
			if i%4 == 3 {
				c = dialSmallWindow(t, srv)
			} else {
				c = dial(t, srv)
			}
			var id uint64 // the fake handler names logins after their session
			fmt.Sscanf(c.login(1, "u").GetLoginOk().GetLoginId(), "login-%d", &id)
			stop := make(chan struct{})
			var pushers sync.WaitGroup
			pushers.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					for sid := range id + 2 { // its own and its neighbours'
						srv.Deliver(sid, []*wire.Frame{pushOf(1<<10, 'p')})
					}
					time.Sleep(time.Millisecond)
				}
			})
			switch i % 4 {
			case 0: // reads a while, then resets
				c.conn.SetDeadline(time.Now().Add(100 * time.Millisecond))
				for {
					if _, _, err := c.readMsg(); err != nil {
						break
					}
				}
				c.conn.(*net.TCPConn).SetLinger(0)
				c.conn.Close()
			case 1: // pings, then is kicked while pushes go out
				for j := range 20 {
					c.send(pingFrame(uint64(j + 2)))
				}
				srv.Kick(id, &wire.Kick{Reason: wire.Kick_ADMIN})
				c.conn.SetDeadline(time.Now().Add(5 * time.Second))
				for {
					if _, _, err := c.readMsg(); err != nil {
						break
					}
				}
			case 2: // goes silent: the heartbeat closes it
				time.Sleep(1500 * time.Millisecond)
			case 3: // never reads: writes stall and fail
				time.Sleep(1500 * time.Millisecond)
			}
			close(stop)
			pushers.Wait()
			c.conn.Close()
		})
	}
	wg.Wait()
	waitSessions(t, srv, 0)
	h.mu.Lock()
	for id, k := range h.closed {
		if k != 1 {
			t.Errorf("Closed called %d times for session %d, want 1", k, id)
		}
	}
	if len(h.closed) != n {
		t.Errorf("Closed called for %d sessions, want %d", len(h.closed), n)
	}
	h.mu.Unlock()
	waitFDs(t, before)
}

// After the upgrade an epoll connection keeps exactly one descriptor: the
// net.Conn's is closed once it was dupped. Not parallel: it counts the
// process's descriptors (both ends of each connection are in it).
func TestEpollOneFDPerConnection(t *testing.T) {
	h := newFakeHandler()
	srv := startServer(t, Config{Transport: TransportEpoll}, h)
	before := openFDs(t)
	const n = 20
	conns := make([]*client, n)
	for i := range conns {
		conns[i] = dial(t, srv)
		conns[i].login(1, "fay")
	}
	if got := openFDs(t) - before; got != 2*n {
		t.Fatalf("%d descriptors for %d connections, want %d (one client end and one server end each)", got, n, 2*n)
	}
	for _, c := range conns {
		c.conn.Close()
	}
	waitSessions(t, srv, 0)
	waitFDs(t, before)
}
