package gateway

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// msgKind says what msgReader.next returned.
type msgKind uint8

const (
	msgData     msgKind = iota // a complete text or binary message
	msgTooLarge                // a data message over the limit, discarded unread
	msgPing
	msgPong
	msgClose // the peer's close frame, already validated
)

// message is one event read from a client connection.
type message struct {
	kind msgKind
	// op is ws.OpText or ws.OpBinary for msgData.
	op ws.OpCode
	// payload is the unmasked payload of msgData, msgPing and msgPong.
	// It is valid only until the next call of next or release.
	payload []byte
	// code is the close status of msgClose; 0 if the peer sent none.
	code ws.StatusCode
}

// closeError is a WebSocket-level violation by the peer: the connection
// must be failed with close code.
type closeError struct {
	code ws.StatusCode
	err  error
}

func (e *closeError) Error() string {
	return fmt.Sprintf("gateway: websocket violation (close %d): %v", e.code, e.err)
}

func (e *closeError) Unwrap() error { return e.err }

// errCloseCodeRange: a close code above 4999.
var errCloseCodeRange = errors.New("gateway: close code above 4999")

// errDiscardLimit: the peer sent more oversize payload than one connection
// may make us throw away.
var errDiscardLimit = errors.New("gateway: oversize payload beyond the per-connection discard limit")

// msgReader reads client messages from a blocking source, one frame header
// at a time, with gobwas' checks: ws.CheckHeader (RSV bits, reserved
// opcodes, control frames final and at most 125 bytes, masking required,
// continuation frames only inside a fragmented message),
// wsutil.UTF8Reader on text messages (fail-fast, across fragments) and
// ws.CheckCloseFrameData on close frames. It reassembles fragmented
// messages and returns control frames that arrive between fragments as
// they come. It never allocates on a length the peer declared: a payload
// buffer grows as bytes arrive, and payload beyond max is discarded unread.
//
// It holds no buffer between messages. Not safe for concurrent use.
type msgReader struct {
	src io.Reader
	max int64 // payload limit of one message, all fragments together

	// discardLeft is what the connection may still make us discard.
	discardLeft int64

	state ws.State // server side; fragmented while inside a message

	// The message being assembled.
	op      ws.OpCode // opcode of its first frame
	size    int64     // declared bytes of its frames so far, <= max
	skip    bool      // over max: its frames are discarded
	buf     *[]byte   // payload so far, from bufPool
	utf8    wsutil.UTF8Reader
	payload io.LimitedReader
	cipher  wsutil.CipherReader

	hdr [ws.MaxHeaderSize - 2]byte
	ctl [ws.MaxControlFramePayloadSize]byte
}

func newMsgReader(src io.Reader, max int64) *msgReader {
	r := new(msgReader)
	r.init(src, max)
	return r
}

func (r *msgReader) init(src io.Reader, max int64) {
	r.src, r.max = src, max
	r.discardLeft = maxDiscardBytes
	r.state = ws.StateServerSide
}

// next reads until it has a message to return. Errors are the source's
// (io.EOF, timeouts, resets), *closeError for violations, or
// errDiscardLimit. After an error the reader is in an undefined state:
// stop reading frames.
func (r *msgReader) next() (message, error) {
	r.release()
	for {
		h, err := ws.ReadHeaderBuffer(r.src, r.hdr[:])
		if err != nil {
			if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
				return message{}, &closeError{ws.StatusProtocolError, err}
			}
			if err == io.EOF && r.state.Fragmented() {
				err = io.ErrUnexpectedEOF
			}
			return message{}, err
		}
		if err := ws.CheckHeader(h, r.state); err != nil {
			return message{}, &closeError{ws.StatusProtocolError, err}
		}
		if h.OpCode.IsControl() {
			return r.control(h)
		}

		if !r.state.Fragmented() {
			r.op, r.size, r.skip = h.OpCode, 0, false
			r.utf8 = wsutil.UTF8Reader{}
		}
		if h.Fin {
			r.state = r.state.Clear(ws.StateFragmented)
		} else {
			r.state = r.state.Set(ws.StateFragmented)
		}
		// Compared without adding: h.Length may be close to 2^63.
		if r.skip || h.Length > r.max-r.size {
			r.skip = true
			if err := r.discard(h.Length); err != nil {
				return message{}, err
			}
			if h.Fin {
				return message{kind: msgTooLarge}, nil
			}
			continue
		}
		r.size += h.Length
		if err := r.read(h); err != nil {
			return message{}, err
		}
		if !h.Fin {
			continue
		}
		if r.op == ws.OpText && !r.utf8.Valid() {
			// A sequence cut off by the end of the message.
			return message{}, &closeError{ws.StatusInvalidFramePayloadData, wsutil.ErrInvalidUTF8}
		}
		var p []byte
		if r.buf != nil {
			p = *r.buf
		}
		return message{kind: msgData, op: r.op, payload: p}, nil
	}
}

