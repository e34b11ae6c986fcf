package client

import (
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/proto/wire"
)

// fakeServer speaks the tandem wire protocol well enough to test the
// client against it: login ("tok-<user>" tokens), catch-up pages, pushes,
// sends with client message ID dedupe (ack to the sender, carbons to the
// sender's other sessions, delivery to a DIRECT peer), gap pulls, cursor
// acks, pings, logout and kicks. Tests inject gaps, duplicates, drops and
// kicks through its helpers. Every client frame is recorded.
//
// A fake server may listen on several endpoints (addEndpoint) that share
// its state, like the nodes of a cluster share the users' logs: tests kill
// or drain one endpoint and watch the client move to another.
type fakeServer struct {
	t   *testing.T
	url string // the first endpoint's
	wg  sync.WaitGroup

	mu sync.Mutex
	// Behaviour; set by tests under mu (or before dialing).
	pageSize        int         // entries per page, catch-up and pulls alike
	compFrom        uint64      // first seq sent to a login without cursor
	compAnnounce    bool        // set LoginOk.compensation_from_seq
	pushToSender    bool        // also push a sender's own entry to the sending session
	swallowSends    int         // store the next N sends, answer nothing, drop the connection
	refuseReconnect bool        // answer reconnect logins with LOGIN_CONFLICT
	pullFaults      []wire.Code // answer the next gap pulls with these errors; 0: an empty page
	holdAcks        bool        // store sends but answer nothing (an ack lost with its node)
	// State.
	eps         []*fakeEndpoint
	logs        map[string][]*wire.Entry
	dedup       map[string]*wire.SendAck
	sessions    []*fakeSess
	logins      []*wire.Login
	loginEps    []int // the endpoint of each login
	recv        []recvFrame
	cursorAcks  map[string][]uint64 // by device ID
	wrongOpcode int
	nextMsg     int
}

type recvFrame struct {
	user, device string
	ep           int
	f            *wire.Frame
}

// fakeEndpoint is one listener of a fakeServer ("a node").
type fakeEndpoint struct {
	ln  net.Listener
	url string
}

type fakeSess struct {
	srv          *fakeServer
	ep           int // index of the endpoint it came through
	nc           net.Conn
	json         bool
	user, device string
	wmu          sync.Mutex
	live         bool // guarded by srv.mu: gets pushes
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	srv := &fakeServer{
		t:            t,
		pageSize:     200,
		compFrom:     1,
		compAnnounce: true,
		logs:         map[string][]*wire.Entry{},
		dedup:        map[string]*wire.SendAck{},
		cursorAcks:   map[string][]uint64{},
	}
	srv.url = srv.addEndpoint()
	t.Cleanup(srv.close)
	return srv
}

// addEndpoint starts listening on another loopback port sharing the
// server's state and returns its URL.
func (srv *fakeServer) addEndpoint() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.t.Fatal(err)
	}
	ep := &fakeEndpoint{ln: ln, url: "ws://" + ln.Addr().String() + "/ws"}
	srv.mu.Lock()
	i := len(srv.eps)
	srv.eps = append(srv.eps, ep)
	srv.mu.Unlock()
	srv.wg.Go(func() { srv.acceptLoop(i, ln) })
	return ep.url
}

// addTLSEndpoint is addEndpoint speaking TLS with cfg: its URL is
// wss://.
func (srv *fakeServer) addTLSEndpoint(cfg *tls.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.t.Fatal(err)
	}
	ln = tls.NewListener(ln, cfg)
	ep := &fakeEndpoint{ln: ln, url: "wss://" + ln.Addr().String() + "/ws"}
	srv.mu.Lock()
	i := len(srv.eps)
	srv.eps = append(srv.eps, ep)
	srv.mu.Unlock()
	srv.wg.Go(func() { srv.acceptLoop(i, ln) })
	return ep.url
}

func (srv *fakeServer) acceptLoop(ep int, ln net.Listener) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		srv.wg.Go(func() { srv.serve(ep, nc) })
	}
}

// close stops listening, drops every connection and waits for the
// server's goroutines.
func (srv *fakeServer) close() {
	srv.mu.Lock()
	for _, ep := range srv.eps {
		ep.ln.Close()
	}
	for _, ss := range srv.sessions {
		ss.nc.Close()
	}
	srv.mu.Unlock()
	srv.wg.Wait()
}

// killEndpoint is a node crash: endpoint i stops listening (dials are
// refused) and its connections drop without a close frame.
func (srv *fakeServer) killEndpoint(i int) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.eps[i].ln.Close()
	for _, ss := range srv.sessions {
		if ss.ep == i {
			ss.live = false
			ss.nc.Close()
		}
	}
}

