package gateway

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gobwas/ws"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// WebSocket subprotocols (wire.proto, "Transport").
const (
	// SubprotocolProto carries the protobuf encoding of wire.Frame in
	// binary messages. It is used when the client offers no subprotocol.
	SubprotocolProto = "tandem.v1"
	// SubprotocolJSON carries protobuf's canonical JSON mapping of
	// wire.Frame in text messages.
	SubprotocolJSON = "tandem.v1.json"
)

// Decoding errors. The session answers both with BAD_FRAME.
var (
	errBadFrame         = errors.New("gateway: undecodable frame")
	errUnknownFrameType = errors.New("gateway: unknown frame type")
)

// codec is a session's encoding, fixed by the subprotocol chosen at
// upgrade: it decides how inbound messages are decoded (decodeFrame) and
// how outbound frames are encoded.
type codec uint8

const (
	codecProto codec = iota
	codecJSON
)

func (c codec) String() string {
	if c == codecJSON {
		return SubprotocolJSON
	}
	return SubprotocolProto
}

var (
	unmarshalProto = proto.UnmarshalOptions{DiscardUnknown: true}
	unmarshalJSON  = protojson.UnmarshalOptions{DiscardUnknown: true}
	marshalProto   = proto.MarshalOptions{UseCachedSize: true}
)

// decodeFrame decodes one client WebSocket message in c's encoding. The
// subprotocol decides, not the opcode: on tandem.v1 a message must be a
// binary protobuf Frame (a text message is refused); on tandem.v1.json it
// is a Frame in canonical JSON, in a text message or, as clients that
// only send binary do, in a binary one. Unknown fields are dropped, so a
// frame whose only body field is unknown to this server has a nil body:
// it is returned together with errUnknownFrameType (the caller still wants
// its id). Any other failure wraps errBadFrame, and its text says what was
// expected. p is not retained.
func (c codec) decodeFrame(op ws.OpCode, p []byte) (*wire.Frame, error) {
	f := new(wire.Frame)
	var err error
	switch {
	case op != ws.OpBinary && op != ws.OpText:
		return nil, fmt.Errorf("%w: opcode %v is not a data opcode", errBadFrame, op)
	case c == codecJSON:
		if err = unmarshalJSON.Unmarshal(p, f); err != nil {
			return nil, fmt.Errorf("%w: this connection negotiated %s: send a Frame in canonical JSON in text messages: %w",
				errBadFrame, SubprotocolJSON, err)
		}
	case op == ws.OpText:
		return nil, fmt.Errorf("%w: this connection negotiated %s: send a protobuf Frame in binary messages, not text (or negotiate %s)",
			errBadFrame, SubprotocolProto, SubprotocolJSON)
	default:
		if err = unmarshalProto.Unmarshal(p, f); err != nil {
			return nil, fmt.Errorf("%w: this connection negotiated %s: send a protobuf Frame in binary messages: %w",
				errBadFrame, SubprotocolProto, err)
		}
	}
	if f.Body == nil {
		return f, errUnknownFrameType
	}
	return f, nil
}

// requestID salvages the id of a message decodeFrame refused, so that the
// BAD_FRAME answer can echo it; 0 if none can be read. A text message, or
// any message on tandem.v1.json, is read as JSON: the top-level "id" of an
// object, a decimal integer or a string holding one. A binary message is
// then read as protobuf: the last well-formed varint field 1 before
// anything malformed. A binary message that starts like a JSON object is
// read only as JSON. Only error paths pay for it.
func requestID(op ws.OpCode, p []byte) uint64 {
	if op == ws.OpText || bytes.HasPrefix(bytes.TrimLeft(p, " \t\r\n"), []byte("{")) {
		var v struct {
			ID json.RawMessage `json:"id"`
		}
		if json.Unmarshal(p, &v) == nil && len(v.ID) > 0 {
			raw := strings.Trim(string(v.ID), `"`)
			if id, err := strconv.ParseUint(raw, 10, 64); err == nil {
				return id
			}
		}
		return 0
	}
	var id uint64
	for len(p) > 0 {
		num, typ, n := protowire.ConsumeTag(p)
		if n < 0 {
			break
		}
		p = p[n:]
		if num == 1 && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(p)
			if m < 0 {
				break
			}
			id, p = v, p[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, p)
		if m < 0 {
			break
		}
		p = p[m:]
	}
	return id
}

// encode returns f as one complete, unmasked, final WebSocket frame
// (header and payload) in c's encoding, ready to be written as is.
func (c codec) encode(f *wire.Frame) ([]byte, error) {
	if c == codecJSON {
		// The header size depends on the payload size, which JSON only
		// knows once written: reserve the biggest header and use its tail.
		const reserve = ws.MaxHeaderSize - 4 // server frames carry no mask
		b := make([]byte, reserve, reserve+256)
		b, err := protojson.MarshalOptions{}.MarshalAppend(b, f)
		if err != nil {
			return nil, fmt.Errorf("gateway: encode frame as JSON: %w", err)
		}
		n := len(b) - reserve
		start := reserve - headerSize(n)
		appendHeader(b[start:start], ws.OpText, n)
		return b[start:], nil
	}
	n := proto.Size(f)
	b := make([]byte, 0, headerSize(n)+n)
	b = appendHeader(b, ws.OpBinary, n)
	b, err := marshalProto.MarshalAppend(b, f)
	if err != nil {
		return nil, fmt.Errorf("gateway: encode frame as protobuf: %w", err)
	}
	return b, nil
}

// headerSize is the size of an unmasked frame header for an n-byte
// payload (ws.HeaderSize for server frames).
func headerSize(n int) int {
	return ws.HeaderSize(ws.Header{Length: int64(n)})
}

// appendHeader appends the header of a final, unmasked frame with opcode
// op and an n-byte payload. It is ws.WriteHeader without the io.Writer (and
// its allocation); TestAppendHeader checks the two agree.
func appendHeader(b []byte, op ws.OpCode, n int) []byte {
	b = append(b, 0x80|byte(op))
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
}

// compileClose returns a complete close frame with code and reason.
func compileClose(code ws.StatusCode, reason string) []byte {
	return ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, reason)))
}

// compileControl returns a complete control frame (ping or pong) carrying
// p, which must be at most 125 bytes.
func compileControl(op ws.OpCode, p []byte) []byte {
	b := make([]byte, 0, 2+len(p))
	return append(appendHeader(b, op, len(p)), p...)
}
