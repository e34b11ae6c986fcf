package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

var (
	unmarshalProto = proto.UnmarshalOptions{DiscardUnknown: true}
	unmarshalJSON  = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// session is one WebSocket connection of a Client. A reconnect makes a new
// session; the Client outlives them.
type session struct {
	// Set by dialSession, then read-only.
	url          string // the endpoint
	nc           net.Conn
	json         bool
	writeTimeout time.Duration
	gone         chan struct{} // closed by close

	// Only the goroutine reading this session: the caller of Dial or
	// Client.run during login, then Client.run.
	rd  *wsutil.Reader
	ctl wsutil.ControlHandler

	// Whole frames go onto nc through one queue: the writer that finds no
	// write in progress writes every queued frame with one writev, and
	// repeats while more were queued meanwhile; the others wait for the
	// writev that carried theirs. A client sending many messages makes
	// one system call for many frames instead of one each.
	wmu     sync.Mutex
	wq      [][]byte    // frames queued for the next writev
	wspare  [][]byte    // the slice of the last writev, for reuse
	wbatch  *writeBatch // the frames in wq share it
	writing bool        // a writer is in writeFrames

	closeOnce sync.Once

	// Guarded by Client.mu.
	loginOk  *wire.LoginOk
	caught   chan struct{} // closed once the catch-up is over
	caughtUp bool
	flushed  bool      // every pending Send was written on this session
	pingID   uint64    // outstanding Ping, 0 if none
	pingAt   time.Time // when the last Ping was sent (or the login)
	kick     *wire.Kick
	why      error // why the client closed it (a dead connection), nil if it did not
}

// dialSession opens the WebSocket with the subprotocol the options ask
// for; a wss:// url with tc (nil: the system's roots).
func dialSession(ctx context.Context, url string, jsonMode bool, tc *tls.Config, writeTimeout time.Duration) (*session, error) {
	want := SubprotocolProto
	if jsonMode {
		want = SubprotocolJSON
	}
	d := ws.Dialer{Protocols: []string{want}, TLSConfig: tc}
	nc, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", url, err)
	}
	if hs.Protocol != want && (jsonMode || hs.Protocol != "") {
		nc.Close()
		return nil, fmt.Errorf("client: dial %s: server chose subprotocol %q, want %q", url, hs.Protocol, want)
	}
	if br == nil {
		br = bufio.NewReaderSize(nc, 4096)
	}
	s := &session{
		url:          url,
		nc:           nc,
		json:         jsonMode,
		writeTimeout: writeTimeout,
		gone:         make(chan struct{}),
		caught:       make(chan struct{}),
	}
	s.ctl = wsutil.ControlHandler{Dst: ctlWriter{s}, State: ws.StateClientSide, DisableSrcCiphering: true}
	s.rd = &wsutil.Reader{
		Source:         br,
		State:          ws.StateClientSide,
		CheckUTF8:      jsonMode,
		MaxFrameSize:   maxMessageSize,
		MaxMessageSize: maxMessageSize,
		OnIntermediate: func(h ws.Header, r io.Reader) error {
			c := s.ctl
			c.Src = r
			return c.Handle(h)
		},
	}
	s.ctl.Src = s.rd
	return s, nil
}

// close ends the connection (abruptly: no close frame). Safe to repeat
// and to call from any goroutine; it unblocks the reader.
func (s *session) close() {
	s.closeOnce.Do(func() {
		s.nc.Close()
		close(s.gone)
	})
}

// readFrame reads the next data message, answering control frames. A
// decodeError leaves the connection usable; any other error ends it (a
// wsutil.ClosedError carries the server's close code).
func (s *session) readFrame() (*wire.Frame, error) {
	for {
		hdr, err := s.rd.NextFrame()
		if err != nil {
			return nil, err
		}
		if hdr.OpCode.IsControl() {
			if err := s.ctl.Handle(hdr); err != nil {
				return nil, err
			}
			continue
		}
		p, err := readAll(s.rd, hdr.Length)
		if err != nil {
			return nil, err
		}
		f := new(wire.Frame)
		switch hdr.OpCode {
		case ws.OpBinary:
			err = unmarshalProto.Unmarshal(p, f)
		case ws.OpText:
			err = unmarshalJSON.Unmarshal(p, f)
		default:
			err = fmt.Errorf("opcode %v", hdr.OpCode)
		}
		if err != nil {
			return nil, &decodeError{err}
		}
		return f, nil
	}
}