// kickEndpoint sends k to every live session of endpoint i and closes
// them with its close code (a node draining, say).
func (srv *fakeServer) kickEndpoint(i int, k *wire.Kick) {
	srv.mu.Lock()
	var out []*fakeSess
	for _, ss := range srv.sessions {
		if ss.ep == i && ss.live {
			out = append(out, ss)
		}
	}
	srv.mu.Unlock()
	for _, ss := range out {
		ss.kick(k)
	}
}

// endpointOf returns the index of the endpoint with url.
func (srv *fakeServer) endpointOf(url string) int {
	srv.t.Helper()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for i, ep := range srv.eps {
		if ep.url == url {
			return i
		}
	}
	srv.t.Fatalf("no endpoint %q", url)
	return -1
}

func (srv *fakeServer) serve(ep int, nc net.Conn) {
	defer nc.Close()
	u := ws.Upgrader{Protocol: func(p []byte) bool {
		return string(p) == SubprotocolProto || string(p) == SubprotocolJSON
	}}
	hs, err := u.Upgrade(nc)
	if err != nil {
		return
	}
	ss := &fakeSess{srv: srv, ep: ep, nc: nc, json: hs.Protocol == SubprotocolJSON}
	f, err := ss.read()
	if err != nil {
		return
	}
	if !srv.login(ss, f) {
		return
	}
	for {
		f, err := ss.read()
		if err != nil {
			srv.mu.Lock()
			ss.live = false
			srv.mu.Unlock()
			return
		}
		srv.handle(ss, f)
	}
}

func (srv *fakeServer) login(ss *fakeSess, f *wire.Frame) bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	l := f.GetLogin()
	if l == nil {
		ss.write(wire.ErrFrame(f.GetId(), wire.CodeNotLoggedIn, "login first"))
		ss.closeWith(wire.CloseAuthFailed)
		return false
	}
	srv.logins = append(srv.logins, l)
	srv.loginEps = append(srv.loginEps, ss.ep)
	user, ok := strings.CutPrefix(l.GetToken(), "tok-")
	if !ok {
		ss.write(wire.ErrFrame(f.GetId(), wire.CodeBadToken, "bad token"))
		ss.closeWith(wire.CloseAuthFailed)
		return false
	}
	if l.GetReconnect() && srv.refuseReconnect {
		ss.write(wire.ErrFrame(f.GetId(), wire.CodeLoginConflict, "slot taken"))
		ss.closeWith(wire.CloseLoginConflict)
		return false
	}
	ss.user, ss.device = user, l.GetDeviceId()
	srv.sessions = append(srv.sessions, ss)
	log := srv.logs[user]
	ok2 := &wire.LoginOk{
		LoginId:          fmt.Sprintf("login-%d", len(srv.logins)),
		LastSeq:          uint64(len(log)),
		ServerTimeMs:     time.Now().UnixMilli(),
		HeartbeatSeconds: 30,
	}
	from := l.GetCursor() + 1
	if !l.GetHasCursor() {
		from = max(srv.compFrom, 1)
		if srv.compAnnounce {
			ok2.CompensationFromSeq = from
		}
	}
	ss.write(&wire.Frame{Id: f.GetId(), Body: &wire.Frame_LoginOk{LoginOk: ok2}})
	for {
		page, more := srv.pageLocked(user, from-1, srv.pageSize)
		ss.write(&wire.Frame{Body: &wire.Frame_SyncPage{SyncPage: page}})
		if !more {
			break
		}
		from += uint64(len(page.Entries))
	}
	ss.live = true
	return true
}

func (srv *fakeServer) pageLocked(user string, after uint64, limit int) (*wire.SyncPage, bool) {
	log := srv.logs[user]
	start := min(int(after), len(log))
	end := min(start+limit, len(log))
	more := end < len(log)
	return &wire.SyncPage{Entries: slices.Clone(log[start:end]), HasMore: more, LastSeq: uint64(len(log))}, more
}

