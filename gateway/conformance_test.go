package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// The WebSocket conformance suite: the Autobahn TestSuite's case list
// (sections 1–7, 9, 12/13), the RFC 6455 opening-handshake checks and
// the tandem protocol's answers on top, run against every transport
// (testTransports). The Autobahn suite itself cannot be installed here;
// its cases are rewritten below with the gateway's exact expectations:
//
//   - a message that is a tandem frame is answered (a wire Ping, padded
//     with unknown fields or JSON whitespace to the size a case needs,
//     is answered with Pong: the echo of this suite);
//   - a message that is valid WebSocket but no tandem frame is answered
//     with an Error frame and the connection stays (checked by a probe);
//   - a WebSocket violation closes with the exact code (1002 or 1007),
//     after which nothing the client sent is answered and the TCP
//     connection ends.
//
// docs/conformance.md lists the groups and how to run them.

// testTransports are the transports every conformance case runs on.
func testTransports() []string {
	trs := []string{TransportGoroutine}
	if epollSupported {
		trs = append(trs, TransportEpoll)
	}
	return trs
}

// confConfig is the server configuration of the suite on transport tr:
// defaults (MaxFrameBytes 1 MiB) with the frame rate limit off, which is
// a policy, not a conformance rule (section 9 sends a message in 16,384
// fragments).
func confConfig(tr string) Config {
	return Config{Transport: tr, MaxFrameRate: -1}
}

// confCase is one conformance case: run gets a server on the transport
// under test and asserts the exact answer.
type confCase struct {
	name string
	run  func(t *testing.T, srv *Server)
}

func TestConformance(t *testing.T) {
	t.Parallel()
	cases := conformanceCases()
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("duplicate case name %q", tc.name)
		}
		seen[tc.name] = true
	}
	for _, tr := range testTransports() {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, confConfig(tr), newFakeHandler())
			t.Run("cases", func(t *testing.T) {
				for _, tc := range cases {
					t.Run(tc.name, func(t *testing.T) {
						t.Parallel()
						tc.run(t, srv)
					})
				}
			})
			waitSessions(t, srv, 0)
			t.Logf("transport %s: %d conformance cases", tr, len(cases))
		})
	}
}

func conformanceCases() []confCase {
	var cs []confCase
	add := func(name string, run func(t *testing.T, srv *Server)) {
		cs = append(cs, confCase{name, run})
	}
	sectionFraming(add)
	sectionPingPong(add)
	sectionReservedBits(add)
	sectionOpcodes(add)
	sectionFragmentation(add)
	sectionUTF8(add)
	sectionClose(add)
	sectionLarge(add)
	sectionExtensions(add)
	sectionHandshake(add)
	sectionTandem(add)
	return cs
}

type addCase func(name string, run func(t *testing.T, srv *Server))

// Section 1: framing. Payloads of each length class (7-bit, 16-bit and
// 64-bit lengths, at their edges), in one frame and written in chops.
func sectionFraming(add addCase) {
	for _, n := range []int{0, 125, 126, 127, 128, 65535, 65536} {
		add(fmt.Sprintf("1.1 text %d bytes", n), func(t *testing.T, srv *Server) {
			c := dial(t, srv, SubprotocolJSON)
			c.write(frame(ws.OpText, true, jsonPingOrEmpty(t, 11, n)))
			c.expectPingAnswer(11, n)
		})
		add(fmt.Sprintf("1.2 binary %d bytes", n), func(t *testing.T, srv *Server) {
			c := dial(t, srv, SubprotocolProto)
			c.write(frame(ws.OpBinary, true, protoPingOrEmpty(t, 12, n)))
			c.expectPingAnswer(12, n)
		})
	}
	add("1.1.8 text 65536 bytes in 997-byte writes", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		c.writeChopped(wireBytes(frame(ws.OpText, true, jsonPing(t, 13, 65536))), 997)
		c.expectPong(13)
	})
	add("1.2.8 binary 65536 bytes in 997-byte writes", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolProto)
		c.writeChopped(wireBytes(frame(ws.OpBinary, true, protoPing(t, 14, 65536))), 997)
		c.expectPong(14)
	})
}

// Section 2: pings and pongs.
func sectionPingPong(add addCase) {
	for _, tc := range []struct {
		name string
		p    []byte
	}{
		{"2.1 ping without payload", nil},
		{"2.2 ping with a text payload", []byte("Hello, world!")},
		{"2.3 ping with a binary payload", []byte{0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff}},
		{"2.4 ping with 125 bytes", bytes.Repeat([]byte{0xfe}, 125)},
	} {
		add(tc.name, func(t *testing.T, srv *Server) {
			c := dial(t, srv)
			c.write(frame(ws.OpPing, true, tc.p))
			c.expectControl(ws.OpPong, tc.p)
			c.probe(21)
		})
	}
	add("2.5 ping with 126 bytes", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpPing, true, make([]byte, 126)), frame(ws.OpPing, true, []byte("after")))
		c.expectClose(ws.StatusProtocolError)
	})
	add("2.6 ping with 125 bytes written one byte at a time", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		p := bytes.Repeat([]byte("*"), 125)
		c.writeChopped(wireBytes(frame(ws.OpPing, true, p)), 1)
		c.expectControl(ws.OpPong, p)
	})
	add("2.7 unsolicited pong without payload", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpPong, true, nil))
		c.probe(22)
	})
	add("2.8 unsolicited pong with payload", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpPong, true, []byte("unsolicited pong payload")))
		c.probe(23)
	})
	add("2.9 unsolicited pong, then ping", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpPong, true, []byte("unsolicited")), frame(ws.OpPing, true, []byte("solicited")))
		c.expectControl(ws.OpPong, []byte("solicited"))
		c.probe(24)
	})
	add("2.10 pings of every payload size 0..125, each answered in order", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		var fs []rawFrame
		for n := 0; n <= 125; n++ {
			fs = append(fs, frame(ws.OpPing, true, bytes.Repeat([]byte{byte(n)}, n)))
		}
		c.write(fs...)
		for n := 0; n <= 125; n++ {
			c.expectControl(ws.OpPong, bytes.Repeat([]byte{byte(n)}, n))
		}
	})
	add("2.11 fragmented ping", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpPing, false, []byte("frag")), frame(ws.OpContinuation, true, []byte("ment")))
		c.expectClose(ws.StatusProtocolError)
	})
}

