package cluster

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestJoinStateReady(t *testing.T) {
	start := time.Now().Add(-3 * time.Second)
	for _, tc := range []struct {
		name string
		s    *joinState
		want error  // nil: ready
		text string // in the message
	}{
		{"no seeds", &joinState{}, nil, ""},
		{"joined once", &joinState{needPeers: true, joined: true, last: errors.New("peers died since")}, nil, ""},
		{"first attempt pending", &joinState{needPeers: true}, ErrNotJoined, "yet (joining for 3s)"},
		{"unreachable", &joinState{needPeers: true, last: fmt.Errorf("%w: no seed reachable", ErrNotJoined)}, ErrNotJoined, "no seed reachable (joining for 3s)"},
		{"refused", &joinState{needPeers: true, last: fmt.Errorf("%w: handshake", ErrRefused)}, ErrRefused, "handshake"},
		{"only strangers", &joinState{needPeers: true, strangers: map[string]string{"x": "member x has a different --jwt-secret"}}, ErrMismatch, "different --jwt-secret"},
		{"fatal wins", &joinState{joined: true, fatal: fmt.Errorf("%w: outvoted", ErrMismatch)}, ErrMismatch, "outvoted"},
	} {
		tc.s.started = start
		err := tc.s.ready()
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: %v, want ready", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want %v mentioning %q", tc.name, err, tc.want, tc.text)
		}
	}
}

func TestOneLine(t *testing.T) {
	err := errors.New("2 errors occurred:\n\t* failed to join 10.0.0.2:7946: EOF\n\t* failed to join 10.0.0.3:7946: dial tcp: refused\n\n")
	if got, want := oneLine(err), "failed to join 10.0.0.2:7946: EOF; failed to join 10.0.0.3:7946: dial tcp: refused"; got != want {
		t.Errorf("oneLine = %q, want %q", got, want)
	}
}
