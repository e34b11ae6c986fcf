package client

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"slices"
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
	// URLs of the gateways, e.g. "ws://10.0.0.1:7400/ws" or
	// "wss://im.example.com/ws" (TLS, see TLSConfig): any node of a
	// cluster serves any user. The first login goes to one chosen by a hash
	// of DeviceID and Token (at random with TokenFunc), so devices spread
	// over the list; if it fails, Dial tries the others. A dropped
	// connection, a refused dial or a Kick that allows reconnecting moves
	// the client to the next one (see Reconnect).
	URLs []string
	// URL is one gateway: the same as URLs with one element. If both are
	// set, URL is put before URLs (and not repeated).
	URL string
	// TLSConfig is the TLS client configuration for wss:// URLs, e.g. with
	// RootCAs for a server certificate signed by a private CA. Nil: the
	// system's roots, and the server name from the URL. A config without
	// ServerName gets the URL's host. Not modified.
	TLSConfig *tls.Config

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
	// or a login the server refuses for good), and logs in again with the
	// same device ID, the cursor and Login.reconnect set. The app sees no
	// error: entries go on in seq order from the cursor, and unacked sends
	// are written again with their client message IDs (OnReconnect
	// reports the steps).
	//
	// Which endpoint comes next: after a broken connection or a failed
	// attempt, the next one in URLs (rotating). After a Kick or close
	// that asks to log in again on a healthy node (close code 4017
	// SESSION_LOST, 4014 heartbeat timeout), the same one first. After
	// close code 4015 SHUTDOWN (draining) the node is going
	// away: another one, and that one is avoided for a while if there is
	// any other. The back-off grows with every round through the list.
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
	// OnKick gets a Kick frame that ends the client: may_reconnect false,
	// or any kick without Reconnect. A Kick with may_reconnect true while
	// Reconnect is set is part of a reconnect: OnReconnect gets it.
	OnKick func(*wire.Kick)
	// OnLogin gets every LoginOk, the first one and those of reconnects.
	// With CursorAhead set the server's log ends below what this device
	// had (a restored store): entries above LoginOk.LastSeq that the app
	// stored are gone and their seqs will be reused; drop them. The client
	// itself restarts at the compensation window that comes with it.
	OnLogin func(*wire.LoginOk)
	// OnReconnect observes automatic reconnects: the drop, each failed
	// attempt, the new login. They are not errors; Err and the in-flight
	// requests show what the app has to act on. It may also run on the
	// goroutine of Dial (failed first attempts on other endpoints).
	OnReconnect func(ReconnectEvent)
	// OnFrame gets unsolicited frames the client does not consume itself
	// (ConversationList after compensation, frame types added later).
	OnFrame func(*wire.Frame)
	// OnError gets non-fatal problems: an undecodable frame, an Error
	// frame with id 0, a failed gap pull. Drops and reconnect attempts go
	// to OnReconnect instead.
	// It may also run on the client's housekeeping goroutine.
	OnError func(error)

	// Logger; nil discards.
	Logger *slog.Logger
}

func (o *Options) validate() error {
	var errs []error
	if o.URL == "" && len(o.URLs) == 0 {
		errs = append(errs, errors.New("client: options: URL or URLs is required"))
	}
	if slices.Contains(o.URLs, "") {
		errs = append(errs, errors.New("client: options: empty URL in URLs"))
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
	o.URLs = o.endpointList()
	return o
}

// endpointList is URLs with URL first if it is not among them, without
// repeats.
func (o *Options) endpointList() []string {
	var out []string
	if o.URL != "" {
		out = append(out, o.URL)
	}
	for _, u := range o.URLs {
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}