// Section 3: reserved bits with no extension negotiated. A valid message
// is answered first; after the violation, nothing is.
func sectionReservedBits(add addCase) {
	for i, op := range []ws.OpCode{ws.OpText, ws.OpText, ws.OpText, ws.OpBinary, ws.OpBinary, ws.OpPing, ws.OpClose} {
		rsv := byte(i + 1)
		add(fmt.Sprintf("3.%d RSV=%d on %v", rsv, rsv, op), func(t *testing.T, srv *Server) {
			c := dial(t, srv, SubprotocolJSON)
			c.probe(31)
			f := frame(op, true, nil)
			switch op {
			case ws.OpText, ws.OpBinary:
				f.p = jsonPing(t, 32, 40)
			case ws.OpClose:
				f.p = closeBody(1000, "")
			}
			f.h.Rsv = rsv
			c.write(f, frame(ws.OpPing, true, []byte("after")))
			c.expectClose(ws.StatusProtocolError)
		})
	}
	add("3.8 RSV1 on a continuation frame", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 33, 40)
		cont := frame(ws.OpContinuation, true, p[20:])
		cont.h.Rsv = 4
		c.write(frame(ws.OpText, false, p[:20]), cont)
		c.expectClose(ws.StatusProtocolError)
	})
}

// Section 4: reserved opcodes.
func sectionOpcodes(add addCase) {
	for _, op := range []ws.OpCode{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		kind := "data"
		if op.IsControl() {
			kind = "control"
		}
		add(fmt.Sprintf("4 reserved %s opcode %#x", kind, byte(op)), func(t *testing.T, srv *Server) {
			c := dial(t, srv)
			c.probe(41)
			c.write(frame(op, true, []byte("reserved payload")), frame(ws.OpPing, true, []byte("after")))
			c.expectClose(ws.StatusProtocolError)
		})
	}
	add("4 reserved opcode inside a fragmented message", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 42, 40)
		c.write(frame(ws.OpText, false, p[:10]), frame(5, true, nil), frame(ws.OpContinuation, true, p[10:]))
		c.expectClose(ws.StatusProtocolError)
	})
}