// readAll reads one whole message; hint is the first frame's length.
func readAll(r io.Reader, hint int64) ([]byte, error) {
	b := make([]byte, 0, min(hint, maxMessageSize)+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("client: read message: %w", err)
		}
	}
}

// write encodes f in the session's encoding and writes it as one masked
// WebSocket message. On failure the connection is closed (the reader then
// reports the drop).
func (s *session) write(f *wire.Frame) error {
	frame, err := s.encode(f)
	if err != nil {
		return err
	}
	return s.writeFrame(frame)
}

// writeAsync encodes f and queues it, without waiting for the write: a
// goroutine writes the queue (with the frames queued meanwhile) unless a
// writer is at it already. Frames keep their queue order. A failed write
// closes the connection, which the reader reports.
func (s *session) writeAsync(f *wire.Frame) error {
	frame, err := s.encode(f)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	if s.wbatch == nil {
		s.wbatch = &writeBatch{done: make(chan struct{})}
	}
	s.wq = append(s.wq, frame)
	if s.writing {
		s.wmu.Unlock()
		return nil
	}
	s.writing = true
	go s.writeQueued() // takes wmu
	s.wmu.Unlock()
	return nil
}

// encode is f as one masked WebSocket frame in the session's encoding.
func (s *session) encode(f *wire.Frame) ([]byte, error) {
	var (
		p   []byte
		op  ws.OpCode
		err error
	)
	if s.json {
		p, err = protojson.Marshal(f)
		op = ws.OpText
	} else {
		p, err = proto.Marshal(f)
		op = ws.OpBinary
	}
	if err != nil {
		return nil, fmt.Errorf("client: encode frame: %w", err)
	}
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(p)), Masked: true, Mask: ws.NewMask()}
	ws.Cipher(p, h.Mask, 0)
	hw := byteWriter{buf: make([]byte, 0, ws.HeaderSize(h)+len(p))}
	if err := ws.WriteHeader(&hw, h); err != nil {
		return nil, fmt.Errorf("client: encode frame header: %w", err)
	}
	return append(hw.buf, p...), nil
}

// writeBatch is the outcome of one writev, shared by the frames in it.
type writeBatch struct {
	done chan struct{} // closed after the writev
	err  error
}

// writeFrame queues frame (a whole WebSocket frame, not touched after) and
// returns once a writev carried it. On failure the connection is closed.
func (s *session) writeFrame(frame []byte) error {
	s.wmu.Lock()
	if s.wbatch == nil {
		s.wbatch = &writeBatch{done: make(chan struct{})}
	}
	mine := s.wbatch
	s.wq = append(s.wq, frame)
	if s.writing {
		s.wmu.Unlock()
		<-mine.done
		return mine.err
	}
	s.writing = true
	s.writeLocked()
	return mine.err
}

// writeQueued writes the queue until it is empty (writeAsync's writer).
func (s *session) writeQueued() {
	s.wmu.Lock()
	s.writeLocked()
}

// writeLocked, called with wmu held and writing set, writes batches until
// the queue is empty, then clears writing and releases wmu.
func (s *session) writeLocked() {
	for len(s.wq) > 0 {
		bufs, b := s.wq, s.wbatch
		s.wq, s.wbatch = s.wspare[:0], nil
		s.wmu.Unlock()
		b.err = s.writev(bufs)
		close(b.done)
		clear(bufs)
		s.wmu.Lock()
		s.wspare = bufs[:0]
	}
	s.writing = false
	s.wmu.Unlock()
}

// writev writes bufs whole, within the write timeout; on failure it
// closes the connection.
func (s *session) writev(bufs [][]byte) error {
	if err := s.nc.SetWriteDeadline(time.Now().Add(s.writeTimeout)); err != nil {
		s.close()
		return fmt.Errorf("client: write: %w", err)
	}
	nb := net.Buffers(bufs)
	if _, err := nb.WriteTo(s.nc); err != nil {
		s.close()
		return fmt.Errorf("client: write: %w", err)
	}
	return nil
}

type byteWriter struct{ buf []byte }

func (w *byteWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// ctlWriter writes control-frame answers (pong, close) whole, through the
// session's write queue. wsutil writes each such frame with one Write.
type ctlWriter struct{ s *session }

func (w ctlWriter) Write(p []byte) (int, error) {
	if err := w.s.writeFrame(bytes.Clone(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
