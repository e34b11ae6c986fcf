package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/cluster"

	"github.com/tandem-im/tandem/auth"
	tcluster "github.com/tandem-im/tandem/cluster"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// TokenVerifier checks a login token (auth.Keys satisfies it). Errors wrap
// auth.ErrBadToken or auth.ErrExpired.
type TokenVerifier interface {
	Verify(token string) (user string, expires time.Time, err error)
}

// Frontend connects the node's gateway to the user actors: it implements
// gateway.Handler. Login and Logout are blocking requests (the caller is a
// connection goroutine, never an actor); every other frame is sent without
// waiting and answered through the gateway actor.
type Frontend struct {
	rt     *Runtime
	verify TokenVerifier
}

// Frontend returns the gateway's handler. Call after Start.
func (r *Runtime) Frontend(v TokenVerifier) *Frontend { return &Frontend{rt: r, verify: v} }

func (f *Frontend) ref(sid uint64) *actorpb.SessionRef {
	return &actorpb.SessionRef{GatewayAddress: f.rt.gateway.Address, GatewayId: f.rt.gateway.Id, SessionId: sid}
}

// Login checks the Login frame and the token, then asks the user's actor.
func (f *Frontend) Login(ctx context.Context, sid uint64, fr *wire.Frame) (*wire.Frame, string, bool) {
	l := fr.GetLogin()
	if code, err := validateLogin(l); err != nil {
		return wire.ErrFrame(fr.GetId(), code, err.Error()), "", false
	}
	user, exp, err := f.verify.Verify(l.GetToken())
	switch {
	case errors.Is(err, auth.ErrExpired):
		return wire.ErrFrame(fr.GetId(), wire.CodeTokenExpired, "login token expired"), "", false
	case err != nil:
		return wire.ErrFrame(fr.GetId(), wire.CodeBadToken, "login token rejected"), "", false
	case !ValidID(user):
		return wire.ErrFrame(fr.GetId(), wire.CodeBadToken, "token subject is not a valid user ID"), "", false
	}
	res, err := f.request(ctx, user, &actorpb.LoginRequest{
		Session: f.ref(sid), Login: l, UserId: user, TokenExpiresMs: exp.UnixMilli(),
	})
	if err != nil {
		return wire.ErrFrame(fr.GetId(), wire.CodeUnavailable, "user service unavailable; retry"), "", false
	}
	r, ok := res.(*actorpb.LoginResult)
	if !ok || r.GetReply() == nil {
		return wire.ErrFrame(fr.GetId(), wire.CodeInternal, "unexpected answer from the user actor"), "", false
	}
	reply := r.GetReply()
	reply.Id = fr.GetId()
	if r.GetOk() {
		// Remember where the session's actor lives: if that member is
		// lost, the session is told to log in again (failover.go). The
		// activation the request reached is what the lookup knows now (in
		// this node's index, or a remote PID it cached; a request that
		// found a stopped activation dropped it and found the successor),
		// so the session's frames go there too.
		if addr := f.home(user); addr != "" {
			f.rt.homes.set(sid, addr, f.rt.sys.Address())
		}
	}
	return reply, user, r.GetOk()
}

// home is the address of the member where user's actor lives: from what
// the identity lookup knows (no identity object, no request), else from a
// lookup; "" if none is found.
func (f *Frontend) home(user string) string {
	if l, ok := f.rt.cl.Config.IdentityLookup.(*tcluster.Lookup); ok {
		if addr, ok := l.Home(user, UserKind); ok {
			return addr
		}
	}
	if pid := f.rt.cl.Get(user, UserKind); pid != nil {
		return pid.Address
	}
	return ""
}

// Activate starts user's actor if it is not active — an actor start and
// a store activation, the epoch claimed durably before it answers — and
// returns the epoch it runs under. No device logs in and nothing is
// appended. Load tools measure activations apart from logins with it.
func (f *Frontend) Activate(ctx context.Context, user string) (uint64, error) {
	if !ValidID(user) {
		return 0, fmt.Errorf("activate %q: not a valid user ID", user)
	}
	res, err := f.request(ctx, user, &actorpb.InspectRequest{})
	if err != nil {
		return 0, fmt.Errorf("activate %q: %w", user, err)
	}
	switch r := res.(type) {
	case *actorpb.InspectResult:
		return r.GetEpoch(), nil
	case *actorpb.Done:
		return 0, fmt.Errorf("activate %q: %s", user, r.GetError().GetMessage())
	}
	return 0, fmt.Errorf("activate %q: unexpected answer %T", user, res)
}

