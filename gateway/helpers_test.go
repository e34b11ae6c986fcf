package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/internal/leakcheck"
	"github.com/tandem-im/tandem/proto/wire"
)

// TestMain fails the run if any server goroutine outlives the tests.
func TestMain(m *testing.M) { leakcheck.Main(m, 5*time.Second, serverGoroutineMarks...) }

// serverGoroutineMarks identify goroutines the Server starts.
var serverGoroutineMarks = []string{
	"gateway.(*Server).serveConn",
	"gateway.(*Server).Serve",
	"gateway.(*outQueue).write",
	"gateway.goroutineTransport.serve",
	"gateway.(*epollTransport).poll",
	"gateway.(*epollTransport).work",
	"gateway.(*pconn)",
	"gateway.(*wheel[...]).run",
	"gateway.(*admission).watchHeap",
	"gateway.(*Server).sweepSends",
}

// waitNoServerGoroutines waits up to d for every server goroutine to be
// gone and returns the stacks of those left.
func waitNoServerGoroutines(d time.Duration) string {
	return strings.Join(leakcheck.Wait(d, serverGoroutineMarks...), "\n\n")
}

// fakeHandler stands in for the actors. Tokens: "ok:<user>" logs in as
// user; anything else fails with BAD_TOKEN.
type fakeHandler struct {
	// beforeLoginReply, if set, runs inside Login before it returns (to
	// Deliver during a login, or to block).
	beforeLoginReply func(ctx context.Context, sessionID uint64)
	logoutErr        error

	mu      sync.Mutex
	logins  []uint64
	frames  []*wire.Frame
	logouts []uint64
	closed  map[uint64]int
	changed chan struct{} // closed and replaced on every call
}

func newFakeHandler() *fakeHandler {
	return &fakeHandler{closed: make(map[uint64]int), changed: make(chan struct{})}
}

func (h *fakeHandler) notifyLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *fakeHandler) Login(ctx context.Context, sessionID uint64, f *wire.Frame) (*wire.Frame, string, bool) {
	h.mu.Lock()
	h.logins = append(h.logins, sessionID)
	h.notifyLocked()
	h.mu.Unlock()
	if h.beforeLoginReply != nil {
		h.beforeLoginReply(ctx, sessionID)
	}
	user, ok := strings.CutPrefix(f.GetLogin().GetToken(), "ok:")
	if !ok {
		return wire.ErrFrame(f.Id, wire.CodeBadToken, "bad token"), "", false
	}
	return &wire.Frame{Id: f.Id, Body: &wire.Frame_LoginOk{LoginOk: &wire.LoginOk{
		LoginId: fmt.Sprintf("login-%d", sessionID), LastSeq: 42, ServerTimeMs: 1, HeartbeatSeconds: 30,
	}}}, user, true
}

func (h *fakeHandler) Frame(sessionID uint64, user string, f *wire.Frame) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.frames = append(h.frames, f)
	h.notifyLocked()
}

func (h *fakeHandler) Logout(ctx context.Context, sessionID uint64, user string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logouts = append(h.logouts, sessionID)
	h.notifyLocked()
	return h.logoutErr
}

func (h *fakeHandler) Closed(sessionID uint64, user string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed[sessionID]++
	h.notifyLocked()
}

// waitFor waits until cond (called with h.mu held) is true.
func (h *fakeHandler) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		h.mu.Lock()
		ok, ch := cond(), h.changed
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (h *fakeHandler) closedCount(id uint64) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed[id]
}

// startServer serves on a loopback port until the test ends; cleanup
// stops it and fails the test if Serve does not return or fails.
func startServer(t *testing.T, cfg Config, h Handler) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Transport == "" {
		// The suite runs on the default transport (epoll on Linux); the
		// test script runs it again with TANDEM_TEST_TRANSPORT=goroutine.
		cfg.Transport = os.Getenv("TANDEM_TEST_TRANSPORT")
	}
	srv := New(cfg, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	waitServing(t, srv)
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return srv
}

// client is the test's side of a WebSocket connection.
type client struct {
	t     *testing.T
	conn  net.Conn
	r     io.Reader // the conn, after bytes gobwas' dialer buffered
	proto string    // negotiated subprotocol
}

