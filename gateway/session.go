package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/tandem-im/tandem/proto/wire"
)

// session is one upgraded connection: the application protocol rules
// (Login first and once, Ping, Logout), its write queue and its close.
// The read side (transport.go) feeds it messages one at a time.
//
// A session is most of what an idle connection costs the process, so it
// holds only what an idle, logged-in connection needs: the reader's
// state, the write queue's bookkeeping and the sends in flight are made
// while in use and dropped (or pooled) when they are idle again.
type session struct {
	// Set at upgrade, then read-only.
	id    uint64
	srv   *Server
	codec codec

	// Only the read side; closing, any goroutine. (Together they fill
	// one word: every idle connection keeps a session.)
	loggedIn  bool
	loggedOut bool
	closing   atomic.Bool // a close was started (a hint; out decides)

	// Only the read side.
	user string
	rate frameBucket // inbound flow control (admission.go)
	// rd reads the client's messages. The goroutine transport keeps one
	// for the session's life; the epoll transport borrows one from a pool
	// while a message is in progress.
	rd *msgReader

	// Any goroutine.
	out outQueue // the write side; out.sock is the connection

	// The session's place on the server's heartbeat wheel, once logged in:
	// the read side touches it for every message, the wheel reads it.
	hb wheelEntry

	// mu guards sends, the Sends in flight by frame id (admission.go; nil
	// while there are none), and callCancel, the context of the Handler
	// call in progress, canceled if the session closes meanwhile (an idle
	// session holds no context).
	mu         sync.Mutex
	sends      map[uint64]inflightSend
	callCancel context.CancelFunc

	// The epoll transport's state of the connection (epoll_linux.go);
	// empty where there is none.
	ep pconn
}

func newSession(srv *Server, id uint64, c codec) *session {
	s := &session{id: id, srv: srv, codec: c}
	s.out.init(nil, &srv.qcfg) // the transport's attach sets the socket
	return s
}

// newReader returns a msgReader for the session's messages from src.
func (s *session) newReader(src io.Reader) *msgReader {
	r := newMsgReader(src, s.srv.cfg.MaxFrameBytes)
	r.frameTimeout = s.srv.cfg.FrameTimeout
	return r
}

// callContext is the context for one blocking Handler call: bounded by
// Config.CallTimeout, done when the server stops or the session closes.
// done must be called when the call returns.
func (s *session) callContext() (ctx context.Context, done func()) {
	ctx, cancel := context.WithTimeout(s.srv.ctx, s.srv.cfg.CallTimeout)
	s.mu.Lock()
	s.callCancel = cancel
	s.mu.Unlock()
	if s.closing.Load() {
		cancel()
	}
	return ctx, func() {
		s.mu.Lock()
		s.callCancel = nil
		s.mu.Unlock()
		cancel()
	}
}

// cancelCall cancels the Handler call in progress, if any.
func (s *session) cancelCall() {
	s.mu.Lock()
	if s.callCancel != nil {
		s.callCancel()
	}
	s.mu.Unlock()
}

// handle processes one message from the read side. It returns false when
// the session wants no more frames: the peer's close frame arrived.
func (s *session) handle(m message) bool {
	if w := s.srv.wheel; w != nil {
		w.touch(&s.hb) // anything at all from the peer is a heartbeat
	}
	if !s.admitFrame(m) {
		return true // over the frame rate: answered, or ignored
	}
	closing := s.closing.Load()
	switch m.kind {
	case msgClose:
		if !closing {
			// Peer-initiated: echo its code; what is still queued is of no
			// use to a peer that is leaving.
			s.closeWith(m.code, "", nil, true)
		}
		return false
	case msgPing:
		if !closing {
			s.enqueue(compileControl(ws.OpPong, m.payload))
		}
	case msgPong:
		// Unsolicited pongs are allowed and mean nothing.
	case msgTooLarge:
		if !closing {
			s.srv.stats.framesIn.Add(1)
			s.reply(wire.ErrFrame(0, wire.CodeFrameTooLarge,
				fmt.Sprintf("frame payload over the limit of %d bytes", s.srv.cfg.MaxFrameBytes)))
		}
	case msgData:
		if !closing {
			s.srv.stats.framesIn.Add(1)
			f, err := s.codec.decodeFrame(m.op, m.payload)
			if err != nil && f == nil {
				// Undecodable: echo the id if one can be read.
				f = &wire.Frame{Id: requestID(m.op, m.payload)}
			}
			s.frame(f, err)
		}
	}
	return true
}