func (f *Frontend) request(ctx context.Context, user string, msg any) (any, error) {
	timeout := f.rt.cfg.RequestTimeout
	if d, ok := ctx.Deadline(); ok {
		switch left := time.Until(d); {
		case left <= 0:
			return nil, context.DeadlineExceeded
		case left <= timeout: // the caller's deadline is the nearer one: wait on its context
			return tcluster.Request(ctx, f.rt.cl, user, UserKind, msg)
		}
	}
	return f.rt.cl.Request(user, UserKind, msg, cluster.WithTimeout(timeout))
}

// Frame sends one post-login frame to the user's actor.
func (f *Frontend) Frame(sid uint64, user string, fr *wire.Frame) {
	// Group messages go to the group actor, the ordering point; the
	// sender's own devices get the message through the fan-out.
	c := fr.GetSend().GetConversation()
	if c == nil {
		c = fr.GetRecall().GetConversation()
	}
	if c == nil {
		c = fr.GetEdit().GetConversation()
	}
	if c.GetType() == wire.Conversation_GROUP && ValidID(c.GetId()) {
		if pid := f.rt.cl.Get(c.GetId(), GroupKind); pid != nil {
			f.rt.sys.Root.Send(pid, &actorpb.ClientFrame{Session: f.ref(sid), Frame: fr, UserId: user})
			return
		}
		f.rt.gatewaySend(sid, wire.ErrFrame(fr.GetId(), wire.CodeUnavailable, "group service unavailable; retry"))
		return
	}
	pid := f.rt.cl.Get(user, UserKind)
	if pid == nil {
		f.rt.gatewaySend(sid, wire.ErrFrame(fr.GetId(), wire.CodeUnavailable, "user service unavailable; retry"))
		return
	}
	f.rt.sys.Root.Send(pid, &actorpb.ClientFrame{Session: f.ref(sid), Frame: fr})
}

// Logout ends the session at the user's actor (the will is discarded).
func (f *Frontend) Logout(ctx context.Context, sid uint64, user string) error {
	f.rt.homes.drop(sid)
	res, err := f.request(ctx, user, &actorpb.SessionClosed{Session: f.ref(sid), Logout: true})
	if err != nil {
		return fmt.Errorf("logout of %q: %w", user, err)
	}
	if d, ok := res.(*actorpb.Done); ok && d.GetError() != nil {
		return fmt.Errorf("logout of %q: %s", user, d.GetError().GetMessage())
	}
	return nil
}

// Closed tells the user's actor that a session dropped.
func (f *Frontend) Closed(sid uint64, user string) {
	f.rt.homes.drop(sid)
	f.rt.courier.send(user, &actorpb.SessionClosed{Session: f.ref(sid)})
}

// gatewaySend writes a frame to a local session through the gateway actor
// (keeping it ordered with the actors' pushes).
func (r *Runtime) gatewaySend(sid uint64, fr *wire.Frame) {
	r.sys.Root.Send(r.gateway, &actorpb.SessionPush{SessionIds: []uint64{sid}, Frames: []*wire.Frame{fr}})
}

const (
	maxLoginExt  = 256
	maxVersion   = 64
	maxTokenSize = 4096
)

func validateLogin(l *wire.Login) (wire.Code, error) {
	if l.GetToken() == "" {
		return wire.CodeBadToken, errors.New("login token missing")
	}
	if len(l.GetToken()) > maxTokenSize {
		return wire.CodeBadToken, fmt.Errorf("login token longer than %d bytes", maxTokenSize)
	}
	if err := checkID("device_id", l.GetDeviceId()); err != nil {
		return wire.CodeInvalidArgument, err
	}
	if _, ok := PlatformClass(l.GetPlatform()); !ok {
		return wire.CodeInvalidArgument, fmt.Errorf("platform %q unknown: use ios, android, harmony, ipad, androidpad, pad, windows, macos, linux, web or miniprogram", truncate(l.GetPlatform(), 40))
	}
	if l.GetTag() != "" {
		if err := checkID("tag", l.GetTag()); err != nil {
			return wire.CodeInvalidArgument, err
		}
	}
	if len(l.GetLoginExt()) > maxLoginExt {
		return wire.CodeInvalidArgument, fmt.Errorf("login_ext longer than %d bytes", maxLoginExt)
	}
	if len(l.GetAppVersion()) > maxVersion {
		return wire.CodeInvalidArgument, fmt.Errorf("app_version longer than %d bytes", maxVersion)
	}
	return 0, nil
}
