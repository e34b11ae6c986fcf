package gateway

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gobwas/ws"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// rawFrame is one frame a test client writes as is.
type rawFrame struct {
	h        ws.Header
	p        []byte
	unmasked bool
}

func frame(op ws.OpCode, fin bool, p []byte) rawFrame {
	return rawFrame{h: ws.Header{OpCode: op, Fin: fin}, p: p}
}

func closeBody(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// Framing violations fail the connection with the close code RFC 6455
// asks for; modelled on the Autobahn cases (reserved bits and opcodes,
// control frames, fragmentation, UTF-8, close codes).
func TestFramingViolations(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Config{}, newFakeHandler())
	withRsv := func(f rawFrame, rsv byte) rawFrame { f.h.Rsv = rsv; return f }
	unmasked := func(f rawFrame) rawFrame { f.unmasked = true; return f }

	t.Run("cases", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			frames []rawFrame
			want   ws.StatusCode
		}{
			{
				name:   "unmasked client frame",
				frames: []rawFrame{unmasked(frame(ws.OpBinary, true, []byte{1}))},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "RSV1 without extension",
				frames: []rawFrame{withRsv(frame(ws.OpBinary, true, []byte{1}), 4)},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "RSV3 on a ping",
				frames: []rawFrame{withRsv(frame(ws.OpPing, true, nil), 1)},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "reserved data opcode 3",
				frames: []rawFrame{frame(3, true, nil)},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "reserved control opcode 0xB",
				frames: []rawFrame{frame(0xB, true, []byte("x"))},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "ping payload over 125 bytes",
				frames: []rawFrame{frame(ws.OpPing, true, make([]byte, 126))},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "fragmented ping",
				frames: []rawFrame{frame(ws.OpPing, false, []byte("a"))},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "continuation without a message",
				frames: []rawFrame{frame(ws.OpContinuation, true, []byte{1})},
				want:   ws.StatusProtocolError,
			},
			{
				name: "new message inside a fragmented one",
				frames: []rawFrame{
					frame(ws.OpText, false, []byte("a")),
					frame(ws.OpBinary, true, []byte{1}),
				},
				want: ws.StatusProtocolError,
			},
			{
				name:   "invalid UTF-8 in a text message",
				frames: []rawFrame{frame(ws.OpText, true, []byte{'{', 0xff, '}'})},
				want:   ws.StatusInvalidFramePayloadData,
			},
			{
				// Fail fast: the message is never finished.
				name:   "invalid UTF-8 in a first fragment",
				frames: []rawFrame{frame(ws.OpText, false, []byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80})},
				want:   ws.StatusInvalidFramePayloadData,
			},
			{
				name: "UTF-8 sequence cut by the end of the message",
				frames: []rawFrame{
					frame(ws.OpText, false, []byte("ab")),
					frame(ws.OpContinuation, true, []byte{0xce}),
				},
				want: ws.StatusInvalidFramePayloadData,
			},
			{
				name:   "close with a 1-byte payload",
				frames: []rawFrame{frame(ws.OpClose, true, []byte{3})},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "close code 999",
				frames: []rawFrame{frame(ws.OpClose, true, closeBody(999, ""))},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "close code 1005 (reserved, never sent)",
				frames: []rawFrame{frame(ws.OpClose, true, closeBody(1005, ""))},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "close code 1016 (undefined)",
				frames: []rawFrame{frame(ws.OpClose, true, closeBody(1016, ""))},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "close code 5000",
				frames: []rawFrame{frame(ws.OpClose, true, closeBody(5000, ""))},
				want:   ws.StatusProtocolError,
			},
			{
				name:   "close reason not UTF-8",
				frames: []rawFrame{frame(ws.OpClose, true, closeBody(1000, "\xff"))},
				want:   ws.StatusInvalidFramePayloadData,
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c := dial(t, srv)
				for _, f := range tc.frames {
					c.sendFrame(f.h, f.p, f.unmasked)
				}
				code, frames := c.readClose()
				if code != tc.want || len(frames) != 0 {
					t.Fatalf("close %d after %d frames, want %d after none", code, len(frames), tc.want)
				}
				c.expectEOF()
			})
		}
	})
	waitSessions(t, srv, 0)
	if st := srv.Stats(); st.ProtocolErrors == 0 || st.Closes[int(ws.StatusProtocolError)] == 0 {
		t.Fatalf("stats %+v do not count the violations", st)
	}
}

