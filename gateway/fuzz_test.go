package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// Fuzz targets of the gateway's decoders: the WebSocket frame reader
// (FuzzMsgReader), the handshake (FuzzUpgrade) and the Frame codecs
// (FuzzCodecProto, FuzzCodecJSON). Seeds are below and in
// testdata/fuzz/<target>; docs/fuzzing.md says how to run them.

// chunkReader hands out src at most n bytes per Read, counts what it
// handed out, and ends with end (io.EOF or an I/O error).
type chunkReader struct {
	src  []byte
	n    int
	read int64
	end  error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.src) == 0 {
		return 0, r.end
	}
	k := min(len(p), r.n, len(r.src))
	copy(p, r.src[:k])
	r.src = r.src[k:]
	r.read += int64(k)
	return k, nil
}

// errSource is the I/O error a fuzzed source ends with instead of EOF.
var errSource = errors.New("fuzz: connection reset")

// maskFrames returns the frames, masked as a client sends them.
func maskFrames(frames ...ws.Frame) []byte {
	var b bytes.Buffer
	for _, fr := range frames {
		if err := ws.WriteFrame(&b, ws.MaskFrame(fr)); err != nil {
			panic(err)
		}
	}
	return b.Bytes()
}

// FuzzMsgReader reads arbitrary bytes as a client's frames, delivered in
// chunks of 1-256 bytes and ended by EOF or an I/O error, with a fuzzed
// message limit. It must never panic; every message returned respects
// the limit (data) or the control frame limit and is what its kind says
// (data is text or binary, text is UTF-8, a close code is one a peer may
// send); every call consumes input (no loop without progress); the
// message buffer never grows beyond what arrived (at most twice the
// bytes read plus one growth step, or a pooled buffer's 64 KiB) whatever
// length a header declares; and every error is a protocol violation with
// close code 1002 or 1007, the discard limit, or the source's own end
// (EOF, unexpected EOF, or its I/O error passed through).
func FuzzMsgReader(f *testing.F) {
	add := func(p []byte, max uint32) {
		f.Add(p, max, uint8(255), false)
		f.Add(p, max, uint8(0), true)
	}
	add(maskFrames(
		ws.NewBinaryFrame([]byte{0x08, 0x01}),
		ws.NewFrame(ws.OpText, false, []byte("{\"i")),
		ws.NewPingFrame([]byte("p")),
		ws.NewFrame(ws.OpContinuation, false, []byte("d\":")),
		ws.NewPongFrame(nil),
		ws.NewFrame(ws.OpContinuation, true, []byte("\"1\"}")),
		ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "bye")),
	), 1<<16)
	add(maskFrames(ws.NewTextFrame([]byte("h\xc3")), ws.NewFrame(ws.OpContinuation, true, []byte("\xa9llo"))), 64) // UTF-8 split across fragments
	add(maskFrames(ws.NewTextFrame([]byte("\xff"))), 64)                                                           // invalid UTF-8
	add(maskFrames(ws.NewBinaryFrame(bytes.Repeat([]byte{7}, 300))), 100)                                          // over the limit, discarded
	add(maskFrames(ws.NewFrame(ws.OpBinary, false, make([]byte, 60)), ws.NewFrame(ws.OpContinuation, true, make([]byte, 60))), 100)
	add(maskFrames(ws.NewCloseFrame([]byte{0x13, 0x88})), 64)               // close 5000: out of range
	add(maskFrames(ws.NewCloseFrame([]byte{0x03, 0xed})), 64)               // close 1005: reserved
	add(maskFrames(ws.NewCloseFrame([]byte{0x03})), 64)                     // one-byte close payload
	add(maskFrames(ws.NewFrame(ws.OpContinuation, true, []byte("x"))), 64)  // continuation outside a message
	add(maskFrames(ws.NewFrame(ws.OpPing, false, nil)), 64)                 // fragmented control frame
	add(maskFrames(ws.NewFrame(ws.OpPing, true, make([]byte, 126))), 1<<20) // control frame over 125
	add(maskFrames(ws.NewFrame(ws.OpCode(3), true, nil)), 64)               // reserved opcode
	add(ws.MustCompileFrame(ws.NewBinaryFrame([]byte("unmasked"))), 64)
	add([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5}, 1<<31) // declares 2^63-1 bytes, sends one
	add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 64)                            // length MSB set
	add([]byte{0x82, 0xfe, 0x00, 0x05, 1, 2, 3, 4, 1, 2, 3, 4, 5}, 64)                            // 16-bit length for 5 bytes
	add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4, 9}, 1<<24)                      // declares 1 MiB, sends one byte
	add([]byte{0xc2, 0x80, 1, 2, 3, 4}, 64)                                                       // RSV1
	add(nil, 0)

	f.Fuzz(func(t *testing.T, p []byte, limitArg uint32, chunk uint8, failAtEnd bool) {
		end := io.EOF
		if failAtEnd {
			end = errSource
		}
		src := &chunkReader{src: p, n: int(chunk) + 1, end: end}
		limit := int64(limitArg)
		r := newMsgReader(src, limit)
		defer r.release()
		for calls := 1; ; calls++ {
			if calls > len(p)/2+1 {
				t.Fatalf("call %d of next on %d bytes: a call returned without consuming a frame", calls, len(p))
			}
			m, err := r.next()
			if r.buf != nil {
				if c, bound := int64(cap(*r.buf)), max(maxPooledBuf, 2*src.read+1024); c > bound {
					t.Fatalf("message buffer of %d bytes after %d bytes arrived (bound %d)", c, src.read, bound)
				}
			}
			if err != nil {
				var ce *closeError
				switch {
				case errors.As(err, &ce):
					if ce.code != ws.StatusProtocolError && ce.code != ws.StatusInvalidFramePayloadData {
						t.Fatalf("violation with close code %d: %v", ce.code, err)
					}
				case errors.Is(err, errDiscardLimit):
				case failAtEnd && errors.Is(err, errSource):
				case !failAtEnd && (err == io.EOF || err == io.ErrUnexpectedEOF):
				default:
					t.Fatalf("error %v (%T) is neither a violation nor the source's end (%v)", err, err, end)
				}
				return
			}
			switch m.kind {
			case msgData:
				if int64(len(m.payload)) > limit {
					t.Fatalf("%d-byte message over the %d-byte limit", len(m.payload), limit)
				}
				if m.op != ws.OpText && m.op != ws.OpBinary {
					t.Fatalf("data message with opcode %v", m.op)
				}
				if m.op == ws.OpText && !utf8.Valid(m.payload) {
					t.Fatalf("text message %q is not UTF-8", m.payload)
				}
			case msgPing, msgPong:
				if len(m.payload) > ws.MaxControlFramePayloadSize {
					t.Fatalf("%d-byte control frame", len(m.payload))
				}
			case msgClose:
				if m.code != 0 && (ws.CheckCloseFrameData(m.code, "") != nil || m.code > ws.StatusRangePrivate.Max) {
					t.Fatalf("close code %d passed", m.code)
				}
			case msgTooLarge:
				if len(m.payload) != 0 {
					t.Fatalf("too-large message with a %d-byte payload", len(m.payload))
				}
			default:
				t.Fatalf("message kind %v", m.kind)
			}
		}
	})
}

