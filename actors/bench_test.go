package actors

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// BenchmarkLoginKick: login+kick cycles of the pure state: every login of
// a new mobile device kicks the previous one (per_class, mobile 1), writes
// KICKED and LOGGED_IN entries and notifies. The socket and store costs are
// measured by cmd/tandem-bench.
func BenchmarkLoginKick(b *testing.B) {
	st := newUserState("u", testConfig(Config{}), &fakeLog{}, NewMessageID)
	st.activated(1, 0, 0, nil, t0)
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		i++
		l := &wire.Login{DeviceId: fmt.Sprint("phone", i%2), Platform: "ios", LoginExt: "x"}
		_, effs := st.login(sk(i), &actorpb.LoginRequest{Login: l}, t0, 1, 1)
		for _, e := range effs {
			if _, ok := e.(effAppend); ok {
				st.appendDone(nil, t0)
			}
		}
	}
	if len(st.sessions) != 1 {
		b.Fatalf("%d sessions left, want 1", len(st.sessions))
	}
}

// BenchmarkSessionMemory reports the heap held per live session: users
// with one session each (actor state included), and extra sessions of one
// user (the session directory entry alone).
func BenchmarkSessionMemory(b *testing.B) {
	const n = 20000
	for b.Loop() {
		before := heapInUse()
		users := make([]*userState, n)
		for i := range users {
			st := newUserState(fmt.Sprint("user", i), testConfig(Config{}), &fakeLog{}, NewMessageID)
			st.activated(1, 0, 0, nil, t0)
			st.login(sk(uint64(i)), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: "device-1234", Platform: "web", AppVersion: "1.2.3"}}, t0, 1, 1)
			st.commits = nil // as after the commit
			users[i] = st
		}
		perUser := float64(heapInUse()-before) / n
		runtime.KeepAlive(users)

		before = heapInUse()
		one := newUserState("many", testConfig(Config{Policy: Policy{Limits: map[Class]int{ClassWeb: 1000}}}), &fakeLog{}, NewMessageID)
		for i := range 1000 {
			one.login(sk(uint64(i)), &actorpb.LoginRequest{Login: &wire.Login{DeviceId: fmt.Sprint("tab-", i), Platform: "web", AppVersion: "1.2.3"}}, t0, 1, 1)
			one.commits = nil
		}
		perSession := float64(heapInUse()-before) / 1000
		runtime.KeepAlive(one)
		b.ReportMetric(perUser, "B/user-with-1-session")
		b.ReportMetric(perSession, "B/extra-session")
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