func dial(t *testing.T, srv *Server, protocols ...string) *client {
	t.Helper()
	c, err := tryDial(srv, "/ws", protocols...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.t = t
	t.Cleanup(func() { c.conn.Close() })
	return c
}

func tryDial(srv *Server, path string, protocols ...string) (*client, error) {
	d := ws.Dialer{Protocols: protocols, Timeout: 5 * time.Second}
	conn, br, hs, err := d.Dial(context.Background(), "ws://"+srv.Addr().String()+path)
	if err != nil {
		return nil, err
	}
	c := &client{conn: conn, r: conn, proto: hs.Protocol}
	if br != nil {
		c.r = io.MultiReader(br, conn)
	}
	return c, nil
}

func (c *client) json() bool { return c.proto == SubprotocolJSON }

func (c *client) rw() io.ReadWriter {
	return struct {
		io.Reader
		io.Writer
	}{c.r, c.conn}
}

// send writes f in the connection's encoding.
func (c *client) send(f *wire.Frame) {
	c.t.Helper()
	if c.json() {
		b, err := protojson.Marshal(f)
		if err != nil {
			c.t.Fatal(err)
		}
		c.sendMsg(ws.OpText, b)
		return
	}
	b, err := proto.Marshal(f)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendMsg(ws.OpBinary, b)
}

func (c *client) sendMsg(op ws.OpCode, p []byte) {
	c.t.Helper()
	c.deadline()
	if err := wsutil.WriteClientMessage(c.conn, op, p); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// sendFrame writes one raw frame, masked unless unmasked.
func (c *client) sendFrame(h ws.Header, p []byte, unmasked bool) {
	c.t.Helper()
	f := ws.Frame{Header: h, Payload: p}
	f.Header.Length = int64(len(p))
	if !unmasked {
		f = ws.MaskFrame(f)
	}
	c.deadline()
	if err := ws.WriteFrame(c.conn, f); err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
}

func (c *client) deadline() {
	if err := c.conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		c.t.Fatal(err)
	}
}

// readMsg reads the next data message, answering pings. A close from the
// server comes back as wsutil.ClosedError.
func (c *client) readMsg() (ws.OpCode, []byte, error) {
	c.deadline()
	p, op, err := wsutil.ReadServerData(c.rw())
	return op, p, err
}

// read reads the next frame, checking it uses the session's encoding.
func (c *client) read() *wire.Frame {
	c.t.Helper()
	op, p, err := c.readMsg()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return c.decode(op, p)
}

func (c *client) decode(op ws.OpCode, p []byte) *wire.Frame {
	c.t.Helper()
	f := new(wire.Frame)
	if c.json() {
		if op != ws.OpText {
			c.t.Fatalf("got opcode %v on a JSON session", op)
		}
		if err := protojson.Unmarshal(p, f); err != nil {
			c.t.Fatalf("decode JSON %q: %v", p, err)
		}
		return f
	}
	if op != ws.OpBinary {
		c.t.Fatalf("got opcode %v on a protobuf session", op)
	}
	if err := proto.Unmarshal(p, f); err != nil {
		c.t.Fatalf("decode: %v", err)
	}
	return f
}

// readClose reads until the server's close frame and returns its code;
// data frames before it are returned too.
func (c *client) readClose() (ws.StatusCode, []*wire.Frame) {
	c.t.Helper()
	var frames []*wire.Frame
	for {
		op, p, err := c.readMsg()
		var ce wsutil.ClosedError
		if errors.As(err, &ce) {
			return ce.Code, frames
		}
		if err != nil {
			c.t.Fatalf("read until close: %v (after %d frames)", err, len(frames))
		}
		frames = append(frames, c.decode(op, p))
	}
}

// readRaw reads one frame as it is, control frames included.
func (c *client) readRaw() (ws.Header, []byte) {
	c.t.Helper()
	c.deadline()
	h, err := ws.ReadHeader(c.r)
	if err != nil {
		c.t.Fatalf("read header: %v", err)
	}
	if err := ws.CheckHeader(h, ws.StateClientSide); err != nil {
		c.t.Fatalf("server frame fails the client-side checks: %v", err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.r, p); err != nil {
		c.t.Fatalf("read payload: %v", err)
	}
	return h, p
}

// expectEOF checks the server ends the TCP connection without more data.
func (c *client) expectEOF() {
	c.t.Helper()
	c.deadline()
	n, err := io.Copy(io.Discard, bufio.NewReader(c.r))
	if err != nil || n != 0 {
		c.t.Fatalf("after close: read %d more bytes, err %v; want EOF", n, err)
	}
}

func (c *client) login(id uint64, user string) *wire.Frame {
	c.t.Helper()
	c.send(loginFrame(id, "ok:"+user))
	f := c.read()
	if f.GetLoginOk() == nil || f.Id != id {
		c.t.Fatalf("login reply = %v, want LoginOk with id %d", f, id)
	}
	return f
}

func loginFrame(id uint64, token string) *wire.Frame {
	return &wire.Frame{Id: id, Body: &wire.Frame_Login{Login: &wire.Login{Token: token, DeviceId: "d1", Platform: "linux"}}}
}

func pingFrame(id uint64) *wire.Frame {
	return &wire.Frame{Id: id, Body: &wire.Frame_Ping{Ping: &wire.Ping{}}}
}

func ackFrame(seq uint64) *wire.Frame {
	return &wire.Frame{Body: &wire.Frame_SendAck{SendAck: &wire.SendAck{Seq: seq, MessageId: fmt.Sprint("m", seq)}}}
}

// expectError checks f is an Error with code for request id.
func expectError(t *testing.T, f *wire.Frame, id uint64, code wire.Code) {
	t.Helper()
	e := f.GetError()
	if e == nil || f.Id != id || wire.Code(e.Code) != code || e.Name != code.Name() {
		t.Fatalf("got %v, want Error %s for id %d", f, code.Name(), id)
	}
}

// onlySession returns the id of the one session srv has.
func onlySession(t *testing.T, srv *Server) uint64 {
	t.Helper()
	waitSessions(t, srv, 1)
	srv.mu.RLock()
	defer srv.mu.RUnlock()
	if len(srv.sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(srv.sessions))
	}
	for id := range srv.sessions {
		return id
	}
	return 0
}

// waitSessions waits until srv has n sessions.
func waitSessions(t *testing.T, srv *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.Sessions() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions, want %d", srv.Sessions(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitServing waits until Serve has started.
func waitServing(t *testing.T, srv *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.Addr() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("Serve did not start")
		}
		time.Sleep(time.Millisecond)
	}
}