// Section 5: fragmentation.
func sectionFragmentation(add addCase) {
	add("5.2 fragmented pong", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpPong, false, []byte("frag")), frame(ws.OpContinuation, true, []byte("ment")))
		c.expectClose(ws.StatusProtocolError)
	})
	add("5.3 text in 2 fragments", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 51, 64)
		c.write(frame(ws.OpText, false, p[:30]), frame(ws.OpContinuation, true, p[30:]))
		c.expectPong(51)
	})
	add("5.4 binary in 2 fragments", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolProto)
		p := protoPing(t, 52, 64)
		c.write(frame(ws.OpBinary, false, p[:3]), frame(ws.OpContinuation, true, p[3:]))
		c.expectPong(52)
	})
	add("5.5 text in 2 fragments written one byte at a time", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 53, 64)
		c.writeChopped(append(wireBytes(frame(ws.OpText, false, p[:30])), wireBytes(frame(ws.OpContinuation, true, p[30:]))...), 1)
		c.expectPong(53)
	})
	add("5.6 ping between two text fragments is answered in place", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 54, 64)
		c.write(frame(ws.OpText, false, p[:30]), frame(ws.OpPing, true, []byte("between")))
		c.expectControl(ws.OpPong, []byte("between")) // before the message is complete
		c.write(frame(ws.OpContinuation, true, p[30:]))
		c.expectPong(54)
	})
	add("5.7 unsolicited pong between two text fragments", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 55, 64)
		c.write(frame(ws.OpText, false, p[:30]), frame(ws.OpPong, true, []byte("between")), frame(ws.OpContinuation, true, p[30:]))
		c.expectPong(55)
	})
	add("5.8 ping between two binary fragments, written one byte at a time", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolProto)
		p := protoPing(t, 56, 64)
		c.writeChopped(append(wireBytes(frame(ws.OpBinary, false, p[:5])), wireBytes(frame(ws.OpPing, true, []byte("x")))...), 1)
		c.expectControl(ws.OpPong, []byte("x"))
		c.writeChopped(wireBytes(frame(ws.OpContinuation, true, p[5:])), 1)
		c.expectPong(56)
	})
	add("5.9 continuation (fin) without a message", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		c.write(frame(ws.OpContinuation, true, jsonPing(t, 57, 40)), frame(ws.OpPing, true, nil))
		c.expectClose(ws.StatusProtocolError)
	})
	add("5.10 continuation (not fin) without a message", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 58, 40)
		c.write(frame(ws.OpContinuation, false, p[:10]), frame(ws.OpText, true, p))
		c.expectClose(ws.StatusProtocolError)
	})
	add("5.11 continuation after a complete message", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 59, 40)
		c.write(frame(ws.OpText, false, p[:10]), frame(ws.OpContinuation, true, p[10:]))
		c.expectPong(59) // read before the violation, which drops what is queued
		c.write(frame(ws.OpContinuation, true, []byte("late")), frame(ws.OpPing, true, nil))
		c.expectClose(ws.StatusProtocolError)
	})
	add("5.12 text frame inside a fragmented text message", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 60, 40)
		c.write(frame(ws.OpText, false, p[:10]), frame(ws.OpText, true, p[10:]))
		c.expectClose(ws.StatusProtocolError)
	})
	add("5.13 binary frame inside a fragmented text message", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 61, 40)
		c.write(frame(ws.OpText, false, p[:10]), frame(ws.OpBinary, true, p[10:]))
		c.expectClose(ws.StatusProtocolError)
	})
	add("5.14 text in 5 fragments with pings after the 2nd and the 4th", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 62, 100)
		c.write(frame(ws.OpText, false, p[:20]), frame(ws.OpContinuation, false, p[20:40]), frame(ws.OpPing, true, []byte("ping 1")))
		c.expectControl(ws.OpPong, []byte("ping 1"))
		c.write(frame(ws.OpContinuation, false, p[40:60]), frame(ws.OpContinuation, false, p[60:80]), frame(ws.OpPing, true, []byte("ping 2")))
		c.expectControl(ws.OpPong, []byte("ping 2"))
		c.write(frame(ws.OpContinuation, true, p[80:]))
		c.expectPong(62)
	})
	add("5.15 binary in one-byte fragments", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolProto)
		p := protoPing(t, 63, 200)
		fs := []rawFrame{frame(ws.OpBinary, false, p[:1])}
		for i := 1; i < len(p); i++ {
			fs = append(fs, frame(ws.OpContinuation, i == len(p)-1, p[i:i+1]))
		}
		c.write(fs...)
		c.expectPong(63)
	})
	add("5.16 text with empty fragments", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 64, 40)
		c.write(frame(ws.OpText, false, nil), frame(ws.OpContinuation, false, p), frame(ws.OpContinuation, false, nil),
			frame(ws.OpContinuation, true, nil))
		c.expectPong(64)
	})
}

