package webhook

import (
	"crypto/rand"
	"encoding/hex"
)

// Type names what happened. The values are part of the webhook contract.
type Type string

// Event types.
const (
	UserOnline   Type = "user.online"   // the user's first session began
	UserOffline  Type = "user.offline"  // the user's last session ended
	DeviceLogin  Type = "device.login"  // a session began
	DeviceLogout Type = "device.logout" // a session ended by logout, heartbeat timeout or a lost connection
	DeviceKicked Type = "device.kicked" // a session was ended by a newer login, an admin or the policy
)

// Event is one webhook delivery, sent as the JSON request body.
type Event struct {
	// ID is unique per event and stays the same across retries, so a
	// receiver can de-duplicate. Publish fills it when empty.
	ID     string `json:"id"`
	Type   Type   `json:"type"`
	UserID string `json:"user_id"`
	// Device is the session the event is about; for user.online and
	// user.offline, the one whose login or exit changed the status.
	Device Device `json:"device,omitzero"`
	// KickedBy is the login that took the slot (device.kicked with reason
	// LOGIN_CONFLICT).
	KickedBy Device `json:"kicked_by,omitzero"`
	// Reason explains device.logout, device.kicked and user.offline; for
	// kicks it is the wire Kick.Reason name (LOGIN_CONFLICT, ADMIN,
	// POLICY, SLOW_CONSUMER, HEARTBEAT_TIMEOUT, SHUTDOWN).
	Reason string `json:"reason,omitempty"`
	// AtMS is when it happened, Unix milliseconds. Publish fills it when
	// zero.
	AtMS int64 `json:"at_ms"`
	// Node is the server that saw it. Publish fills it from Config.Node
	// when empty.
	Node string `json:"node,omitempty"`
}

// Device describes one device session, as in the wire DeviceInfo.
type Device struct {
	DeviceID   string `json:"device_id"`
	Platform   string `json:"platform"`
	Tag        string `json:"tag"`
	LoginID    string `json:"login_id"`
	SinceMS    int64  `json:"since_ms"`
	LoginExt   string `json:"login_ext"`
	AppVersion string `json:"app_version"`
}

// newID returns 16 random bytes in hex.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails: crypto/rand crashes the program instead
	return hex.EncodeToString(b[:])
}