func TestLength64WithMSBSet(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Config{}, newFakeHandler())
	c := dial(t, srv)
	hdr := []byte{0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}
	c.deadline()
	if _, err := c.conn.Write(hdr); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.readClose(); code != ws.StatusProtocolError {
		t.Fatalf("close %d, want 1002", code)
	}
}

// Valid close codes are echoed; an empty close is answered with an empty
// one (the client library reports it as 1005).
func TestCloseEcho(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Config{}, newFakeHandler())
	for _, tc := range []struct {
		body []byte
		want ws.StatusCode
	}{
		{nil, ws.StatusNoStatusRcvd},
		{closeBody(1000, "done"), 1000},
		{closeBody(3000, ""), 3000},
		{closeBody(4999, "app"), 4999},
	} {
		c := dial(t, srv)
		c.sendFrame(ws.Header{OpCode: ws.OpClose, Fin: true}, tc.body, false)
		if code, _ := c.readClose(); code != tc.want {
			t.Errorf("close %v: echo %d, want %d", tc.body, code, tc.want)
		}
		c.expectEOF()
	}
}

func TestWebSocketPing(t *testing.T) {
	t.Parallel()
	srv := startServer(t, Config{}, newFakeHandler())
	c := dial(t, srv)
	for _, p := range [][]byte{nil, []byte("hello"), bytes.Repeat([]byte{7}, 125)} {
		c.sendFrame(ws.Header{OpCode: ws.OpPing, Fin: true}, p, false)
		h, got := c.readRaw()
		if h.OpCode != ws.OpPong || !h.Fin || !bytes.Equal(got, p) {
			t.Fatalf("got %v %q, want a pong with %q", h.OpCode, got, p)
		}
	}
	// An unsolicited pong is ignored; the connection goes on.
	c.sendFrame(ws.Header{OpCode: ws.OpPong, Fin: true}, []byte("x"), false)
	c.send(&wire.Frame{Id: 1, Body: &wire.Frame_Sync{Sync: &wire.SyncRequest{}}})
	expectError(t, c.read(), 1, wire.CodeNotLoggedIn)
}

// A fragmented message with control frames between its fragments:
// answered in order, pong first, and the message is reassembled.
func TestFragmentationWithInterleavedControl(t *testing.T) {
	t.Parallel()
	h := newFakeHandler()
	srv := startServer(t, Config{}, h)

	t.Run("binary", func(t *testing.T) {
		c := dial(t, srv)
		b, _ := proto.Marshal(loginFrame(4, "ok:tom"))
		c.sendFrame(ws.Header{OpCode: ws.OpBinary}, b[:3], false)
		c.sendFrame(ws.Header{OpCode: ws.OpPing, Fin: true}, []byte("mid"), false)
		c.sendFrame(ws.Header{OpCode: ws.OpContinuation}, nil, false)
		c.sendFrame(ws.Header{OpCode: ws.OpPong, Fin: true}, nil, false)
		c.sendFrame(ws.Header{OpCode: ws.OpContinuation, Fin: true}, b[3:], false)
		if hdr, p := c.readRaw(); hdr.OpCode != ws.OpPong || string(p) != "mid" {
			t.Fatalf("got %v %q, want pong \"mid\"", hdr.OpCode, p)
		}
		if f := c.read(); f.GetLoginOk() == nil || f.Id != 4 {
			t.Fatalf("got %v, want LoginOk 4", f)
		}
	})
	t.Run("text split inside a UTF-8 sequence", func(t *testing.T) {
		c := dial(t, srv, SubprotocolJSON)
		b, _ := protojson.Marshal(loginFrame(5, "ok:тимофей"))
		cut := bytes.IndexByte(b, 0xd1) + 1 // inside a 2-byte sequence
		c.sendFrame(ws.Header{OpCode: ws.OpText}, b[:cut], false)
		c.sendFrame(ws.Header{OpCode: ws.OpPing, Fin: true}, nil, false)
		c.sendFrame(ws.Header{OpCode: ws.OpContinuation, Fin: true}, b[cut:], false)
		if hdr, _ := c.readRaw(); hdr.OpCode != ws.OpPong {
			t.Fatalf("got %v, want pong", hdr.OpCode)
		}
		if f := c.read(); f.GetLoginOk() == nil || f.Id != 5 {
			t.Fatalf("got %v, want LoginOk 5", f)
		}
	})
}
