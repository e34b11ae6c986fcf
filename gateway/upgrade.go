package gateway

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/gobwas/ws"
)

// Handshake rejections.
var (
	errNotFound = ws.RejectConnectionError(
		ws.RejectionStatus(http.StatusNotFound),
		ws.RejectionReason("gateway: not found"),
	)
	errNoSubprotocol = ws.RejectConnectionError(
		ws.RejectionStatus(http.StatusBadRequest),
		ws.RejectionReason("gateway: no supported subprotocol offered (want "+SubprotocolProto+" or "+SubprotocolJSON+")"),
	)
	// errBadKey: a Sec-WebSocket-Key that is not the base64 encoding of 16
	// bytes (RFC 6455 4.2.1, item 5); gobwas checks only its length.
	errBadKey = ws.RejectConnectionError(
		ws.RejectionStatus(http.StatusBadRequest),
		ws.RejectionReason("gateway: Sec-WebSocket-Key is not the base64 encoding of 16 bytes"),
	)
)

// lingerTimeout bounds how long a connection is drained after the server
// gave up on it (rejected handshake), so that its response is not lost to
// a reset.
const lingerTimeout = time.Second

// upgrade runs the zero-copy WebSocket handshake on nc itself (no
// net/http: its per-connection buffers would stay alive after a hijack).
// gobwas reads the request through a pooled buffer that it returns before
// Upgrade returns. It answers a wrong path with 404, an offer of only
// unknown subprotocols with 400, a Sec-WebSocket-Key that does not
// decode to 16 bytes with 400, a request line that does not parse with
// 400, an HTTP version below 1.1 with 505, and anything else that is not
// a WebSocket upgrade with 400/426 (gobwas' own checks).
//
// It also returns the bytes the client sent right behind its request
// (the start of the WebSocket stream, which gobwas' buffered reader took
// with the request); the session reads them first.
//
// On a TLS connection the TLS handshake comes first; a client that speaks
// plain HTTP there gets a 400 saying so.
func (s *Server) upgrade(nc net.Conn) (codec, []byte, error) {
	if tc, ok := nc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			if re, ok := errors.AsType[tls.RecordHeaderError](err); ok && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
				refuseHTTP(re.Conn)
			}
			return 0, nil, fmt.Errorf("gateway: TLS handshake: %w", err)
		}
	}
	var (
		offered bool
		chosen  = -1
	)
	// gobwas reads header lines without a length limit: bound the request.
	// It hands the key to no callback: the recorded request gives it.
	rec := recorder{r: &io.LimitedReader{R: nc, N: maxHandshakeBytes}}
	u := ws.Upgrader{
		OnRequest: func(uri []byte) error {
			if i := bytes.IndexByte(uri, '?'); i >= 0 {
				uri = uri[:i]
			}
			if string(uri) != s.cfg.Path {
				return errNotFound
			}
			return nil
		},
		// Called for each offered subprotocol, in the client's order of
		// preference, until one is accepted.
		Protocol: func(p []byte) bool {
			offered = true
			switch string(p) {
			case SubprotocolProto:
				chosen = int(codecProto)
			case SubprotocolJSON:
				chosen = int(codecJSON)
			default:
				return false
			}
			return true
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			if !secKeyValid(rec.buf) {
				return nil, errBadKey
			}
			if offered && chosen < 0 {
				return nil, errNoSubprotocol
			}
			return nil, nil
		},
	}

	// The caller has set the handshake deadline.
	cw := countWriter{w: nc}
	rw := struct {
		io.Reader
		io.Writer
	}{&rec, &cw}
	if _, err := u.Upgrade(rw); err != nil {
		var rej *ws.ConnectionRejectedError
		if errors.As(err, &rej) {
			if cw.n == 0 {
				// gobwas refuses a request line it cannot parse without
				// answering: answer it.
				_, _ = io.WriteString(nc, badRequestResponse) // the connection is being dropped anyway
			}
			linger(nc, time.Now().Add(lingerTimeout))
		}
		return 0, nil, fmt.Errorf("gateway: upgrade: %w", err)
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return 0, nil, fmt.Errorf("gateway: clear handshake deadline: %w", err)
	}
	if chosen < 0 {
		chosen = int(codecProto) // no offer: the default
	}
	return codec(chosen), rec.rest(), nil
}

// badRequestResponse answers a request gobwas refused without a word.
const badRequestResponse = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Connection: close\r\nContent-Length: 36\r\n\r\ngateway: malformed HTTP request line"

// countWriter counts what the handshake wrote.
type countWriter struct {
	w io.Writer
	n int
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

// recorder keeps what the handshake read, to check the key
// (secKeyValid) and to find the bytes after the request.
type recorder struct {
	r   io.Reader
	buf []byte
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

// rest is a copy of what was read after the request's empty line (nil if
// nothing).
func (r *recorder) rest() []byte {
	end := requestEnd(r.buf)
	if end < 0 || end == len(r.buf) {
		return nil
	}
	return bytes.Clone(r.buf[end:])
}

// requestEnd is the offset just past the empty line that ends the HTTP
// request head in b (lines end in CRLF or, as gobwas also reads them, a
// bare LF), or -1 if there is none.
func requestEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			return i + 2
		case i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n':
			return i + 3
		}
	}
	return -1
}

// secKeyValid reports whether every Sec-WebSocket-Key header in the
// request head req is the base64 encoding of 16 bytes. gobwas has made
// sure there is one, 24 bytes long; header names are case-insensitive and
// values are trimmed of optional whitespace, as gobwas reads them.
func secKeyValid(req []byte) bool {
	head, _, _ := bytes.Cut(req, []byte("\r\n\r\n"))
	var dst [18]byte // base64 of 24 characters decodes to at most 18 bytes
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte("\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !bytes.EqualFold(name, []byte("Sec-WebSocket-Key")) {
			continue
		}
		value = bytes.Trim(value, " \t\r")
		if len(value) != 24 { // first: Decode must not write past dst
			return false
		}
		if n, err := base64.StdEncoding.Decode(dst[:], value); err != nil || n != 16 {
			return false
		}
	}
	return true
}

// looksLikeHTTP reports whether the first bytes of a TLS record header are
// the start of a plain HTTP request (as net/http checks).
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// refuseHTTP answers a plain HTTP request on the TLS port on the raw
// connection nc, then lingers so that the answer is not lost to a reset.
func refuseHTTP(nc net.Conn) {
	if _, err := io.WriteString(nc, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"+
		"gateway: this port speaks TLS; use wss://\n"); err != nil {
		return
	}
	linger(nc, time.Now().Add(lingerTimeout))
}

// linger shuts down the write side of nc (so the peer sees the end of
// what was written) and discards its input until it closes or deadline.
func linger(nc net.Conn, deadline time.Time) {
	if tc, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite() // best effort: the connection is being dropped
	}
	if err := nc.SetReadDeadline(deadline); err != nil {
		return
	}
	drain(nc)
}

// drain discards input from r until it fails: the peer closes, resets, or
// the read deadline passes.
func drain(r io.Reader) {
	_, _ = io.Copy(io.Discard, r) // the error only says which of those it was
}
