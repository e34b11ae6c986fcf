package actors

import (
	"hash/maphash"
	"sync"

	"github.com/tandem-im/tandem/api/webhook"
	"github.com/tandem-im/tandem/proto/wire"
)

// presence is the node's table of online users: user → live sessions, as
// last published by the user's actor (the only writer of its entry). The
// server API reads it without activating anybody. A user is online while
// any session lives. Safe for concurrent use.
//
// In a cluster the owner node of a user (where its actor lives) holds the
// user's entry; a cluster-wide query asks the owners (not yet: one node).
type presence struct {
	seed   maphash.Seed
	shards [64]presenceShard
}

type presenceShard struct {
	mu sync.RWMutex
	m  map[string][]*wire.DeviceInfo
}

func newPresence() *presence {
	p := &presence{seed: maphash.MakeSeed()}
	for i := range p.shards {
		p.shards[i].m = make(map[string][]*wire.DeviceInfo)
	}
	return p
}

func (p *presence) shard(user string) *presenceShard {
	return &p.shards[maphash.String(p.seed, user)%uint64(len(p.shards))]
}

// set replaces the user's sessions; none means offline.
func (p *presence) set(user string, devices []*wire.DeviceInfo) {
	s := p.shard(user)
	s.mu.Lock()
	if len(devices) == 0 {
		delete(s.m, user)
	} else {
		s.m[user] = devices
	}
	s.mu.Unlock()
}

// get returns the user's live sessions (nil: offline). The slice and its
// elements must not be modified.
func (p *presence) get(user string) []*wire.DeviceInfo {
	s := p.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[user]
}

// each calls f for every online user (f must not call back into p).
func (p *presence) each(f func(user string)) {
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.RLock()
		users := make([]string, 0, len(s.m))
		for u := range s.m {
			users = append(users, u)
		}
		s.mu.RUnlock()
		for _, u := range users {
			f(u)
		}
	}
}

// count returns the number of online users.
func (p *presence) count() int {
	n := 0
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
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