// frame applies the gateway's protocol rules to one decoded frame. If err
// is set, f holds only the id that could be read from the message (0 if
// none), and the answer is BAD_FRAME for that id.
func (s *session) frame(f *wire.Frame, err error) {
	switch {
	case errors.Is(err, errUnknownFrameType):
		s.reply(wire.ErrFrame(f.Id, wire.CodeBadFrame, "unknown frame type"))
		return
	case err != nil:
		s.srv.log.Debug("bad frame", "session_id", s.id, "err", err)
		s.reply(wire.ErrFrame(f.Id, wire.CodeBadFrame, truncate(strings.TrimPrefix(err.Error(), "gateway: "), 300)))
		return
	}

	if _, ok := f.Body.(*wire.Frame_Ping); ok {
		// A keep-alive, before Login as after it. Id 0 is tolerated: a
		// heartbeat needs no correlation.
		s.reply(&wire.Frame{Id: f.Id, Body: &wire.Frame_Pong{Pong: &wire.Pong{ServerTimeMs: time.Now().UnixMilli()}}})
		return
	}
	if !s.loggedIn {
		if _, ok := f.Body.(*wire.Frame_Login); !ok {
			s.reply(wire.ErrFrame(f.Id, wire.CodeNotLoggedIn, "the first frame must be Login"))
			return
		}
		if f.Id == 0 {
			s.reply(wire.ErrFrame(0, wire.CodeInvalidArgument, "frame id must be non-zero"))
			return
		}
		s.login(f)
		return
	}

	if _, ok := f.Body.(*wire.Frame_Login); ok {
		s.reply(wire.ErrFrame(f.Id, wire.CodeAlreadyLoggedIn, "this session is logged in already"))
		return
	}
	if !clientBody(f) {
		s.reply(wire.ErrFrame(f.Id, wire.CodeBadFrame, "not a client frame"))
		return
	}
	if f.Id == 0 {
		s.reply(wire.ErrFrame(0, wire.CodeInvalidArgument, "frame id must be non-zero"))
		return
	}
	if _, ok := f.Body.(*wire.Frame_Logout); ok {
		s.logout(f)
		return
	}
	if send, ok := f.Body.(*wire.Frame_Send); ok {
		if refuse := s.admitSend(f.Id, int64(len(send.Send.GetContent()))); refuse != nil {
			s.reply(refuse)
			return
		}
	}
	s.srv.h.Frame(s.id, s.user, f)
}

// login asks the Handler, queues its reply ahead of anything delivered in
// the meantime, and closes the session if the login failed.
func (s *session) login(f *wire.Frame) {
	if !s.srv.tr.park(s, func() { s.loginNow(f) }) {
		s.loginNow(f)
	}
}

func (s *session) loginNow(f *wire.Frame) {
	ctx, done := s.callContext()
	reply, user, ok := s.srv.h.Login(ctx, s.id, f)
	done()
	if ok {
		s.loggedIn, s.user = true, user
		s.srv.stats.loggedIn.Add(1)
		s.out.setReadDeadline(time.Time{}) // the login deadline is met
		if w := s.srv.wheel; w != nil {
			w.add(s) // from now on, the heartbeat timeout applies
		}
	}

	var b []byte
	if reply != nil {
		var err error
		b, err = s.encode(reply)
		if err != nil {
			s.srv.log.Error("encode login reply", "session_id", s.id, "err", err)
		}
	} else {
		s.srv.log.Error("handler returned no login reply", "session_id", s.id, "ok", ok)
	}
	if b == nil {
		// The Handler broke its contract: the client gets no usable answer
		// and the session ends (Closed follows if it counted as logged in).
		var err error
		if b, err = s.encode(wire.ErrFrame(f.Id, wire.CodeInternal, "login failed")); err == nil {
			s.out.openGate(b, false)
		}
		s.closeWith(wire.CloseInternal, "internal error", nil, false)
		return
	}
	s.out.openGate(b, ok)
	if !ok {
		s.closeWith(wire.CloseAuthFailed, "login failed", nil, false)
	}
}

// logout asks the Handler, then answers Ok and closes with 1000. If the
// Handler fails, the client gets UNAVAILABLE and the session stays.
func (s *session) logout(f *wire.Frame) {
	if !s.srv.tr.park(s, func() { s.logoutNow(f) }) {
		s.logoutNow(f)
	}
}

