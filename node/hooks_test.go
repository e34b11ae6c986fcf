package node

import (
	"testing"

	"github.com/tandem-im/tandem/actors"
	"github.com/tandem-im/tandem/proto/wire"
)

func TestHookTypesCoverEveryEvent(t *testing.T) {
	for _, et := range []actors.EventType{actors.EventUserOnline, actors.EventUserOffline,
		actors.EventDeviceLogin, actors.EventDeviceLogout, actors.EventDeviceKicked} {
		if got, ok := hookTypes[et]; !ok || string(got) != string(et) {
			t.Errorf("%s maps to %q (%v): the webhook contract names it the same", et, got, ok)
		}
	}
	d := hookDevice(&wire.DeviceInfo{DeviceId: "d", Platform: "ios", Tag: "t", LoginId: "l", SinceMs: 5, LoginExt: "x", AppVersion: "1"})
	if d.DeviceID != "d" || d.Platform != "ios" || d.Tag != "t" || d.LoginID != "l" || d.SinceMS != 5 || d.LoginExt != "x" || d.AppVersion != "1" {
		t.Errorf("device %+v", d)
	}
	if hookDevice(nil) != hookDevice(&wire.DeviceInfo{}) {
		t.Error("a missing device must be the zero device")
	}
}