// Section 6: UTF-8 in text messages, checked as bytes arrive (fail fast).
func sectionUTF8(add addCase) {
	// Valid sequences, carried in an unknown JSON field of a wire Ping.
	for _, tc := range []struct{ name, s string }{
		{"6.2 Hello-µ@ßöäüàá-UTF-8!!", "Hello-µ@ßöäüàá-UTF-8!!"},
		{"6.5 κόσμε", "κόσμε"},
		{"6.7 first 2-byte sequence U+0080", "\u0080"},
		{"6.7 first 3-byte sequence U+0800", "\u0800"},
		{"6.7 first 4-byte sequence U+10000", "\U00010000"},
		{"6.8 last 1-byte sequence U+007F", "\u007f"},
		{"6.8 last 2-byte sequence U+07FF", "\u07ff"},
		{"6.8 last 3-byte sequence U+FFFF", "\uffff"},
		{"6.8 last 4-byte sequence U+10FFFF", "\U0010ffff"},
		{"6.11 U+D7FF before the surrogates", "\ud7ff"},
		{"6.11 U+E000 after the surrogates", "\ue000"},
		{"6.11 U+FFFD", "\ufffd"},
		{"6.23 noncharacters U+FFFE U+FDD0 U+1FFFF", "\ufffe\ufdd0\U0001ffff"},
	} {
		add(tc.name+" (valid)", func(t *testing.T, srv *Server) {
			c := dial(t, srv, SubprotocolJSON)
			c.write(frame(ws.OpText, true, jsonPingWith(66, tc.s)))
			c.expectPong(66)
		})
	}
	add("6.4 valid text fragmented at every byte", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPingWith(67, "κόσμε \U0010ffff \u0800")
		fs := []rawFrame{frame(ws.OpText, false, p[:1])}
		for i := 1; i < len(p); i++ {
			fs = append(fs, frame(ws.OpContinuation, i == len(p)-1, p[i:i+1]))
		}
		c.write(fs...)
		c.expectPong(67)
	})
	add("6.1 valid UTF-8 that is no tandem frame", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		c.write(frame(ws.OpText, true, []byte("Hello-µ@ßöäüàá-UTF-8!!")))
		expectError(t, c.nextFrame(), 0, wire.CodeBadFrame)
		c.probe(68)
	})

	// Invalid sequences: 1007, and nothing more.
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"6.3 surrogate U+D800 in κόσμε", []byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")},
		{"6.9 5-byte sequence", []byte{0xf8, 0x88, 0x80, 0x80, 0x80}},
		{"6.9 6-byte sequence", []byte{0xfc, 0x84, 0x80, 0x80, 0x80, 0x80}},
		{"6.10 beyond U+10FFFF", []byte{0xf4, 0x90, 0x80, 0x80}},
		{"6.12 lone continuation byte 0x80", []byte{0x80}},
		{"6.12 lone continuation byte 0xbf", []byte{0xbf}},
		{"6.13 lone start byte followed by a space", []byte{0xc0, ' '}},
		{"6.15 sequence with its last byte missing", []byte{0xe0, 0x80}},
		{"6.16 0xfe", []byte{0xfe}},
		{"6.16 0xff", []byte{0xff}},
		{"6.17 overlong slash (2 bytes)", []byte{0xc0, 0xaf}},
		{"6.17 overlong slash (3 bytes)", []byte{0xe0, 0x80, 0xaf}},
		{"6.17 overlong slash (4 bytes)", []byte{0xf0, 0x80, 0x80, 0xaf}},
		{"6.18 maximum overlong (2 bytes)", []byte{0xc1, 0xbf}},
		{"6.19 surrogate pair", []byte{0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80}},
	} {
		add(tc.name+" (invalid)", func(t *testing.T, srv *Server) {
			c := dial(t, srv, SubprotocolJSON)
			p := append(append([]byte(`{"id":"69","ping":{},"pad":"`), tc.b...), `"}`...)
			c.write(frame(ws.OpText, true, p), frame(ws.OpPing, true, nil))
			c.expectClose(ws.StatusInvalidFramePayloadData)
		})
	}
	add("6.14 sequence cut by the end of the message", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		c.write(frame(ws.OpText, false, []byte(`"abc`)), frame(ws.OpContinuation, true, []byte{0xf0, 0x90, 0x80}))
		c.expectClose(ws.StatusInvalidFramePayloadData)
	})
	add("6.4.1 fail fast: invalid first fragment, the rest never sent", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		c.write(frame(ws.OpText, false, []byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80")))
		c.expectClose(ws.StatusInvalidFramePayloadData)
	})
	add("6.4.2 fail fast: invalid bytes in a frame not yet complete", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := append([]byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80"), bytes.Repeat([]byte("x"), 200)...)
		b := wireBytes(frame(ws.OpText, true, p))
		c.writeRaw(b[:len(b)-190]) // the declared payload is 190 bytes short
		c.expectClose(ws.StatusInvalidFramePayloadData)
	})
	add("6.4.3 fail fast: invalid third fragment after two valid ones", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		c.write(frame(ws.OpText, false, []byte(`{"pad":"κό`)), frame(ws.OpContinuation, false, []byte("σμε")),
			frame(ws.OpContinuation, false, []byte{0xed, 0xa0, 0x80}))
		c.expectClose(ws.StatusInvalidFramePayloadData)
	})
}

// Section 7: the closing handshake.
func sectionClose(add addCase) {
	add("7.1.1 empty close is echoed", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpClose, true, nil))
		c.expectClose(0)
	})
	add("7.1.2 close twice", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpClose, true, closeBody(1000, "")), frame(ws.OpClose, true, closeBody(1000, "")))
		c.expectClose(1000)
	})
	add("7.1.3 ping after close is not answered", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpClose, true, closeBody(1000, "")), frame(ws.OpPing, true, []byte("after close")))
		c.expectClose(1000)
	})
	add("7.1.4 message after close is not answered", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		c.write(frame(ws.OpClose, true, closeBody(1000, "")), frame(ws.OpText, true, jsonPing(t, 71, 40)))
		c.expectClose(1000)
	})
	add("7.1.5 close between fragments ends the message unanswered", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		p := jsonPing(t, 72, 40)
		c.write(frame(ws.OpText, false, p[:10]), frame(ws.OpClose, true, closeBody(1000, "")), frame(ws.OpContinuation, true, p[10:]))
		c.expectClose(1000)
	})
	add("7.3.2 close with a 1-byte payload", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpClose, true, []byte{0x03}))
		c.expectClose(ws.StatusProtocolError)
	})
	add("7.3.4 close with code and reason", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpClose, true, closeBody(1000, "Hello World!")))
		c.expectClose(1000)
	})
	add("7.3.5 close with a 123-byte reason", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpClose, true, closeBody(1000, strings.Repeat("*", 123))))
		c.expectClose(1000)
	})
	add("7.3.6 close with a 124-byte reason (payload over 125)", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpClose, true, closeBody(1000, strings.Repeat("*", 124))))
		c.expectClose(ws.StatusProtocolError)
	})
	add("7.5.1 close reason not UTF-8", func(t *testing.T, srv *Server) {
		c := dial(t, srv)
		c.write(frame(ws.OpClose, true, closeBody(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")))
		c.expectClose(ws.StatusInvalidFramePayloadData)
	})
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999} {
		add(fmt.Sprintf("7.7 valid close code %d is echoed", code), func(t *testing.T, srv *Server) {
			c := dial(t, srv)
			c.write(frame(ws.OpClose, true, closeBody(code, "")))
			c.expectClose(ws.StatusCode(code))
		})
	}
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		add(fmt.Sprintf("7.9 invalid close code %d", code), func(t *testing.T, srv *Server) {
			c := dial(t, srv)
			c.write(frame(ws.OpClose, true, closeBody(code, "")))
			c.expectClose(ws.StatusProtocolError)
		})
	}
}

