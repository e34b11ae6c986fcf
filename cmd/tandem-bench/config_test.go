package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseFlagsCluster(t *testing.T) {
	c, err := parseFlags([]string{
		"-ws", "ws://127.0.0.1:7400/ws, ws://127.0.0.1:7410/ws,ws://127.0.0.1:7420/ws",
		"-api", "http://127.0.0.1:7401",
		"-admin-key", "k",
		"-cpu-pids", "node0=10,postgres=20",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ws://127.0.0.1:7400/ws", "ws://127.0.0.1:7410/ws", "ws://127.0.0.1:7420/ws"}; !slices.Equal(c.WSURLs, want) {
		t.Errorf("WSURLs %q, want %q", c.WSURLs, want)
	}
	if want := []string{"http://127.0.0.1:7401"}; !slices.Equal(c.APIURLs, want) {
		t.Errorf("APIURLs %q, want %q", c.APIURLs, want)
	}
	if want := []watchedPID{{"node0", 10}, {"postgres", 20}}; !slices.Equal(c.CPUPIDs, want) {
		t.Errorf("CPUPIDs %v, want %v", c.CPUPIDs, want)
	}

	c, err = parseFlags(nil)
	if err != nil || c.external() {
		t.Errorf("no flags: %+v, %v; want an in-process node", c, err)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-ws", "ws://a/ws,ws://a/ws", "-api", "http://a", "-admin-key", "k"}, "listed twice"},
		{[]string{"-ws", "ws://a/ws,http://b/ws", "-api", "http://a", "-admin-key", "k"}, `-ws "http://b/ws"`},
		{[]string{"-ws", "ws://a/ws", "-admin-key", "k"}, "-api"},
		{[]string{"-ws", "ws://a/ws", "-api", "http://a,b", "-admin-key", "k"}, `-api "b"`},
		{[]string{"-api", "http://a"}, "need -ws"},
		{[]string{"-cpu-pids", "node0"}, "label=pid"},
		{[]string{"-cpu-pids", "a=1,a=2"}, "used twice"},
		{[]string{"-window", "0"}, "must be positive"},
		{[]string{"-rate", "-5"}, "must not be negative"},
		{[]string{"-sweep", "-rate", "100"}, "drop -rate"},
		{[]string{"-peak", "100"}, "-peak needs -sweep"},
		{[]string{"-sweep", "-cpuprofile", "x"}, "not with -sweep"},
	} {
		_, err := parseFlags(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one mentioning %s", tc.args, err, tc.want)
		}
	}
}

func TestWindowDefaults(t *testing.T) {
	// The window defaults by mode; a given one is kept in both.
	for _, tc := range []struct {
		args []string
		want int
	}{
		{nil, DefaultWindow},
		{[]string{"-rate", "500"}, DefaultOpenWindow},
		{[]string{"-window", "8"}, 8},
		{[]string{"-rate", "500", "-window", "8"}, 8},
	} {
		c, err := parseFlags(tc.args)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if got := c.withDefaults().Window; got != tc.want {
			t.Errorf("%q: window %d, want %d", tc.args, got, tc.want)
		}
	}
	// A sweep keeps the window unset, so that each run gets its mode's.
	c, err := parseFlags([]string{"-sweep", "-peak", "4000"})
	if err != nil || !c.Sweep || c.Peak != 4000 || c.Window != 0 {
		t.Errorf("-sweep -peak 4000: %+v, %v", c, err)
	}
}

// -sync-procs by default: one P more for an in-process node, none for a
// node or cluster elsewhere.
func TestExtraProcsByTarget(t *testing.T) {
	for name, tc := range map[string]struct {
		got, want int
	}{
		"socket, in process": {Config{SyncProcs: -1}.extraProcs(), 1},
		"socket, external":   {Config{SyncProcs: -1, WSURLs: []string{"ws://h/ws"}}.extraProcs(), 0},
		"socket, given":      {Config{SyncProcs: 0}.extraProcs(), 0},
		"actors, in process": {ActorsConfig{SyncProcs: -1, Target: ActorsTarget{Store: "pebble"}}.extraProcs(), 1},
		"actors, joined":     {ActorsConfig{SyncProcs: -1, Target: ActorsTarget{Join: []string{"h:7946"}}}.extraProcs(), 0},
		"actors, given":      {ActorsConfig{SyncProcs: 2, Target: ActorsTarget{Join: []string{"h:7946"}}}.extraProcs(), 2},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %d extra Ps, want %d", name, tc.got, tc.want)
		}
	}
}