func (srv *fakeServer) handle(ss *fakeSess, f *wire.Frame) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.recv = append(srv.recv, recvFrame{ss.user, ss.device, ss.ep, f})
	switch b := f.GetBody().(type) {
	case *wire.Frame_Send:
		srv.sendLocked(ss, f.GetId(), b.Send)
	case *wire.Frame_Sync:
		lim := b.Sync.GetLimit()
		if lim == 0 || lim > 200 {
			srv.t.Errorf("SyncRequest limit %d outside 1..200", lim)
		}
		if len(srv.pullFaults) > 0 {
			code := srv.pullFaults[0]
			srv.pullFaults = srv.pullFaults[1:]
			if code != 0 {
				ss.write(wire.ErrFrame(f.GetId(), code, "injected"))
			} else {
				ss.write(&wire.Frame{Id: f.GetId(), Body: &wire.Frame_SyncPage{SyncPage: &wire.SyncPage{}}})
			}
			return
		}
		page, _ := srv.pageLocked(ss.user, b.Sync.GetAfterSeq(), min(int(lim), srv.pageSize))
		ss.write(&wire.Frame{Id: f.GetId(), Body: &wire.Frame_SyncPage{SyncPage: page}})
	case *wire.Frame_CursorAck:
		srv.cursorAcks[ss.device] = append(srv.cursorAcks[ss.device], b.CursorAck.GetSeq())
		ss.write(&wire.Frame{Id: f.GetId(), Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})
	case *wire.Frame_Ping:
		ss.write(&wire.Frame{Id: f.GetId(), Body: &wire.Frame_Pong{Pong: &wire.Pong{ServerTimeMs: time.Now().UnixMilli()}}})
	case *wire.Frame_Logout:
		ss.write(&wire.Frame{Id: f.GetId(), Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})
		ss.live = false
		ss.closeWith(wire.CloseNormal)
	default:
		ss.write(&wire.Frame{Id: f.GetId(), Body: &wire.Frame_Ok{Ok: &wire.Ok{}}})
	}
}

func (srv *fakeServer) sendLocked(ss *fakeSess, id uint64, m *wire.Send) {
	conv := m.GetConversation()
	if conv.GetId() == "" || m.GetClientMessageId() == "" {
		ss.write(wire.ErrFrame(id, wire.CodeInvalidArgument, "conversation and client_message_id are required"))
		return
	}
	key := ss.user + "\x00" + m.GetClientMessageId()
	if ack := srv.dedup[key]; ack != nil {
		dup := proto.Clone(ack).(*wire.SendAck)
		dup.Duplicate = true
		ss.write(&wire.Frame{Id: id, Body: &wire.Frame_SendAck{SendAck: dup}})
		return
	}
	srv.nextMsg++
	now := time.Now().UnixMilli()
	msg := &wire.Message{
		MessageId:       fmt.Sprintf("m%05d", srv.nextMsg),
		ClientMessageId: m.GetClientMessageId(),
		Sender:          ss.user,
		SenderDevice:    ss.device,
		Conversation:    conv,
		Type:            m.GetType(),
		Content:         m.GetContent(),
		Options:         m.GetOptions(),
		ServerTimeMs:    now,
	}
	if m.GetOptions().GetTransient() {
		srv.dedup[key] = &wire.SendAck{MessageId: msg.MessageId, ServerTimeMs: now}
		ss.write(&wire.Frame{Id: id, Body: &wire.Frame_SendAck{SendAck: srv.dedup[key]}})
		for _, o := range srv.liveLocked(conv.GetId()) {
			o.write(&wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Transient: []*wire.Message{msg}}}})
		}
		return
	}
	own := srv.appendLocked(ss.user, msg)
	ack := &wire.SendAck{MessageId: msg.MessageId, Seq: own.GetSeq(), ServerTimeMs: now}
	srv.dedup[key] = ack
	swallow := srv.swallowSends > 0
	if swallow {
		srv.swallowSends--
	} else if !srv.holdAcks {
		ss.write(&wire.Frame{Id: id, Body: &wire.Frame_SendAck{SendAck: ack}})
	}
	for _, o := range srv.liveLocked(ss.user) {
		if o != ss || srv.pushToSender {
			o.write(&wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Entries: []*wire.Entry{own}}}})
		}
	}
	if conv.GetType() == wire.Conversation_DIRECT && conv.GetId() != ss.user {
		peer := proto.Clone(msg).(*wire.Message)
		peer.Conversation = &wire.Conversation{Type: wire.Conversation_DIRECT, Id: ss.user}
		e := srv.appendLocked(conv.GetId(), peer)
		for _, o := range srv.liveLocked(conv.GetId()) {
			o.write(&wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Entries: []*wire.Entry{e}}}})
		}
	}
	if swallow {
		ss.live = false
		ss.nc.Close()
	}
}

func (srv *fakeServer) appendLocked(user string, m *wire.Message) *wire.Entry {
	e := &wire.Entry{
		Seq:          uint64(len(srv.logs[user]) + 1),
		ServerTimeMs: time.Now().UnixMilli(),
		Kind:         &wire.Entry_Message{Message: m},
	}
	srv.logs[user] = append(srv.logs[user], e)
	return e
}

func (srv *fakeServer) liveLocked(user string) []*fakeSess {
	var out []*fakeSess
	for _, ss := range srv.sessions {
		if ss.user == user && ss.live {
			out = append(out, ss)
		}
	}
	return out
}

// ---------------------------------------------------------------- test helpers