// Section 9: large messages, up to the limit (Config.MaxFrameBytes, 1 MiB
// by default) and over it. Over it, the message is discarded unread and
// answered with FRAME_TOO_LARGE; the connection stays.
func sectionLarge(add addCase) {
	const limit = DefaultMaxFrameBytes
	for _, n := range []int{64 << 10, 256 << 10, limit} {
		add(fmt.Sprintf("9.1 text %d bytes", n), func(t *testing.T, srv *Server) {
			c := dial(t, srv, SubprotocolJSON)
			c.write(frame(ws.OpText, true, jsonPing(t, 91, n)))
			c.expectPong(91)
		})
		add(fmt.Sprintf("9.2 binary %d bytes", n), func(t *testing.T, srv *Server) {
			c := dial(t, srv, SubprotocolProto)
			c.write(frame(ws.OpBinary, true, protoPing(t, 92, n)))
			c.expectPong(92)
		})
	}
	for _, size := range []int{64, 4 << 10, 64 << 10} {
		add(fmt.Sprintf("9.3 text %d bytes in %d-byte fragments", limit, size), func(t *testing.T, srv *Server) {
			c := dial(t, srv, SubprotocolJSON)
			c.write(fragments(ws.OpText, jsonPing(t, 93, limit), size)...)
			c.expectPong(93)
		})
	}
	for _, size := range []int{256, 16 << 10, 256 << 10} {
		add(fmt.Sprintf("9.4 binary %d bytes in %d-byte fragments", limit, size), func(t *testing.T, srv *Server) {
			c := dial(t, srv, SubprotocolProto)
			c.write(fragments(ws.OpBinary, protoPing(t, 94, limit), size)...)
			c.expectPong(94)
		})
	}
	add(fmt.Sprintf("9.5 text %d bytes in 997-byte writes", limit), func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		c.writeChopped(wireBytes(frame(ws.OpText, true, jsonPing(t, 95, limit))), 997)
		c.expectPong(95)
	})
	for _, tc := range []struct {
		name  string
		proto string
		fs    func(t *testing.T) []rawFrame
	}{
		{"9.x text one byte over the limit", SubprotocolJSON, func(t *testing.T) []rawFrame {
			return []rawFrame{frame(ws.OpText, true, jsonPing(t, 96, limit+1))}
		}},
		{"9.x binary 4 MiB", SubprotocolProto, func(t *testing.T) []rawFrame {
			return []rawFrame{frame(ws.OpBinary, true, protoPing(t, 97, 4<<20))}
		}},
		{"9.x fragments adding up to over the limit", SubprotocolProto, func(t *testing.T) []rawFrame {
			return fragments(ws.OpBinary, protoPing(t, 98, limit+64<<10), 600<<10)
		}},
	} {
		add(tc.name, func(t *testing.T, srv *Server) {
			c := dial(t, srv, tc.proto)
			c.write(tc.fs(t)...)
			expectError(t, c.nextFrame(), 0, wire.CodeFrameTooLarge)
			c.probe(99) // the connection stays
		})
	}
}

// Sections 12/13 (permessage-deflate) and masking: no extension is ever
// negotiated, so a compressed frame (RSV1) is a violation; client frames
// must be masked.
func sectionExtensions(add addCase) {
	for _, offer := range []string{
		"permessage-deflate",
		"permessage-deflate; client_max_window_bits",
		"permessage-deflate; server_no_context_takeover; client_no_context_takeover, permessage-deflate",
		"x-webkit-deflate-frame",
	} {
		add("12 offer "+offer+": not negotiated", func(t *testing.T, srv *Server) {
			resp, c := rawHandshake(t, srv, handshakeRequest(map[string]string{"Sec-WebSocket-Extensions": offer}))
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d, want 101", resp.StatusCode)
			}
			if ext := resp.Header.Values("Sec-WebSocket-Extensions"); len(ext) != 0 {
				t.Fatalf("the server negotiated extensions %q", ext)
			}
			c.probe(121)
		})
	}
	add("13 compressed (RSV1) message after a deflate offer", func(t *testing.T, srv *Server) {
		_, c := rawHandshake(t, srv, handshakeRequest(map[string]string{"Sec-WebSocket-Extensions": "permessage-deflate"}))
		f := frame(ws.OpBinary, true, []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}) // "Hello", deflated
		f.h.Rsv = 4
		c.write(f)
		c.expectClose(ws.StatusProtocolError)
	})
	for _, op := range []ws.OpCode{ws.OpBinary, ws.OpText, ws.OpPing, ws.OpClose} {
		add(fmt.Sprintf("unmasked client %v frame", op), func(t *testing.T, srv *Server) {
			c := dial(t, srv)
			f := frame(op, true, nil)
			if op == ws.OpClose {
				f.p = closeBody(1000, "")
			}
			f.unmasked = true
			c.write(f)
			c.expectClose(ws.StatusProtocolError)
		})
	}
}

