package gateway

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/gobwas/ws"

	"github.com/tandem-im/tandem/proto/wire"
)

// Stats is a snapshot of a Server's counters, for metrics. Counts are
// since New; Sessions and LoggedIn are current values.
type Stats struct {
	Sessions int // upgraded connections in the session table
	LoggedIn int // of those, logged in
	// Handshakes is the connections in their TLS and WebSocket handshake
	// (at most Config.MaxHandshakes; at it, Accept waits).
	Handshakes int

	Accepted          uint64 // TCP connections accepted
	Upgraded          uint64 // WebSocket upgrades that succeeded
	HandshakeFailures uint64 // upgrades refused or failed

	FramesIn  uint64 // client data messages read (decodable or not)
	FramesOut uint64 // data messages written to clients

	SlowConsumers  uint64 // sessions closed because their write queue overflowed
	WriteErrors    uint64 // sessions dropped because a write failed or timed out
	ProtocolErrors uint64 // sessions failed for a WebSocket-level violation

	HeartbeatTimeouts uint64 // logged-in sessions closed for being silent too long
	// FramesRateLimited counts client messages over their session's
	// frame rate (Config.MaxFrameRate): data messages answered
	// RATE_LIMITED, pings and pongs ignored.
	FramesRateLimited uint64

	SendsInFlight     int64  // Sends handed on and not answered yet
	SendBytesInFlight int64  // their payload bytes
	SendsRefused      uint64 // Sends answered RATE_LIMITED by the admission bound
	MemoryPressure    bool   // the live heap is above 70 % of GOMEMLIMIT: new Sends are refused

	// Errors counts Error frames queued to clients, by code, whoever made
	// them (the gateway or the layers behind it).
	Errors map[wire.Code]uint64
	// Closes counts close frames the server queued, by close code
	// (echoes of a client's close included; 0 is a close without a code).
	Closes map[int]uint64
}

// counters are the live values behind Stats.
type counters struct {
	loggedIn atomic.Int64

	accepted, upgraded, handshakeFailures atomic.Uint64
	framesIn, framesOut                   atomic.Uint64
	slowConsumers, writeErrors            atomic.Uint64
	protocolErrors, heartbeatTimeouts     atomic.Uint64
	framesRateLimited                     atomic.Uint64

	errors [errorSlots]atomic.Uint64 // by code - wire.CodeBadFrame; last slot: other codes

	mu     sync.Mutex
	closes map[int]uint64
}

const errorSlots = 64

func (c *counters) errorSent(code wire.Code) {
	i := int(code) - int(wire.CodeBadFrame)
	if i < 0 || i >= errorSlots-1 {
		i = errorSlots - 1
	}
	c.errors[i].Add(1)
}

func (c *counters) closed(code ws.StatusCode) {
	c.mu.Lock()
	if c.closes == nil {
		c.closes = make(map[int]uint64)
	}
	c.closes[int(code)]++
	c.mu.Unlock()
}

func (c *counters) snapshot() Stats {
	st := Stats{
		LoggedIn:          int(c.loggedIn.Load()),
		Accepted:          c.accepted.Load(),
		Upgraded:          c.upgraded.Load(),
		HandshakeFailures: c.handshakeFailures.Load(),
		FramesIn:          c.framesIn.Load(),
		FramesOut:         c.framesOut.Load(),
		SlowConsumers:     c.slowConsumers.Load(),
		WriteErrors:       c.writeErrors.Load(),
		ProtocolErrors:    c.protocolErrors.Load(),
		HeartbeatTimeouts: c.heartbeatTimeouts.Load(),
		FramesRateLimited: c.framesRateLimited.Load(),
		Errors:            make(map[wire.Code]uint64),
	}
	for i := range c.errors {
		if n := c.errors[i].Load(); n > 0 {
			code := wire.Code(int(wire.CodeBadFrame) + i)
			if i == errorSlots-1 {
				code = 0 // outside the catalogue's range
			}
			st.Errors[code] = n
		}
	}
	c.mu.Lock()
	st.Closes = maps.Clone(c.closes)
	c.mu.Unlock()
	if st.Closes == nil {
		st.Closes = make(map[int]uint64)
	}
	return st
}
