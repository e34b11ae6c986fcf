package actors

import "github.com/tandem-im/tandem/proto/wire"

// EventType names a session event the user actors report to the app
// backend. The values are those of the webhook contract; the node's
// adapter maps each one explicitly.
type EventType string

// Event types.
const (
	EventUserOnline   EventType = "user.online"   // the user's first session began
	EventUserOffline  EventType = "user.offline"  // the user's last session ended
	EventDeviceLogin  EventType = "device.login"  // a session began
	EventDeviceLogout EventType = "device.logout" // a session ended: logout, drop, heartbeat timeout, replaced
	EventDeviceKicked EventType = "device.kicked" // a session was ended by a newer login, an admin or the policy
)

// Event is one session event of one user, as the user's actor saw it.
type Event struct {
	Type   EventType
	UserID string
	// Device is the session the event is about; for user.online and
	// user.offline, the one whose login or exit changed the status.
	Device *wire.DeviceInfo
	// KickedBy is the login that took the slot (device.kicked with reason
	// LOGIN_CONFLICT); nil otherwise.
	KickedBy *wire.DeviceInfo
	// Reason explains device.logout ("logout", "dropped", "replaced"),
	// device.kicked and user.offline (the wire Kick.Reason name).
	Reason string
	AtMS   int64  // when, Unix milliseconds
	Node   string // the actor remote address of the node whose actor saw it
}

// Publisher sends events to the app backend; node/ adapts the webhook
// sender to it. Publish is called from actors: it must not block, and
// it may drop (returning false) when its queue is full. The event and the
// DeviceInfos it points to must not be modified by either side after the
// call.
type Publisher interface {
	Publish(ev Event) bool
}