// The opening handshake (RFC 6455 4.2.1 and 4.2.2).
func sectionHandshake(add addCase) {
	const sampleKey = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455 1.3
	add("handshake: valid request", func(t *testing.T, srv *Server) {
		resp, c := rawHandshake(t, srv, handshakeRequest(nil))
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d, want 101", resp.StatusCode)
		}
		if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
			t.Fatalf("Sec-WebSocket-Accept %q, want the RFC 6455 1.3 sample's", got)
		}
		c.probe(131)
	})
	add("handshake: random key, header names in lower case, Connection token list", func(t *testing.T, srv *Server) {
		key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
		req := "GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n" +
			"sec-websocket-key: " + key + "\r\nsec-websocket-version: 13\r\n\r\n"
		resp, c := rawHandshake(t, srv, req)
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d, want 101", resp.StatusCode)
		}
		sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
			t.Fatalf("Sec-WebSocket-Accept %q, want %q", got, want)
		}
		c.probe(132)
	})
	for _, tc := range []struct {
		name   string
		edit   map[string]string // "" removes the header
		status int
	}{
		{"missing Upgrade", map[string]string{"Upgrade": ""}, http.StatusBadRequest},
		{"Upgrade not websocket", map[string]string{"Upgrade": "h2c"}, http.StatusBadRequest},
		{"missing Connection", map[string]string{"Connection": ""}, http.StatusBadRequest},
		{"Connection without the upgrade token", map[string]string{"Connection": "keep-alive"}, http.StatusBadRequest},
		{"missing Host", map[string]string{"Host": ""}, http.StatusBadRequest},
		{"missing Sec-WebSocket-Version", map[string]string{"Sec-WebSocket-Version": ""}, http.StatusBadRequest},
		{"missing Sec-WebSocket-Key", map[string]string{"Sec-WebSocket-Key": ""}, http.StatusBadRequest},
		{"Sec-WebSocket-Key of 24 characters, not base64", map[string]string{"Sec-WebSocket-Key": "!!!!!!!!!!!!!!!!!!!!!!!!"}, http.StatusBadRequest},
		{"Sec-WebSocket-Key of 24 characters, base64 of 18 bytes", map[string]string{"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAAAA"}, http.StatusBadRequest},
		{"Sec-WebSocket-Key of 24 characters, bad padding", map[string]string{"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=A"}, http.StatusBadRequest},
		{"Sec-WebSocket-Key of 23 characters", map[string]string{"Sec-WebSocket-Key": sampleKey[:23]}, http.StatusBadRequest},
		{"only unknown subprotocols offered", map[string]string{"Sec-WebSocket-Protocol": "mqtt, tandem.v2"}, http.StatusBadRequest},
	} {
		add("handshake: "+tc.name, func(t *testing.T, srv *Server) {
			resp, _ := rawHandshake(t, srv, handshakeRequest(tc.edit))
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
		})
	}
	add("handshake: wrong Sec-WebSocket-Version", func(t *testing.T, srv *Server) {
		resp, _ := rawHandshake(t, srv, handshakeRequest(map[string]string{"Sec-WebSocket-Version": "8"}))
		if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Sec-WebSocket-Version") != "13" {
			t.Fatalf("status %d, Sec-WebSocket-Version %q; want 426 and 13", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Version"))
		}
	})
	add("handshake: POST", func(t *testing.T, srv *Server) {
		req := strings.Replace(handshakeRequest(nil), "GET", "POST", 1)
		if resp, _ := rawHandshake(t, srv, req); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("status %d, want 405", resp.StatusCode)
		}
	})
	add("handshake: HTTP/1.0", func(t *testing.T, srv *Server) {
		req := strings.Replace(handshakeRequest(nil), "HTTP/1.1", "HTTP/1.0", 1)
		if resp, _ := rawHandshake(t, srv, req); resp.StatusCode != http.StatusHTTPVersionNotSupported {
			t.Fatalf("status %d, want 505", resp.StatusCode)
		}
	})
	add("handshake: wrong path", func(t *testing.T, srv *Server) {
		req := strings.Replace(handshakeRequest(nil), "/ws", "/other", 1)
		if resp, _ := rawHandshake(t, srv, req); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", resp.StatusCode)
		}
	})
}

