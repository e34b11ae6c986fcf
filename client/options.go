package client

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// WebSocket subprotocols (wire.proto, "Transport").
const (
	SubprotocolProto = "tandem.v1"
	SubprotocolJSON  = "tandem.v1.json"
)

// Defaults for zero Options fields.
const (
	DefaultRequestTimeout = 10 * time.Second
	DefaultAckInterval    = 100 * time.Millisecond
	DefaultAckEvery       = 100
	DefaultKeepEntries    = 256
	DefaultBackoffMin     = 100 * time.Millisecond
	DefaultBackoffMax     = 5 * time.Second
	// DefaultPingInterval applies when neither Options.PingInterval nor
	// LoginOk.heartbeat_seconds says otherwise.
	DefaultPingInterval = 15 * time.Second
)

const (
	syncLimit      = 200      // SyncRequest.limit for gap pulls (wire max)
	maxHeld        = 10_000   // out-of-order entries held while a gap is pulled
	maxMessageSize = 16 << 20 // largest server WebSocket message read
	pullRetryDelay = 200 * time.Millisecond
)

// Options configure one device session. The zero value of every optional
// field means its default.
type Options struct {
	// URL of the gateway, e.g. "ws://127.0.0.1:7400/ws". Required.
	URL string
	// Token is the login JWT. TokenFunc, if set, is called before every
	// login instead (refresh for reconnects). One of them is required.
	Token     string
	TokenFunc func(ctx context.Context) (string, error)

	// Login fields (wire.Login). DeviceID is required.
	DeviceID   string
	Platform   string
	Tag        string
	LoginExt   string
	AppVersion string
	NoKick     bool

	// JSON selects the "tandem.v1.json" subprotocol (protojson in text
	// messages) instead of binary protobuf.
	JSON bool

	// Cursor is the highest seq this device already stored (e.g. restored
	// from disk), used when HasCursor is true. Without a cursor the server
	// sends offline compensation.
	Cursor    uint64
	HasCursor bool

	// Reconnect redials with back-off and jitter after a dropped
	// connection (not after Close, Logout, a Kick with may_reconnect false
	// or a login the server refuses for good).
	Reconnect  bool
	BackoffMin time.Duration // first reconnect delay; default 100 ms
	BackoffMax time.Duration // default 5 s

	// PingInterval between Pings; 0 means half the server's
	// heartbeat_seconds (15 s if it sent none), negative disables pings.
	// A Ping unanswered for RequestTimeout drops the connection.
	PingInterval time.Duration
	// RequestTimeout bounds a login (dial included), a Pong, a gap pull
	// and every socket write; Request uses it when its ctx has no
	// deadline. Default 10 s.
	RequestTimeout time.Duration

	// CursorAck batching: the cursor is acked at most every AckInterval
	// (default 100 ms), at once when AckEvery (default 100) entries are
	// unacked, and on Close and Logout.
	AckInterval time.Duration
	AckEvery    int

	// KeepEntries is how many recently delivered entries (and transient
	// messages) the client keeps for Entries, WaitEntry and WaitTransient.
	// 0 means 256; negative keeps none (benchmarks with many clients).
	KeepEntries int

	// Callbacks run on the client's reader goroutine, one at a time, in
	// arrival order. They must not block on the client (no Send, Request,
	// Logout or Close; SendAsync is fine) and must not keep the arguments
	// beyond their return unless they treat them as read-only.
	//
	// OnEntry gets every entry of the user's sync log in seq order, once
	// per seq. For the device's own stored sends the entry is built from
	// the Send and its SendAck when the server does not push it to the
	// sending session (see doc.go).
	OnEntry func(*wire.Entry)
	// OnTransient gets transient messages (Push.transient).
	OnTransient func(*wire.Message)
	// OnKick gets the Kick frame the server sends before closing.
	OnKick func(*wire.Kick)
	// OnLogin gets every LoginOk, the first one and those of reconnects.
	OnLogin func(*wire.LoginOk)
	// OnFrame gets unsolicited frames the client does not consume itself
	// (ConversationList after compensation, frame types added later).
	OnFrame func(*wire.Frame)
	// OnError gets non-fatal problems: a dropped connection, a failed
	// reconnect attempt, an undecodable frame, an Error frame with id 0.
	// It may also run on the client's housekeeping goroutine.
	OnError func(error)

	// Logger; nil discards.
	Logger *slog.Logger
}

func (o *Options) validate() error {
	var errs []error
	if o.URL == "" {
		errs = append(errs, errors.New("client: options: URL is required"))
	}
	if o.Token == "" && o.TokenFunc == nil {
		errs = append(errs, errors.New("client: options: Token or TokenFunc is required"))
	}
	if o.DeviceID == "" {
		errs = append(errs, errors.New("client: options: DeviceID is required"))
	}
	if o.BackoffMin < 0 || o.BackoffMax < 0 || o.RequestTimeout < 0 || o.AckInterval < 0 || o.AckEvery < 0 {
		errs = append(errs, errors.New("client: options: negative duration or count"))
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.AckInterval == 0 {
		o.AckInterval = DefaultAckInterval
	}
	if o.AckEvery == 0 {
		o.AckEvery = DefaultAckEvery
	}
	if o.KeepEntries == 0 {
		o.KeepEntries = DefaultKeepEntries
	}
	if o.BackoffMin == 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	o.BackoffMax = max(o.BackoffMax, o.BackoffMin)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}
