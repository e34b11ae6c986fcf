package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Defaults applied to zero Config fields.
const (
	DefaultAddr             = ":7400"
	DefaultPath             = "/ws"
	DefaultMaxFrameBytes    = 1 << 20 // 1 MiB of payload per WebSocket message
	DefaultWriteQueue       = 1024
	DefaultMaxSessionSends  = 4096
	DefaultMaxNodeSends     = 50000
	DefaultMaxNodeSendBytes = 128 << 20
	DefaultLoginTimeout     = 10 * time.Second
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultCallTimeout      = 10 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultCloseTimeout     = 3 * time.Second
	DefaultHeartbeatTimeout = 60 * time.Second
	DefaultWriteQueueBytes  = 4 << 20
	DefaultMaxFrameRate     = 1000
	DefaultMaxHandshakes    = 1024
	DefaultFrameTimeout     = 30 * time.Second
)

// Transports Config.Transport names.
const (
	// TransportEpoll waits for client bytes with epoll readiness
	// notifications and reads them on a bounded worker pool: no goroutine
	// and no buffer per idle connection. Linux only; the default there.
	TransportEpoll = "epoll"
	// TransportGoroutine reads each connection on its own goroutine,
	// blocked in Read. Any OS, and the one TLS uses.
	TransportGoroutine = "goroutine"
)

// minHeartbeatTimeout is the shortest HeartbeatTimeout Validate accepts:
// shorter is a unit mistake rather than a heartbeat.
const minHeartbeatTimeout = 100 * time.Millisecond

// heartbeatTicks is how many ticks of the heartbeat wheel make one
// HeartbeatTimeout: a silent session is closed after between
// HeartbeatTimeout and HeartbeatTimeout·(1+3/heartbeatTicks) (wheel.go).
const heartbeatTicks = 32

// maxDiscardBytes is how much oversize payload one connection may make the
// gateway read and throw away over its life. A message that would go past
// it is not read: the connection is closed with wire.CloseFrameTooLarge.
const maxDiscardBytes = 64 << 20

// maxHandshakeBytes bounds the HTTP upgrade request (request line and
// headers); gobwas' request reader has no limit of its own.
const maxHandshakeBytes = 64 << 10

// Config configures a Server. The zero value means "all defaults".
type Config struct {
	// Addr is the TCP address ListenAndServe listens on. Default ":7400".
	Addr string
	// Path is the only request path upgraded; others get 404. Default "/ws".
	Path string
	// MaxFrameBytes bounds the payload of one client WebSocket message (all
	// its fragments together). A bigger message is discarded unread and
	// answered with FRAME_TOO_LARGE. Default 1 MiB.
	MaxFrameBytes int64
	// WriteQueue is how many frames may wait to be written to one
	// connection; a session that overflows it is a slow consumer and is
	// closed with wire.CloseSlowConsumer. Default 1024.
	WriteQueue int
	// LoginTimeout is how long after the upgrade a successful Login must
	// have arrived; otherwise the connection is closed with
	// wire.CloseAuthFailed. Default 10 s.
	LoginTimeout time.Duration
	// HandshakeTimeout bounds reading the HTTP upgrade request and writing
	// the response. Default 5 s.
	HandshakeTimeout time.Duration
	// CallTimeout bounds the context of Handler.Login and Handler.Logout.
	// Default 10 s.
	CallTimeout time.Duration
	// WriteTimeout is how long one batch of writes to a connection may
	// take; a peer that accepts no bytes for that long is dropped.
	// Default 10 s.
	WriteTimeout time.Duration
	// CloseTimeout bounds a closing session: writing what is still queued,
	// the close frame, and waiting for the peer's close frame. Shutdown
	// takes at most about this long. Default 3 s.
	CloseTimeout time.Duration
	// HeartbeatTimeout is how long a logged-in session may go without
	// sending anything (any complete message or control frame: the wire
	// Ping, a WebSocket ping, any other frame); a session silent for
	// longer is closed as dropped, within about a tenth of
	// HeartbeatTimeout more: Kick{HEARTBEAT_TIMEOUT} and
	// wire.CloseHeartbeatTimeout. Before Login, LoginTimeout applies
	// instead. Default 60 s; at least 100 ms; negative turns it off.
	HeartbeatTimeout time.Duration
	// MaxSessionSends bounds the Sends one session may have in flight
	// (handed on, not yet answered); one more is answered RATE_LIMITED
	// with a retry hint. Default 4096.
	MaxSessionSends int
	// MaxNodeSends and MaxNodeSendBytes bound the Sends in flight on the
	// whole node, by count and by payload bytes; past either, new Sends
	// are answered RATE_LIMITED with a retry hint, as they are while the
	// live heap is above 70 % of the memory limit (GOMEMLIMIT). Defaults
	// 50,000 and 128 MiB.
	MaxNodeSends     int
	MaxNodeSendBytes int64
	// Transport is how the read side waits for client bytes:
	// TransportEpoll or TransportGoroutine. Default: epoll on Linux (if
	// TLS is nil), goroutine elsewhere.
	Transport string
	// TLS, if set, makes the server speak wss:// (TLS terminated in the
	// process, on the goroutine transport). Nil: plain ws://.
	TLS *tls.Config
	// WriteQueueBytes bounds the encoded bytes waiting to be written to one
	// connection, as WriteQueue bounds the frames; a session over either
	// is a slow consumer. Default 4 MiB.
	WriteQueueBytes int64
	// MaxFrameRate is how many frames per second one session may send on
	// average (bursts of up to one second's worth); a frame over it is
	// answered RATE_LIMITED with a retry hint and not handed on. Pings and
	// control frames (but the close) count too; over the rate they get no
	// answer. Default 1,000; negative turns it off.
	MaxFrameRate int
	// MaxHandshakes bounds the connections in their WebSocket handshake
	// at once; more wait in the listen backlog. Default 1,024.
	MaxHandshakes int
	// FrameTimeout bounds how long one WebSocket frame may take to arrive
	// once its first byte has: a slower peer is closed with 1008 (policy
	// violation). Default 30 s.
	FrameTimeout time.Duration
	// Logger receives the gateway's logs. Nil discards them.
	Logger *slog.Logger

	// epollWorkers, for tests: the epoll transport's worker count (0: its
	// default).
	epollWorkers int
}

