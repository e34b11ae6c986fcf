package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

func TestAppendHeader(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 24} {
		for _, op := range []ws.OpCode{ws.OpBinary, ws.OpText, ws.OpPong, ws.OpClose} {
			var want bytes.Buffer
			if err := ws.WriteHeader(&want, ws.Header{Fin: true, OpCode: op, Length: int64(n)}); err != nil {
				t.Fatal(err)
			}
			got := appendHeader(nil, op, n)
			if !bytes.Equal(got, want.Bytes()) || len(got) != headerSize(n) {
				t.Fatalf("appendHeader(%v, %d) = %x, want %x (size %d)", op, n, got, want.Bytes(), headerSize(n))
			}
		}
	}
}

func sampleFrames() []*wire.Frame {
	return []*wire.Frame{
		loginFrame(1, "ok:alice"),
		pingFrame(2),
		{Id: 3, Body: &wire.Frame_Send{Send: &wire.Send{
			ClientMessageId: "c-1",
			Conversation:    &wire.Conversation{Type: wire.Conversation_GROUP, Id: "g1"},
			Type:            int32(wire.MessageType_TEXT),
			Content:         []byte("héllo \x00 wörld"),
			Attributes:      map[string]string{"k": "v"},
			MentionList:     []string{"bob"},
		}}},
		{Body: &wire.Frame_Push{Push: &wire.Push{Entries: []*wire.Entry{{Seq: 9, Kind: &wire.Entry_Message{Message: &wire.Message{MessageId: "m", Content: make([]byte, 70000)}}}}}}},
		wire.ErrFrame(4, wire.CodeLoginConflict, "taken"),
		{Body: &wire.Frame_Kick{Kick: &wire.Kick{Reason: wire.Kick_ADMIN, CloseCode: 4011}}},
	}
}

// encode's output is one complete, valid server frame whose payload
// decodes back to the same Frame.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, c := range []codec{codecProto, codecJSON} {
		for _, f := range sampleFrames() {
			b, err := c.encode(f)
			if err != nil {
				t.Fatalf("%v: encode %v: %v", c, f, err)
			}
			r := bytes.NewReader(b)
			msg, err := wsutil.ReadServerMessage(r, nil)
			if err != nil || len(msg) != 1 || r.Len() != 0 {
				t.Fatalf("%v: %d bytes left, %d messages, err %v", c, r.Len(), len(msg), err)
			}
			wantOp := map[codec]ws.OpCode{codecProto: ws.OpBinary, codecJSON: ws.OpText}[c]
			if msg[0].OpCode != wantOp {
				t.Fatalf("%v: opcode %v, want %v", c, msg[0].OpCode, wantOp)
			}
			got, err := c.decodeFrame(msg[0].OpCode, msg[0].Payload)
			if err != nil || !proto.Equal(got, f) {
				t.Fatalf("%v: decoded %v, %v; want %v", c, got, err, f)
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	pb, _ := proto.Marshal(pingFrame(3))
	for _, tc := range []struct {
		name string
		c    codec
		op   ws.OpCode
		p    []byte
		want error
		id   uint64 // of the frame (unknown type) or requestID (bad frame)
		msg  string // in the error text
	}{
		{"garbage", codecProto, ws.OpBinary, []byte{0xff, 0xff}, errBadFrame, 0, "send a protobuf Frame in binary messages"},
		{"truncated after the id", codecProto, ws.OpBinary, []byte{0x08, 0x07, 0x52, 0x05, 0x0a}, errBadFrame, 7, "tandem.v1:"},
		{"invalid UTF-8 in a string", codecProto, ws.OpBinary, []byte{0x08, 0x0c, 0x52, 0x03, 0x0a, 0x01, 0xff}, errBadFrame, 12, ""},
		{"empty", codecProto, ws.OpBinary, nil, errUnknownFrameType, 0, ""},
		{"unknown field only", codecProto, ws.OpBinary, []byte{0x08, 0x07, 0x98, 0x06, 0x01}, errUnknownFrameType, 7, ""},
		{"text on tandem.v1", codecProto, ws.OpText, []byte(`{"id":"4","ping":{}}`), errBadFrame, 4, "not text"},
		{"not JSON", codecJSON, ws.OpText, []byte("{"), errBadFrame, 0, "tandem.v1.json: send a Frame in canonical JSON"},
		{"JSON of another shape", codecJSON, ws.OpText, []byte(`{"id":"x"}`), errBadFrame, 0, ""},
		{"JSON that fails after its id", codecJSON, ws.OpText, []byte(`{"id":"21","send":{"type":"x"}}`), errBadFrame, 21, ""},
		{"JSON with a numeric id", codecJSON, ws.OpText, []byte(`{"id":22,"nope":[}`), errBadFrame, 0, ""},
		{"JSON, unknown field only", codecJSON, ws.OpText, []byte(`{"id":"9","fromTheFuture":{"a":1}}`), errUnknownFrameType, 9, ""},
		{"protobuf on tandem.v1.json", codecJSON, ws.OpBinary, pb, errBadFrame, 3, "send a Frame in canonical JSON in text messages"},
		{"bad JSON in binary on tandem.v1.json", codecJSON, ws.OpBinary, []byte(` {"id":"23","ping":1}`), errBadFrame, 23, ""},
		{"not a data opcode", codecProto, ws.OpPing, nil, errBadFrame, 0, ""},
	} {
		f, err := tc.c.decodeFrame(tc.op, tc.p)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
			continue
		}
		if !strings.Contains(fmt.Sprint(err), tc.msg) {
			t.Errorf("%s: err %q does not say %q", tc.name, err, tc.msg)
		}
		id := f.GetId()
		if tc.want == errBadFrame {
			if f != nil {
				t.Errorf("%s: bad frame returned a frame %v", tc.name, f)
			}
			id = requestID(tc.op, tc.p)
		}
		if id != tc.id {
			t.Errorf("%s: id %d, want %d", tc.name, id, tc.id)
		}
	}
}

