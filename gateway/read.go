package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

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

// errWouldBlock is what a non-blocking source (the epoll transport's)
// returns when it has no more bytes for now. msgReader.next then returns
// it too and keeps its place: the next call continues the same frame.
var errWouldBlock = errors.New("gateway: no more bytes for now")

// errFrameTimeout: a frame's bytes did not all arrive within the frame
// timeout after its first one.
var errFrameTimeout = errors.New("gateway: frame not complete within the frame timeout")

// readStage is where in a frame msgReader is.
type readStage uint8

const (
	stageHeader  readStage = iota // at a frame boundary, or inside a header (hlen bytes of it)
	stageControl                  // inside a control frame's payload (clen bytes of it)
	stageData                     // inside a data frame's payload (payload.N left)
	stageDiscard                  // discarding an oversize frame's payload (left bytes)
)

// msgReader reads client messages from a source, with gobwas' checks:
// ws.CheckHeader (RSV bits, reserved opcodes, control frames final and at
// most 125 bytes, masking required, continuation frames only inside a
// fragmented message), wsutil.UTF8Reader on text messages (fail-fast,
// across fragments) and ws.CheckCloseFrameData on close frames. It
// reassembles fragmented messages and returns control frames that arrive
// between fragments as they come. It never allocates on a length the peer
// declared: a payload buffer grows as bytes arrive, and payload beyond max
// is discarded unread.
//
// The source may block (the goroutine transport) or return errWouldBlock
// (the epoll transport): the reader then keeps exactly the state of the
// frame in progress — at most a header's bytes, a control payload, or the
// message being assembled — and continues it on the next call. It holds
// no buffer between messages. Not safe for concurrent use.
type msgReader struct {
	src io.Reader
	max int64 // payload limit of one message, all fragments together

	// frameTimeout bounds one frame from its first byte to its last (0:
	// none); deadline, if set, is told frameAt when a frame starts and the
	// zero time when it is complete.
	frameTimeout time.Duration
	deadline     func(time.Time)
	frameAt      time.Time // the frame in progress must be complete by then

	// discardLeft is what the connection may still make us discard.
	discardLeft int64

	state ws.State // server side; fragmented while inside a message

	// The frame in progress.
	stage readStage
	h     ws.Header
	hlen  int   // header bytes read (stageHeader)
	clen  int   // control payload bytes read (stageControl)
	left  int64 // payload bytes still to discard (stageDiscard)

	// The message being assembled.
	op       ws.OpCode // opcode of its first frame
	size     int64     // declared bytes of its frames so far, <= max
	skip     bool      // over max: its frames are discarded
	returned bool      // buf holds the message last returned
	buf      *[]byte   // payload so far, from bufPool

	// sc holds what is needed only inside a frame or a fragmented
	// message; between messages it goes back to scratchPool (idle).
	sc *readScratch
}

// readScratch is the part of a msgReader's state that an idle connection
// does not need.
type readScratch struct {
	utf8    wsutil.UTF8Reader
	payload io.LimitedReader
	cipher  wsutil.CipherReader
	hrd     bytes.Reader
	hbuf    [ws.MaxHeaderSize]byte
	hdr     [ws.MaxHeaderSize - 2]byte
	ctl     [ws.MaxControlFramePayloadSize]byte
}

var scratchPool = sync.Pool{New: func() any { return new(readScratch) }}

// scratch returns the reader's scratch state, borrowing it if needed.
func (r *msgReader) scratch() *readScratch {
	if r.sc == nil {
		r.sc = scratchPool.Get().(*readScratch)
	}
	return r.sc
}

