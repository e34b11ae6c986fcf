package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tandem-im/tandem/proto/wire"
)

// The client worker's side of `tandem-bench broadcast` (broadcast.go): a
// conns worker (conns_worker.go) whose connections are the group's
// members. After a bcast-track command its readers hand every frame to a
// bcastTracker, which counts, per connection, the pushed entries of the
// group's benchmark messages by message number and records when each
// first arrived. bcast-count answers with the total so far (cheap, polled
// while the pushes come in); bcast-status checks every open connection:
// each message exactly once, none missing.

// Worker ops of the broadcast benchmark.
const (
	opBcastTrack  = "bcast-track"  // start counting the pushes of Broadcast.Group's messages
	opBcastCount  = "bcast-count"  // the pushes counted so far
	opBcastStatus = "bcast-status" // the full tally over the open connections
)

// bcastTrack names what to count: entries of group Group whose content
// (bcastContent) carries a message number below Messages.
type bcastTrack struct {
	Group    string `json:"group"`
	Messages int    `json:"messages"`
}

// bcastTally is a worker's count (bcast-count fills Pushes only).
type bcastTally struct {
	Conns      int   `json:"conns"`      // open connections checked
	Pushes     int64 `json:"pushes"`     // the group's benchmark messages pushed, duplicates included
	Complete   int   `json:"complete"`   // connections that got every message exactly once
	Missing    int64 `json:"missing"`    // (connection, message) pairs never pushed
	Duplicates int64 `json:"duplicates"` // pushes of a message a connection already had
	Other      int64 `json:"other"`      // other entries pushed meanwhile (group events, other conversations)
	Foreign    int64 `json:"foreign"`    // the group's entries that were not benchmark messages of this run

	Received []int    `json:"received"`  // by message: connections that got it
	LastPush []int64  `json:"last_push"` // by message: the latest first arrival (Unix ns), 0 if none
	Latency  histData `json:"latency"`   // send→push of every first arrival
}

// bcastTracker counts one worker's pushes. Safe for concurrent use.
type bcastTracker struct {
	track bcastTrack

	conns  sync.Map // net.Conn → *bcastConn
	pushes atomic.Int64
	other  atomic.Int64
	alien  atomic.Int64
}

// bcastConn is one connection's arrivals. Its reader writes, a status
// reads.
type bcastConn struct {
	mu      sync.Mutex
	arrived []int64 // by message: first arrival (Unix ns), 0 if none
	sent    []int64 // by message: its send time as the content says
	dups    int64
}

func newBcastTracker(t bcastTrack) *bcastTracker { return &bcastTracker{track: t} }

// frame takes one decoded frame that nc's reader got.
func (t *bcastTracker) frame(nc net.Conn, f *wire.Frame) {
	p := f.GetPush()
	if p == nil {
		return
	}
	now := time.Now().UnixNano()
	for _, e := range p.GetEntries() {
		m := e.GetMessage()
		if m == nil || m.GetConversation().GetType() != wire.Conversation_GROUP || m.GetConversation().GetId() != t.track.Group {
			t.other.Add(1)
			continue
		}
		n, sent, ok := parseBcastContent(m.GetContent())
		if !ok || n >= uint64(t.track.Messages) {
			t.alien.Add(1)
			continue
		}
		t.pushes.Add(1)
		t.conn(nc).arrive(int(n), sent, now)
	}
}

func (t *bcastTracker) conn(nc net.Conn) *bcastConn {
	if c, ok := t.conns.Load(nc); ok {
		return c.(*bcastConn)
	}
	c, _ := t.conns.LoadOrStore(nc, &bcastConn{
		arrived: make([]int64, t.track.Messages),
		sent:    make([]int64, t.track.Messages),
	})
	return c.(*bcastConn)
}

func (c *bcastConn) arrive(n int, sent, now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.arrived[n] != 0 {
		c.dups++
		return
	}
	c.arrived[n], c.sent[n] = now, sent
}