func (s *session) logoutNow(f *wire.Frame) {
	ctx, done := s.callContext()
	err := s.srv.h.Logout(ctx, s.id, s.user)
	done()
	if err != nil {
		s.srv.log.Warn("logout failed", "session_id", s.id, "user", s.user, "err", err)
		s.reply(wire.ErrFrame(f.Id, wire.CodeUnavailable, "logout failed; retry"))
		return
	}
	s.loggedOut = true
	var tail [][]byte
	if b, err := s.encode(&wire.Frame{Id: f.Id, Body: &wire.Frame_Ok{Ok: &wire.Ok{}}}); err != nil {
		s.srv.log.Error("encode ok", "session_id", s.id, "err", err) // cannot happen
	} else {
		tail = append(tail, b)
	}
	s.closeWith(wire.CloseNormal, "", tail, false)
}

// reply queues a frame made by the gateway itself.
func (s *session) reply(f *wire.Frame) {
	b, err := s.encode(f)
	if err != nil {
		s.srv.log.Error("encode reply", "session_id", s.id, "err", err)
		return
	}
	s.enqueue(b)
}

// enqueue queues one frame for the read side's own answers.
func (s *session) enqueue(b []byte) {
	if _, overflow := s.out.enqueue([][]byte{b}, false); overflow {
		s.slowConsumer()
	}
}

// deliver queues frames from Server.Deliver.
func (s *session) deliver(frames []*wire.Frame) bool {
	s.answered(frames)
	bs := make([][]byte, 0, len(frames))
	for _, f := range frames {
		if f == nil {
			continue
		}
		b, err := s.encode(f)
		if err != nil {
			s.srv.log.Error("encode delivered frame", "session_id", s.id, "err", err)
			continue
		}
		bs = append(bs, b)
	}
	ok, overflow := s.out.enqueue(bs, true)
	if overflow {
		s.slowConsumer()
	}
	return ok
}

// kick writes k after everything queued, then closes with its close code.
func (s *session) kick(k *wire.Kick) bool {
	code := kickCloseCode(k)
	b, err := s.encode(&wire.Frame{Body: &wire.Frame_Kick{Kick: k}})
	if err != nil {
		s.srv.log.Error("encode kick", "session_id", s.id, "err", err)
		return s.closeWith(code, k.GetReason().String(), nil, false)
	}
	return s.closeWith(code, k.GetReason().String(), [][]byte{b}, false)
}

// slowConsumer closes a session whose queue overflowed: what is queued is
// dropped, and the Kick and close frame get CloseTimeout to go out.
func (s *session) slowConsumer() {
	if s.closeWith(wire.CloseSlowConsumer, "slow consumer", [][]byte{slowConsumerKick[s.codec]}, true) {
		s.srv.stats.slowConsumers.Add(1)
		s.srv.log.Info("slow consumer", "session_id", s.id, "user", s.user)
	}
}

// closeWith starts the close: tail (if any) and a close frame with code
// are queued after what is queued (or instead of it if drop), and the
// session gets CloseTimeout to finish. Only the first call has an effect;
// it reports whether it was this one.
func (s *session) closeWith(code ws.StatusCode, reason string, tail [][]byte, drop bool) bool {
	tail = append(tail, closeFrame(code, reason))
	if !s.out.close(tail, drop, time.Now().Add(s.srv.cfg.CloseTimeout)) {
		return false
	}
	s.closing.Store(true)
	s.cancelCall()
	s.srv.stats.closed(code)
	s.srv.log.Debug("closing session", "session_id", s.id, "close_code", int(code), "reason", reason)
	return true
}

// readFailed decides what a read error means. It returns true if the
// session started a close because of it: the stream is no longer readable
// as frames, and the read side should discard input until the peer goes
// or the close deadline passes (lingering, so that the close frame is not
// lost to a reset).
func (s *session) readFailed(err error) (linger bool) {
	if closing, dead := s.out.state(); closing || dead {
		return false
	}
	var ce *closeError
	switch {
	case errors.As(err, &ce):
		s.srv.stats.protocolErrors.Add(1)
		s.srv.log.Debug("websocket violation", "session_id", s.id, "err", err)
		return s.closeWith(ce.code, ce.err.Error(), nil, true)
	case errors.Is(err, errDiscardLimit):
		return s.closeWith(wire.CloseFrameTooLarge, "frame too large", nil, true)
	case errors.Is(err, os.ErrDeadlineExceeded) && !s.loggedIn:
		return s.closeWith(wire.CloseAuthFailed, "login timeout", nil, true)
	}
	return false
}

// finish ends the session on the read side's goroutine, once reading is
// over. If abort, nothing more is written; otherwise the close in
// progress may finish (it is bounded by its deadline). Handler.Closed is
// called for a logged-in session that did not log out.
func (s *session) finish(abort bool) {
	if abort {
		s.out.stop()
		_ = s.out.sock.close() // interrupts a write in progress
	}
	s.out.wait()
	s.out.stop()
	s.releaseAll()
	if err := s.out.sock.close(); err != nil && !abort {
		s.srv.log.Debug("close connection", "session_id", s.id, "err", err)
	}
	if s.loggedIn {
		if w := s.srv.wheel; w != nil {
			w.remove(s)
		}
		s.srv.stats.loggedIn.Add(-1)
		if !s.loggedOut {
			s.srv.h.Closed(s.id, s.user)
		}
	}
	s.srv.unregister(s)
}