// Validate reports every invalid field of c at once. Zero fields are valid
// (they mean defaults).
func (c Config) Validate() error {
	var errs []error
	if c.Path != "" && !strings.HasPrefix(c.Path, "/") {
		errs = append(errs, fmt.Errorf("gateway: path %q must start with /", c.Path))
	}
	if strings.ContainsAny(c.Path, "?# \t\r\n") {
		errs = append(errs, fmt.Errorf("gateway: path %q must be a plain path", c.Path))
	}
	if c.MaxFrameBytes < 0 {
		errs = append(errs, fmt.Errorf("gateway: max frame bytes %d is negative", c.MaxFrameBytes))
	}
	if c.MaxFrameBytes > maxDiscardBytes {
		errs = append(errs, fmt.Errorf("gateway: max frame bytes %d is above %d", c.MaxFrameBytes, maxDiscardBytes))
	}
	if c.MaxSessionSends < 0 || c.MaxNodeSends < 0 || c.MaxNodeSendBytes < 0 {
		errs = append(errs, fmt.Errorf("gateway: sends in flight limits (%d per session, %d and %d bytes per node) must not be negative",
			c.MaxSessionSends, c.MaxNodeSends, c.MaxNodeSendBytes))
	}
	switch c.Transport {
	case "", TransportGoroutine:
	case TransportEpoll:
		if !epollSupported {
			errs = append(errs, fmt.Errorf("gateway: transport %q is not available on this system", c.Transport))
		}
		if c.TLS != nil {
			errs = append(errs, fmt.Errorf("gateway: transport %q cannot serve TLS; use %q or leave it empty", c.Transport, TransportGoroutine))
		}
	default:
		errs = append(errs, fmt.Errorf("gateway: unknown transport %q (want %q or %q)", c.Transport, TransportEpoll, TransportGoroutine))
	}
	if t := c.TLS; t != nil && len(t.Certificates) == 0 && t.GetCertificate == nil && t.GetConfigForClient == nil {
		errs = append(errs, errors.New("gateway: TLS config has no certificate (Certificates, GetCertificate or GetConfigForClient)"))
	}
	if c.WriteQueueBytes < 0 || c.MaxHandshakes < 0 {
		errs = append(errs, fmt.Errorf("gateway: write queue bytes %d and max handshakes %d must not be negative", c.WriteQueueBytes, c.MaxHandshakes))
	}
	if c.WriteQueue < 0 {
		errs = append(errs, fmt.Errorf("gateway: write queue %d is negative", c.WriteQueue))
	}
	if c.HeartbeatTimeout > 0 && c.HeartbeatTimeout < minHeartbeatTimeout {
		errs = append(errs, fmt.Errorf("gateway: heartbeat timeout %v is below %v", c.HeartbeatTimeout, minHeartbeatTimeout))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"login timeout", c.LoginTimeout},
		{"handshake timeout", c.HandshakeTimeout},
		{"call timeout", c.CallTimeout},
		{"write timeout", c.WriteTimeout},
		{"close timeout", c.CloseTimeout},
		{"frame timeout", c.FrameTimeout},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("gateway: %s %v is negative", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.WriteQueue == 0 {
		c.WriteQueue = DefaultWriteQueue
	}
	if c.LoginTimeout == 0 {
		c.LoginTimeout = DefaultLoginTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.MaxSessionSends == 0 {
		c.MaxSessionSends = DefaultMaxSessionSends
	}
	if c.MaxNodeSends == 0 {
		c.MaxNodeSends = DefaultMaxNodeSends
	}
	if c.MaxNodeSendBytes == 0 {
		c.MaxNodeSendBytes = DefaultMaxNodeSendBytes
	}
	if c.Transport == "" {
		c.Transport = TransportGoroutine
		if epollSupported && c.TLS == nil {
			c.Transport = TransportEpoll
		}
	}
	if c.WriteQueueBytes == 0 {
		c.WriteQueueBytes = DefaultWriteQueueBytes
	}
	if c.MaxFrameRate == 0 {
		c.MaxFrameRate = DefaultMaxFrameRate
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	if c.FrameTimeout == 0 {
		c.FrameTimeout = DefaultFrameTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
