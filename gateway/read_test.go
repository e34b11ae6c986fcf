package gateway

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/gobwas/ws"
)

func masked(op ws.OpCode, fin bool, p []byte) []byte {
	var b bytes.Buffer
	if err := ws.WriteFrame(&b, ws.MaskFrame(ws.NewFrame(op, fin, p))); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func maskedHeader(op ws.OpCode, fin bool, length int64) []byte {
	var b bytes.Buffer
	if err := ws.WriteHeader(&b, ws.Header{OpCode: op, Fin: fin, Masked: true, Mask: ws.NewMask(), Length: length}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// A continuation declaring nearly 2^63 bytes after a small first fragment
// must not overflow the size check into a read.
func TestReaderHugeContinuation(t *testing.T) {
	in := append(masked(ws.OpBinary, false, []byte("abc")), maskedHeader(ws.OpContinuation, true, 1<<63-1)...)
	r := newMsgReader(bytes.NewReader(in), 1024)
	if _, err := r.next(); !errors.Is(err, errDiscardLimit) {
		t.Fatalf("err %v, want errDiscardLimit", err)
	}
}

// The discard budget is per connection, across messages.
func TestReaderDiscardBudget(t *testing.T) {
	const limit = 16
	in := io.MultiReader(
		bytes.NewReader(maskedHeader(ws.OpBinary, true, maxDiscardBytes/2)),
		io.LimitReader(zeros{}, maxDiscardBytes/2),
		bytes.NewReader(masked(ws.OpBinary, true, []byte{1, 2})),
		bytes.NewReader(maskedHeader(ws.OpBinary, true, maxDiscardBytes/2+1)),
	)
	r := newMsgReader(in, limit)
	if m, err := r.next(); err != nil || m.kind != msgTooLarge {
		t.Fatalf("first: %v %v, want msgTooLarge", m.kind, err)
	}
	if m, err := r.next(); err != nil || m.kind != msgData || !bytes.Equal(m.payload, []byte{1, 2}) {
		t.Fatalf("second: %v %q %v, want the small message", m.kind, m.payload, err)
	}
	if _, err := r.next(); !errors.Is(err, errDiscardLimit) {
		t.Fatalf("third: err %v, want errDiscardLimit", err)
	}
}

// The payload buffer grows with the bytes that arrive, not with the
// length the header declares.
func TestReaderDoesNotTrustDeclaredLength(t *testing.T) {
	in := append(maskedHeader(ws.OpBinary, true, 1<<20), make([]byte, 10)...)
	r := newMsgReader(bytes.NewReader(in), 1<<20)
	if _, err := r.next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err %v, want io.ErrUnexpectedEOF", err)
	}
	if c := cap(*r.buf); c > 4096 {
		t.Fatalf("buffer of %d bytes for 10 bytes received", c)
	}
}

func TestReaderReassembles(t *testing.T) {
	var in bytes.Buffer
	in.Write(masked(ws.OpText, false, []byte("hé")[:2]))
	in.Write(masked(ws.OpPing, true, []byte("p1")))
	in.Write(masked(ws.OpContinuation, false, nil))
	in.Write(masked(ws.OpContinuation, true, []byte("hé")[2:]))
	in.Write(masked(ws.OpBinary, true, bytes.Repeat([]byte{9}, 5000)))
	r := newMsgReader(&in, 1<<20)
	for _, want := range []struct {
		kind msgKind
		op   ws.OpCode
		p    []byte
	}{
		{msgPing, 0, []byte("p1")},
		{msgData, ws.OpText, []byte("hé")},
		{msgData, ws.OpBinary, bytes.Repeat([]byte{9}, 5000)},
	} {
		m, err := r.next()
		if err != nil || m.kind != want.kind || m.op != want.op || !bytes.Equal(m.payload, want.p) {
			t.Fatalf("got %v %v %q %v, want %v %v %q", m.kind, m.op, m.payload, err, want.kind, want.op, want.p)
		}
	}
	if _, err := r.next(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