// addEntries appends n messages from "system" to user's log without
// pushing them, and returns their seqs.
func (srv *fakeServer) addEntries(user string, n int) []uint64 {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var seqs []uint64
	for range n {
		srv.nextMsg++
		e := srv.appendLocked(user, &wire.Message{
			MessageId:    fmt.Sprintf("m%05d", srv.nextMsg),
			Sender:       "system",
			Conversation: &wire.Conversation{Type: wire.Conversation_DIRECT, Id: "system"},
			Type:         int32(wire.MessageType_TEXT),
			Content:      fmt.Appendf(nil, "entry %d", len(srv.logs[user])+1),
		})
		seqs = append(seqs, e.GetSeq())
	}
	return seqs
}

// push sends one Push frame with the log entries of seqs (in that order,
// repeats allowed) to user's live sessions.
func (srv *fakeServer) push(user string, seqs ...uint64) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var es []*wire.Entry
	for _, s := range seqs {
		es = append(es, srv.logs[user][s-1])
	}
	for _, ss := range srv.liveLocked(user) {
		ss.write(&wire.Frame{Body: &wire.Frame_Push{Push: &wire.Push{Entries: es}}})
	}
}

// live returns user's live sessions.
func (srv *fakeServer) live(user string) []*fakeSess {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.liveLocked(user)
}

// received returns the recorded frames from device whose body matches.
func received[T any](srv *fakeServer, device string) []T {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var out []T
	for _, r := range srv.recv {
		if r.device != device {
			continue
		}
		if v, ok := any(r.f.GetBody()).(T); ok {
			out = append(out, v)
		}
	}
	return out
}

func (srv *fakeServer) loginList() []*wire.Login {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return slices.Clone(srv.logins)
}

// loginEndpoints returns the endpoint of every login so far.
func (srv *fakeServer) loginEndpoints() []int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return slices.Clone(srv.loginEps)
}

// sendsOn returns, for every Send frame device wrote, its client message
// ID and the endpoint it came through.
func (srv *fakeServer) sendsOn(device string) (ids []string, eps []int) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, r := range srv.recv {
		if m := r.f.GetSend(); m != nil && r.device == device {
			ids = append(ids, m.GetClientMessageId())
			eps = append(eps, r.ep)
		}
	}
	return ids, eps
}

func (srv *fakeServer) acksOf(device string) []uint64 {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return slices.Clone(srv.cursorAcks[device])
}

func (srv *fakeServer) logLen(user string) int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.logs[user])
}

func (srv *fakeServer) set(fn func(*fakeServer)) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	fn(srv)
}

// ---------------------------------------------------------------- session I/O

func (ss *fakeSess) read() (*wire.Frame, error) {
	p, op, err := wsutil.ReadClientData(ss.nc)
	if err != nil {
		return nil, err
	}
	if (op == ws.OpText) != ss.json {
		ss.srv.mu.Lock()
		ss.srv.wrongOpcode++
		ss.srv.mu.Unlock()
	}
	f := new(wire.Frame)
	if op == ws.OpText {
		err = protojson.Unmarshal(p, f)
	} else {
		err = proto.Unmarshal(p, f)
	}
	if err != nil {
		ss.srv.t.Errorf("fake server: undecodable client frame: %v", err)
		return nil, err
	}
	return f, nil
}

// write sends f; errors (a closed connection) are ignored.
func (ss *fakeSess) write(f *wire.Frame) {
	var (
		p   []byte
		err error
		op  = ws.OpBinary
	)
	if ss.json {
		p, err = protojson.Marshal(f)
		op = ws.OpText
	} else {
		p, err = proto.Marshal(f)
	}
	if err != nil {
		ss.srv.t.Errorf("fake server: encode: %v", err)
		return
	}
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	_ = wsutil.WriteServerMessage(ss.nc, op, p)
}

// closeWith sends a close frame with code and closes the connection.
func (ss *fakeSess) closeWith(code ws.StatusCode) {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	_ = ws.WriteFrame(ss.nc, ws.NewCloseFrame(ws.NewCloseFrameBody(code, "")))
	ss.nc.Close()
}

// kick sends k and closes with its close code, as the gateway does.
func (ss *fakeSess) kick(k *wire.Kick) {
	ss.srv.mu.Lock()
	ss.live = false
	ss.srv.mu.Unlock()
	ss.write(&wire.Frame{Body: &wire.Frame_Kick{Kick: k}})
	ss.closeWith(ws.StatusCode(k.GetCloseCode()))
}

// drop closes the connection without a close frame (a network failure).
func (ss *fakeSess) drop() {
	ss.srv.mu.Lock()
	ss.live = false
	ss.srv.mu.Unlock()
	ss.nc.Close()
}
