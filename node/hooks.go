package node

import (
	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/api/webhook"
	"github.com/tandem-im/tandem/proto/wire"
)

// hookPublisher hands the user actors' session events to the webhook
// sender (actors declares the port, webhook is the adapter's other side).
// Publish never blocks: webhook.Sender.Publish only enqueues.
type hookPublisher struct{ s *webhook.Sender }

// hookTypes maps every actors event type to its webhook type.
var hookTypes = map[actors.EventType]webhook.Type{
	actors.EventUserOnline:   webhook.UserOnline,
	actors.EventUserOffline:  webhook.UserOffline,
	actors.EventDeviceLogin:  webhook.DeviceLogin,
	actors.EventDeviceLogout: webhook.DeviceLogout,
	actors.EventDeviceKicked: webhook.DeviceKicked,
}

func (h hookPublisher) Publish(ev actors.Event) bool {
	t, ok := hookTypes[ev.Type]
	if !ok {
		return false // an event type without a webhook: nothing to send
	}
	return h.s.Publish(webhook.Event{
		Type: t, UserID: ev.UserID, Device: hookDevice(ev.Device), KickedBy: hookDevice(ev.KickedBy),
		Reason: ev.Reason, AtMS: ev.AtMS, Node: ev.Node,
	})
}

func hookDevice(d *wire.DeviceInfo) webhook.Device {
	if d == nil {
		return webhook.Device{}
	}
	return webhook.Device{
		DeviceID: d.GetDeviceId(), Platform: d.GetPlatform(), Tag: d.GetTag(), LoginID: d.GetLoginId(),
		SinceMS: d.GetSinceMs(), LoginExt: d.GetLoginExt(), AppVersion: d.GetAppVersion(),
	}
}
