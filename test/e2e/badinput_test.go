//go:build !race

package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// rawConn is a bare WebSocket client for sending what the Go client never
// would.
type rawConn struct {
	t  *testing.T
	nc net.Conn
}

func rawDial(t *testing.T, wsURL string) *rawConn {
	t.Helper()
	nc, _, _, err := ws.Dialer{Protocols: []string{"tandem.v1"}, Timeout: 5 * time.Second}.Dial(context.Background(), wsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc}
}

func (c *rawConn) writeBytes(b []byte) {
	c.t.Helper()
	if err := wsutil.WriteClientBinary(c.nc, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawConn) write(f *wire.Frame) {
	c.t.Helper()
	b, err := proto.Marshal(f)
	if err != nil {
		c.t.Fatal(err)
	}
	c.writeBytes(b)
}

// read returns the next frame, or the close code if the server closed.
func (c *rawConn) read() (*wire.Frame, ws.StatusCode) {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, code, err := c.next()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f, code
}

// next is read without the test's deadline and without failing the test
// (for use off the test goroutine).
func (c *rawConn) next() (*wire.Frame, ws.StatusCode, error) {
	for {
		msgs, err := wsutil.ReadServerMessage(c.nc, nil)
		if err != nil {
			var ce wsutil.ClosedError
			if asClosed(err, &ce) {
				return nil, ce.Code, nil
			}
			return nil, 0, err
		}
		for _, m := range msgs {
			switch m.OpCode {
			case ws.OpClose:
				code, _ := ws.ParseCloseFrameData(m.Payload)
				return nil, code, nil
			case ws.OpBinary:
				var f wire.Frame
				if err := proto.Unmarshal(m.Payload, &f); err != nil {
					return nil, 0, err
				}
				return &f, 0, nil
			}
		}
	}
}

func asClosed(err error, ce *wsutil.ClosedError) bool {
	e, ok := err.(wsutil.ClosedError)
	if ok {
		*ce = e
	}
	return ok
}

// readReply reads the next frame that is not an unsolicited push, page or
// conversation list (device events can be pushed at any time).
func (c *rawConn) readReply() (*wire.Frame, ws.StatusCode) {
	c.t.Helper()
	for {
		f, code := c.read()
		if f == nil || f.GetId() != 0 || (f.GetPush() == nil && f.GetSyncPage() == nil && f.GetConversationList() == nil) {
			return f, code
		}
	}
}

// expectError reads the next reply and checks it is an Error with name and id.
func (c *rawConn) expectError(name string, id uint64) {
	c.t.Helper()
	f, code := c.readReply()
	if f == nil {
		c.t.Fatalf("want %s error, connection closed with %d", name, code)
	}
	if f.GetError().GetName() != name || f.GetId() != id {
		c.t.Fatalf("want %s error for id %d, got %v", name, id, f)
	}
}

func (c *rawConn) login(tok, device string, id uint64) *wire.Frame {
	c.write(&wire.Frame{Id: id, Body: &wire.Frame_Login{Login: &wire.Login{Token: tok, DeviceId: device, Platform: "linux", HasCursor: true}}})
	f, code := c.read()
	if f == nil {
		c.t.Fatalf("login: closed with %d", code)
	}
	return f
}

// ping proves the connection still serves.
func (c *rawConn) ping(id uint64) {
	c.t.Helper()
	c.write(&wire.Frame{Id: id, Body: &wire.Frame_Ping{Ping: &wire.Ping{}}})
	for {
		f, code := c.readReply()
		if f == nil {
			c.t.Fatalf("ping: closed with %d", code)
		}
		if f.GetPong() != nil && f.GetId() == id {
			return
		}
	}
}

// messageIDs reads a user's whole log through a fresh device and returns
// the message IDs in it (device events, including the probe's own login,
// are not counted).
func messageIDs(t *testing.T, n *testNode, user string) []string {
	t.Helper()
	d := dial(t, n.wsURL(), n.apiURL(), user, "probe", devOpts{platform: "web", hasCursor: true, cursor: 0})
	defer d.Close()
	d.waitSeq(t, d.LoginOk().GetLastSeq())
	var ids []string
	for _, e := range d.msgs() {
		ids = append(ids, e.GetMessage().GetMessageId())
	}
	return ids
}

// TestBadInput: each kind of bad input gets an error frame with its stable
// code, the connection survives where it can, and nothing stored changes.
func TestBadInput(t *testing.T) {
	n := startNode(t, t.TempDir())
	ws, api := n.wsURL(), n.apiURL()
	a := dial(t, ws, api, "alice", "a1", devOpts{})
	if _, err := a.Send(ctxT(t, 10*time.Second), text("bob", "ok-1", "the one good message")); err != nil {
		t.Fatal(err)
	}
	// The fan-out to bob is asynchronous: wait until it landed.
	dial(t, ws, api, "bob", "b1", devOpts{hasCursor: true, cursor: 0}).waitMessages(t, 1)
	before := fmt.Sprint(messageIDs(t, n, "alice"), messageIDs(t, n, "bob"))

	t.Run("before login", func(t *testing.T) {
		c := rawDial(t, ws)
		c.write(&wire.Frame{Id: 5, Body: &wire.Frame_Send{Send: text("bob", "x", "early")}})
		c.expectError("NOT_LOGGED_IN", 5)
		// Survives, and can log in afterwards.
		if f := c.login(token(t, api, "alice"), "late", 6); f.GetLoginOk() == nil {
			t.Fatalf("login after NOT_LOGGED_IN: %v", f)
		}
	})

	t.Run("bad token", func(t *testing.T) {
		c := rawDial(t, ws)
		if f := c.login("not-a-jwt", "d", 1); f.GetError().GetName() != "BAD_TOKEN" {
			t.Fatalf("got %v", f)
		}
		if _, code := c.read(); code != wire.CloseAuthFailed {
			t.Fatalf("closed with %d, want %d", code, wire.CloseAuthFailed)
		}
	})

	t.Run("expired token", func(t *testing.T) {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
			Subject: "alice", ExpiresAt: jwt.NewNumericDate(time.Now().Add(-time.Minute)),
		}).SignedString([]byte(jwtSecret))
		if err != nil {
			t.Fatal(err)
		}
		c := rawDial(t, ws)
		if f := c.login(tok, "d", 1); f.GetError().GetName() != "TOKEN_EXPIRED" {
			t.Fatalf("got %v", f)
		}
		if _, code := c.read(); code != wire.CloseAuthFailed {
			t.Fatalf("closed with %d", code)
		}
	})

	t.Run("bad device id in login", func(t *testing.T) {
		c := rawDial(t, ws)
		if f := c.login(token(t, api, "alice"), "has space", 1); f.GetError().GetName() != "INVALID_ARGUMENT" {
			t.Fatalf("got %v", f)
		}
	})

	// The rest on one logged-in connection, which must survive them all.
	c := rawDial(t, ws)
	if f := c.login(token(t, api, "alice"), "raw", 1); f.GetLoginOk() == nil {
		t.Fatalf("login: %v", f)
	}
	// Drain the catch-up page(s).
	for {
		f, _ := c.read()
		if f.GetSyncPage() != nil && !f.GetSyncPage().GetHasMore() {
			break
		}
	}

	t.Run("malformed frame", func(t *testing.T) {
		c.writeBytes([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
		c.expectError("BAD_FRAME", 0)
		c.ping(100)
	})
	t.Run("unknown frame type", func(t *testing.T) {
		var b []byte
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, 7)
		b = protowire.AppendTag(b, 999, protowire.BytesType) // no such body
		b = protowire.AppendBytes(b, []byte("?"))
		c.writeBytes(b)
		c.expectError("BAD_FRAME", 7)
		c.ping(101)
	})
	t.Run("oversize frame", func(t *testing.T) {
		big := make([]byte, 2<<20) // over the 1 MiB default
		c.writeBytes(big)
		c.expectError("FRAME_TOO_LARGE", 0)
		c.ping(102)
	})
	t.Run("second login", func(t *testing.T) {
		c.write(&wire.Frame{Id: 8, Body: &wire.Frame_Login{Login: &wire.Login{Token: token(t, api, "alice"), DeviceId: "raw", Platform: "linux"}}})
		c.expectError("ALREADY_LOGGED_IN", 8)
	})
	t.Run("conversation breaking the rules", func(t *testing.T) {
		for i, s := range []*wire.Send{
			text("bob smith", "c1", "bad peer"),
			text("", "c2", "no peer"),
			{ClientMessageId: "c3", Conversation: &wire.Conversation{Type: wire.Conversation_TYPE_UNSPECIFIED, Id: "bob"}, Type: 1},
			{ClientMessageId: "", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Type: 1},
			{ClientMessageId: "c5", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, Type: 77},
		} {
			id := uint64(200 + i)
			c.write(&wire.Frame{Id: id, Body: &wire.Frame_Send{Send: s}})
			c.expectError("INVALID_ARGUMENT", id)
		}
		c.ping(103)
	})
	t.Run("zero request id", func(t *testing.T) {
		c.write(&wire.Frame{Id: 0, Body: &wire.Frame_Send{Send: text("bob", "zero", "no id")}})
		c.expectError("INVALID_ARGUMENT", 0)
		c.ping(104)
	})
	t.Run("server-only frame from a client", func(t *testing.T) {
		c.write(&wire.Frame{Id: 9, Body: &wire.Frame_Push{Push: &wire.Push{}}})
		c.expectError("BAD_FRAME", 9)
		c.ping(105)
	})

	after := fmt.Sprint(messageIDs(t, n, "alice"), messageIDs(t, n, "bob"))
	if after != before || !strings.Contains(before, " ") {
		t.Fatalf("bad input changed the logs: messages %v before, %v after", before, after)
	}
}