// tally checks the connections open: those that never got a push count
// as missing every message.
func (t *bcastTracker) tally(open []net.Conn) *bcastTally {
	m := t.track.Messages
	r := &bcastTally{
		Conns: len(open), Pushes: t.pushes.Load(), Other: t.other.Load(), Foreign: t.alien.Load(),
		Received: make([]int, m), LastPush: make([]int64, m),
	}
	var h hist
	for _, nc := range open {
		v, ok := t.conns.Load(nc)
		if !ok {
			r.Missing += int64(m)
			continue
		}
		c := v.(*bcastConn)
		c.mu.Lock()
		got := 0
		for n, at := range c.arrived {
			if at == 0 {
				continue
			}
			got++
			r.Received[n]++
			r.LastPush[n] = max(r.LastPush[n], at)
			h.record(time.Duration(at - c.sent[n]))
		}
		r.Missing += int64(m - got)
		r.Duplicates += c.dups
		if got == m && c.dups == 0 {
			r.Complete++
		}
		c.mu.Unlock()
	}
	r.Latency = h.export()
	return r
}

// doBroadcast answers the bcast-* ops.
func (w *connsWorker) doBroadcast(cmd workerCommand) workerReply {
	switch cmd.Op {
	case opBcastTrack:
		if cmd.Broadcast == nil || cmd.Broadcast.Group == "" || cmd.Broadcast.Messages <= 0 {
			return workerReply{Op: "error", Err: fmt.Sprintf("%s: want a group and a positive message count, got %+v", cmd.Op, cmd.Broadcast)}
		}
		w.bcast.Store(newBcastTracker(*cmd.Broadcast))
		return w.reply(cmd.Op)
	}
	t := w.bcast.Load()
	if t == nil {
		return workerReply{Op: "error", Err: cmd.Op + ": no " + opBcastTrack + " before"}
	}
	r := w.reply(cmd.Op)
	if cmd.Op == opBcastCount {
		r.Broadcast = &bcastTally{Pushes: t.pushes.Load()}
		return r
	}
	w.mu.Lock()
	open := make([]net.Conn, 0, len(w.conns))
	for nc := range w.conns {
		open = append(open, nc)
	}
	w.mu.Unlock()
	r.Broadcast = t.tally(open)
	return r
}

// bcastContent is message n's content of size bytes (at least
// bcastMinSize): n and its send time (Unix ns, the machine's wall clock,
// which the workers share), both little-endian uint64, then filler.
func bcastContent(n uint64, sent time.Time, size int) []byte {
	c := make([]byte, max(size, bcastMinSize))
	binary.LittleEndian.PutUint64(c[0:8], n)
	binary.LittleEndian.PutUint64(c[8:16], uint64(sent.UnixNano()))
	for i := bcastMinSize; i < len(c); i++ {
		c[i] = 'a' + byte(i%26)
	}
	return c
}

const bcastMinSize = 16

func parseBcastContent(c []byte) (n uint64, sentUnixNano int64, ok bool) {
	if len(c) < bcastMinSize {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(c[0:8]), int64(binary.LittleEndian.Uint64(c[8:16])), true
}

// histData is a hist in JSON, for a worker's reply: the non-empty
// buckets as [index, count] pairs.
type histData struct {
	Buckets [][2]uint64 `json:"buckets"`
	N       uint64      `json:"n"`
	Sum     float64     `json:"sum_ns"`
	Min     int64       `json:"min_ns"`
	Max     int64       `json:"max_ns"`
}

func (h *hist) export() histData {
	d := histData{N: h.n, Sum: h.sum, Min: h.min, Max: h.max}
	for i, c := range h.counts {
		if c > 0 {
			d.Buckets = append(d.Buckets, [2]uint64{uint64(i), c})
		}
	}
	return d
}

// hist rebuilds the histogram (buckets past any sane duration refused).
func (d histData) hist() (*hist, error) {
	const maxBucket = 64 * subN
	h := &hist{n: d.N, sum: d.Sum, min: d.Min, max: d.Max}
	var n uint64
	for _, b := range d.Buckets {
		if b[0] >= maxBucket {
			return nil, fmt.Errorf("histogram bucket %d out of range", b[0])
		}
		i := int(b[0])
		if i >= len(h.counts) {
			h.counts = append(h.counts, make([]uint64, i+1-len(h.counts))...)
		}
		h.counts[i] += b[1]
		n += b[1]
	}
	if n != d.N {
		return nil, fmt.Errorf("histogram buckets hold %d values, its count says %d", n, d.N)
	}
	return h, nil
}