// control reads the payload of the control frame h (at most 125 bytes, as
// ws.CheckHeader made sure).
func (r *msgReader) control(h ws.Header) (message, error) {
	p := r.ctl[:h.Length]
	if _, err := io.ReadFull(r.src, p); err != nil {
		return message{}, unexpected(err)
	}
	ws.Cipher(p, h.Mask, 0)
	switch h.OpCode {
	case ws.OpPing:
		return message{kind: msgPing, payload: p}, nil
	case ws.OpPong:
		return message{kind: msgPong, payload: p}, nil
	default: // ws.OpClose; CheckHeader rejected reserved opcodes
		if len(p) == 0 {
			return message{kind: msgClose}, nil // no status: RFC 6455 7.1.5 (1005)
		}
		code, reason := ws.ParseCloseFrameData(p)
		if err := ws.CheckCloseFrameData(code, reason); err != nil {
			status := ws.StatusProtocolError
			if errors.Is(err, ws.ErrProtocolInvalidUTF8) {
				status = ws.StatusInvalidFramePayloadData
			}
			return message{}, &closeError{status, err}
		}
		if code > ws.StatusRangePrivate.Max {
			// Outside every range RFC 6455 7.4.2 defines; gobwas lets it by.
			return message{}, &closeError{ws.StatusProtocolError, errCloseCodeRange}
		}
		return message{kind: msgClose, code: code}, nil
	}
}

// read appends the payload of data frame h to the message buffer,
// unmasking it and checking UTF-8 on text as it arrives.
func (r *msgReader) read(h ws.Header) error {
	r.payload = io.LimitedReader{R: r.src, N: h.Length}
	r.cipher.Reset(&r.payload, h.Mask)
	var src io.Reader = &r.cipher
	if r.op == ws.OpText {
		r.utf8.Source = src // not Reset: the UTF-8 state spans fragments
		src = &r.utf8
	}
	if h.Length > 0 && r.buf == nil {
		r.buf = getBuf()
	}
	for r.payload.N > 0 {
		b := *r.buf
		if len(b) == cap(b) {
			// Grow as bytes arrive, never to more than the frame declared.
			b = slices.Grow(b, int(min(max(int64(cap(b)), 512), r.payload.N)))
		}
		n, err := src.Read(b[len(b):cap(b)])
		*r.buf = b[:len(b)+n]
		switch {
		case errors.Is(err, wsutil.ErrInvalidUTF8):
			return &closeError{ws.StatusInvalidFramePayloadData, err}
		case err == io.EOF && r.payload.N > 0:
			return io.ErrUnexpectedEOF
		case err != nil && err != io.EOF:
			return err
		}
	}
	return nil
}

// discard skips n payload bytes without keeping them, within the
// connection's discard budget.
func (r *msgReader) discard(n int64) error {
	if n > r.discardLeft {
		return errDiscardLimit
	}
	r.discardLeft -= n
	m, err := io.CopyN(io.Discard, r.src, n)
	if m < n && err == nil {
		err = io.ErrUnexpectedEOF
	}
	return unexpected(err)
}

// release gives the message buffer back; the payload of the message last
// returned is invalid afterwards.
func (r *msgReader) release() {
	if r.buf != nil && !r.state.Fragmented() {
		putBuf(r.buf)
		r.buf = nil
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// bufPool holds message buffers between messages, so that an idle
// connection holds none. Buffers that grew big are not kept.
var bufPool = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledBuf = 64 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}