// The tandem protocol on top of WebSocket: what a message that is valid
// WebSocket gets, per subprotocol.
func sectionTandem(add addCase) {
	for _, tc := range []struct {
		name   string
		offer  []string
		want   string
		op     ws.OpCode
		answer ws.OpCode
	}{
		{"no subprotocol offered: binary protobuf", nil, "", ws.OpBinary, ws.OpBinary},
		{"tandem.v1: binary protobuf", []string{SubprotocolProto}, SubprotocolProto, ws.OpBinary, ws.OpBinary},
		{"tandem.v1.json: JSON in text", []string{SubprotocolJSON}, SubprotocolJSON, ws.OpText, ws.OpText},
		{"tandem.v1.json: JSON in binary, answered in text", []string{SubprotocolJSON}, SubprotocolJSON, ws.OpBinary, ws.OpText},
		{"first supported subprotocol in the client's order", []string{"mqtt", SubprotocolJSON, SubprotocolProto}, SubprotocolJSON, ws.OpText, ws.OpText},
	} {
		add("tandem: "+tc.name, func(t *testing.T, srv *Server) {
			c := dial(t, srv, tc.offer...)
			if c.proto != tc.want {
				t.Fatalf("negotiated %q, want %q", c.proto, tc.want)
			}
			p := protoPing(t, 141, 30)
			if c.json() {
				p = jsonPing(t, 141, 30)
			}
			c.write(frame(tc.op, true, p))
			h, got := c.readRaw()
			if h.OpCode != tc.answer {
				t.Fatalf("answer opcode %v, want %v", h.OpCode, tc.answer)
			}
			if f := c.decode(h.OpCode, got); f.GetPong() == nil || f.Id != 141 {
				t.Fatalf("got %v, want Pong 141", f)
			}
		})
	}
	add("tandem: text message on tandem.v1", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolProto)
		c.write(frame(ws.OpText, true, []byte(`{"id":"142","ping":{}}`)))
		expectError(t, c.nextFrame(), 142, wire.CodeBadFrame)
		c.probe(143)
	})
	add("tandem: undecodable protobuf", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolProto)
		c.write(frame(ws.OpBinary, true, []byte{0x08, 0x90, 0x01, 0xff, 0xff}))
		expectError(t, c.nextFrame(), 144, wire.CodeBadFrame)
		c.probe(145)
	})
	add("tandem: JSON object with an unknown body", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		c.write(frame(ws.OpText, true, []byte(`{"id":"146","teleport":{}}`)))
		expectError(t, c.nextFrame(), 146, wire.CodeBadFrame)
		c.probe(147)
	})
	add("tandem: a frame before Login that needs one", func(t *testing.T, srv *Server) {
		c := dial(t, srv, SubprotocolJSON)
		c.write(frame(ws.OpText, true, []byte(`{"id":"148","sync":{}}`)))
		expectError(t, c.nextFrame(), 148, wire.CodeNotLoggedIn)
		c.probe(149)
	})
}

// --- client side of the suite ---

// write sends frames in one write, as a peer that pipelines them does;
// each is masked unless marked unmasked, and its length is its payload's.
func (c *client) write(fs ...rawFrame) {
	c.t.Helper()
	var b []byte
	for _, f := range fs {
		b = append(b, wireBytes(f)...)
	}
	c.writeRaw(b)
}

