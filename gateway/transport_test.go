package gateway

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// A frame that arrives a byte at a time is read correctly; a frame whose
// rest never comes is closed with 1008 after the frame timeout, and so is
// one cut inside its header.
func TestFrameTrickleAndFrameTimeout(t *testing.T) {
	for _, tr := range testTransports() {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			h := newFakeHandler()
			srv := startServer(t, Config{Transport: tr, FrameTimeout: 400 * time.Millisecond}, h)

			c := dial(t, srv)
			c.login(1, "tess")
			b, err := proto.Marshal(pingFrame(2))
			if err != nil {
				t.Fatal(err)
			}
			raw := masked(ws.OpBinary, true, b)
			for i := range raw {
				c.deadline()
				if _, err := c.conn.Write(raw[i : i+1]); err != nil {
					t.Fatal(err)
				}
				time.Sleep(5 * time.Millisecond) // each byte its own read
			}
			if f := c.read(); f.GetPong() == nil || f.Id != 2 {
				t.Fatalf("got %v, want Pong 2 for the trickled frame", f)
			}

			for _, cut := range []int{1, len(raw) - 1} { // inside the header, inside the payload
				c := dial(t, srv)
				c.login(3, "tess")
				c.deadline()
				if _, err := c.conn.Write(raw[:cut]); err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				code, _ := c.readClose()
				if code != ws.StatusPolicyViolation {
					t.Fatalf("cut at %d: close %d, want 1008 (frame timeout)", cut, code)
				}
				if waited := time.Since(start); waited < 300*time.Millisecond {
					t.Fatalf("cut at %d: closed after %v, before the frame timeout", cut, waited)
				}
			}
		})
	}
}

// Connections stuck inside a frame do not hold the read side up for the
// others: more of them than there are epoll workers, and a new client is
// still logged in and answered.
func TestPartialFramesPinNoWorker(t *testing.T) {
	for _, tr := range testTransports() {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			h := newFakeHandler()
			// One epoll worker: a stuck connection that held it would stop everything.
			srv := startServer(t, Config{Transport: tr, epollWorkers: 1}, h)
			b, _ := proto.Marshal(&wire.Frame{Id: 9, Body: &wire.Frame_Send{Send: &wire.Send{Content: make([]byte, 2000)}}})
			raw := masked(ws.OpBinary, true, b)
			stuck := 16
			for i := range stuck {
				c := dial(t, srv)
				c.login(1, "stuck")
				c.deadline()
				// Half a frame, then silence (within the frame timeout).
				if _, err := c.conn.Write(raw[:len(raw)/2+i%7]); err != nil {
					t.Fatal(err)
				}
			}
			c := dial(t, srv)
			c.login(1, "fresh")
			c.send(pingFrame(5))
			if f := c.read(); f.GetPong() == nil || f.Id != 5 {
				t.Fatalf("got %v, want Pong 5", f)
			}
		})
	}
}

// An idle logged-in connection costs the epoll transport no goroutine.
func TestEpollIdleConnectionsHoldNoGoroutine(t *testing.T) {
	if !epollSupported {
		t.Skip("no epoll on this system; the goroutine transport has one goroutine per connection by design")
	}
	h := newFakeHandler()
	srv := startServer(t, Config{Transport: TransportEpoll}, h)
	warm := dial(t, srv)
	warm.login(1, "warm")
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()
	const n = 300
	conns := make([]*client, n)
	for i := range conns {
		conns[i] = dial(t, srv)
		conns[i].login(1, "idle")
	}
	// Let the handshake goroutines and writers of the logins finish.
	deadline := time.Now().Add(5 * time.Second)
	var after int
	for {
		after = runtime.NumGoroutine()
		if after-before < n/10 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if grew := after - before; grew >= n/10 {
		t.Fatalf("%d idle connections added %d goroutines (%d → %d); want none per connection", n, grew, before, after)
	}
	// And they are all alive: each answers a ping.
	for i, c := range conns {
		c.send(pingFrame(uint64(i + 2)))
		if f := c.read(); f.GetPong() == nil {
			t.Fatalf("connection %d: got %v, want Pong", i, f)
		}
	}
}

// A client that pipelines its first frame right behind the upgrade
// request (in the same write) is served: no byte is lost between the
// handshake and the transport.
func TestFrameRightAfterHandshake(t *testing.T) {
	for _, tr := range testTransports() {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			h := newFakeHandler()
			srv := startServer(t, Config{Transport: tr}, h)
			nc, err := net.Dial("tcp", srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			b, _ := proto.Marshal(loginFrame(1, "ok:pia"))
			var req bytes.Buffer
			req.WriteString("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
			req.Write(masked(ws.OpBinary, true, b))
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := nc.Write(req.Bytes()); err != nil {
				t.Fatal(err)
			}
			c := &client{t: t, conn: nc}
			// Skip the HTTP response, then read the LoginOk.
			var resp []byte
			one := make([]byte, 1)
			for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
				if _, err := nc.Read(one); err != nil {
					t.Fatalf("reading the upgrade response: %v (got %q)", err, resp)
				}
				resp = append(resp, one[0])
			}
			if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) {
				t.Fatalf("response %q, want 101", resp)
			}
			c.r = nc
			if f := c.read(); f.GetLoginOk() == nil || f.Id != 1 {
				t.Fatalf("got %v, want LoginOk 1", f)
			}
		})
	}
}