// idle gives the scratch state back if the reader is between messages
// (and the message last returned, whose control payload may live in it,
// has been handled). The epoll transport calls it when a connection has
// no more bytes for now.
func (r *msgReader) idle() {
	if r.sc != nil && !r.midFrame() && !r.state.Fragmented() {
		*r.sc = readScratch{}
		scratchPool.Put(r.sc)
		r.sc = nil
	}
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

// atRest reports whether the reader holds nothing of a message: between
// messages, the last one handled and released, no scratch state.
func (r *msgReader) atRest() bool {
	return r.sc == nil && r.buf == nil && !r.returned && !r.midFrame() && !r.state.Fragmented()
}

// midFrame reports whether a frame has begun and is not complete.
func (r *msgReader) midFrame() bool { return r.stage != stageHeader || r.hlen > 0 }

// frameExpired reports whether the frame in progress is past its timeout.
func (r *msgReader) frameExpired(now time.Time) bool {
	return r.midFrame() && !r.frameAt.IsZero() && !now.Before(r.frameAt)
}

// next reads until it has a message to return. Errors are the source's
// (io.EOF, timeouts, resets, errWouldBlock), *closeError for violations
// (1008 for a frame past the frame timeout), or errDiscardLimit. After
// errWouldBlock the reader continues where it stopped; after any other
// error it is in an undefined state: stop reading frames.
func (r *msgReader) next() (message, error) {
	if r.returned {
		r.release()
	}
	m, err := r.step()
	if err != nil && err != errWouldBlock && errors.Is(err, os.ErrDeadlineExceeded) && r.frameExpired(time.Now()) {
		err = &closeError{ws.StatusPolicyViolation, errFrameTimeout}
	}
	return m, err
}

func (r *msgReader) step() (message, error) {
	for {
		switch r.stage {
		case stageHeader:
			h, err := r.header()
			if err != nil {
				return message{}, err
			}
			if err := ws.CheckHeader(h, r.state); err != nil {
				return message{}, &closeError{ws.StatusProtocolError, err}
			}
			r.h = h
			if h.OpCode.IsControl() {
				r.stage, r.clen = stageControl, 0
				continue
			}
			if !r.state.Fragmented() {
				r.op, r.size, r.skip = h.OpCode, 0, false
				r.scratch().utf8 = wsutil.UTF8Reader{}
			}
			if h.Fin {
				r.state = r.state.Clear(ws.StateFragmented)
			} else {
				r.state = r.state.Set(ws.StateFragmented)
			}
			// Compared without adding: h.Length may be close to 2^63.
			if r.skip || h.Length > r.max-r.size {
				r.skip = true
				if h.Length > r.discardLeft {
					return message{}, errDiscardLimit
				}
				r.discardLeft -= h.Length
				r.stage, r.left = stageDiscard, h.Length
				continue
			}
			r.size += h.Length
			r.startData(h)
			r.stage = stageData

		case stageControl:
			p := r.scratch().ctl[:r.h.Length]
			for r.clen < len(p) {
				n, err := r.src.Read(p[r.clen:])
				r.clen += n
				if err != nil && r.clen < len(p) {
					return message{}, unexpected(err)
				}
			}
			r.frameDone()
			return r.control(p)

		case stageDiscard:
			n, err := io.CopyN(io.Discard, r.src, r.left)
			r.left -= n
			if r.left > 0 {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				return message{}, unexpected(err)
			}
			r.frameDone()
			if r.h.Fin {
				r.returned = true // what was kept of the message goes
				return message{kind: msgTooLarge}, nil
			}

		case stageData:
			if err := r.readData(); err != nil {
				return message{}, err
			}
			r.frameDone()
			if !r.h.Fin {
				continue
			}
			if r.op == ws.OpText && !r.scratch().utf8.Valid() {
				// A sequence cut off by the end of the message.
				return message{}, &closeError{ws.StatusInvalidFramePayloadData, wsutil.ErrInvalidUTF8}
			}
			var p []byte
			if r.buf != nil {
				p = *r.buf
			}
			r.returned = true
			return message{kind: msgData, op: r.op, payload: p}, nil
		}
	}
}

// header reads the next frame header, resumably: the bytes of a header
// cut short stay in hbuf.
func (r *msgReader) header() (ws.Header, error) {
	sc := r.scratch()
	need := 2
	for {
		if r.hlen >= 2 {
			need = headerLen(sc.hbuf[0], sc.hbuf[1])
		}
		if r.hlen >= need {
			break
		}
		n, err := r.src.Read(sc.hbuf[r.hlen:need])
		if n > 0 && r.hlen == 0 {
			r.frameStarted()
		}
		r.hlen += n
		if err != nil && r.hlen < need {
			if err == io.EOF && (r.hlen > 0 || r.state.Fragmented()) {
				err = io.ErrUnexpectedEOF
			}
			return ws.Header{}, err
		}
	}
	sc.hrd.Reset(sc.hbuf[:need])
	r.hlen = 0
	h, err := ws.ReadHeaderBuffer(&sc.hrd, sc.hdr[:])
	if err != nil {
		if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
			return ws.Header{}, &closeError{ws.StatusProtocolError, err}
		}
		return ws.Header{}, err // cannot happen: all of it is there
	}
	return h, nil
}

// headerLen is the length of the frame header whose first two bytes are
// b0 and b1.
func headerLen(_, b1 byte) int {
	n := 2
	if b1&0x80 != 0 {
		n += 4 // mask
	}
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	return n
}

func (r *msgReader) frameStarted() {
	if r.frameTimeout > 0 {
		r.frameAt = time.Now().Add(r.frameTimeout)
		if r.deadline != nil {
			r.deadline(r.frameAt)
		}
	}
}

func (r *msgReader) frameDone() {
	r.stage = stageHeader
	if !r.frameAt.IsZero() {
		r.frameAt = time.Time{}
		if r.deadline != nil {
			r.deadline(time.Time{})
		}
	}
}

// control turns the payload p of the control frame r.h (at most 125
// bytes, as ws.CheckHeader made sure), unmasked in place, into a message.
func (r *msgReader) control(p []byte) (message, error) {
	ws.Cipher(p, r.h.Mask, 0)
	switch r.h.OpCode {
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

// startData sets up reading the payload of data frame h.
func (r *msgReader) startData(h ws.Header) {
	sc := r.scratch()
	sc.payload = io.LimitedReader{R: r.src, N: h.Length}
	sc.cipher.Reset(&sc.payload, h.Mask)
	if h.Length > 0 && r.buf == nil {
		r.buf = getBuf()
	}
}

// readData appends the rest of the current data frame's payload to the
// message buffer, unmasking it and checking UTF-8 on text as it arrives.
func (r *msgReader) readData() error {
	sc := r.scratch()
	var src io.Reader = &sc.cipher
	if r.op == ws.OpText {
		sc.utf8.Source = src // not Reset: the UTF-8 state spans fragments
		src = &sc.utf8
	}
	for sc.payload.N > 0 {
		b := *r.buf
		if len(b) == cap(b) {
			// Grow as bytes arrive, never to more than the frame declared.
			b = slices.Grow(b, int(min(max(int64(cap(b)), 512), sc.payload.N)))
		}
		n, err := src.Read(b[len(b):cap(b)])
		*r.buf = b[:len(b)+n]
		switch {
		case errors.Is(err, wsutil.ErrInvalidUTF8):
			return &closeError{ws.StatusInvalidFramePayloadData, err}
		case err == io.EOF && sc.payload.N > 0:
			return io.ErrUnexpectedEOF
		case err != nil && err != io.EOF:
			return err
		}
	}
	return nil
}

// release gives the message buffer back; the payload of the message last
// returned is invalid afterwards.
func (r *msgReader) release() {
	r.returned = false
	if r.buf != nil && !r.state.Fragmented() && r.stage != stageData {
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