func (c *client) writeRaw(b []byte) {
	c.t.Helper()
	c.deadline()
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// writeChopped writes b n bytes at a time, one write call each, so that
// the server sees frames (headers too) arrive in pieces.
func (c *client) writeChopped(b []byte, n int) {
	c.t.Helper()
	for len(b) > 0 {
		k := min(n, len(b))
		c.writeRaw(b[:k])
		b = b[k:]
	}
}

func wireBytes(f rawFrame) []byte {
	wf := ws.Frame{Header: f.h, Payload: f.p}
	wf.Header.Length = int64(len(f.p))
	if !f.unmasked {
		wf = ws.MaskFrame(wf)
	}
	var buf bytes.Buffer
	if err := ws.WriteFrame(&buf, wf); err != nil {
		panic(err) // writes to a bytes.Buffer do not fail
	}
	return buf.Bytes()
}

// fragments splits p into frames of size bytes (the first with op).
func fragments(op ws.OpCode, p []byte, size int) []rawFrame {
	var fs []rawFrame
	for i := 0; i < len(p); i += size {
		fop := ws.OpContinuation
		if i == 0 {
			fop = op
		}
		fs = append(fs, frame(fop, i+size >= len(p), p[i:min(i+size, len(p))]))
	}
	return fs
}

// nextFrame reads the next frame the server sends, which must be a data
// message in the session's encoding.
func (c *client) nextFrame() *wire.Frame {
	c.t.Helper()
	h, p := c.readRaw()
	if h.OpCode.IsControl() {
		c.t.Fatalf("got a %v frame (payload %q), want a data message", h.OpCode, p)
	}
	return c.decode(h.OpCode, p)
}

// expectPong checks the next frame is the wire Pong for request id.
func (c *client) expectPong(id uint64) {
	c.t.Helper()
	if f := c.nextFrame(); f.GetPong() == nil || f.Id != id {
		c.t.Fatalf("got %v, want Pong %d", f, id)
	}
}

// expectPingAnswer checks the answer to a padded wire Ping of n bytes:
// Pong, or BAD_FRAME if n is 0 (an empty message is no frame), after
// which the connection still works.
func (c *client) expectPingAnswer(id uint64, n int) {
	c.t.Helper()
	if n == 0 {
		expectError(c.t, c.nextFrame(), 0, wire.CodeBadFrame)
		c.probe(id + 1000)
		return
	}
	c.expectPong(id)
}

// probe sends a wire Ping and checks the very next frame is its Pong:
// nothing else was sent meanwhile, and the connection works.
func (c *client) probe(id uint64) {
	c.t.Helper()
	c.send(pingFrame(id))
	c.expectPong(id)
}

// expectControl checks the next frame is the control frame op with p.
func (c *client) expectControl(op ws.OpCode, p []byte) {
	c.t.Helper()
	h, got := c.readRaw()
	if h.OpCode != op || !h.Fin || !bytes.Equal(got, p) {
		c.t.Fatalf("got %v %q, want %v %q", h.OpCode, got, op, p)
	}
}

// expectClose checks the next frame is a close with code (0: an empty
// close), and that the server then ends the TCP connection with nothing
// more.
func (c *client) expectClose(code ws.StatusCode) {
	c.t.Helper()
	h, p := c.readRaw()
	if h.OpCode != ws.OpClose {
		c.t.Fatalf("got %v %q, want a close %d", h.OpCode, p, code)
	}
	var got ws.StatusCode
	if len(p) >= 2 {
		got = ws.StatusCode(binary.BigEndian.Uint16(p))
	}
	if got != code || (code == 0 && len(p) != 0) {
		c.t.Fatalf("close %d (payload %q), want %d", got, p, code)
	}
	c.expectEOF()
}

// jsonPing is a wire Ping with id in canonical JSON, padded with
// whitespace to exactly n bytes.
func jsonPing(t *testing.T, id uint64, n int) []byte {
	t.Helper()
	head := fmt.Sprintf(`{"id":"%d",`, id)
	const tail = `"ping":{}}`
	if n < len(head)+len(tail) {
		t.Fatalf("a JSON ping takes at least %d bytes, not %d", len(head)+len(tail), n)
	}
	return []byte(head + strings.Repeat(" ", n-len(head)-len(tail)) + tail)
}

// jsonPingWith is a wire Ping with id in canonical JSON that carries s in
// a field the server does not know.
func jsonPingWith(id uint64, s string) []byte {
	return []byte(fmt.Sprintf(`{"id":"%d","ping":{},"pad":"%s"}`, id, s))
}

// padField is the field number of the unknown field that pads protoPing.
const padField = protowire.MaxValidNumber

// protoPing is a wire Ping with id in protobuf, padded with unknown
// fields to exactly n bytes.
func protoPing(t *testing.T, id uint64, n int) []byte {
	t.Helper()
	b, err := proto.Marshal(pingFrame(id))
	if err != nil {
		t.Fatal(err)
	}
	if n < len(b) {
		t.Fatalf("a protobuf ping takes at least %d bytes, not %d", len(b), n)
	}
	for len(b) < n {
		rem := n - len(b)
		tag := protowire.SizeTag(padField)
		// One field of rem bytes, if its length prefix allows it; else
		// an empty one, and try again.
		l := rem - tag - 1
		for l > 0 && tag+protowire.SizeBytes(l) > rem {
			l--
		}
		if l < 0 || tag+protowire.SizeBytes(l) != rem {
			l = 0
			if tag+protowire.SizeBytes(0) > rem {
				t.Fatalf("cannot pad a protobuf ping to %d bytes", n)
			}
		}
		b = protowire.AppendTag(b, padField, protowire.BytesType)
		b = protowire.AppendBytes(b, bytes.Repeat([]byte{'p'}, l))
	}
	return b
}

func jsonPingOrEmpty(t *testing.T, id uint64, n int) []byte {
	if n == 0 {
		return nil
	}
	return jsonPing(t, id, n)
}

func protoPingOrEmpty(t *testing.T, id uint64, n int) []byte {
	if n == 0 {
		return nil
	}
	return protoPing(t, id, n)
}

// handshakeRequest is a valid upgrade request for /ws with the RFC 6455
// sample key, with the headers in edit set (or removed, if "").
func handshakeRequest(edit map[string]string) string {
	hdrs := [][2]string{
		{"Host", "localhost"},
		{"Upgrade", "websocket"},
		{"Connection", "Upgrade"},
		{"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
		{"Sec-WebSocket-Version", "13"},
	}
	for k, v := range edit {
		found := false
		for i := range hdrs {
			if hdrs[i][0] == k {
				hdrs[i][1], found = v, true
			}
		}
		if !found {
			hdrs = append(hdrs, [2]string{k, v})
		}
	}
	var b strings.Builder
	b.WriteString("GET /ws HTTP/1.1\r\n")
	for _, h := range hdrs {
		if h[1] != "" {
			fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// rawHandshake sends req on a new connection and reads the response. On
// 101 the connection is returned as a client (on the protobuf encoding
// unless the server chose JSON).
func rawHandshake(t *testing.T, srv *Server, req string) (*http.Response, *client) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", srv.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &client{t: t, conn: nc}
	c.deadline()
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatalf("write request: %v", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	c.r, c.proto = br, resp.Header.Get("Sec-WebSocket-Protocol")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		resp.Body.Close()
	}
	return resp, c
}

// FuzzSecKeyValid: the handshake's key check never panics on any request
// bytes, and on a request with one key it accepts exactly the base64
// encodings of 16 bytes.
func FuzzSecKeyValid(f *testing.F) {
	f.Add([]byte(handshakeRequest(nil)), "dGhlIHNhbXBsZSBub25jZQ==")
	f.Add([]byte("GET / HTTP/1.1\r\nsec-websocket-key:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n\r\n"), "!!!!!!!!!!!!!!!!!!!!!!!!")
	f.Add([]byte("Sec-WebSocket-Key: \t"), " AAAAAAAAAAAAAAAAAAAAAA==\t")
	f.Fuzz(func(t *testing.T, req []byte, key string) {
		secKeyValid(req)
		if strings.ContainsAny(key, "\r\n") || strings.TrimSpace(key) == "" {
			return
		}
		v := strings.Trim(key, " \t")
		b, err := base64.StdEncoding.DecodeString(v)
		want := err == nil && len(b) == 16 && len(v) == 24
		if got := secKeyValid([]byte(handshakeRequest(map[string]string{"Sec-WebSocket-Key": key}))); got != want {
			t.Fatalf("key %q: valid %v, want %v", key, got, want)
		}
	})
}
