package actors

import (
	"sync"
	"sync/atomic"
)

// Interning of the few distinct strings every session repeats: its
// gateway's address and actor ID, its device's platform, tag and app
// version. A session that
// reached its user actor from another node carries copies of them decoded
// from the wire, so a node holding a million sessions would hold a million
// copies of a handful of values; interned, each session shares one.
//
// The table is bounded (internMax values of at most internMaxLen bytes):
// tags and app versions come from clients, and beyond the bound a value is
// kept as it came rather than growing the table.
const (
	internMax    = 4096
	internMaxLen = 64
)

var interned struct {
	m sync.Map // string → the same string, the copy every caller shares
	n atomic.Int64
}

// intern returns a string equal to s, shared with earlier callers if the
// table holds it.
func intern(s string) string {
	if s == "" || len(s) > internMaxLen {
		return s
	}
	if v, ok := interned.m.Load(s); ok {
		return v.(string)
	}
	if interned.n.Load() >= internMax {
		return s
	}
	v, loaded := interned.m.LoadOrStore(s, s)
	if !loaded {
		interned.n.Add(1)
	}
	return v.(string)
}

// interned returns k with its gateway's address and ID interned.
func (k sessionKey) interned() sessionKey {
	return sessionKey{addr: intern(k.addr), id: intern(k.id), sid: k.sid}
}