// Many connections, each sending and closing at once, on the epoll
// transport: every one is answered and every session ends.
func TestEpollManyShortSessions(t *testing.T) {
	for _, tr := range testTransports() {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			h := newFakeHandler()
			srv := startServer(t, Config{Transport: tr}, h)
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for g := range 8 {
				wg.Go(func() {
					for i := range 20 {
						c, err := tryDial(srv, "/ws")
						if err != nil {
							errs <- err
							return
						}
						c.t = t
						_ = c.conn.SetDeadline(time.Now().Add(5 * time.Second))
						b, _ := proto.Marshal(loginFrame(1, "ok:u"))
						p, _ := proto.Marshal(pingFrame(uint64(2 + g*100 + i)))
						if _, err := c.conn.Write(append(masked(ws.OpBinary, true, b), masked(ws.OpBinary, true, p)...)); err != nil {
							errs <- err
							return
						}
						_, p1, err1 := c.readMsg()
						_, p2, err2 := c.readMsg()
						c.conn.Close()
						if err1 != nil || err2 != nil {
							errs <- errorsJoin(err1, err2)
							return
						}
						var f1, f2 wire.Frame
						if proto.Unmarshal(p1, &f1) != nil || proto.Unmarshal(p2, &f2) != nil || f1.GetLoginOk() == nil || f2.GetPong() == nil {
							errs <- errUnexpected
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for srv.Sessions() > 0 && ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			if n := srv.Sessions(); n != 0 {
				t.Fatalf("%d sessions left after every client closed", n)
			}
		})
	}
}

var errUnexpected = errorString("unexpected answers")

type errorString string

func (e errorString) Error() string { return string(e) }

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// A client that floods frames (no rate limit) does not starve the others:
// each turn of the epoll transport handles a bounded number of messages
// (here with a single worker, so the flood and the others share it).
func TestFloodingClientDoesNotStarveOthers(t *testing.T) {
	for _, tr := range testTransports() {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			h := newFakeHandler()
			srv := startServer(t, Config{Transport: tr, MaxFrameRate: -1, WriteQueue: 1 << 20, epollWorkers: 1}, h)
			flood := dial(t, srv)
			flood.login(1, "flood")
			b, _ := proto.Marshal(pingFrame(7))
			one := masked(ws.OpBinary, true, b)
			burst := bytes.Repeat(one, 512)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() { // read and drop the pongs, so the flood's writes never block
				buf := make([]byte, 64<<10)
				for {
					_ = flood.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := flood.conn.Read(buf); err != nil {
						return
					}
				}
			})
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					_ = flood.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if _, err := flood.conn.Write(burst); err != nil {
						return
					}
				}
			})
			other := dial(t, srv)
			other.login(1, "other")
			for i := range 20 {
				other.send(pingFrame(uint64(100 + i)))
				if f := other.read(); f.GetPong() == nil || f.Id != uint64(100+i) {
					t.Fatalf("ping %d: got %v, want its Pong", i, f)
				}
			}
			close(stop)
			flood.conn.Close()
			wg.Wait()
		})
	}
}