// JSON in a binary message is accepted on tandem.v1.json: the
// subprotocol decides the encoding, not the opcode.
func TestDecodeJSONInBinaryOnJSONSubprotocol(t *testing.T) {
	f, err := codecJSON.decodeFrame(ws.OpBinary, []byte(`{"id":"5","ping":{}}`))
	if err != nil || f.Id != 5 || f.GetPing() == nil {
		t.Fatalf("got %v, %v; want Ping 5", f, err)
	}
	if _, err := codecProto.decodeFrame(ws.OpBinary, []byte(`{"id":"5","ping":{}}`)); !errors.Is(err, errBadFrame) {
		t.Fatalf("JSON in binary on tandem.v1: err %v, want BAD_FRAME", err)
	}
}

// FuzzDecodeFrame: decoding never panics; whatever decodes re-encodes in
// both codecs to a frame that decodes the same.
func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range sampleFrames()[:3] {
		b, _ := proto.Marshal(fr)
		f.Add(b, false)
		j, _ := protojson.Marshal(fr)
		f.Add(j, true)
	}
	f.Fuzz(func(t *testing.T, p []byte, text bool) {
		op := ws.OpBinary
		if text {
			op = ws.OpText
		}
		c := codecProto
		if text {
			c = codecJSON
		}
		fr, err := c.decodeFrame(op, p)
		_ = requestID(op, p) // must not panic either
		if err != nil {
			if errors.Is(err, errUnknownFrameType) == (fr == nil) {
				t.Fatalf("unknown frame type must come with the frame, other errors without: %v, %v", fr, err)
			}
			return
		}
		for _, c := range []codec{codecProto, codecJSON} {
			b, err := c.encode(fr)
			if err != nil {
				t.Fatalf("%v: re-encode %v: %v", c, fr, err)
			}
			h, err := ws.ReadHeader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			again, err := c.decodeFrame(h.OpCode, b[len(b)-int(h.Length):])
			if err != nil || !proto.Equal(again, fr) {
				t.Fatalf("%v: round trip gave %v, %v; want %v", c, again, err, fr)
			}
		}
	})
}

// FuzzReadMessages: the frame reader never panics, never returns more
// than the limit, and every violation it reports has a close code a
// server may send.
func FuzzReadMessages(f *testing.F) {
	var seed bytes.Buffer
	for _, fr := range []ws.Frame{
		ws.NewBinaryFrame([]byte{0x08, 0x01}),
		ws.NewFrame(ws.OpText, false, []byte("{\"i")),
		ws.NewPingFrame([]byte("p")),
		ws.NewFrame(ws.OpContinuation, true, []byte("d\":\"1\"}")),
		ws.NewCloseFrame(ws.NewCloseFrameBody(1000, "")),
	} {
		_ = ws.WriteFrame(&seed, ws.MaskFrame(fr))
	}
	f.Add(seed.Bytes())
	f.Add([]byte{0x82, 0xff, 0, 0, 0, 0, 0, 0, 0x10, 0, 1, 2, 3, 4})
	const limit = 64
	f.Fuzz(func(t *testing.T, p []byte) {
		r := newMsgReader(bytes.NewReader(p), limit)
		for range 1000 {
			m, err := r.next()
			var ce *closeError
			switch {
			case errors.As(err, &ce):
				if ce.code != ws.StatusProtocolError && ce.code != ws.StatusInvalidFramePayloadData {
					t.Fatalf("close code %d", ce.code)
				}
				return
			case err != nil:
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, errDiscardLimit) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if m.kind == msgData && len(m.payload) > limit || len(m.payload) > ws.MaxControlFramePayloadSize && m.kind != msgData {
				t.Fatalf("%v payload of %d bytes over the limit", m.kind, len(m.payload))
			}
			if m.kind == msgClose {
				return
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	f := &wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Entries: []*wire.Entry{{
		Seq: 12345, ServerTimeMs: 1700000000000,
		Kind: &wire.Entry_Message{Message: &wire.Message{
			MessageId: "01HZXABCDEF", Sender: "alice", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "alice"},
			Type: 1, Content: bytes.Repeat([]byte("x"), 64), ServerTimeMs: 1700000000000,
		}},
	}}}}}
	for _, c := range []codec{codecProto, codecJSON} {
		b.Run(c.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.encode(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	f := &wire.Frame{Id: 77, Body: &wire.Frame_Send{Send: &wire.Send{
		ClientMessageId: "c-77", Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "bob"},
		Type: 1, Content: bytes.Repeat([]byte("x"), 64),
	}}}
	bin, _ := proto.Marshal(f)
	js, _ := protojson.Marshal(f)
	for _, tc := range []struct {
		name string
		c    codec
		op   ws.OpCode
		p    []byte
	}{{SubprotocolProto, codecProto, ws.OpBinary, bin}, {SubprotocolJSON, codecJSON, ws.OpText, js}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.c.decodeFrame(tc.op, tc.p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadMessage: frame parsing, unmasking and UTF-8 checking of a
// small masked text message, without the decoder.
func BenchmarkReadMessage(b *testing.B) {
	var one bytes.Buffer
	_ = ws.WriteFrame(&one, ws.MaskFrame(ws.NewTextFrame(bytes.Repeat([]byte("é"), 100))))
	msg := one.Bytes()
	src := bytes.NewReader(nil)
	r := newMsgReader(src, 1<<20)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		src.Reset(msg)
		if _, err := r.next(); err != nil {
			b.Fatal(err)
		}
	}
}