func (s *session) encode(f *wire.Frame) ([]byte, error) {
	if e := f.GetError(); e != nil {
		s.srv.stats.errorSent(wire.Code(e.GetCode()))
	}
	return s.codec.encode(f)
}

// clientBody reports whether f's body is one a client may send.
func clientBody(f *wire.Frame) bool {
	switch f.Body.(type) {
	case *wire.Frame_Login, *wire.Frame_Send, *wire.Frame_Sync, *wire.Frame_CursorAck,
		*wire.Frame_Ping, *wire.Frame_Logout, *wire.Frame_Recall, *wire.Frame_Edit,
		*wire.Frame_MarkRead, *wire.Frame_ConversationOp, *wire.Frame_SetWill,
		*wire.Frame_ListDevices, *wire.Frame_History, *wire.Frame_ListConversations:
		return true
	}
	return false
}

// kickCloseCode is k's close code, or the one its reason implies if the
// code is missing or outside 4000–4999.
func kickCloseCode(k *wire.Kick) ws.StatusCode {
	if c := ws.StatusCode(k.GetCloseCode()); c.IsPrivateSpec() {
		return c
	}
	switch k.GetReason() {
	case wire.Kick_LOGIN_CONFLICT:
		return wire.CloseLoginConflict
	case wire.Kick_ADMIN:
		return wire.CloseKickedByAdmin
	case wire.Kick_POLICY:
		return wire.CloseKickedByPolicy
	case wire.Kick_SLOW_CONSUMER:
		return wire.CloseSlowConsumer
	case wire.Kick_HEARTBEAT_TIMEOUT:
		return wire.CloseHeartbeatTimeout
	case wire.Kick_SHUTDOWN:
		return wire.CloseShutdown
	}
	return wire.CloseKickedByPolicy
}

// closeFrame is a complete close frame; code 0 means "no status".
func closeFrame(code ws.StatusCode, reason string) []byte {
	if code == 0 {
		return ws.CompiledClose
	}
	return compileClose(code, reason)
}

// Kick frames the gateway sends on its own, encoded once per codec.
var (
	slowConsumerKick = mustEncodeAll(&wire.Frame{Body: &wire.Frame_Kick{Kick: &wire.Kick{
		Reason: wire.Kick_SLOW_CONSUMER, CloseCode: wire.CloseSlowConsumer, MayReconnect: true,
	}}})
	shutdownKick = mustEncodeAll(&wire.Frame{Body: &wire.Frame_Kick{Kick: &wire.Kick{
		Reason: wire.Kick_SHUTDOWN, CloseCode: wire.CloseShutdown, MayReconnect: true,
	}}})
	heartbeatKick = mustEncodeAll(&wire.Frame{Body: &wire.Frame_Kick{Kick: &wire.Kick{
		Reason: wire.Kick_HEARTBEAT_TIMEOUT, CloseCode: wire.CloseHeartbeatTimeout, MayReconnect: true,
	}}})
)

func mustEncodeAll(f *wire.Frame) [2][]byte {
	var out [2][]byte
	for _, c := range []codec{codecProto, codecJSON} {
		b, err := c.encode(f)
		if err != nil {
			panic(err)
		}
		out[c] = b
	}
	return out
}

// shutdown closes the session for a draining node.
func (s *session) shutdown() {
	s.closeWith(wire.CloseShutdown, "shutdown", [][]byte{shutdownKick[s.codec]}, false)
}

// heartbeatTimeout closes a logged-in session the wheel found silent for
// longer than Config.HeartbeatTimeout, as a drop: what is queued still
// goes first, within CloseTimeout. Called on the wheel's goroutine; a
// session that is closing or gone already is left alone.
func (s *session) heartbeatTimeout() {
	if s.closeWith(wire.CloseHeartbeatTimeout, "heartbeat timeout", [][]byte{heartbeatKick[s.codec]}, false) {
		s.srv.stats.heartbeatTimeouts.Add(1)
		// s.user was set before the session went on the wheel.
		s.srv.log.Info("heartbeat timeout", "session_id", s.id, "user", s.user)
	}
}

func (s *session) wheelEntry() *wheelEntry { return &s.hb }

// truncate cuts s to at most n bytes, on a UTF-8 boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