// memConn is an in-memory net.Conn: reads come from in (then EOF),
// writes are kept; deadlines are accepted and ignored (the input ends,
// so nothing waits).
type memConn struct {
	in  *chunkReader
	out bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7400} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

func upgradeRequest(path string, headers ...string) []byte {
	h := []string{"GET " + path + " HTTP/1.1", "Host: example.com", "Upgrade: websocket", "Connection: Upgrade",
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"}
	return []byte(strings.Join(append(h, headers...), "\r\n") + "\r\n\r\n")
}

// FuzzUpgrade runs arbitrary request bytes, delivered in chunks, through
// Server.upgrade on an in-memory connection. It must never panic; it
// either upgrades — the answer is a 101 whose Sec-WebSocket-Protocol is
// the codec it returned (none: tandem.v1) — or fails with nothing written
// (the request ended or outgrew the handshake limit) or with a 4xx
// response. Two open findings are let through, narrowly, and seeded:
// an unparseable request line gets no answer, and a wrong HTTP version
// gets 505.
func FuzzUpgrade(f *testing.F) {
	for _, req := range [][]byte{
		upgradeRequest("/ws"),
		upgradeRequest("/ws", "Sec-WebSocket-Protocol: tandem.v1.json"),
		upgradeRequest("/ws?v=1", "Sec-WebSocket-Protocol: chat, tandem.v1"),
		upgradeRequest("/ws", "Sec-WebSocket-Protocol: chat"),
		upgradeRequest("/ws", "Sec-WebSocket-Protocol: tandem.v1.json", "Sec-WebSocket-Protocol: tandem.v1"),
		upgradeRequest("/other"),
		upgradeRequest("/ws", "Sec-WebSocket-Version: 12"),
		upgradeRequest("/ws", "Origin: https://example.com", "Sec-WebSocket-Extensions: permessage-deflate"),
		[]byte("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"),
		[]byte("POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
		[]byte("GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
		[]byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n"),
		[]byte("GET /ws HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", 70) + "\r\n"),
		[]byte("GET /ws HTTP/1.1\r\nHost"),
		[]byte("\r\n\r\n"),
		[]byte("GET  HTTP/1.1\r\n\r\n"),
		nil,
	} {
		f.Add(req, uint8(255))
		f.Add(req, uint8(0))
	}
	s := New(Config{HeartbeatTimeout: -1}, nil)
	f.Fuzz(func(t *testing.T, req []byte, chunk uint8) {
		nc := &memConn{in: &chunkReader{src: req, n: int(chunk) + 1, end: io.EOF}}
		c, early, err := s.upgrade(nc)
		out := nc.out.Bytes()
		if err == nil {
			// What came behind the request is handed on, never anything
			// of the request itself.
			if i := requestEnd(req); i < 0 || !bytes.HasPrefix(req[i:], early) {
				t.Fatalf("upgraded; early bytes %q are not the start of what followed the request %q", early, req)
			}
			resp, rerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
			if rerr != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("upgraded, answering %q (%v)", out, rerr)
			}
			if c != codecProto && c != codecJSON {
				t.Fatalf("upgraded with codec %d", c)
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != c.String() && (got != "" || c != codecProto) {
				t.Fatalf("answered subprotocol %q for codec %v", got, c)
			}
			return
		}
		if len(out) == 0 {
			// Only a request cut short may go unanswered; one gobwas
			// cannot parse gets a 400 (it once got nothing).
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("refused without an answer: %v", err)
			}
			return
		}
		resp, rerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
		if rerr != nil {
			t.Fatalf("refused (%v) answering %q, which is not an HTTP response: %v", err, out, rerr)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusHTTPVersionNotSupported && errors.Is(err, ws.ErrHandshakeBadProtocol) {
			// An HTTP version below 1.1 gets gobwas' 505 (documented in
			// upgrade.go).
			return
		}
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Fatalf("refused (%v) answering %d, want a 4xx", err, resp.StatusCode)
		}
	})
}

// fuzzFrames are well-formed frames of several kinds, for seeds.
func fuzzFrames() []*wire.Frame {
	return []*wire.Frame{
		{Id: 1, Body: &wire.Frame_Login{Login: &wire.Login{Token: "tok", DeviceId: "d1", Platform: "ios"}}},
		{Id: 2, Body: &wire.Frame_Ping{Ping: &wire.Ping{}}},
		{Id: 3, Body: &wire.Frame_Send{Send: &wire.Send{
			ClientMessageId: "c-1", Conversation: &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g1"},
			Type: int32(wire.MessageType_TEXT), Content: []byte("héllo \x00"), Attributes: map[string]string{"k": "v", "": "x"},
			MentionList: []string{"bob"}, Options: &wire.SendOptions{Transient: true, PushData: "p"},
		}}},
		{Id: 1<<64 - 1, Body: &wire.Frame_Recall{Recall: &wire.Recall{Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"}, MessageId: "m1"}}},
		{Id: 5, Body: &wire.Frame_History{History: &wire.HistoryRequest{Conversation: &wire.Conversation{Id: "g"}, Limit: 20}}},
		wire.ErrFrame(6, wire.CodeLoginConflict, "taken"),
		{Body: &wire.Frame_Push{Push: &wire.Push{Entries: []*wire.Entry{{Seq: 9, Kind: &wire.Entry_Message{Message: &wire.Message{MessageId: "m", Recalled: true}}}}}}},
	}
}

// checkDecoded is the contract of decodeFrame for any input: a frame
// (nil error), a frame with a nil body and errUnknownFrameType, or no
// frame and an error wrapping errBadFrame. A decoded frame encodes in
// both codecs to one final server frame whose payload decodes to the same
// frame.
func checkDecoded(t *testing.T, fr *wire.Frame, err error) {
	t.Helper()
	switch {
	case errors.Is(err, errUnknownFrameType):
		if fr == nil || fr.Body != nil {
			t.Fatalf("unknown frame type with frame %v", fr)
		}
		return
	case err != nil:
		if fr != nil || !errors.Is(err, errBadFrame) {
			t.Fatalf("error %v with frame %v: want BAD_FRAME and no frame", err, fr)
		}
		return
	case fr == nil || fr.Body == nil:
		t.Fatalf("decoded %v without an error", fr)
	}
	for _, c := range []codec{codecProto, codecJSON} {
		b, err := c.encode(fr)
		if err != nil {
			t.Fatalf("%v: re-encode %v: %v", c, fr, err)
		}
		rd := bytes.NewReader(b)
		h, err := ws.ReadHeader(rd)
		if err != nil || !h.Fin || h.Masked || h.Length != int64(rd.Len()) {
			t.Fatalf("%v: encoded frame header %+v (%v) for %d payload bytes", c, h, err, rd.Len())
		}
		again, err := c.decodeFrame(h.OpCode, b[len(b)-rd.Len():])
		if err != nil || !proto.Equal(again, fr) {
			t.Fatalf("%v: round trip gave %v, %v; want %v", c, again, err, fr)
		}
	}
}

// FuzzCodecProto decodes arbitrary messages on a tandem.v1 connection: a
// binary message decodes per checkDecoded, and when it does, requestID
// salvages the same id; a text message is refused (BAD_FRAME) whatever it
// holds.
func FuzzCodecProto(f *testing.F) {
	for _, fr := range fuzzFrames() {
		b, err := proto.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	f.Add([]byte{0x08, 0x96, 0x01, 0xff}, false)             // id 150 then a bad tag
	f.Add([]byte{0x08, 0x05, 0x08, 0x07, 0x62, 0x00}, false) // id twice, empty Ping
	f.Add([]byte{0x08, 0x05, 0x8a, 0x06, 0x00}, false)       // an unknown body field
	f.Add([]byte{0x12, 0x80}, false)                         // truncated length
	f.Add([]byte(`{"id":"5","ping":{}}`), false)             // JSON on tandem.v1
	f.Add([]byte{0x08, 0x05, 0x12, 0x00}, true)              // text on tandem.v1
	f.Fuzz(func(t *testing.T, p []byte, text bool) {
		op := ws.OpBinary
		if text {
			op = ws.OpText
		}
		fr, err := codecProto.decodeFrame(op, p)
		id := requestID(op, p)
		if text {
			if fr != nil || !errors.Is(err, errBadFrame) {
				t.Fatalf("text on tandem.v1 decoded to %v, %v", fr, err)
			}
			return
		}
		checkDecoded(t, fr, err)
		if fr != nil && !bytes.HasPrefix(bytes.TrimLeft(p, " \t\r\n"), []byte("{")) && id != fr.Id {
			t.Fatalf("requestID %d, decoded id %d", id, fr.Id)
		}
	})
}

// FuzzCodecJSON decodes arbitrary messages on a tandem.v1.json
// connection, in text and in binary messages alike: per checkDecoded,
// and requestID never panics.
func FuzzCodecJSON(f *testing.F) {
	for _, fr := range fuzzFrames() {
		b, err := protojson.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	for _, s := range []string{
		`{"id":"5","ping":{}}`, `{"id":5,"ping":{}}`, `{"id":"18446744073709551616","ping":{}}`, `{"id":-1,"ping":{}}`,
		`{"id":"1","ping":{},"login":{}}`, `{"id":"1","future":{}}`, `{"id":"1","ping":null}`, `{"id":"1","ping":{},"id":"2"}`,
		`{"send":{"conversation":{"type":"GROUP","id":"g"},"type":1,"content":"aGk="}}`,
		`{"send":{"conversation":{"type":2,"id":"g"},"content":"***"}}`,
		`{"send":{"attributes":{"k":"v"},"mentionList":["a"],"mention_list":["b"]}}`,
		"{\"login\":{\"token\":\"\xff\"}}", `[]`, `null`, ``, `{"id":"1","ping":{}} x`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, p []byte, binary bool) {
		op := ws.OpText
		if binary {
			op = ws.OpBinary
		}
		fr, err := codecJSON.decodeFrame(op, p)
		_ = requestID(op, p) // only must not panic: its JSON reading is looser than protojson
		checkDecoded(t, fr, err)
	})
}
